"""Whole-slide jobs: OME-Zarr and OME-TIFF outputs read by real peers, exact resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from PIL import Image

from helpers import CMU1
from napari_mupd import RegionError, open_slide
from napari_mupd.cli import main
from napari_mupd.engine.jobs import JobSpec, progress_dir, run_job
from napari_mupd.errors import ConditionError, JobError
from napari_mupd.imaging.regions import Region
from napari_mupd.model import MuPDConfig, MuPDPipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-model")
    config = MuPDConfig.from_dict({**MuPDConfig.tiny().to_dict(), "mpp": 1.0})
    MuPDPipeline.from_config(config).save_pretrained(folder)
    return str(folder)


def spec(tiny_model, out, **kw) -> JobSpec:
    base = {
        "slide": str(CMU1),
        "model": tiny_model,
        "target": "IHC:Ki67",
        "out": str(out),
        "region": Region(0, 0, 1400, 1100),
        "steps": 2,
        "chunk": 512,
    }
    return JobSpec(**{**base, **kw})


def stain_args(model: str, roi: str, out) -> list[str]:
    """``mupd stain`` arguments for the tiny model on CMU-1."""
    return [
        "stain",
        str(CMU1),
        "--model",
        model,
        "--target",
        "IHC:Ki67",
        "--roi",
        roi,
        "--steps",
        "2",
        "--out",
        str(out),
    ]


def test_job_writes_an_ome_zarr_that_peers_read(tiny_model, tmp_path):
    out = run_job(spec(tiny_model, tmp_path / "ki67.ome.zarr"))
    group = zarr.open_group(str(out), mode="r")
    assert group["0"].shape == (3, 549, 699)  # 1 um/px on a 0.499 um/px slide
    assert group.attrs["napari_mupd"]["complete"]
    assert group.attrs["napari_mupd"]["job"]["target"] == "IHC:Ki67"
    scale = group.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert scale["scale"][1:] == pytest.approx([1.0, 1.0])  # the model's 1 um/px

    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(out)))())
    assert nodes[0].data[0].shape == (3, 549, 699) and len(nodes[0].data) >= 2

    from napari_ome_zarr import napari_get_reader

    layers = napari_get_reader(str(out))(str(out))
    assert layers[0][0][0].shape == (3, 549, 699)

    with open_slide(out) as reread:  # and our own reader
        assert reread.level_info[0].shape == (549, 699)
        assert reread.mpp == pytest.approx((1.0, 1.0))


def test_killed_job_resumes_to_the_same_result(tiny_model, tmp_path):
    with open_slide(CMU1) as slide:  # `mupd stain` draws IHC at the slide's pixel size
        slide_mpp = slide.mpp[0]
    reference = run_job(spec(tiny_model, tmp_path / "straight.ome.zarr", output_mpp=slide_mpp))
    out = tmp_path / "resumed.ome.zarr"
    cmd = [sys.executable, "-m", "napari_mupd.cli", *stain_args(tiny_model, "0,0,1400,1100", out)]
    process = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = [p for p in progress_dir(out).glob("*_*") if not p.name.endswith(".tmp")]
        if done or process.poll() is not None:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the client and its dask workers
    process.wait()
    finished = len([p for p in progress_dir(out).glob("*_*") if not p.name.endswith(".tmp")])
    assert 1 <= finished < 4, "the job should have been killed halfway"
    assert main(stain_args(tiny_model, "0,0,1400,1100", out)) == 0
    a = zarr.open_group(str(reference), mode="r")
    b = zarr.open_group(str(out), mode="r")
    for level in a.array_keys():
        np.testing.assert_array_equal(np.asarray(a[level][:]), np.asarray(b[level][:]))


def test_two_workers_give_the_same_image(tiny_model, tmp_path):
    one = run_job(spec(tiny_model, tmp_path / "one.ome.zarr"))
    two = run_job(spec(tiny_model, tmp_path / "two.ome.zarr"), workers=2)
    a = zarr.open_group(str(one))["0"][:].astype(int)
    b = zarr.open_group(str(two))["0"][:].astype(int)
    # 2 torch threads (1 worker) vs 1 thread each (2 workers) sum in another order: float
    # rounding may move a few pixels by one grey level, never more
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3


def test_ome_tiff_output_opens_in_tifffile_and_openslide(tiny_model, tmp_path):
    import openslide
    import tifffile

    out = tmp_path / "ki67.ome.tif"
    assert main(stain_args(tiny_model, "0,0,1400,1100", out)) == 0
    with tifffile.TiffFile(out) as tif:  # drawn at the slide's 0.499 um/px: 2x the grid
        assert tif.is_ome and tif.series[0].shape == (1098, 1398, 3)
        assert len(tif.series[0].levels) >= 2
    assert openslide.OpenSlide(str(out)).dimensions == (1398, 1098)
    assert not (tmp_path / "ki67.ome.tif.partial.ome.zarr").exists()


def test_flat_png_output(tiny_model, tmp_path, capsys):
    out = tmp_path / "ki67.png"
    assert main(stain_args(tiny_model, "1000,1000,256,256", out)) == 0
    assert Image.open(out).size == (256, 256)  # IHC drawn at the slide's own resolution
    assert "structure r" in capsys.readouterr().out
    assert main([*stain_args(tiny_model, "1000,1000,256,256", out), "--output-mpp", "model"]) == 0
    assert Image.open(out).size == (128, 128)  # the model's 1 um/px grid


def test_job_errors(tiny_model, tmp_path, capsys):
    with pytest.raises(RegionError, match="outside"):
        run_job(spec(tiny_model, tmp_path / "a.ome.zarr", region=Region(9000, 9000, 100, 100)))
    with pytest.raises(ConditionError, match="known IHC markers"):
        run_job(spec(tiny_model, tmp_path / "b.ome.zarr", target="IHC:HER2"))
    blank = tmp_path / "glass.png"
    Image.fromarray(np.full((600, 600, 3), 245, np.uint8)).save(blank)
    with pytest.raises(JobError, match="no tissue"):
        run_job(spec(tiny_model, tmp_path / "c.ome.zarr", slide=str(blank), region=None))
    run_job(spec(tiny_model, tmp_path / "d.ome.zarr"))
    with pytest.raises(JobError, match="another job"):
        run_job(spec(tiny_model, tmp_path / "d.ome.zarr", seed=9))
    assert (
        main(
            [
                "stain",
                str(CMU1),
                "--model",
                tiny_model,
                "--target",
                "IHC:Ki67",
                "--out",
                str(tmp_path / "x.jpg"),
            ]
        )
        == 2
    )
    assert "cannot tell the format" in capsys.readouterr().err


def test_a_slide_without_pixel_size_needs_source_mpp(tiny_model, tmp_path, capsys):
    """No silent 1 um/px: `mupd stain` refuses a slide that does not say its pixel size
    until --source-mpp gives it, and then reads it at the model's scale."""
    with open_slide(CMU1) as slide:
        pixels = slide.read_region((800, 1200), 0, (512, 512))
    plain = tmp_path / "no-mpp.png"
    Image.fromarray(pixels).save(plain)
    out = tmp_path / "stain.png"
    args = ["stain", str(plain), "--model", tiny_model, "--target", "IHC:Ki67", "--steps", "1"]
    assert main([*args, "--out", str(out)]) == 2
    assert "--source-mpp" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--source-mpp", "0.5", "--output-mpp", "model"]) == 0
    assert Image.open(out).size == (256, 256)  # read at the model's 1 um/px: half the pixels
    assert main([*args, "--out", str(out), "--source-mpp", "-1"]) == 2
    assert main([*args, "--out", str(out), "--source-mpp", "huge"]) == 2
    capsys.readouterr()
    estimate = ["--source-mpp", "estimate", "--output-mpp", "model"]
    assert main([*args, "--out", str(out), *estimate]) == 0
    said = capsys.readouterr().out
    mpp = float(said.split("about ")[1].split()[0])
    assert 0.33 < mpp < 0.75 and "estimated from nuclear size" in said  # truly 0.499
    size = Image.open(out).size[0]
    assert 512 * mpp / 1.2 < size < 512 * mpp * 1.2  # read at the estimated scale
