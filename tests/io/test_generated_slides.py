"""open_slide on pyramids written here: SVS-like, OME-TIFF (SubIFDs, multi-series), OME-Zarr,
flat images, odd pixel layouts and a single-level image far too large for memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from helpers import halve, pattern, pyramid
from napari_mupd import open_slide
from napari_mupd.io import COARSEST_SIDE


def test_svs_like_matches_openslide(generated):
    openslide = pytest.importorskip("openslide")
    with open_slide(generated["svs"]) as slide:
        ref = openslide.OpenSlide(str(generated["svs"]))
        assert [i.shape[::-1] for i in slide.level_info] == list(ref.level_dimensions)
        assert slide.downsamples == pytest.approx(ref.level_downsamples)
        assert slide.mpp == (0.25, 0.25)
        assert slide.metadata["objective_power"] == 40
        for level, (w, h) in enumerate(ref.level_dimensions):
            expected = np.asarray(ref.read_region((0, 0), level, (w, h)).convert("RGB"))
            np.testing.assert_array_equal(slide.levels[level].compute(), expected)
        assert slide.associated_image("label").shape == (120, 300, 3)
        assert slide.associated_image("macro").shape == (200, 500, 3)


def test_read_region_level_coordinates(generated):
    """Location is in level-0 pixels at every level, as in OpenSlide."""
    with open_slide(generated["ome"]) as slide:
        truth = pyramid(pattern(1200, 1000), 3)
        for level, ds in enumerate((1, 2, 4)):
            x, y = 37 * ds, 81 * ds
            region = slide.read_region((x, y), level, (50, 60))
            np.testing.assert_array_equal(region, truth[level][81 : 81 + 60, 37 : 37 + 50])


def test_ome_tiff_subifds_are_a_pyramid(generated):
    with open_slide(generated["ome"]) as slide:
        assert slide.vendor == "ome-tiff"
        assert [i.shape for i in slide.level_info] == [(1200, 1000), (600, 500), (300, 250)]
        assert all(i.native for i in slide.level_info)
        assert slide.mpp == (0.5, 0.5)
        for level, truth in zip(slide.levels, pyramid(pattern(1200, 1000), 3), strict=True):
            np.testing.assert_array_equal(level.compute(), truth)


def test_ome_tiff_multi_series_picks_largest_and_series_option(tmp_path):
    path = tmp_path / "multi.ome.tif"
    small, large = pattern(100, 120), pattern(400, 300)[::-1]
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(small, photometric="rgb", metadata={"axes": "YXS", "Name": "overview"})
        tif.write(large, photometric="rgb", tile=(64, 64), metadata={"axes": "YXS", "Name": "scan"})
    with open_slide(path) as slide:
        np.testing.assert_array_equal(slide.levels[0].compute(), large)
    with open_slide(path, series=0) as slide:
        np.testing.assert_array_equal(slide.levels[0].compute(), small)


def test_single_level_gets_lazy_lower_levels(tmp_path):
    image = pattern(4500, 3000)
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb")
    with open_slide(path) as slide:
        shapes = [i.shape for i in slide.level_info]
        assert shapes == [(4500, 3000), (2250, 1500), (1125, 750)]
        assert [i.native for i in slide.level_info] == [True, False, False]
        np.testing.assert_array_equal(slide.levels[1].compute(), halve(image))
        quarter = image.reshape(1125, 4, 750, 4, 3).mean(axis=(1, 3)) + 0.5
        np.testing.assert_array_equal(slide.levels[2].compute(), quarter.astype(np.uint8))
        np.testing.assert_array_equal(
            slide.read_region((200, 400), 1, (77, 55)), halve(image)[200:255, 100:177]
        )


@pytest.mark.slow
def test_100k_single_level_image_stays_lazy(tmp_path):
    """A 100k x 100k single-level TIFF opens instantly and its coarsest level is
    computed chunk by chunk with bounded memory."""
    psutil = pytest.importorskip("psutil")
    side, tile = 100_000, 1024
    path = tmp_path / "huge.tif"
    tile_image = pattern(tile, tile)
    encoded = tifffile.TiffWriter  # the same pre-encoded JPEG tile everywhere
    import imagecodecs

    jpeg = imagecodecs.jpeg8_encode(tile_image, level=80)
    count = (-(-side // tile)) ** 2
    with encoded(path, bigtiff=True) as tif:
        tif.write(iter([jpeg] * count), shape=(side, side, 3), dtype=np.uint8, tile=(tile, tile),
                  compression="jpeg", photometric="rgb")  # fmt: skip
    with open_slide(path) as slide:
        assert slide.level_info[0].shape == (side, side)
        assert max(slide.level_info[-1].shape) <= COARSEST_SIDE
        assert slide.level_count == 7
        coarsest = slide.levels[-1]
        rss = psutil.Process().memory_info().rss
        chunk = coarsest.blocks[0, 0].compute()
        assert psutil.Process().memory_info().rss - rss < 400 * 2**20
        factor = round(slide.downsamples[-1])
        expected = tile_image.reshape(tile // factor, factor, tile // factor, factor, 3).mean(
            (1, 3)
        )
        n = tile // factor
        assert np.abs(chunk[:n, :n].astype(float) - expected).mean() < 3  # JPEG loss only


def _write_ome_zarr(path: Path, image: np.ndarray, version: str) -> None:
    """An NGFF multiscale (c, y, x) written with plain zarr."""
    levels = pyramid(image, 2)
    zarr_format = 2 if version == "0.4" else 3
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    for i, level in enumerate(levels):
        data = np.moveaxis(level, -1, 0)
        arr = root.create_array(str(i), shape=data.shape, dtype=data.dtype, chunks=(3, 64, 64))
        arr[:] = data
    multiscales = [{
        "version": version if version == "0.4" else None,
        "axes": [{"name": "c", "type": "channel"},
                 {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 0.5 * 2**i, 0.5 * 2**i]}]} for i in range(2)],
    }]  # fmt: skip
    if version == "0.4":
        root.attrs["multiscales"] = multiscales
    else:
        del multiscales[0]["version"]
        root.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr(tmp_path, version):
    image = pattern(300, 200)
    path = tmp_path / "image.ome.zarr"
    _write_ome_zarr(path, image, version)
    with open_slide(path) as slide:
        assert slide.vendor == "ome-zarr"
        assert slide.mpp == (0.5, 0.5)
        assert [i.shape for i in slide.level_info] == [(300, 200), (150, 100)]
        np.testing.assert_array_equal(slide.levels[0].compute(), image)
        np.testing.assert_array_equal(slide.read_region((20, 40), 1, (10, 10)),
                                      halve(image)[20:30, 10:20])  # fmt: skip


def test_png_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., :3] = pattern(40, 50)
    rgba[:, :25, 3] = 255  # left half opaque, right half transparent
    Image.fromarray(rgba).save(tmp_path / "tile.png")
    with open_slide(tmp_path / "tile.png") as slide:
        out = slide.read_region((0, 0), 0, (50, 40))
        np.testing.assert_array_equal(out[:, :25], rgba[:, :25, :3])
        assert (out[:, 25:] == 255).all()
        assert slide.mpp is None


def test_jpeg_and_grey_and_16bit_become_rgb(tmp_path):
    Image.fromarray(pattern(64, 80)).save(tmp_path / "a.jpg", quality=95)
    grey = (np.arange(64 * 80) % 256).astype(np.uint8).reshape(64, 80)
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    tifffile.imwrite(tmp_path / "deep.tif", pattern(30, 20).astype(np.uint16) * 257,
                     photometric="rgb")  # fmt: skip
    with open_slide(tmp_path / "a.jpg") as slide:
        assert slide.levels[0].shape == (64, 80, 3)
    with open_slide(tmp_path / "grey.tif") as slide:
        np.testing.assert_array_equal(slide.levels[0].compute(), np.repeat(grey[..., None], 3, 2))
    with open_slide(tmp_path / "deep.tif") as slide:
        np.testing.assert_array_equal(slide.levels[0].compute(), pattern(30, 20))


def test_planar_and_striped_layouts(tmp_path):
    image = pattern(300, 260)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(image, -1, 0), photometric="rgb",
                     planarconfig="separate", tile=(64, 64))  # fmt: skip
    tifffile.imwrite(tmp_path / "strips.tif", image, photometric="rgb", rowsperstrip=7,
                     compression="lzw")  # fmt: skip
    for name in ("planar.tif", "strips.tif"):
        with open_slide(tmp_path / name) as slide:
            np.testing.assert_array_equal(slide.levels[0].compute(), image)
            np.testing.assert_array_equal(slide.read_region((13, 17), 0, (100, 90)),
                                          image[17:107, 13:113])  # fmt: skip


def test_tiff_resolution_tags_give_mpp(tmp_path):
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, pattern(64, 64), photometric="rgb", resolution=(40000, 40000),
                     resolutionunit="CENTIMETER")  # fmt: skip
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx((0.25, 0.25))
    tifffile.imwrite(path, pattern(64, 64), photometric="rgb", resolution=(72, 72),
                     resolutionunit="INCH")  # fmt: skip
    with open_slide(path) as slide:
        assert slide.mpp is None  # 72 dpi is a screen default, not a scan resolution


def test_summary_json_round_trip(generated):
    from napari_mupd.cli.slides import slide_summary

    with open_slide(generated["svs"]) as slide:
        summary = json.loads(json.dumps(slide_summary(slide)))
    assert summary["levels"][1]["shape"] == [750, 1050]
