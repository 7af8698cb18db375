"""Training on real multiplex IF: multichannel targets read by marker name, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_mupd.errors import ConfigError, DatasetError
from napari_mupd.train.config import TrainConfig
from napari_mupd.train.datasets import PairedTileFolder, SerialSectionPairs, read_markers
from napari_mupd.train.trainer import Trainer

#: The file's channel order; the target asks for DAPI (found as Hoechst), then CD8.
FILE_CHANNELS = ["CD8", "PanCK", "Hoechst"]
TARGET = "mIF:DAPI,CD8"


def write_ome(path: Path, planes: np.ndarray, names: list[str]) -> None:
    tifffile.imwrite(
        path,
        planes,
        ome=True,
        photometric="minisblack",
        metadata={"axes": "CYX", "Channel": {"Name": names}},
    )


def paired_mif(root: Path, n: int = 4, size: int = 64) -> tuple[Path, list[np.ndarray]]:
    """H&E PNG tiles and 3-channel uint16 OME-TIFF targets (channels CD8, PanCK, Hoechst)."""
    rng = np.random.default_rng(0)
    (root / "he").mkdir(parents=True)
    (root / "mif").mkdir()
    planes = []
    for i in range(n):
        he = rng.integers(120, 250, (size, size, 3), dtype=np.uint8)
        Image.fromarray(he).save(root / "he" / f"t{i}.png")
        stack = rng.integers(0, 65536, (3, size, size), dtype=np.uint16)
        write_ome(root / "mif" / f"t{i}.ome.tif", stack, FILE_CHANNELS)
        planes.append(stack)
    return root, planes


def test_paired_folder_reads_markers_by_name_in_the_targets_order(tmp_path):
    root, planes = paired_mif(tmp_path)
    data = PairedTileFolder(root / "he", root / "mif", TARGET, 64)
    assert len(data) == 4
    sample = data[1]
    assert sample.image.shape == (64, 64, 2) and sample.image.dtype == np.float32
    np.testing.assert_allclose(sample.image[..., 0], planes[1][2] / 65535, atol=1e-6)  # Hoechst
    np.testing.assert_allclose(sample.image[..., 1], planes[1][0] / 65535, atol=1e-6)  # CD8
    assert sample.source is not None and sample.source.shape == (64, 64, 3)
    smaller = PairedTileFolder(root / "he", root / "mif", TARGET, 32)[0].image
    assert smaller.shape == (32, 32, 2) and smaller.min() >= 0 and smaller.max() <= 1


def test_missing_marker_and_brightfield_targets_are_dataset_errors(tmp_path):
    root, _ = paired_mif(tmp_path, n=1)
    with pytest.raises(DatasetError, match=r"t0\.ome\.tif.*'Ki67'.*CD8, PanCK, Hoechst"):
        PairedTileFolder(root / "he", root / "mif", "mIF:DAPI,Ki67", 64)
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(rgb / "t0.tif")
    with pytest.raises(DatasetError, match=r"t0\.tif: a brightfield"):
        PairedTileFolder(root / "he", rgb, TARGET, 64)


def test_npy_targets_are_the_markers_in_order(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (16, 16, 2), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    np.testing.assert_allclose(read_markers(tmp_path / "a.npy", ["DAPI", "CD8"]), array / 255)
    with pytest.raises(DatasetError, match=r"a\.npy: expected \(H, W, 3\)"):
        read_markers(tmp_path / "a.npy", ["DAPI", "CD8", "CD3"])
    np.save(tmp_path / "b.npy", np.full((4, 4, 2), 2.0))
    with pytest.raises(DatasetError, match=r"b\.npy: float marker"):
        read_markers(tmp_path / "b.npy", ["DAPI", "CD8"])


def test_serial_sections_warp_a_multichannel_moving_section(tmp_path):
    rng = np.random.default_rng(2)
    he = np.full((96, 96, 3), 240, np.uint8)
    he[8:88, 8:88] = rng.integers(60, 160, (80, 80, 3), dtype=np.uint8)  # tissue
    Image.fromarray(he).save(tmp_path / "he.png")
    stack = rng.integers(0, 65536, (2, 96, 96), dtype=np.uint16)
    write_ome(tmp_path / "mif.ome.tif", stack, ["CD8", "DAPI"])
    points = "x,y\n10,10\n80,12\n15,85\n70,70\n"
    (tmp_path / "fixed.csv").write_text(points)
    (tmp_path / "moving.csv").write_text(points)
    data = SerialSectionPairs(
        tmp_path / "he.png",
        tmp_path / "mif.ome.tif",
        tmp_path / "fixed.csv",
        tmp_path / "moving.csv",
        TARGET,
        32,
    )
    sample = data[0]
    y, x = sample.meta["y"], sample.meta["x"]
    assert sample.image.dtype == np.float32 and sample.image.shape == (32, 32, 2)
    expected = stack[::-1, y : y + 32, x : x + 32].transpose(1, 2, 0) / 65535  # DAPI, CD8
    np.testing.assert_allclose(sample.image, expected, atol=1e-4)


def mif_config(tmp_path, target: str, **overrides) -> dict:
    """A tiny-preset training config with one mIF stain task on ``paired_mif``'s folders."""
    return {
        "out_dir": str(tmp_path / "run"),
        "model": {"preset": "tiny", "targets": ["H&E", TARGET]},
        "tasks": [
            {
                "name": "mif",
                "kind": "stain",
                "data": [
                    {
                        "paired_folders": {
                            "source_dir": "data/he",
                            "target_dir": "data/mif",
                            "target": target,
                        }
                    }
                ],
            }
        ],
        **overrides,
    }


def test_an_mif_target_trains_end_to_end_from_real_multichannel_tiles(tmp_path):
    _, planes = paired_mif(tmp_path / "data")
    raw = mif_config(
        tmp_path,
        TARGET,
        steps=3,
        batch_size=2,
        lr=1e-3,
        warmup_steps=0,
        checkpoint_every=3,
        log_every=1,
        seed=0,
    )
    trainer = Trainer(TrainConfig.from_dict(raw, base_dir=tmp_path))
    task = trainer.tasks[0]
    dataset = task.datasets[0]
    first = dataset[0].image  # the batch's target channels: DAPI (file: Hoechst), then CD8
    np.testing.assert_allclose(first[..., 0], planes[0][2] / 65535, atol=1e-6)
    np.testing.assert_allclose(first[..., 1], planes[0][0] / 65535, atol=1e-6)
    spec = trainer.pipe.config.resolve_target(TARGET)
    assert spec.markers == ("DAPI", "CD8")
    batch = trainer._batch(task, np.random.default_rng(0))
    mask = batch.channel_mask[0].nonzero().flatten().tolist()
    assert mask == list(spec.channels)
    expected, _ = trainer.pipe.encode_target(np.stack([dataset[i].image for i in range(4)]), TARGET)
    assert expected.shape[1] == batch.latents.shape[1]
    trainer.train()
    assert trainer.step == 3


def test_a_virtual_mif_written_by_write_flat_reads_back_as_a_target(tmp_path):
    from napari_mupd.io.writers import write_flat

    image = np.random.default_rng(3).random((24, 24, 2)).astype(np.float32)
    path = write_flat(tmp_path / "virtual.tif", image, ["CD8", "DAPI"])
    markers = read_markers(path, ["DAPI", "CD8"])
    np.testing.assert_allclose(markers, image[..., ::-1], atol=0.5 / 255 + 1e-6)


def test_a_target_that_reorders_the_models_panel_is_a_config_error(tmp_path):
    paired_mif(tmp_path / "data", n=1)
    raw = mif_config(tmp_path, "mIF:CD8,DAPI", steps=1)
    with pytest.raises(ConfigError, match=r"'mIF:CD8,DAPI' must name every marker.*'mIF:DAPI,CD8'"):
        Trainer(TrainConfig.from_dict(raw, base_dir=tmp_path))
