"""The npe2 reader and sample data in a real napari viewer (needs an X server)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import CMU1, TCGA
from napari_mupd import SlideError
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
    assert layer.data[0][100, 200].compute().tolist() == list(
        layer.metadata["slide"].read_region((200, 100), 0, (1, 1))[0, 0]
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
    }
    assert {w.display_name for w in contributions.writers} == {"GeoJSON (QuPath)", "OME-Zarr"}
