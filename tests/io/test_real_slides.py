"""open_slide on the real slides of data/ and the bundled sample, checked against OpenSlide."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import CMU1, TCGA
from napari_mupd import open_slide

openslide = pytest.importorskip("openslide")


def openslide_region(slide, location, level, size) -> np.ndarray:
    """OpenSlide's read, composited over white like ours (outside is transparent)."""
    rgba = np.asarray(slide.read_region(location, level, size)).astype(np.uint16)
    alpha = rgba[..., 3:]
    return ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("path", "shapes", "mpp", "vendor"),
    [
        (CMU1, [(2967, 2220)], (0.499, 0.499), "aperio"),
        (TCGA, [(3567, 4443), (1783, 2221)], None, "aperio"),
    ],
)
def test_levels_and_metadata(path, shapes, mpp, vendor):
    with open_slide(path) as slide:
        native = [info.shape for info in slide.level_info if info.native]
        assert native == shapes
        assert slide.mpp == mpp
        assert slide.vendor == vendor
        for level, info in zip(slide.levels, slide.level_info, strict=True):
            assert level.shape == (*info.shape, 3)
            assert level.dtype == np.uint8
        assert max(slide.level_info[-1].shape) <= 2048
        assert slide.levels[0].chunksize[:2] == slide.level_info[0].tile


def test_cmu1_metadata_and_associated_images():
    with open_slide(CMU1) as slide:
        assert slide.metadata["objective_power"] == 20
        assert slide.metadata["associated_images"] == ["label", "macro", "thumbnail"]
        ref = openslide.OpenSlide(str(CMU1))
        for name in slide.metadata["associated_images"]:
            expected = np.asarray(ref.associated_images[name].convert("RGB"))
            np.testing.assert_array_equal(slide.associated_image(name), expected)


@pytest.mark.parametrize("path", [CMU1, TCGA])
def test_random_regions_equal_openslide(path):
    rng = np.random.default_rng(7)
    with open_slide(path) as slide:
        ref = openslide.OpenSlide(str(path))
        width, height = slide.dimensions
        for _ in range(25):
            size = (int(rng.integers(1, 700)), int(rng.integers(1, 700)))
            location = (int(rng.integers(-200, width - 1)), int(rng.integers(-200, height - 1)))
            ours = slide.read_region(location, 0, size)
            assert ours.shape == (size[1], size[0], 3)
            np.testing.assert_array_equal(ours, openslide_region(ref, location, 0, size))


def test_jpeg2000_second_level_equals_openslide():
    with open_slide(TCGA) as slide:
        ref = openslide.OpenSlide(str(TCGA))
        w, h = ref.level_dimensions[1]
        np.testing.assert_array_equal(
            slide.read_region((0, 0), 1, (w, h)), openslide_region(ref, (0, 0), 1, (w, h))
        )
        np.testing.assert_array_equal(
            slide.levels[1].compute(), openslide_region(ref, (0, 0), 1, (w, h))
        )


def test_dask_level_equals_region_reads():
    with open_slide(CMU1) as slide:
        window = slide.levels[0][1000:1333, 250:911].compute()
        np.testing.assert_array_equal(window, slide.read_region((250, 1000), 0, (661, 333)))


def test_openslide_backend_reads_the_same_pixels():
    with open_slide(CMU1) as ours, open_slide(CMU1, backend="openslide") as theirs:
        assert theirs.vendor == "openslide:aperio"
        assert theirs.mpp == pytest.approx(ours.mpp)
        assert [i.shape for i in theirs.level_info] == [i.shape for i in ours.level_info]
        np.testing.assert_array_equal(theirs.levels[0].compute(), ours.levels[0].compute())
        np.testing.assert_array_equal(theirs.levels[1].compute(), ours.levels[1].compute())
        np.testing.assert_array_equal(
            theirs.associated_image("label"), ours.associated_image("label")
        )
