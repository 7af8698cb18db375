"""The "Compare stains" dock in a real viewer: registration, metrics, view modes."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.key_bindings import KeyBinding
from PIL import Image

from helpers import LANDMARKS, SECTIONS
from napari_mupd.engine.registration import read_landmarks, register_landmarks
from napari_mupd.eval.compare import compare_stains
from napari_mupd.plugin.layers import read_on_grid, world_matrix
from napari_mupd.plugin.widgets.compare import LANDMARKS as BY_LANDMARKS
from napari_mupd.plugin.widgets.compare import (
    OVERLAY,
    SIDE_BY_SIDE,
    CompareStainsWidget,
    viewer_grid,
)

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


def test_metrics_table_and_plot_match_eval_compare(sections, qtbot):
    viewer, widget, (fixed, fixed_xy), (moving, moving_xy) = sections
    moving.affine = register_landmarks(_world(moving, moving_xy), _world(fixed, fixed_xy)).matrix
    widget.virtual.value = virtual = _virtual_crop(viewer, fixed)
    _click_and_wait(qtbot, widget.measure, widget.measuring)
    target, source, valid = read_on_grid(moving, virtual)
    assert target.shape == (256, 384, 3) and valid.all()
    expected = compare_stains(source, target, valid)
    table = widget.table.value
    assert list(table["index"]) == [name for name, _ in expected.rows()]
    np.testing.assert_allclose(
        [row[0] for row in table["data"]], [round(v, 4) for _, v in expected.rows()]
    )
    assert widget.comparison.n_pixels == valid.sum()
    (axes,) = widget.figure.axes
    assert axes.images and axes.get_title().startswith("r = ")


def test_view_modes_and_flip_key(sections):
    viewer, widget, (fixed, _), (moving, _) = sections
    other = viewer.add_image(np.zeros((10, 10)), name="other")
    widget.mode.value = SIDE_BY_SIDE
    grid = viewer_grid(viewer)
    assert grid.enabled
    assert fixed.visible and moving.visible and not other.visible
    assert grid.actual_shape(viewer.layers) == (1, 2)
    flip = KeyBinding.from_str("F")
    assert flip not in viewer.keymap
    widget.mode.value = OVERLAY
    assert not grid.enabled
    assert fixed.visible and moving.visible and other.visible
    assert viewer.layers.index(fixed) > viewer.layers.index(moving)  # virtual over real
    widget.opacity.value = 0.3
    assert fixed.opacity == pytest.approx(0.3)
    viewer.keymap[flip](viewer)
    assert not fixed.visible
    viewer.keymap[flip](viewer)
    assert fixed.visible
    widget.close()
    assert flip not in viewer.keymap


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
    widget.real.value = fixed
    widget.register.native.click()  # the same layer twice: a notification, no crash
    assert not widget.registering.running


def test_removing_the_dock_releases_the_flip_key(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    dock, _ = viewer.window.add_plugin_dock_widget("napari-mupd", "Compare stains")
    flip = KeyBinding.from_str("F")
    qtbot.waitUntil(dock.isVisible)
    assert flip in viewer.keymap
    viewer.window.remove_dock_widget(dock)
    assert flip not in viewer.keymap
