"""The "Compare stains" dock in a real viewer: registration, metrics over tissue, the
labelling index, the two view modes (side by side: a second, linked canvas) and the
layer menus."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.key_bindings import KeyBinding
from PIL import Image
from qtpy.QtCore import QLocale

from helpers import LANDMARKS, SECTIONS
from napari_mupd.engine.registration import read_landmarks, register_landmarks
from napari_mupd.eval.compare import compare_stains
from napari_mupd.eval.labelling import labelling_index
from napari_mupd.imaging.tissue import tissue_mask
from napari_mupd.plugin.layers import read_on_grid, world_matrix
from napari_mupd.plugin.widgets.compare import (
    CANVAS_DOCK,
    FIELD_OF_VIEW,
    OVERLAY,
    SIDE_BY_SIDE,
    CompareStainsWidget,
    _camera,
    _text_overlay,
    default_pair,
)
from napari_mupd.plugin.widgets.compare import LANDMARKS as BY_LANDMARKS

pytestmark = pytest.mark.gui

NAME = "29-041-Izd2-w35-{}-les3"
PIXEL = 2.0  # micrometres per pixel given to both layers


def _section(stain: str) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(SECTIONS / f"{NAME.format(stain)}.jpg"))
    return image, read_landmarks(LANDMARKS / f"{NAME.format(stain)}.csv", scale=0.1)


def _world(layer, xy: np.ndarray) -> np.ndarray:
    """World (y, x) of pixel (x, y) positions of a layer."""
    return (world_matrix(layer) @ np.c_[xy[:, ::-1], np.ones(len(xy))].T)[:2].T


def _error_px(fixed, fixed_xy, moving, moving_xy) -> float:
    """Median landmark distance in world coordinates, in section pixels."""
    distance = np.linalg.norm(_world(moving, moving_xy) - _world(fixed, fixed_xy), axis=1)
    return float(np.median(distance) / PIXEL)


@pytest.fixture
def sections(make_napari_viewer, qtbot):
    """A viewer with the H&E (as the virtual side) and the Ki67 section, offset in world."""
    viewer = make_napari_viewer()
    he, he_xy = _section("He")
    ki67, ki67_xy = _section("Ki67-7")
    fixed = viewer.add_image(he, name="H&E", rgb=True, scale=(PIXEL, PIXEL), translate=(100, 50))
    moving = viewer.add_image(
        ki67, name="Ki67", rgb=True, scale=(PIXEL, PIXEL), translate=(-30, 70)
    )
    widget = CompareStainsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.real.value, widget.virtual.value = moving, fixed
    return viewer, widget, (fixed, he_xy), (moving, ki67_xy)


def _virtual_crop(viewer, he_layer):
    """A stand-in for a virtual stain: part of the H&E laid over it, naming its source."""
    y, x = 200, 150
    return viewer.add_image(
        he_layer.data[y : y + 256, x : x + 384],
        name="H&E [virtual]",
        rgb=True,
        scale=(PIXEL, PIXEL),
        translate=np.asarray(he_layer.translate) + PIXEL * np.array([y, x]),
        metadata={"source_layer": he_layer.name},
    )


def _click_and_wait(qtbot, button, runner) -> None:
    button.native.click()
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)


def test_automatic_registration_lines_up_landmarks(sections, qtbot):
    viewer, widget, (fixed, fixed_xy), (moving, moving_xy) = sections
    widget.virtual.value = _virtual_crop(viewer, fixed)  # registers onto its source, the H&E
    before = _error_px(fixed, fixed_xy, moving, moving_xy)
    _click_and_wait(qtbot, widget.register, widget.registering)
    after = _error_px(fixed, fixed_xy, moving, moving_xy)
    landmark_fit = np.median(register_landmarks(moving_xy, fixed_xy).residuals)  # 10.4 px
    # as in tests/engine/test_registration_auto.py: within 25 % of the landmark affine
    assert after < 1.25 * landmark_fit < before
    assert "registered" in widget.status.value


def test_landmark_registration_moves_the_layer_and_its_points(sections):
    viewer, widget, (fixed, fixed_xy), (moving, moving_xy) = sections
    fixed_points = viewer.add_points(_world(fixed, fixed_xy), name="H&E landmarks")
    moving_points = viewer.add_points(_world(moving, moving_xy), name="Ki67 landmarks")
    widget.method.value = BY_LANDMARKS
    widget.fixed_points.value, widget.moving_points.value = fixed_points, moving_points
    widget.register.native.click()  # landmarks: at once, on the GUI thread
    expected = np.median(register_landmarks(moving_xy, fixed_xy).residuals)
    assert _error_px(fixed, fixed_xy, moving, moving_xy) == pytest.approx(expected, rel=1e-6)
    world_points = (world_matrix(moving_points) @ np.c_[moving_points.data, np.ones(80)].T)[:2].T
    np.testing.assert_allclose(world_points, _world(moving, moving_xy), atol=1e-6)
    widget.register.native.click()  # again: the points moved along, (almost) nothing changes
    assert _error_px(fixed, fixed_xy, moving, moving_xy) == pytest.approx(expected, abs=0.1)


def test_metrics_over_tissue_formatted_with_the_labelling_index(sections, qtbot):
    viewer, widget, (fixed, fixed_xy), (moving, moving_xy) = sections
    moving.affine = register_landmarks(_world(moving, moving_xy), _world(fixed, fixed_xy)).matrix
    widget.virtual.value = virtual = _virtual_crop(viewer, fixed)
    assert widget.real.value is moving
    _click_and_wait(qtbot, widget.measure, widget.measuring)
    target, source, valid = read_on_grid(moving, virtual)
    assert target.shape == (256, 384, 3) and valid.all()
    expected = compare_stains(source, target, valid, tissue_only=True)
    # over tissue only: the crop holds alveolar air and glass, and they change the result
    tissue = tissue_mask(source)
    assert widget.comparison.tissue_only and widget.comparison.n_pixels == tissue.sum()
    assert 0.2 < tissue.mean() < 0.9
    everything = compare_stains(source, target, valid)
    assert abs(everything.pearson[0] - expected.pearson[0]) > 0.02
    np.testing.assert_allclose(widget.comparison.pearson, expected.pearson)
    table = widget.table.value
    assert list(table["index"]) == [name for name, _ in expected.formatted_rows()]
    texts = [row[0] for row in table["data"]]
    assert texts == [text for _, text in expected.formatted_rows()]
    assert texts[0] == f"{expected.pearson[0]:.2f}" and table["index"][-1] == "tissue pixels"
    assert all("e-" not in t and "e+" not in t for t in texts)
    delegate = widget.table.native.itemDelegate()  # and shown as they are: no "1.000e-02"
    assert [delegate.displayText(t, QLocale()) for t in texts] == texts
    assert widget.status.value.startswith("whole virtual layer: r ")
    assert "tissue pixels" in widget.status.value
    assert "r near 1" in widget.guide.value
    # the labelling index of both sides, over the same pixels, beside each other
    labelling = widget.labelling.value
    assert list(labelling["columns"]) == ["real", "virtual"]
    assert labelling["index"][0].endswith("labelling index")
    for column, image in enumerate((source, target)):
        result = labelling_index(image, None, mask=valid)
        assert result.total > 20
        assert [row[column] for row in labelling["data"]] == [
            f"{result.index:.0f} %", str(result.positive), str(result.total), "0.5 um/px?"
        ]  # fmt: skip
    (axes,) = widget.figure.axes
    assert axes.images and axes.get_title() == f"r {expected.pearson[0]:.2f}"
    # over the field of view: the part of the virtual layer in the canvas
    viewer.canvas.size = (300, 400)
    camera = _camera(viewer)
    camera.center = tuple(virtual.data_to_world((128, 96)))[-2:]
    camera.zoom = 2.0
    widget.region.value = FIELD_OF_VIEW
    _click_and_wait(qtbot, widget.measure, widget.measuring)
    assert widget.comparison.n_pixels < 0.5 * tissue.sum()
    assert widget.status.value.startswith("field of view: r ")
    # another pair: the old numbers go at once
    widget.real.value = fixed
    assert widget.table.value["data"] == [] and widget.comparison is None


def test_side_by_side_second_canvas_follows_both_ways(sections):
    viewer, widget, (fixed, _), (moving, _) = sections
    other = viewer.add_image(np.zeros((10, 10)), name="other")
    points = viewer.add_points([[5, 5]], name="landmarks")
    widget.mode.value = SIDE_BY_SIDE
    side = widget.side
    assert side is not None and viewer.window.dock_widgets[CANVAS_DOCK] is side.panel
    # the main canvas shows the real layer, the second one a copy of the virtual one
    assert moving.visible and not fixed.visible and not other.visible and points.visible
    (copy,) = side.model.layers
    assert copy.name == fixed.name and copy.data is fixed.data
    assert moving.opacity == copy.opacity == 1.0 and copy.visible
    assert widget.opacity.native.isHidden()  # no opacity to set: both opaque
    # each panel says what it shows
    real_text, virtual_text = _text_overlay(viewer), _text_overlay(side.model)
    assert real_text.visible and real_text.text == f"real: {moving.name}"
    assert virtual_text.visible and virtual_text.text == f"virtual: {fixed.name}"
    # cameras and dims follow each other, both ways
    main, second = _camera(viewer), _camera(side.model)
    main.zoom, main.center = 3.0, (0.0, 400.0, 500.0)
    assert second.zoom == 3.0 and tuple(second.center)[-2:] == (400.0, 500.0)
    second.zoom, second.center = 0.5, (0.0, 600.0, 300.0)
    assert main.zoom == 0.5 and tuple(main.center)[-2:] == (600.0, 300.0)
    viewer.dims.current_step = (40, 60)
    assert side.model.dims.current_step == (40, 60)
    side.model.dims.current_step = (30, 20)
    assert viewer.dims.current_step == (30, 20)
    # the copy follows the virtual layer's look when the user changes it
    fixed.contrast_limits = (10.0, 120.0)
    fixed.gamma = 0.7
    assert tuple(copy.contrast_limits) == (10.0, 120.0) and copy.gamma == pytest.approx(0.7)
    # a picker applies at once: the second canvas and the labels follow
    crop = _virtual_crop(viewer, fixed)
    widget.virtual.value = crop
    (copy,) = side.model.layers
    assert copy.name == crop.name and _text_overlay(side.model).text == f"virtual: {crop.name}"
    assert not crop.visible and moving.visible
    fixed.gamma = 1.3  # the old virtual layer no longer drives the copy
    assert copy.gamma != pytest.approx(1.3)
    widget.real.value = fixed
    assert fixed.visible and not moving.visible and real_text.text == f"real: {fixed.name}"
    assert main.zoom == second.zoom
    # back to the overlay: the second canvas goes, the layers look as before
    widget.mode.value = OVERLAY
    assert widget.side is None and CANVAS_DOCK not in viewer.window.dock_widgets
    assert not side.links and not side.layer_links and not side.model.layers
    assert not real_text.visible and not widget.opacity.native.isHidden()
    assert moving.visible and other.visible and fixed.visible and crop.visible
    assert crop.opacity == pytest.approx(0.5) and fixed.opacity == 1.0
    before = second.zoom
    main.zoom = 2.0
    assert second.zoom == before  # unlinked


def test_closing_the_canvas_dock_or_the_widget_leaves_side_by_side(sections):
    viewer, widget, (fixed, _), (moving, _) = sections
    widget.mode.value = SIDE_BY_SIDE
    viewer.window.remove_dock_widget(viewer.window.dock_widgets[CANVAS_DOCK])  # its x
    assert widget.mode.value == OVERLAY and widget.side is None
    widget.mode.value = SIDE_BY_SIDE
    side = widget.side
    widget.close()
    assert CANVAS_DOCK not in viewer.window.dock_widgets and not side.links
    assert fixed.visible and moving.visible and not _text_overlay(viewer).visible


def test_closing_napari_in_side_by_side_closes_the_second_canvas(sections):
    viewer, widget, _, _ = sections
    widget.mode.value = SIDE_BY_SIDE
    side = widget.side
    viewer.close()  # make_napari_viewer then checks that no QtViewer is left behind
    assert side._closed and not side.links and widget.side is None


def test_view_modes_and_flip_key(sections):
    viewer, widget, (fixed, _), (moving, _) = sections
    other = viewer.add_image(np.zeros((10, 10)), name="other")
    widget.mode.value = SIDE_BY_SIDE
    flip = KeyBinding.from_str("F")
    assert flip not in viewer.keymap
    widget.mode.value = OVERLAY
    assert fixed.visible and moving.visible and other.visible
    assert viewer.layers.index(fixed) > viewer.layers.index(moving)  # virtual over real
    widget.opacity.value = 0.3
    assert fixed.opacity == pytest.approx(0.3)
    viewer.keymap[flip](viewer)
    assert not fixed.visible
    viewer.keymap[flip](viewer)
    assert fixed.visible
    # overlay: a picker applies at once, the old virtual layer gets its opacity back
    crop = _virtual_crop(viewer, fixed)
    widget.virtual.value = crop
    assert crop.opacity == pytest.approx(0.3) and fixed.opacity == 1.0
    assert viewer.layers.index(crop) > viewer.layers.index(moving)
    widget.close()
    assert flip not in viewer.keymap


def test_pickers_default_to_a_real_and_a_virtual_layer_of_one_tissue(make_napari_viewer):
    viewer = make_napari_viewer()
    he, _ = _section("He")
    ki67, _ = _section("Ki67-7")
    source = viewer.add_image(he, name="H&E", rgb=True)
    real = viewer.add_image(ki67, name="Ki67 (real section)", rgb=True)
    viewer.add_image(ki67[:50, :50], name="CD31", rgb=True)
    meta = {"source_layer": "H&E", "target": "IHC:Ki67"}
    virtual = viewer.add_image(he[:200, :300], name="H&E [virtual Ki67, seed 0, 0,0]",
                               rgb=True, metadata=meta)  # fmt: skip
    viewer.add_image(he[:200, :300, 0], name="uncertainty", metadata={**meta, "uncertainty": "std"})
    viewer.layers.selection.active = source
    widget = CompareStainsWidget(viewer)
    assert widget.real.value is real and widget.virtual.value is virtual
    assert virtual.opacity == pytest.approx(0.5)  # the overlay shows at once
    # picking the other menu's layer swaps the two: never the same layer twice
    widget.real.value = virtual
    assert widget.real.value is virtual and widget.virtual.value is real
    # plain layers: the top one is the virtual side, another one the real side
    assert default_pair([source, real]) == (source, real)
    assert default_pair([source]) == (source, None)
    widget.close()


def test_layer_menus_follow_the_viewer_and_errors_are_notified(sections, qtbot):
    viewer, widget, (fixed, _), _ = sections
    noise = np.random.default_rng(0).integers(0, 256, (400, 500, 3), dtype=np.uint8)
    unrelated = viewer.add_image(noise, name="noise", rgb=True)
    assert unrelated in widget.real.choices
    widget.real.value = unrelated
    _click_and_wait(qtbot, widget.register, widget.registering)
    np.testing.assert_array_equal(unrelated.affine.affine_matrix, np.eye(3))  # refused
    assert "no reliable match" in widget.status.value
    viewer.layers.remove(unrelated)
    assert unrelated not in widget.real.choices
    assert widget.real.value is not None and widget.real.value is not widget.virtual.value
    # the real side is the H&E a virtual stain was made from: registering it onto itself
    # is refused with a notification, no crash
    widget.virtual.value = _virtual_crop(viewer, fixed)
    widget.real.value = fixed
    widget.register.native.click()
    assert not widget.registering.running
    assert "both the real and the virtual" in widget.status.value


def test_removing_the_dock_releases_the_flip_key_and_the_second_canvas(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((20, 30)), name="real")
    viewer.add_image(np.ones((20, 30)), name="virtual stain")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-mupd", "Compare stains")
    flip = KeyBinding.from_str("F")
    qtbot.waitUntil(dock.isVisible)
    assert flip in viewer.keymap
    assert (widget.real.value.name, widget.virtual.value.name) == ("real", "virtual stain")
    widget.mode.value = SIDE_BY_SIDE
    qtbot.waitUntil(widget.side.panel.isVisible)
    assert flip not in viewer.keymap
    widget.mode.value = OVERLAY
    assert flip in viewer.keymap
    widget.mode.value = SIDE_BY_SIDE
    viewer.window.remove_dock_widget(dock)
    assert flip not in viewer.keymap
    assert widget.side is None and CANVAS_DOCK not in viewer.window.dock_widgets
