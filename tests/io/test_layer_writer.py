"""The OME-Zarr layer writer without a viewer: dtypes, streaming, provenance, overwriting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from helpers import pattern
from napari_mupd.errors import LayerWriteError
from napari_mupd.io import open_slide
from napari_mupd.plugin._writer import BLOCK, json_safe, write_ome_zarr_layer


class RecordingArray:
    """An array-like that says which blocks were asked of it (a lazy level 0)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image, self.shape, self.dtype = image, image.shape, image.dtype
        self.requested: list[tuple[int, int]] = []

    def __getitem__(self, key):
        block = self.image[key]
        self.requested.append(block.shape[:2])
        return block


def level0(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(path), mode="r")["0"][:])


def test_lazy_level0_is_copied_block_by_block(tmp_path):
    image = pattern(2 * BLOCK + 100, BLOCK + 7)
    lazy = RecordingArray(image)
    out = tmp_path / "big.ome.zarr"
    write_ome_zarr_layer(str(out), [lazy], {"name": "big", "rgb": True, "multiscale": True})
    assert max(h * w for h, w in lazy.requested) <= BLOCK * BLOCK
    assert len(lazy.requested) == 6  # 3 x 2 blocks
    np.testing.assert_array_equal(level0(out), np.moveaxis(image, -1, 0))
    group = zarr.open_group(str(out), mode="r")
    assert len(list(group.array_keys())) == 6  # the pyramid was built down to <= 256 px
    np.testing.assert_array_equal(open_slide(out).read_region((5, 9), 0, (40, 30)),
                                  image[9:39, 5:45])  # fmt: skip


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64", "bool"])
def test_single_channel_dtypes_are_kept(tmp_path, dtype):
    rng = np.random.default_rng(1)
    image = (rng.random((300, 200)) * 1000).astype(dtype)
    out = tmp_path / f"{dtype}.zarr"
    meta = {"name": "signal", "contrast_limits": (0, 500), "scale": (2.0, 3.0),
            "translate": (-4.0, 7.5), "units": ("micrometer", "micrometer")}  # fmt: skip
    assert write_ome_zarr_layer(str(out), image, meta) == [str(out)]
    written = level0(out)
    assert written.shape == (1, 300, 200)
    assert written.dtype == (np.uint8 if dtype == "bool" else np.dtype(dtype))
    np.testing.assert_array_equal(written[0], image.astype(written.dtype))
    attrs = json.loads((out / ".zattrs").read_text())
    (channel,) = attrs["omero"]["channels"]
    assert channel["label"] == "signal"
    assert (channel["window"]["start"], channel["window"]["end"]) == (0, 500)
    transforms = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert transforms == [{"type": "scale", "scale": [1.0, 2.0, 3.0]},
                          {"type": "translation", "translation": [0.0, -4.0, 7.5]}]  # fmt: skip
    assert attrs["multiscales"][0]["axes"][1]["unit"] == "micrometer"


def test_provenance_keeps_only_json(tmp_path):
    meta = {
        "name": "x",
        "metadata": {"slide": object(), "mpp": (0.5, 0.5), "source": tmp_path / "a.svs",
                     "n": np.int64(3), "nested": {"ok": [1, object(), "b"]}},
    }  # fmt: skip
    out = tmp_path / "p.zarr"
    write_ome_zarr_layer(str(out), np.zeros((10, 10), np.uint8), meta)
    provenance = json.loads((out / ".zattrs").read_text())["napari_mupd"]
    assert provenance["layer"] == "x"
    assert provenance["writer"].startswith("napari-mupd")
    assert provenance["metadata"] == {
        "mpp": [0.5, 0.5],
        "source": str(tmp_path / "a.svs"),
        "n": 3,
        "nested": {"ok": [1, "b"]},
    }
    assert json_safe({"a": object()}) == {}


def test_overwrites_only_its_own_output(tmp_path):
    out = tmp_path / "mine.zarr"
    write_ome_zarr_layer(str(out), np.full((1000, 1000), 7, np.uint8), {"name": "a"})
    assert (out / "2").exists()
    write_ome_zarr_layer(str(out), np.full((100, 80), 9, np.uint8), {"name": "a"})
    assert level0(out).shape == (1, 100, 80) and (level0(out) == 9).all()
    assert not (out / "2").exists()  # the old pyramid is gone

    foreign = tmp_path / "other.zarr"
    zarr.open_group(str(foreign), mode="w", zarr_format=2).create_array("0", shape=(4,), dtype="u1")
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    a_file = tmp_path / "notes.zarr"
    a_file.write_text("not a folder")
    for path in (foreign, folder, a_file):
        with pytest.raises(LayerWriteError, match="refusing to overwrite") as info:
            write_ome_zarr_layer(str(path), np.zeros((4, 4), np.uint8), {"name": "a"})
        assert str(path) in str(info.value)
    assert (folder / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("data", "meta", "message"),
    [
        (np.zeros((3, 8, 8), np.uint8), {"name": "stack"}, "has shape \\(3, 8, 8\\)"),
        (np.zeros((8, 8, 5), np.uint8), {"name": "five", "rgb": True}, "RGB\\(A\\) or 2-D"),
        (np.zeros((8, 8), np.complex64), {"name": "c"}, "cannot write complex64"),
    ],
)
def test_unsupported_layers_raise_clear_errors(tmp_path, data, meta, message):
    out = tmp_path / "bad.zarr"
    with pytest.raises(LayerWriteError, match=message):
        write_ome_zarr_layer(str(out), data, meta)
    assert not out.exists()
