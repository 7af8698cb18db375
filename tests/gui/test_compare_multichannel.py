"""Compare stains with a real multichannel slide: the real channel found by marker name
(aliases too), registration on its nuclear channel against an H&E."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from multichannel_files import write_ome_tiff
from napari_mupd.engine.registration import register_auto
from napari_mupd.imaging.stains import compose_stains
from napari_mupd.plugin.layers import layer_thumbnail
from napari_mupd.plugin.widgets.compare import default_pair

sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))
from test_multiplex import cells_slide

pytestmark = pytest.mark.gui


def test_real_channel_found_by_marker_alias_and_registered_on_dapi(make_napari_viewer, tmp_path):
    planes, truth = cells_slide(shape=(384, 384))
    path = write_ome_tiff(tmp_path / "real.ome.tif", planes, ["DAPI", "CD8", "Ki-67"], None,
                          levels=2, mpp=1.0)  # fmt: skip
    viewer = make_napari_viewer()
    channels = viewer.open(str(path), plugin="napari-mupd")
    virtual = viewer.add_image(truth[..., 1], name="H&E [virtual Ki67]", scale=(1.0, 1.0),
                               metadata={"marker": "Ki67", "source_layer": "H&E"})  # fmt: skip
    real, picked = default_pair(viewer.layers)
    assert picked is virtual and real is channels[2]  # "Ki-67" for the virtual "Ki67"

    # the CD8 layer registers through the slide's DAPI, drawn as haematoxylin
    overview, _ = layer_thumbnail(channels[1], 384)
    assert overview.shape == (384, 384, 3)
    dapi = np.clip((planes[0].astype(np.float32) - 200) / 20000, 0, 1)
    shift = (6, 9)  # the H&E's nuclei sit 6 px lower and 9 px further right
    he_density = np.zeros((384, 384, 3), np.float32)
    he_density[..., 0] = np.roll(dapi, shift, axis=(0, 1)) * 0.9
    he_density[..., 1] = 0.15  # eosin
    found = register_auto(compose_stains(he_density), overview)
    np.testing.assert_allclose(found.matrix[:2, 2], (shift[1], shift[0]), atol=1.5)


def test_compute_metrics_on_a_real_channel_adds_cell_agreement(make_napari_viewer, qtbot, tmp_path):
    from napari_mupd.plugin.widgets.compare import CompareStainsWidget

    planes, truth = cells_slide()
    path = write_ome_tiff(tmp_path / "real.ome.tif", planes, ["DAPI", "CD8", "Ki-67"], None,
                          levels=2, mpp=1.0)  # fmt: skip
    viewer = make_napari_viewer()
    channels = viewer.open(str(path), plugin="napari-mupd")
    virtual = viewer.add_image(truth[..., 0] * 0.8, name="H&E [virtual CD8]", scale=(1.0, 1.0),
                               metadata={"marker": "CD8", "source_layer": "H&E"})  # fmt: skip
    widget = CompareStainsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.real.value is channels[1] and widget.virtual.value is virtual
    widget.measure.native.click()
    qtbot.waitUntil(lambda: not widget.measuring.running, timeout=60_000)
    rows = dict(zip(widget.table.value["index"], (r[0] for r in widget.table.value["data"]),
                    strict=True))  # fmt: skip
    assert float(rows["Pearson r (CD8)"]) > 0.9
    assert float(rows["SSIM"]) > 0.3  # the real channel in [0, 1], as the virtual one
    assert float(rows["positive cells agree"]) > 0.95 and int(rows["cells (DAPI)"]) >= 40
