"""The "Export tiles" dock widget in a real viewer, with a tiny model on the sample slide."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from helpers import CMU1
from napari_mupd.engine.export import plan_export, tile_regions
from napari_mupd.imaging.regions import Region
from napari_mupd.plugin.layers import layer_slide, region_from_view
from napari_mupd.plugin.widgets.export import (
    FIELD_OF_VIEW,
    PREVIEW,
    WHOLE_IMAGE,
    ExportTilesWidget,
)
from napari_mupd.train.datasets import PairedTileFolder

pytestmark = pytest.mark.gui


@pytest.fixture
def setup(make_napari_viewer, tiny_model_dir, tmp_path):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-mupd", "Export tiles")
    assert isinstance(widget, ExportTilesWidget)
    (slide_layer,) = viewer.open(str(CMU1), plugin="napari-mupd")
    widget.model.use_folder(str(tiny_model_dir))
    widget.out.value = str(tmp_path / "tiles")
    return viewer, slide_layer, widget, tmp_path / "tiles"


def add_rectangle(viewer, slide_layer, x, y, w, h):
    """A rectangle over level-0 pixels [x, x+w) x [y, y+h) (corners at k - 0.5)."""
    corners = np.array([[y - 0.5, x - 0.5], [y + h - 0.5, x + w - 0.5]])
    return viewer.add_shapes(
        [corners], shape_type="rectangle", scale=slide_layer.scale, units=slide_layer.units
    )


def rows(out):
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_menus_follow_the_viewer_and_the_model(setup):
    viewer, slide_layer, widget, _ = setup
    assert widget.region.source.value is slide_layer
    assert list(widget.model.target.choices) == ["H&E", "IHC:Ki67", "mIF:CD3,CD8"]
    assert widget.model.target.value == ["IHC:Ki67"] and widget.tile_size.value == 64
    shapes = viewer.add_shapes()
    assert shapes in widget.region.shapes.choices
    viewer.layers.remove(shapes)
    assert shapes not in widget.region.shapes.choices


def test_exports_the_tiles_of_a_rectangle(setup, qtbot):
    viewer, slide_layer, widget, out = setup
    x, y, w, h = 700, 1100, 1000, 1200
    add_rectangle(viewer, slide_layer, x, y, w, h)
    widget.model.target.value = ["IHC:Ki67", "H&E"]
    widget.n_tiles.value = 2
    widget.text.value = "tumor"
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    assert str(out / "manifest.csv") in widget.status.value
    table = rows(out)
    assert len(table) == 6
    assert all((out / r["path"]).is_file() for r in table)
    for r in table:
        assert x <= int(r["x"]) and int(r["x"]) + int(r["size"]) <= x + w
        assert y <= int(r["y"]) and int(r["y"]) + int(r["size"]) <= y + h
    assert {r["text"] for r in table if r["kind"] != "real"} == {"tumor"}
    assert len(PairedTileFolder(out / "real_he", out / "virtual_ki67", "IHC:Ki67", 64)) == 2


def test_cancel_stops_and_leaves_a_manifest(setup, qtbot):
    _, _, widget, out = setup
    widget.region.mode.value = WHOLE_IMAGE
    widget.n_tiles.value = 50
    widget.steps.value = 300  # slow enough to cancel
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: (out / "real_he").is_dir(), timeout=30_000)
    widget.cancel.clicked.emit()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30_000)
    assert "cancelled" in widget.status.value
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    written = {p.relative_to(out).as_posix() for p in out.glob("*/*")}
    assert {r["path"] for r in rows(out)} == written
    assert 1 <= len(written) < 100


def test_missing_inputs_are_reported(setup):
    _, _, widget, _ = setup
    widget.out.line_edit.value = ""  # the user cleared the field
    widget.run.clicked.emit()
    assert not widget.runner.running
    assert "output folder" in widget.status.value
    widget.out.value = "/tmp"
    widget.run.clicked.emit()  # no shape drawn
    assert not widget.runner.running
    assert "Shapes layer" in widget.status.value


def test_field_of_view_and_worker_errors(setup, qtbot, tmp_path):
    viewer, slide_layer, widget, out = setup
    viewer.scene.camera.center = (1700 * 0.499, 1200 * 0.499)
    viewer.scene.camera.zoom = 1.0
    view = region_from_view(viewer, slide_layer)
    widget.region.mode.value = FIELD_OF_VIEW
    widget.n_tiles.value = 1
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    real, stain = rows(out)
    assert stain["source"] == real["path"]
    x, y, size = int(real["x"]), int(real["y"]), int(real["size"])
    assert view.x <= x and x + size <= view.x + view.width
    assert view.y <= y and y + size <= view.y + view.height
    # a condition the model cannot use fails in the worker; the viewer lives on
    (tmp_path / "rna.csv").write_text("gene,value\nNOTAGENE,1.0\n")
    widget.rna.value = str(tmp_path / "rna.csv")
    widget.out.value = str(tmp_path / "other")
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    assert "none of the 8 genes" in widget.status.value
    assert not (tmp_path / "other").exists()


def preview_layers(viewer):
    return [la for la in viewer.layers if PREVIEW in la.metadata]


def test_preview_draws_the_planned_tiles_over_a_moved_slide(setup):
    viewer, slide_layer, widget, out = setup
    slide_layer.translate = (40.0, -25.0)  # the slide moved: the preview moves with it
    x, y, w, h = 700, 1100, 1000, 1200
    corners = np.array([[y - 0.5, x - 0.5], [y + h - 0.5, x + w - 0.5]])
    drawn = viewer.add_shapes(
        [corners], shape_type="rectangle", scale=slide_layer.scale,
        translate=slide_layer.translate, units=slide_layer.units,
    )  # fmt: skip
    widget.n_tiles.value, widget.seed.value = 3, 5
    widget.preview.clicked.emit()
    (layer,) = preview_layers(viewer)
    assert not out.exists()  # a preview writes nothing
    assert "preview: 3 64 px tiles" in widget.status.value
    assert viewer.layers.selection.active is drawn  # the user's layer stays active
    grid, spots = plan_export(layer_slide(slide_layer), Region(x, y, w, h), tile_size=64,
                              mpp=1.0, count=3, seed=5)  # fmt: skip
    regions = tile_regions(grid, spots, 64)
    assert list(layer.shape_type) == ["rectangle"] * 3
    assert list(layer.features["id"]) == [s.id for s in spots]
    for vertices, region in zip(layer.data, regions, strict=True):
        # in the slide's data coordinates: the tile's level-0 pixel corners
        ys, xs = vertices[:, 0], vertices[:, 1]
        assert (xs.min(), ys.min()) == (region.x - 0.5, region.y - 0.5)
        assert (xs.max(), ys.max()) == (
            region.x + region.width - 0.5,
            region.y + region.height - 0.5,
        )
        for v in vertices:  # and in the world, where the slide's pixels are
            np.testing.assert_allclose(layer.data_to_world(v), slide_layer.data_to_world(v))
    # the export's region is still the drawn rectangle, not a preview tile
    assert widget.region.region() == Region(x, y, w, h)  # the preview is no region
    # a second preview redraws the same layer
    widget.n_tiles.value = 2
    widget.preview.clicked.emit()
    assert preview_layers(viewer) == [layer] and len(layer.data) == 2


def test_preview_errors_are_reported(setup):
    viewer, slide_layer, widget, _ = setup
    widget.preview.clicked.emit()  # no shape drawn yet
    assert "Shapes layer" in widget.status.value and not preview_layers(viewer)
    add_rectangle(viewer, slide_layer, 0, 0, 400, 400)  # glass
    widget.preview.clicked.emit()
    assert "no 64 px tile in the region" in widget.status.value and not preview_layers(viewer)


def test_exports_augmented_copies(setup, qtbot):
    viewer, slide_layer, widget, out = setup
    add_rectangle(viewer, slide_layer, 700, 1100, 1000, 1200)
    widget.n_tiles.value = 1
    widget.augment.flips.value = True
    widget.augment.stain_jitter.value = 0.05
    widget.augment.copies.value = 2
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    table = rows(out)
    assert [(r["kind"], r["copy"]) for r in table] == [
        ("real", "0"), ("virtual", "0"), ("real", "1"), ("virtual", "1"), ("real", "2"),
        ("virtual", "2"),
    ]  # fmt: skip
    settings = json.loads((out / "manifest.json").read_text())["settings"]["augment"]
    assert settings == {"flips": True, "stain_jitter": 0.05, "brightness": 0.0,
                        "contrast": 0.0, "blur": 0.0, "zoom": 0.0, "copies": 2}  # fmt: skip
    assert set(json.loads(table[2]["augment"])) == {"rot90", "flip", "stain_scale", "stain_shift"}
    assert set(json.loads(table[3]["augment"])) == {"rot90", "flip"}
