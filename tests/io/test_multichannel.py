"""Multichannel (fluorescence / multiplex) slides: channels, (C, Y, X) levels, metadata
from OME-TIFF, QPTIFF, ImageJ, multi-page TIFF and OME-Zarr, and bad input."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import tifffile

from multichannel_files import (
    NAMES,
    planes,
    write_ome_tiff,
    write_ome_zarr_channels,
    write_qptiff,
)
from napari_mupd import SlideError
from napari_mupd.errors import MuPDError, RegionError
from napari_mupd.io import open_slide


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return planes(5)


@pytest.fixture(scope="module")
def ome(tmp_path_factory, data):
    return write_ome_tiff(tmp_path_factory.mktemp("mc") / "five.ome.tif", data)


def test_ome_tiff_subifd_pyramid_five_uint16_channels(ome, data):
    with open_slide(ome) as slide:
        assert slide.multichannel and slide.vendor == "ome-tiff"
        assert slide.channel_names == NAMES
        assert [c.color for c in slide.channels] == ["0000FF", "00FF00", "FF0000", "FFFFFF",
                                                    "FFFF00"]  # fmt: skip
        assert all(c.dtype == np.uint16 and c.value_range == (0, 65535) for c in slide.channels)
        assert slide.mpp == (0.5, 0.5)
        assert [a.shape for a in slide.level_arrays] == [(5, 256, 320), (5, 128, 160),
                                                         (5, 64, 80)]  # fmt: skip
        assert slide.level_info[0].tile == (64, 64)
        region = slide.read_region((64, 32), 0, (100, 50), channels=["dapi", "Ki67"])
        assert region.dtype == np.uint16 and region.shape == (2, 50, 100)
        np.testing.assert_array_equal(region, data[[0, 4], 32:82, 64:164])
        np.testing.assert_array_equal(slide.read_region((0, 0), 1, (160, 128)), data[:, ::2, ::2])
        np.testing.assert_array_equal(slide.level_arrays[2][1:3, 5:9, 7], data[1:3, 20:36:4, 28])
        one = slide.channel_arrays("CD3")
        assert one[0].shape == (256, 320) and one[0].dtype == np.uint16
        np.testing.assert_array_equal(one[1][10:20, ::3], data[2, 20:40:2, ::6])
        level = slide.levels[1]
        assert level.chunksize == (1, 64, 64) and level.dtype == np.uint16
        np.testing.assert_array_equal(level.compute(), data[:, ::2, ::2])
        # off the slide: zeros, as many channels as asked for
        edge = slide.read_region((300, 250), 0, (40, 10), channels=[1])
        assert edge.shape == (1, 10, 40) and not edge[:, 6:, :].any()
        thumb = slide.thumbnail(64)
        assert thumb.dtype == np.uint8 and thumb.shape == (51, 64, 3)


def test_channel_views_pickle_for_dask_workers(ome, data):
    with open_slide(ome) as slide:
        again = pickle.loads(pickle.dumps(slide.channel_arrays(3)[1]))
        np.testing.assert_array_equal(again[:8, :8], data[3, :16:2, :16:2])
        assert again.slide.channel_names == NAMES


def test_unknown_channel_names_the_file_and_the_channels(ome):
    with open_slide(ome) as slide, pytest.raises(RegionError, match=r"five\.ome\.tif.*CD8"):
        slide.read_region((0, 0), 0, (8, 8), channels=["CD99"])


def test_qptiff_names_colours_exposure_and_reduced_pages(tmp_path, data):
    path = write_qptiff(tmp_path / "panel.qptiff", data)
    with open_slide(path) as slide:
        assert slide.vendor == "qptiff" and slide.multichannel
        assert slide.channel_names == NAMES
        assert [c.color for c in slide.channels][:3] == ["0000FF", "00FF00", "FF0000"]
        assert slide.channels[0].exposure == 1200
        assert slide.metadata["native_levels"] == 2  # the reduced-resolution pages
        assert slide.metadata["associated_images"] == ["thumbnail"]
        assert slide.mpp == (0.5, 0.5)
        np.testing.assert_array_equal(
            slide.read_region((0, 0), 1, (160, 128), channels=["PanCK"]), data[3:4, ::2, ::2]
        )


def test_qptiff_channel_missing_from_its_xml_gets_a_default_name(tmp_path, data):
    names = ["DAPI", "CD8", None, "PanCK", "Ki67"]
    colours = ["0,0,255", "0,255,0", None, "255,255,255", "255,255,0"]
    path = write_qptiff(tmp_path / "gap.qptiff", data, names, colours)
    with open_slide(path) as slide:
        assert slide.channel_names == ["DAPI", "CD8", "C2", "PanCK", "Ki67"]
        assert slide.channels[2].color  # a default colour
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (5, 5), ["C2"]),
                                      data[2:3, :5, :5])  # fmt: skip


def test_qptiff_level_with_fewer_channels_is_dropped(tmp_path, data):
    """A reduced level with 3 of 5 channel pages is not a level of the pyramid: the slide
    opens with level 0 and computes its lower levels."""
    path = write_qptiff(tmp_path / "short.qptiff", data, reduced_counts=[3])
    with open_slide(path) as slide:
        assert slide.channel_names == NAMES
        assert slide.metadata["native_levels"] == 1
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (320, 256)), data)


def test_forty_channel_ome_tiff(tmp_path):
    data = planes(40, (64, 96))
    names = [f"M{i}" for i in range(40)]
    path = write_ome_tiff(tmp_path / "forty.ome.tif", data, names, None, levels=2, tile=32)
    with open_slide(path) as slide:
        assert len(slide.channels) == 40 and slide.channel_names == names
        assert len({c.color for c in slide.channels}) > 1
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (96, 64), ["m39"])[0],
                                      data[39])  # fmt: skip


def test_colliding_names_are_made_unique(tmp_path, data):
    names = ["DAPI", "CD8", "dapi", "CD8", "Ki67"]
    path = write_ome_tiff(tmp_path / "twice.ome.tif", data, names, None, levels=1)
    with open_slide(path) as slide:
        assert slide.channel_names == ["DAPI", "CD8", "dapi-2", "CD8-2", "Ki67"]
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (4, 4), ["CD8-2"])[0],
                                      data[3, :4, :4])  # fmt: skip


def test_all_zero_uint16_channel_opens_with_usable_contrast(tmp_path, data):
    zero = data.copy()
    zero[1] = 0
    path = write_ome_tiff(tmp_path / "zero.ome.tif", zero, levels=2)
    with open_slide(path) as slide:
        assert slide.contrast_limits("CD8") == (0.0, 1.0)
        lo, hi = slide.contrast_limits("DAPI")
        assert 0 <= lo < hi <= 65535
        assert not slide.read_region((0, 0), 0, (64, 64), ["CD8"]).any()
        assert slide.thumbnail(32).shape[2] == 3


def test_imagej_hyperstack_labels_ranges_and_luts(tmp_path, data):
    luts = [np.zeros((3, 256), np.uint8) for _ in range(5)]
    for i, lut in enumerate(luts):
        lut[i % 3] = np.arange(256)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        metadata={"axes": "CYX", "Labels": NAMES, "Ranges": (0, 2000) * 5, "LUTs": luts},
    )
    with open_slide(path) as slide:
        assert slide.channel_names == NAMES
        assert slide.channels[0].display_range == (0, 2000)
        assert slide.contrast_limits("CD8") == (0, 2000)
        assert [c.color for c in slide.channels][:3] == ["FF0000", "00FF00", "0000FF"]
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (320, 256)), data)


def test_generic_multipage_tiff_gets_c_names(tmp_path, data):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for plane in data:
            tif.write(plane, tile=(64, 64), metadata=None)
    with open_slide(path) as slide:
        assert slide.channel_names == ["C0", "C1", "C2", "C3", "C4"]
        np.testing.assert_array_equal(slide.read_region((3, 4), 0, (20, 10), [4])[0],
                                      data[4, 4:14, 3:23])  # fmt: skip


def test_ome_zarr_multichannel_with_omero(tmp_path, data):
    path = write_ome_zarr_channels(tmp_path / "mc.ome.zarr", data, NAMES)
    with open_slide(path) as slide:
        assert slide.vendor == "ome-zarr" and slide.channel_names == NAMES
        assert slide.channels[0].color == "0000FF"  # omero colour
        assert slide.channels[0].display_range == (0, 65535)  # omero window
        assert slide.mpp == (0.5, 0.5)
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (320, 256)), data)
        np.testing.assert_array_equal(
            slide.read_region((10, 20), 0, (30, 40), ["Ki67", "DAPI"]), data[[4, 0], 20:60, 10:40]
        )


def test_single_level_multichannel_gets_derived_levels(tmp_path):
    data = planes(2, (40, 2100))
    path = write_ome_tiff(tmp_path / "wide.ome.tif", data, ["E1", "E2"], None, levels=1, tile=64)
    with open_slide(path) as slide:
        assert slide.level_count == 2 and not slide.level_info[1].native
        got = slide.read_region((0, 0), 1, (1050, 20), ["E2"])[0]
        want = np.rint(data[1].reshape(20, 2, 1050, 2).mean(axis=(1, 3))).astype(np.uint16)
        np.testing.assert_array_equal(got, want)


def test_brightfield_slide_has_no_channels(generated):
    with open_slide(generated["svs"]) as slide:
        assert not slide.multichannel and slide.channels == ()
        assert slide.read_region((0, 0), 0, (4, 4)).shape == (4, 4, 3)
        with pytest.raises(RegionError, match="brightfield"):
            slide.read_region((0, 0), 0, (4, 4), channels=["DAPI"])


def test_errors_are_mupd_errors(tmp_path):
    assert issubclass(SlideError, MuPDError)


def test_ome_tiff_level_with_fewer_channels_is_dropped_and_said(tmp_path):
    data = planes(3, (128, 128))
    path = tmp_path / "mismatch.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(data, subifds=1, tile=(64, 64),
                  metadata={"axes": "CYX", "Channel": {"Name": ["A1", "A2", "A3"]}})  # fmt: skip
        tif.write(data[:2, ::2, ::2], subfiletype=1, tile=(64, 64), metadata=None)
    with open_slide(path) as slide:
        assert slide.channel_names == ["A1", "A2", "A3"]
        assert slide.metadata["native_levels"] == 1
        assert "level 1 has 2 channels, level 0 has 3" in slide.metadata["skipped_levels"][0]
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (128, 128)), data)


def test_mupd_info_lists_the_channels(ome, capsys):
    from napari_mupd.cli import main

    assert main(["info", str(ome)]) == 0
    out = capsys.readouterr().out
    assert "channels    5 (uint16)" in out
    assert "DAPI" in out and "#0000FF" in out and "Ki67" in out
    assert main(["info", str(ome), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "multichannel"
    assert [c["name"] for c in summary["channels"]] == NAMES


def test_virtual_staining_a_fluorescence_slide_says_why_not(ome):
    from napari_mupd.engine.virtual_stain import Grid
    from napari_mupd.imaging.regions import Region

    with open_slide(ome) as slide, pytest.raises(SlideError, match=r"multichannel.*DAPI, CD8"):
        Grid.for_region(slide, Region(0, 0, 64, 64), None)


def test_a_stack_of_rgb_pages_stays_brightfield(tmp_path):
    """Five RGB pages (a focal stack, say) are not five channels: the first page shows."""
    rgb = np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8)
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tif:
        for page in rgb:
            tif.write(page, photometric="rgb", tile=(32, 32), metadata=None)
    with open_slide(path) as slide:
        assert not slide.multichannel
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (64, 64)), rgb[0])
