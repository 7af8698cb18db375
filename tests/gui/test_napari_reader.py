"""The npe2 reader and sample data in a real napari viewer (needs an X server)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import CMU1, TCGA
from napari_mupd import SlideError
from napari_mupd.io import LevelArray
from napari_mupd.plugin._reader import napari_get_reader

pytestmark = pytest.mark.gui


def test_reader_opens_slide_as_rgb_multiscale(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open(str(CMU1), plugin="napari-mupd")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.rgb and layer.multiscale
    assert len(layer.data) == 2
    np.testing.assert_allclose(layer.scale, (0.499, 0.499))
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    assert layer.metadata["source"] == str(CMU1.resolve())
    assert layer.metadata["vendor"] == "aperio"
    assert layer.metadata["reader"].startswith("napari-mupd")
    assert layer.data[0][100, 200].tolist() == list(
        layer.metadata["slide"].read_region((200, 100), 0, (1, 1))[0, 0]
    )


def test_napari_slices_the_slides_level_arrays(make_napari_viewer):
    """napari's layer data are the slide's LevelArrays: its slices are read_region's pixels,
    the viewer reads level 0 through them when zoomed in, and draws those pixels."""
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(CMU1), plugin="napari-mupd")
    slide = layer.metadata["slide"]
    assert all(type(level) is LevelArray for level in layer.data)
    assert list(layer.data) == slide.level_arrays
    for level, (x, y, w, h) in [(0, (1234, 2001, 512, 300)), (1, (17, 600, 512, 512))]:
        ds = slide.downsamples[level]
        np.testing.assert_array_equal(
            np.asarray(layer.data[level][y : y + h, x : x + w]),
            slide.read_region((round(x * ds), round(y * ds)), level, (w, h)),
        )

    reads = []
    read_level = slide._read_level
    slide._read_level = lambda *a: reads.append(a) or read_level(*a)
    centre = (1500, 1100)  # level-0 (y, x)
    viewer.scene.camera.center = tuple(layer.data_to_world(centre))
    viewer.scene.camera.zoom = 1 / layer.scale[0]  # one screen pixel per level-0 pixel
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3]
    assert layer.data_level == 0
    assert any(r[0] == 0 for r in reads)  # napari sliced level 0 through the LevelArray
    h, w = shot.shape[:2]
    y0, x0 = centre[0] - h // 2, centre[1] - w // 2
    visible = slide.read_region((x0, y0), 0, (w, h))
    assert shot.std() > 10  # tissue, not an empty canvas
    for rows in (slice(0, h // 2), slice(h // 2, h)):  # each quadrant: drawn where it lies
        for cols in (slice(0, w // 2), slice(w // 2, w)):
            np.testing.assert_allclose(
                shot[rows, cols].mean((0, 1)), visible[rows, cols].mean((0, 1)), atol=3
            )


def test_slide_without_mpp_has_unit_scale(make_napari_viewer):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(TCGA), plugin="napari-mupd")
    np.testing.assert_allclose(layer.scale, (1, 1))
    assert [d.shape for d in layer.data][:2] == [(3567, 4443, 3), (1783, 2221, 3)]


def test_file_closed_when_layer_removed(make_napari_viewer):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(CMU1), plugin="napari-mupd")
    slide = layer.metadata["slide"]
    viewer.layers.remove(layer)
    assert slide.closed


def test_sample_data_opens(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-mupd", "cmu1-small-region")
    layer = viewer.layers[-1]
    assert layer.rgb and layer.multiscale
    assert layer.data[0].shape == (2967, 2220, 3)
    assert "CMU-1-Small-Region" in layer.metadata["source"]


def test_bad_file_raises_clear_error_and_viewer_survives(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    bad = tmp_path / "broken.svs"
    bad.write_text("not a slide")
    with pytest.raises(Exception) as info:  # napari wraps plugin errors
        viewer.open(str(bad), plugin="napari-mupd")
    chain = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    assert any(isinstance(e, SlideError) and "broken.svs" in str(e) for e in chain)
    (layer,) = viewer.open(str(CMU1), plugin="napari-mupd")  # still alive
    assert layer.multiscale


def test_get_reader_claims_only_known_paths(tmp_path):
    assert napari_get_reader("slide.svs") is not None
    assert napari_get_reader(["scan.ome.tif"]) is not None
    assert napari_get_reader("notes.txt") is None
    assert napari_get_reader(["a.svs", "b.svs"]) is None
    assert napari_get_reader(str(tmp_path)) is None  # a folder that is not zarr


def test_manifest_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-mupd")
    manifest.validate_imports()
    contributions = manifest.contributions
    assert {r.command for r in contributions.readers} == {
        "napari-mupd.get_reader",
        "napari-mupd.get_geojson_reader",
        "napari-mupd.get_visium_reader",
    }
    assert {w.display_name for w in contributions.widgets} == {
        "Virtual stain",
        "Generate tissue",
        "Compare stains",
        "Export tiles",
        "Channels",
    }
    assert {w.display_name for w in contributions.writers} == {"GeoJSON (QuPath)", "OME-Zarr"}


def test_multichannel_slide_opens_as_named_additive_channel_layers(make_napari_viewer, tmp_path):
    from multichannel_files import NAMES, planes, write_ome_tiff, write_qptiff

    data = planes(5)
    for path in (write_ome_tiff(tmp_path / "five.ome.tif", data),
                 write_qptiff(tmp_path / "five.qptiff", data)):  # fmt: skip
        viewer = make_napari_viewer()
        layers = viewer.open(str(path), plugin="napari-mupd")
        assert [layer.name for layer in layers] == NAMES
        colours = [(0, 0, 1), (0, 1, 0), (1, 0, 0), (1, 1, 1), (1, 1, 0)]
        for layer, data_c, colour in zip(layers, data, colours, strict=True):
            assert not layer.rgb and layer.multiscale and layer.blending == "additive"
            np.testing.assert_allclose(layer.colormap.colors[-1][:3], colour)
            np.testing.assert_allclose(layer.scale, (0.5, 0.5))
            assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
            lo, hi = layer.contrast_limits
            assert data_c.min() <= lo < hi <= data_c.max()
            assert layer.data[0].dtype == np.uint16 and layer.data[0].shape == (256, 320)
            np.testing.assert_array_equal(np.asarray(layer.data[1][:16, :16]), data_c[:32:2, :32:2])
            assert layer.metadata["slide"].multichannel
        viewer.layers.clear()
        assert layers[0].metadata["slide"].closed


def test_many_channels_open_the_first_and_the_channels_dock_picks_the_rest(
    make_napari_viewer, tmp_path
):
    """A 40-plex opens as 8 channel layers, not 40; the Channels dock lists all 40 with the
    shown ones ticked, and Apply adds the newly ticked and removes the unticked."""
    from multichannel_files import planes, write_ome_tiff
    from napari_mupd.plugin._reader import VISIBLE_CHANNELS
    from napari_mupd.plugin.widgets.channels import ChannelsWidget

    path = write_ome_tiff(tmp_path / "forty.ome.tif", planes(40, (64, 96)),
                          [f"M{i}" for i in range(40)], None, levels=1, tile=32)  # fmt: skip
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-mupd")
    assert [layer.name for layer in layers] == [f"M{i}" for i in range(VISIBLE_CHANNELS)]
    slide = layers[0].metadata["slide"]
    dock = ChannelsWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Channels")
    assert dock.slide.value is slide and len(dock.channels.choices) == 40
    assert list(dock.channels.value) == list(range(VISIBLE_CHANNELS))
    assert dock.status.value == f"{VISIBLE_CHANNELS} of 40 channels shown"
    dock.channels.value = [*range(1, VISIBLE_CHANNELS), 10, 39]  # M0 off, M10 and M39 on
    dock.apply.clicked.emit()
    names = [layer.name for layer in viewer.layers]
    assert "M0" not in names and {"M10", "M39"} <= set(names) and len(names) == 9
    m39 = viewer.layers["M39"]
    assert m39.blending == "additive" and m39.metadata["channel_index"] == 39
    np.testing.assert_array_equal(
        np.asarray(m39.data[0][:64, :96]), slide.read_region((0, 0), 0, (96, 64), channels=[39])[0]
    )
    assert not slide.closed


def test_channel_layer_reads_as_its_own_channel_in_the_docks(make_napari_viewer, tmp_path):
    """The docks read a channel layer as that channel, grey over its contrast window."""
    from multichannel_files import planes, write_ome_tiff
    from napari_mupd.plugin.layers import layer_slide

    data = planes(5)
    viewer = make_napari_viewer()
    layers = viewer.open(str(write_ome_tiff(tmp_path / "five.ome.tif", data)),
                         plugin="napari-mupd")  # fmt: skip
    cd3 = layers[2]
    slide = layer_slide(cd3)
    assert not slide.multichannel and slide.mpp == (0.5, 0.5)
    lo, hi = cd3.contrast_limits
    want = np.clip((data[2, :8, :8].astype(np.float32) - lo) / (hi - lo), 0, 1) * 255 + 0.5
    got = slide.read_region((0, 0), 0, (8, 8))
    np.testing.assert_array_equal(got[..., 0], want.astype(np.uint8))
    assert slide.thumbnail(64).shape[2] == 3


def test_channel_layers_draw_in_their_colours(make_napari_viewer, tmp_path):
    """On screen: DAPI (blue) where only DAPI is bright, CD8 (green) where only CD8 is,
    both added (cyan) where both are."""
    from multichannel_files import write_ome_tiff

    data = np.full((2, 128, 192), 100, np.uint16)
    data[0, :, :128] = 5000  # DAPI: left two thirds
    data[1, :, 64:] = 5000  # CD8: right two thirds
    path = write_ome_tiff(tmp_path / "two.ome.tif", data, ["DAPI", "CD8"],
                          [0x0000FFFF, 0x00FF00FF], levels=1, tile=64)  # fmt: skip
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(path), plugin="napari-mupd")
    for layer in layers:
        layer.contrast_limits = (100, 5000)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    row = shot[shot.shape[0] // 2]
    columns = np.flatnonzero(row.sum(axis=1) > 60)  # the image, not the black canvas
    left, right = columns[0], columns[-1]
    third = (right - left) / 3
    blue, cyan, green = (row[round(left + third * k)] for k in (0.5, 1.5, 2.5))
    assert blue[2] > 200 and blue[0] < 40 and blue[1] < 40
    assert cyan[1] > 200 and cyan[2] > 200 and cyan[0] < 40
    assert green[1] > 200 and green[0] < 40 and green[2] < 40
