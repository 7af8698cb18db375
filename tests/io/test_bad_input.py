"""Every way a user can hand us a bad slide gives one clear SlideError naming the file."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from helpers import CMU1
from napari_mupd import RegionError, SlideError, open_slide


def assert_slide_error(path, reason: str) -> None:
    with pytest.raises(SlideError) as info:
        open_slide(path)
    message = str(info.value)
    assert str(path.name) in message
    assert reason in message


def test_missing_file(tmp_path):
    assert_slide_error(tmp_path / "nope.svs", "no such file")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.svs").touch()
    assert_slide_error(tmp_path / "empty.svs", "empty (0 bytes)")


def test_text_file_named_svs(tmp_path):
    (tmp_path / "notes.svs").write_text("this is not a slide\n")
    assert_slide_error(tmp_path / "notes.svs", "not a slide format")


def test_truncated_tiff(tmp_path):
    data = CMU1.read_bytes()
    (tmp_path / "cut.svs").write_bytes(data[: len(data) // 2])
    assert_slide_error(tmp_path / "cut.svs", "truncated")


def test_corrupt_tiff(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "noise.tif").write_bytes(b"II*\x00" + rng.bytes(5000))
    assert_slide_error(tmp_path / "noise.tif", "corrupt or truncated TIFF")


def test_corrupt_tile_raises_on_read(tmp_path):
    data = bytearray(CMU1.read_bytes())
    import tifffile

    with tifffile.TiffFile(CMU1) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]
    data[offset : offset + count] = b"\x00" * count
    (tmp_path / "bad_tile.svs").write_bytes(bytes(data))
    with open_slide(tmp_path / "bad_tile.svs") as slide:
        slide.read_region((0, 0), 0, (100, 100))  # tile 0 is intact
        with pytest.raises(SlideError, match=r"bad_tile\.svs.*tile 5"):
            slide.read_region((5 * 240, 0), 0, (100, 100))


def test_folder_that_is_not_zarr(tmp_path):
    (tmp_path / "folder.zarr").mkdir()
    assert_slide_error(tmp_path / "folder.zarr", "not an OME-Zarr")


def test_zarr_without_multiscales(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    assert_slide_error(tmp_path / "plain.zarr", "multiscales")


def test_openslide_format_without_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openslide", None)  # import openslide -> ImportError
    (tmp_path / "scan.mrxs").write_bytes(b"[GENERAL]\nSLIDE_VERSION=01.02\n")
    assert_slide_error(tmp_path / "scan.mrxs", "napari-mupd[openslide]")


def test_regions_off_the_slide():
    with open_slide(CMU1) as slide:
        with pytest.raises(RegionError, match="outside the slide"):
            slide.read_region((5000, 0), 0, (100, 100))
        with pytest.raises(RegionError, match="outside the slide"):
            slide.read_region((-100, -100), 0, (100, 100))
        with pytest.raises(RegionError, match="level 9 does not exist"):
            slide.read_region((0, 0), 9, (10, 10))
        with pytest.raises(RegionError, match="must be positive"):
            slide.read_region((0, 0), 0, (0, 10))
        corner = slide.read_region((-10, -10), 0, (20, 20))
        assert (corner[:10] == 255).all() and (corner[:, :10] == 255).all()
        assert not (corner[10:, 10:] == 255).all()


def test_reads_after_close_fail():
    slide = open_slide(CMU1)
    level = slide.levels[0]
    slide.close()
    with pytest.raises(SlideError, match="closed"):
        slide.read_region((0, 0), 0, (10, 10))
    with pytest.raises(SlideError, match="closed"):
        level[:10, :10].compute()


def test_unknown_associated_image():
    with open_slide(CMU1) as slide, pytest.raises(SlideError, match="no associated image"):
        slide.associated_image("barcode")


def test_unknown_backend():
    with pytest.raises(SlideError, match="unknown backend 'pillow'"):
        open_slide(CMU1, backend="pillow")


def test_forced_backends_report_unreadable_files(tmp_path):
    (tmp_path / "x.svs").write_bytes(b"II*\x00" + bytes(100))
    with pytest.raises(SlideError, match="corrupt or truncated TIFF"):
        open_slide(tmp_path / "x.svs", backend="tifffile")
    pytest.importorskip("openslide")
    with pytest.raises(SlideError, match="OpenSlide cannot read it"):
        open_slide(tmp_path / "x.svs", backend="openslide")


def test_close_releases_the_file():
    psutil = pytest.importorskip("psutil")
    process = psutil.Process()

    def handles() -> int:
        return sum(f.path.endswith(CMU1.name) for f in process.open_files())

    before = handles()
    slide = open_slide(CMU1)
    assert handles() > before
    slide.close()
    assert handles() <= before
