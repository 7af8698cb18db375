"""DICOM whole-slide images through wsidicom: a folder or one file, lazily, pixel-equal to
OpenSlide 4 (which reads DICOM too); test slides made by wsidicomizer from a tiled TIFF."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import pattern, write_svs_like
from napari_mupd import SlideError
from napari_mupd.io import open_slide

wsidicomizer = pytest.importorskip("wsidicomizer")
pytest.importorskip("tiffslide")


def write_dicom(folder: Path, image: np.ndarray, levels: int = 2) -> list[Path]:
    """A DICOM WSI (one file per level) converted from an SVS-like TIFF by wsidicomizer."""
    from wsidicomizer.sources import TiffSlideSource

    source = folder.parent / f"{folder.name}.svs"
    write_svs_like(source, image, levels=levels)
    folder.mkdir()
    files = wsidicomizer.WsiDicomizer.convert(
        source, folder, preferred_source=TiffSlideSource, tile_size=256, include_label=False,
        include_overview=False, include_thumbnail=False, workers=1,
    )  # fmt: skip
    return sorted(Path(f) for f in files)


@pytest.fixture(scope="module")
def dicom(tmp_path_factory) -> tuple[Path, np.ndarray]:
    image = pattern(600, 800)
    folder = tmp_path_factory.mktemp("dicom") / "slide"
    write_dicom(folder, image)
    return folder, image


def test_dicom_folder_opens_lazily_with_the_same_api(dicom):
    folder, image = dicom
    with open_slide(folder) as slide:
        assert slide.vendor == "dicom" and not slide.multichannel
        assert slide.dimensions == (800, 600)
        assert slide.metadata["native_levels"] == 2
        assert slide.level_info[0].tile == (256, 256)
        assert slide.mpp == pytest.approx((0.25, 0.25))
        region = slide.read_region((10, 20), 0, (300, 200))
        assert region.shape == (200, 300, 3) and region.dtype == np.uint8
        # the pixels written, through two JPEG encodings (the SVS tiles, the DICOM frames)
        want = image[20:220, 10:310].astype(float)
        assert np.corrcoef(region.astype(float).ravel(), want.ravel())[0, 1] > 0.95
        assert slide.level_arrays[1][5:9, 3:7].shape == (4, 4, 3)


def test_dicom_pixel_equal_to_openslide(dicom):
    openslide = pytest.importorskip("openslide")
    folder, _ = dicom
    first = sorted(folder.iterdir())[0]
    reference = openslide.OpenSlide(str(first))
    assert reference.properties.get("openslide.vendor") == "dicom"
    with open_slide(folder) as slide:
        assert slide.level_count >= reference.level_count
        for level, (x, y, w, h) in [(0, (0, 0, 800, 600)), (0, (250, 130, 300, 270)),
                                    (1, (100, 40, 300, 260))]:  # fmt: skip
            want = np.asarray(reference.read_region((x, y), level, (w, h)))[..., :3]
            np.testing.assert_array_equal(slide.read_region((x, y), level, (w, h)), want)


def test_single_dicom_file_opens_its_series(dicom):
    folder, _ = dicom
    first = sorted(folder.iterdir())[0]
    with open_slide(first) as slide:
        assert slide.vendor == "dicom" and slide.metadata["native_levels"] == 2


def test_dicom_folder_with_a_missing_frame(tmp_path):
    """A level whose pixel data lacks a frame: an error naming the file or folder and
    the reason, when opened or when the frame is read."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    folder = tmp_path / "broken"
    write_dicom(folder, pattern(600, 800))
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        if int(ds.TotalPixelMatrixColumns) == 800:
            n = int(ds.NumberOfFrames)
            frames = list(generate_frames(ds.PixelData, number_of_frames=n))
            ds.PixelData = encapsulate(frames[:-1])
            ds.NumberOfFrames = n - 1
            ds.save_as(path)
    with pytest.raises(SlideError, match="broken") as info, open_slide(folder) as slide:
        slide.read_region((0, 0), 0, (800, 600))
    assert "frame" in str(info.value).lower() or "DICOM" in str(info.value)


def test_folder_without_dicom_or_zarr(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SlideError, match="not an OME-Zarr"):
        open_slide(tmp_path)


def test_copied_folder_reads_the_same(dicom, tmp_path):
    folder, _ = dicom
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    with open_slide(folder) as a, open_slide(copy) as b:
        np.testing.assert_array_equal(a.thumbnail(128), b.thumbnail(128))


def test_napari_reader_takes_a_dicom_folder(dicom):
    from napari_mupd.plugin._reader import napari_get_reader, read_slide

    folder, _ = dicom
    assert napari_get_reader(str(folder)) is read_slide
    ((data, kwargs, kind),) = read_slide(str(folder))
    assert kind == "image" and kwargs["rgb"] and kwargs["metadata"]["vendor"] == "dicom"
    assert data[0].shape == (600, 800, 3)
    kwargs["metadata"]["slide"].close()
