"""The "Compare stains" dock widget: a real section against a virtual stain.

View the two side by side (a second canvas beside napari's, napari's multiple-viewer
pattern: its own ``ViewerModel`` and ``QtViewer``, cameras and dims linked both ways) or
overlaid (opacity, ``F`` flips the virtual layer); register the real serial section onto
the virtual / H&E side (landmark pairs on two Points layers, or automatically from the
haematoxylin); and measure them over tissue: agreement metrics, a 2-D histogram of marker
intensity and, for IHC, the labelling index (% DAB-positive nuclei) of each. Every
control applies at once: picking another layer changes the view without a toggle.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSlider, Label, PushButton, Table
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.components import ViewerModel
from napari.layers import Layer
from napari.qt import QtViewer
from napari.utils.key_bindings import KeyBinding
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QDockWidget,
    QMainWindow,
    QSizePolicy,
    QStyledItemDelegate,
    QVBoxLayout,
    QWidget,
)

from napari_mupd.engine.registration import register_auto, register_landmarks
from napari_mupd.errors import Cancelled, MuPDError, RegionError
from napari_mupd.eval.compare import READING_GUIDE, Comparison, compare_stains, format_score
from napari_mupd.eval.labelling import LabellingIndex, labelling_index
from napari_mupd.eval.multiplex import positive_cell_agreement, segment_fluorescent_nuclei
from napari_mupd.eval.nuclei import DEFAULT_MPP
from napari_mupd.io.channels import match_channel
from napari_mupd.plugin.layers import (
    layer_mpp,
    layer_thumbnail,
    read_on_grid,
    region_from_view,
    world_matrix,
)
from napari_mupd.plugin.widgets._controls import button_row, layer_menu
from napari_mupd.plugin.widgets._runner import Cancel, Report, TaskRunner

SIDE_BY_SIDE, OVERLAY = "side by side", "overlay"
AUTOMATIC, LANDMARKS = "automatic", "landmarks"
WHOLE_LAYER, FIELD_OF_VIEW = "whole virtual layer", "field of view"
#: Longer side (pixels) of the common-scale overviews registered automatically.
OVERVIEW_SIZE = 1024
FLIP_KEY = "F"
#: What the second canvas's copy takes over from the virtual layer when the user changes it.
_LOOK = ("colormap", "contrast_limits", "gamma")
#: Title of the dock that holds the second canvas in side by side mode.
CANVAS_DOCK = "Compare stains: virtual"


@dataclass(frozen=True)
class Measured:
    """What "Compute metrics" found: the comparison and, for IHC, the labelling index of
    the real and the virtual side over the same pixels."""

    comparison: Comparison
    labelling: tuple[LabellingIndex, LabellingIndex] | None = None
    region: str = WHOLE_LAYER
    mpp: float | None = None  # pixel size the nuclei were found at (None: not known)
    #: for a real channel of a fluorescence slide with DAPI: (share of cells called
    #: positive / negative alike, cells), nuclei found on the DAPI read on the same grid
    cells: tuple[float, int] | None = None


class CompareStainsWidget(Container):
    """Pick a real and a virtual image layer; view, register and measure them."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        # as a plugin dock the viewer comes wrapped in napari's PublicOnlyProxy, which
        # makes a new proxy per access: layers compared by identity need the real ones,
        # and Qt calls (splitting docks) the real widgets
        self.viewer = viewer = _unwrap(viewer)
        image, points = napari.layers.Image, napari.layers.Points
        self.real = layer_menu(
            viewer, image, label="real", nullable=True, tooltip="the real (serial) section"
        )
        self.virtual = layer_menu(
            viewer, image, label="virtual", nullable=True, tooltip="the virtual stain"
        )
        self.mode = ComboBox(choices=[OVERLAY, SIDE_BY_SIDE], value=OVERLAY, label="view")
        self.opacity = FloatSlider(value=0.5, min=0.0, max=1.0, label="virtual opacity")
        self.method = ComboBox(choices=[AUTOMATIC, LANDMARKS], value=AUTOMATIC, label="register")
        self.fixed_points = layer_menu(
            viewer, points, label="virtual landmarks", nullable=True,
            tooltip="Points on the virtual / H&E side; paired with the real ones by index",
        )  # fmt: skip
        self.moving_points = layer_menu(
            viewer, points, label="real landmarks", nullable=True,
            tooltip="Points on the real section, in the same order",
        )  # fmt: skip
        self.register = PushButton(text="Register")
        self.cancel_register = PushButton(text="Cancel")
        self.region = ComboBox(
            choices=[WHOLE_LAYER, FIELD_OF_VIEW], value=WHOLE_LAYER, label="measure over",
            tooltip="the whole virtual layer, or the part of it in the main canvas",
        )  # fmt: skip
        self.measure = PushButton(text="Compute metrics")
        self.cancel_measure = PushButton(text="Cancel")
        self.table = Table(value={"data": [], "index": [], "columns": ["value"]})
        self.guide = Label(value=READING_GUIDE)
        self.guide.native.setWordWrap(True)
        self.guide.native.setAlignment(Qt.AlignmentFlag.AlignLeft)
        self.guide.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.labelling = Table(value={"data": [], "index": [], "columns": ["real", "virtual"]})
        for table in (self.table, self.labelling):  # cells show our text, not "1.000e-02"
            table.native.setItemDelegate(QStyledItemDelegate(table.native))
        self.table.native.setMinimumHeight(180)  # six rows without scrolling
        self.labelling.native.setMinimumHeight(150)
        self.status = Label(value="")
        self.figure = Figure(figsize=(3.2, 3.0), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        super().__init__(
            widgets=[
                self.real,
                self.virtual,
                self.mode,
                self.opacity,
                self.method,
                self.fixed_points,
                self.moving_points,
                button_row(self.register, self.cancel_register),
                self.region,
                button_row(self.measure, self.cancel_measure),
                self.status,
                self.table,
                self.guide,
                self.labelling,
            ]
        )
        self.native.layout().addWidget(self.canvas)
        self.registering = TaskRunner(
            "Registration", self.register, self.cancel_register, self.status
        )
        self.measuring = TaskRunner(
            "Compare stains", self.measure, self.cancel_measure, self.status
        )
        self.comparison: Comparison | None = None
        self.measured: Measured | None = None
        self.side: SideCanvas | None = None  # the second canvas, in side by side mode
        self._saved: dict[int, tuple[Layer, bool, float]] = {}  # what the view changed
        self._pair_before: tuple[Layer | None, Layer | None] = (None, None)
        self._choosing = False
        self._choose_pair()
        self.real.changed.connect(partial(self._pair_changed, self.real))
        self.virtual.changed.connect(partial(self._pair_changed, self.virtual))
        viewer.layers.events.inserted.connect(self._layer_inserted)
        viewer.layers.events.removed.connect(self._layer_removed)
        self.mode.changed.connect(self.show_mode)
        self.opacity.changed.connect(self._set_opacity)
        self.method.changed.connect(self._show_method)
        self.register.changed.connect(self.start_registration)
        self.measure.changed.connect(self.start_metrics)
        self._show_method()
        self._watch = _Watch(self.native, self._on_event, _SHOWN | _LEFT)
        self.show_mode()

    def _on_event(self, event: QEvent) -> None:
        """``F`` flips only while this dock is shown; removing the dock (the widget is in
        none any more) also ends side by side: the second canvas goes."""
        kind = event.type()
        if kind != QEvent.Type.Show and _dock_of(self.native) is None:
            if self.mode.value == SIDE_BY_SIDE:
                self.mode.value = OVERLAY
            self._bind_flip(False)
        elif kind != QEvent.Type.ParentChange:
            self._bind_flip(kind == QEvent.Type.Show and self.mode.value == OVERLAY)

    # -- the pair ----------------------------------------------------------------------
    def _choose_pair(self) -> None:
        """Set the menus to `default_pair` of the viewer's layers."""
        real, virtual = default_pair(self.viewer.layers)
        self._choosing = True
        try:
            self.virtual.value, self.real.value = virtual, real
        finally:
            self._choosing = False
        self._pair_before = (self.real.value, self.virtual.value)

    def _pair_changed(self, menu: Any, _value: object = None) -> None:
        """A menu changed: picking the layer the other menu shows swaps the two (never
        the same layer twice); the view follows at once, old metrics are cleared."""
        if self._choosing:
            return
        real, virtual = self.real.value, self.virtual.value
        if real is not None and real is virtual:
            other = self.virtual if menu is self.real else self.real
            before = self._pair_before[0] if menu is self.real else self._pair_before[1]
            self._choosing = True
            try:
                keep = before is not real and before in self.viewer.layers
                other.value = before if keep else None
            finally:
                self._choosing = False
        pair = (self.real.value, self.virtual.value)
        if pair != self._pair_before:
            self._pair_before = pair
            self._clear_metrics()
            self.show_mode()

    def _layer_inserted(self, event: Any) -> None:
        """A new layer: complete an incomplete pair, or take a new virtual stain when the
        virtual menu shows a layer that is none."""
        layer, real, virtual = event.value, self.real.value, self.virtual.value
        if real is None or virtual is None:
            self._choose_pair()
            self.show_mode()
        elif (
            isinstance(layer, napari.layers.Image) and is_virtual(layer) and not is_virtual(virtual)
        ):
            self.virtual.value = layer  # a menu change: the view follows

    def _layer_removed(self, event: Any) -> None:
        self._saved.pop(id(event.value), None)
        real, virtual = self.real.value, self.virtual.value
        if real is None or virtual is None or real is virtual:
            self._choose_pair()
        self.show_mode()

    # -- viewing ---------------------------------------------------------------------
    def show_mode(self) -> None:
        """Show the pair as the view mode says: side by side (the real layer alone in the
        main canvas, the virtual one in a second canvas beside it, both opaque) or the
        overlay (the virtual layer over the real one at the chosen opacity)."""
        self._restore()
        real, virtual = self.real.value, self.virtual.value
        side = self.mode.value == SIDE_BY_SIDE
        self.opacity.visible = not side  # side by side: both opaque
        if real is None or virtual is None or real is virtual:
            self._close_side()
            self._bind_flip(not side)
            self.status.value = "pick a real and a virtual layer"
            return
        if side:
            for layer in self.viewer.layers:
                if isinstance(layer, napari.layers.Image) and layer is not real:
                    self._change(layer, visible=False)
            self._change(real, visible=True, opacity=1.0)
            if self.side is None:
                self.side = SideCanvas(self.viewer, _dock_of(self.native), self._side_closed)
            self.side.show(real, virtual)
        else:
            self._close_side()
            self._change(real, visible=True, opacity=1.0)
            self._change(virtual, visible=True, opacity=self.opacity.value)
            layers = self.viewer.layers
            if layers.index(virtual) < layers.index(real):  # the virtual stain goes on top
                layers.move(layers.index(virtual), layers.index(real) + 1)
        self._bind_flip(not side)

    def _change(self, layer: Layer, *, visible: bool, opacity: float | None = None) -> None:
        """Set a layer's visibility (and opacity), remembering what it was."""
        self._saved.setdefault(id(layer), (layer, layer.visible, layer.opacity))
        layer.visible = visible
        if opacity is not None:
            layer.opacity = opacity

    def _restore(self) -> None:
        """Give the layers the view changed their visibility and opacity back."""
        for layer, visible, opacity in self._saved.values():
            if layer in self.viewer.layers:
                layer.visible, layer.opacity = visible, opacity
        self._saved = {}

    def _close_side(self) -> None:
        side, self.side = self.side, None
        if side is not None:
            side.close()

    def _side_closed(self) -> None:
        """The user closed the second canvas's dock: back to the overlay."""
        self.side = None
        self.mode.value = OVERLAY

    def flip(self, _viewer: object = None) -> None:
        """Show or hide the virtual layer (key ``F`` in overlay mode)."""
        if self.virtual.value is not None:
            self.virtual.value.visible = not self.virtual.value.visible

    def _set_opacity(self, value: float) -> None:
        if self.virtual.value is not None and self.mode.value == OVERLAY:
            self.virtual.value.opacity = value

    def _bind_flip(self, bind: bool) -> None:
        bound = self.viewer.keymap.get(KeyBinding.from_str(FLIP_KEY))
        if bind and bound is None:
            self.viewer.bind_key(FLIP_KEY, self.flip)
        elif not bind and bound == self.flip:
            self.viewer.bind_key(FLIP_KEY, None)

    def _show_method(self) -> None:
        landmarks = self.method.value == LANDMARKS
        self.fixed_points.visible = self.moving_points.visible = landmarks

    def close(self) -> None:
        """Remove the second canvas, give the layers their look back, release ``F``."""
        self._close_side()
        self._restore()
        self._bind_flip(False)
        super().close()

    # -- registration ----------------------------------------------------------------
    def start_registration(self) -> None:
        """Move the real layer onto the virtual side: landmarks at once, else in a thread."""
        try:
            real, reference = self._pair(reference=True)
            if self.method.value == LANDMARKS:
                self._register_landmarks(real)
                return
        except MuPDError as exc:
            self.registering.fail(exc)
            return

        def job(report: Report, cancel: Cancel) -> tuple[np.ndarray, float]:
            fixed, fixed_world = _overview(reference, real)
            moving, moving_world = _overview(real, reference)
            report(1, 2)
            fit = register_auto(fixed, moving)
            correction = fixed_world @ _yx(fit.matrix) @ np.linalg.inv(moving_world)
            return correction, float(np.nan if fit.score is None else fit.score)

        self.status.value = f"registering {real.name!r} onto {reference.name!r} ..."
        self.registering.start(
            "Registration", job, lambda result: self._registered(real, result[0], result[1], "NCC")
        )

    def _register_landmarks(self, real: napari.layers.Image) -> None:
        fixed, moving = self.fixed_points.value, self.moving_points.value
        if fixed is None or moving is None:
            raise RegionError("pick the Points layers of the virtual and the real landmarks")
        # world (y, x) on both sides: the least-squares affine does not mind the order
        fit = register_landmarks(_world_points(moving), _world_points(fixed))
        moving.affine = fit.matrix @ moving.affine.affine_matrix
        self._registered(real, fit.matrix, float(np.median(fit.residuals)), "median residual")

    def _registered(
        self, real: napari.layers.Image, correction: np.ndarray, quality: float, what: str
    ) -> None:
        real.affine = correction @ real.affine.affine_matrix
        self.status.value = f"{real.name!r} registered ({what} {quality:.2f})"

    # -- metrics -----------------------------------------------------------------------
    def start_metrics(self) -> None:
        """Read the real layer on the virtual layer's grid (the whole layer or the part in
        view) and compare, over tissue, in a thread."""
        try:
            real, virtual = self._pair()
            view = (
                region_from_view(self.viewer, virtual)
                if self.region.value == FIELD_OF_VIEW
                else None
            )
        except MuPDError as exc:
            self.measuring.fail(exc)
            return
        level0_width = float(virtual.level_shapes[0][-1])
        mpp = layer_mpp(virtual)
        where = self.region.value

        def job(report: Report, cancel: Cancel) -> Measured:
            target, source, valid = read_on_grid(real, virtual)
            factor = target.shape[1] / level0_width  # grid pixels per level-0 pixel
            if view is not None:
                box = np.s_[
                    math.floor(view.y * factor) : math.ceil((view.y + view.height) * factor),
                    math.floor(view.x * factor) : math.ceil((view.x + view.width) * factor),
                ]
                target, source, valid = target[box], source[box], valid[box]
            report(1, 3)
            if cancel():
                raise Cancelled("cancelled")
            comparison = compare_stains(
                source, target, valid, markers=(_marker(virtual),), tissue_only=True
            )
            report(2, 3)
            if comparison.kind != "IHC":
                grid_mpp = float(np.mean(mpp)) / factor if mpp else None
                cells = _cell_agreement(real, virtual, source, target, valid, grid_mpp, view)
                return Measured(comparison, None, where, grid_mpp, cells)
            grid_mpp = float(np.mean(mpp)) / factor if mpp else None
            pair = (
                labelling_index(source, grid_mpp, mask=valid),
                labelling_index(target, grid_mpp, mask=valid),
            )
            return Measured(comparison, pair, where, grid_mpp)

        self.status.value = "computing metrics ..."
        structure = virtual.metadata.get("structure_r")

        def show(measured: Measured) -> None:
            self.show_metrics(measured, structure)

        self.measuring.start("Compare stains", job, show)

    def show_metrics(self, measured: Measured, structure: float | None = None) -> None:
        """Fill the tables and draw real against virtual marker intensity; ``structure`` is
        the virtual stain's structure r against its own source (from its provenance)."""
        self.measured = measured
        self.comparison = comparison = measured.comparison
        rows = comparison.formatted_rows()
        if measured.cells is not None:
            share, count = measured.cells
            rows += [("positive cells agree", format_score(share)), ("cells (DAPI)", str(count))]
        if structure is not None:
            rows = [("structure r (virtual vs its H&E)", format_score(float(structure))), *rows]
        self.table.value = {
            "data": [[text] for _, text in rows],
            "index": [name for name, _ in rows],
            "columns": ["value"],
        }
        marker = comparison.markers[0]
        if measured.labelling is None:
            self.labelling.value = {"data": [], "index": [], "columns": ["real", "virtual"]}
        else:
            real, virtual = measured.labelling
            self.labelling.value = {
                "data": [
                    [_percent(real), _percent(virtual)],
                    [str(real.positive), str(virtual.positive)],
                    [str(real.total), str(virtual.total)],
                    [_pixel_size(measured.mpp)] * 2,
                ],
                "index": [
                    f"{_marker_label(self.virtual.value) or 'Ki67'} labelling index",
                    "DAB-positive nuclei",
                    "nuclei",
                    "pixel size",
                ],
                "columns": ["real", "virtual"],
            }
        self.figure.clear()
        axes = self.figure.add_subplot()
        counts, real_edges, virtual_edges = comparison.histogram()
        extent = (real_edges[0], real_edges[-1], virtual_edges[0], virtual_edges[-1])
        axes.imshow(np.log1p(counts.T), origin="lower", extent=extent, aspect="auto",
                    cmap="magma")  # fmt: skip
        unit = " OD" if comparison.kind == "IHC" else ""
        axes.set(xlabel=f"real {marker}{unit}", ylabel=f"virtual {marker}{unit}",
                 title=f"r {format_score(comparison.pearson[0])}")  # fmt: skip
        self.canvas.draw_idle()
        self.status.value = f"{measured.region}: {comparison.summary()}"

    def _clear_metrics(self) -> None:
        """The pair changed: the numbers on show belong to the old one."""
        if self.measured is None:
            return
        self.measured = self.comparison = None
        self.table.value = {"data": [], "index": [], "columns": ["value"]}
        self.labelling.value = {"data": [], "index": [], "columns": ["real", "virtual"]}
        self.figure.clear()
        self.canvas.draw_idle()
        self.status.value = "new pair: compute metrics again"

    # -- helpers -----------------------------------------------------------------------
    def _pair(self, reference: bool = False) -> tuple[napari.layers.Image, napari.layers.Image]:
        """(real, virtual) layers; with ``reference`` the virtual layer's source image if
        it is in the viewer (a stain lies over its H&E: register onto the whole H&E)."""
        real, virtual = self.real.value, self.virtual.value
        if real is None or virtual is None:
            raise RegionError("pick a real and a virtual image layer")
        if reference:
            source = virtual.metadata.get("source_layer")
            virtual = next((la for la in self.viewer.layers if la.name == source), virtual)
        if real is virtual:
            raise RegionError(f"{real.name!r} is both the real and the virtual (or its source)")
        return real, virtual


class SideCanvas:
    """The second canvas of side by side mode, napari's multiple-viewer pattern: its own
    ``ViewerModel`` and ``QtViewer`` in a dock beside the main canvas, showing a copy of
    the virtual layer (full opacity) while the main canvas shows the real layer; a text
    overlay names each ("real: ...", "virtual: ..."). Cameras (centre, zoom) and dims
    follow each other both ways; a guard stops the echo. ``on_closed`` runs when the user
    closes the dock or napari's window closes."""

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        beside: QDockWidget | None,
        on_closed: Callable[[], None],
    ) -> None:
        self.viewer = viewer
        self.model = ViewerModel(title="virtual")
        self.qt_viewer = QtViewer(self.model)
        self.panel = QWidget()
        layout = QVBoxLayout(self.panel)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.qt_viewer)
        self.layer: Layer | None = None
        self._on_closed = on_closed
        self._closed = self._following = False
        text = _text_overlay(viewer)
        self._main_text = (text.visible, text.text, text.position, text.font_size)
        self.beside = beside  # the Compare dock: its width comes back at the end
        self._beside_width = beside.width() if beside is not None else 0
        self.dock = _unwrap(
            viewer.window.add_dock_widget(
                self.panel, name=CANVAS_DOCK, area="right", add_vertical_stretch=False
            )
        )
        _place(self.dock, beside)
        self.links: list[tuple[Any, Callable[..., None]]] = []  # (emitter, callback)
        self.layer_links: list[tuple[Any, Callable[..., None]]] = []  # the copy's look
        cameras = (_camera(viewer), _camera(self.model))
        for a, b in (cameras, cameras[::-1]):
            follow = partial(self._follow_camera, a, b)
            self._link(a.events.center, follow)
            self._link(a.events.zoom, follow)
        for a, b in ((viewer.dims, self.model.dims), (self.model.dims, viewer.dims)):
            self._link(a.events.current_step, partial(self._follow_dims, a, b))
        self._link(self.model.events.status, self._status)
        self._watch = _Watch(self.panel, self._panel_left, _LEFT)
        window = self.dock.parentWidget()
        self._window_watch = (
            _Watch(window, self._window_closed, frozenset({QEvent.Type.Close}))
            if window is not None
            else None
        )

    def show(self, real: Layer, virtual: Layer) -> None:
        """Show a copy of ``virtual`` (its data shared, fully opaque) and label both; the
        copy follows later changes of the virtual layer's look (colormap, contrast, gamma)."""
        self._unlink_layer()
        if self.layer is not None and self.layer in self.model.layers:
            self.model.layers.remove(self.layer)
        data, state, kind = virtual.as_layer_data_tuple()
        state = {**state, "visible": True, "opacity": 1.0, "name": virtual.name}
        self.layer = Layer.create(data, state, kind)
        self.model.layers.append(self.layer)
        for name in _LOOK:
            emitter = getattr(virtual.events, name, None)
            if emitter is not None:
                follow = partial(self._follow_look, virtual, self.layer, name)
                emitter.connect(follow)
                self.layer_links.append((emitter, follow))
        for model, label in ((self.viewer, f"real: {real.name}"),
                             (self.model, f"virtual: {virtual.name}")):  # fmt: skip
            text = _text_overlay(model)
            text.text, text.position, text.font_size, text.visible = label, "top_left", 10, True
        self._follow_dims(self.viewer.dims, self.model.dims)
        self._follow_camera(_camera(self.viewer), _camera(self.model))

    def close(self) -> None:
        """Unlink, remove the dock and close the canvas; the main canvas's text overlay
        is as it was."""
        if self._closed:
            return
        self._closed = True
        for emitter, callback in self.links:
            emitter.disconnect(callback)
        self.links = []
        self._unlink_layer()
        if self._window_watch is not None:
            self._window_watch.stop()
        text = _text_overlay(self.viewer)
        text.visible, text.text, text.position, text.font_size = self._main_text
        # the window may be gone already
        with contextlib.suppress(AttributeError, LookupError, RuntimeError):
            if self.panel.parentWidget() is not None:
                self.viewer.window.remove_dock_widget(self.dock)
            beside = self.beside
            window = beside.parentWidget() if beside is not None else None
            if beside is not None and isinstance(window, QMainWindow) and _docked(window, beside):
                horizontal = Qt.Orientation.Horizontal
                window.resizeDocks([beside], [self._beside_width], horizontal)
        self.model.layers.clear()
        self.layer = None
        self.qt_viewer.close()
        self.panel.deleteLater()

    def _unlink_layer(self) -> None:
        for emitter, callback in self.layer_links:
            emitter.disconnect(callback)
        self.layer_links = []

    @staticmethod
    def _follow_look(source: Layer, copy: Layer, name: str, _event: object = None) -> None:
        setattr(copy, name, getattr(source, name))

    def _link(self, emitter: Any, callback: Callable[..., None]) -> None:
        emitter.connect(callback)
        self.links.append((emitter, callback))

    def _follow_camera(self, source: Any, target: Any, _event: object = None) -> None:
        if self._following:
            return
        self._following = True
        try:
            target.center, target.zoom = source.center, source.zoom
        finally:
            self._following = False

    def _follow_dims(self, source: Any, target: Any, _event: object = None) -> None:
        if self._following or source.ndim != target.ndim:
            return
        self._following = True
        try:
            target.current_step = source.current_step
        finally:
            self._following = False

    def _status(self, event: Any) -> None:
        """The cursor over the second canvas reports in the main status bar."""
        self.viewer.status = event.value

    def _panel_left(self, _event: QEvent) -> None:
        """The dock's close button takes the panel out of it: leave side by side."""
        if not self._closed and self.panel.parentWidget() is None:
            self.close()
            self._on_closed()

    def _window_closed(self, _event: QEvent) -> None:
        """napari's window closes: the second canvas closes with it."""
        if not self._closed:
            self.close()
            self._on_closed()


def is_virtual(layer: Layer) -> bool:
    """A virtual stain: a layer `result_layers` made (it names its source), or any layer
    named "virtual"; an uncertainty map is none."""
    if "uncertainty" in layer.metadata:
        return False
    return "source_layer" in layer.metadata or "virtual" in layer.name.lower()


def default_pair(layers: Any) -> tuple[napari.layers.Image | None, napari.layers.Image | None]:
    """(real, virtual) to compare first, never the same layer twice.

    Virtual: the newest virtual stain (`is_virtual`), else the top image layer. Real: a
    non-virtual image layer, best one named after the virtual's marker ("Ki67", or a
    channel layer of a fluorescence slide whose channel is that marker by another name,
    e.g. "Ki-67"), then
    one of the same kind (RGB or not), then not the H&E the stain was made from; the
    newest among equals.
    """
    images = [la for la in layers if isinstance(la, napari.layers.Image)]
    images = [la for la in images if "uncertainty" not in la.metadata]
    virtuals = [la for la in images if is_virtual(la)]
    virtual = virtuals[-1] if virtuals else (images[-1] if len(images) > 1 else None)
    others = [la for la in images if la is not virtual]
    candidates = [la for la in others if not is_virtual(la)] or others
    if not candidates:
        return None, virtual
    marker = _marker_label(virtual).lower() if virtual is not None else ""
    source = virtual.metadata.get("source_layer") if virtual is not None else None

    def rank(item: tuple[int, Layer]) -> tuple[bool, bool, bool, int]:
        i, layer = item
        named = bool(marker) and (
            marker in layer.name.lower()
            or match_channel(marker, [str(layer.metadata.get("channel", layer.name))]) == 0
        )
        same_kind = virtual is None or layer.rgb == virtual.rgb  # brightfield with brightfield
        return named, same_kind, layer.name != source, i

    return max(enumerate(candidates), key=rank)[1], virtual


_SHOWN = frozenset({QEvent.Type.Show, QEvent.Type.Hide})
_LEFT = frozenset({QEvent.Type.ParentChange})  # e.g. out of its dock (check parentWidget)


class _Watch(QObject):
    """Calls ``callback(event)`` for the events of ``widget`` whose type is in ``kinds``."""

    def __init__(
        self, widget: QWidget, callback: Callable[[QEvent], None], kinds: frozenset[Any]
    ) -> None:
        super().__init__(widget)
        self.callback, self.kinds, self.widget = callback, kinds, widget
        widget.installEventFilter(self)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # the widget is gone
            self.widget.removeEventFilter(self)

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:
        # at interpreter exit Qt may still send events after Python cleared this object;
        # an exception here would abort the process (PyQt6)
        kinds = getattr(self, "kinds", ())
        if event is not None and event.type() in kinds:
            with contextlib.suppress(RuntimeError):  # a Qt object it touches is deleted
                self.callback(event)
        return False


def _unwrap(obj: Any) -> Any:
    """``obj`` without napari's ``PublicOnlyProxy`` around it, if it has one."""
    return getattr(obj, "__wrapped__", obj)


def _camera(model: Any) -> Any:
    """The camera model: ``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before."""
    return model.scene.camera if hasattr(model, "scene") else model.camera


def _text_overlay(model: Any) -> Any:
    """The canvas text overlay: ``canvas.overlays.text`` from napari 0.9, else
    ``text_overlay``."""
    overlays = getattr(getattr(model, "canvas", None), "overlays", None)
    return overlays.text if overlays is not None else model.text_overlay


def _dock_of(widget: QWidget) -> QDockWidget | None:
    """The dock widget that holds ``widget``, if any."""
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def _place(dock: QDockWidget, beside: QDockWidget | None) -> None:
    """Put the canvas dock next to the main canvas, left of the Compare dock, and share
    the width between the two canvases."""
    window = dock.parentWidget()
    if not isinstance(window, QMainWindow):
        return
    horizontal = Qt.Orientation.Horizontal
    if beside is not None and beside.parentWidget() is window and not beside.isFloating():
        window.splitDockWidget(dock, beside, horizontal)

    def halve() -> None:  # once the dock is laid out (before, Qt keeps it at its minimum)
        central = window.centralWidget()
        if central is not None and _docked(window, dock):
            width = (central.width() + dock.width()) // 2
            window.resizeDocks([dock], [width], horizontal)

    QTimer.singleShot(0, halve)


def _docked(window: QMainWindow, dock: QDockWidget | None) -> bool:
    """Whether ``dock`` is in ``window``'s dock layout (not removed, not floating)."""
    if dock is None or dock.parentWidget() is not window or dock.isFloating():
        return False
    return window.dockWidgetArea(dock) != Qt.DockWidgetArea.NoDockWidgetArea


def _yx(matrix_xy: np.ndarray) -> np.ndarray:
    """A 3 x 3 map on (x, y) as the same map on (y, x)."""
    swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    return swap @ matrix_xy @ swap


def _overview(layer: napari.layers.Image, other: napari.layers.Image) -> tuple[np.ndarray, ...]:
    """An overview of ``layer`` at the world pixel size that fits the larger of the two
    layers in `OVERVIEW_SIZE` px, and the map of its pixels (y, x) to world."""

    def extent(la: napari.layers.Image) -> float:
        scale = np.sqrt(abs(np.linalg.det(world_matrix(la)[:2, :2])))
        return float(max(la.level_shapes[0][-2:]) * scale)

    size = round(OVERVIEW_SIZE * extent(layer) / max(extent(layer), extent(other)))
    return layer_thumbnail(layer, max(size, 16))


def _world_points(points: napari.layers.Points) -> np.ndarray:
    """(N, 2) world (y, x) of a Points layer's points."""
    data = np.asarray(points.data, float)[:, -2:]
    return (world_matrix(points) @ np.c_[data, np.ones(len(data))].T)[:2].T


def _cell_agreement(
    real: napari.layers.Image,
    virtual: napari.layers.Image,
    source: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    mpp: float | None,
    view: Any,
) -> tuple[float, int] | None:
    """Positive-cell agreement of a real fluorescence channel and a virtual marker on
    the grid they were compared on, nuclei from the real slide's DAPI (None when the real
    layer is not such a channel or the slide has no nuclear channel)."""
    slide = real.metadata.get("slide")
    if real.metadata.get("channel") is None or getattr(slide, "nuclear_channel", None) is None:
        return None
    nuclear = slide.nuclear_channel
    dapi = napari.layers.Image(
        slide.channel_arrays(nuclear),
        multiscale=True,
        contrast_limits=slide.contrast_limits(nuclear),
        scale=real.scale,
        translate=real.translate,
        rotate=real.rotate,
        shear=real.shear,
        affine=real.affine,
        metadata={"slide": slide, "channel": slide.channels[nuclear].name},
    )
    _, nuclear_pixels, _ = read_on_grid(dapi, virtual)
    if view is not None:
        factor = nuclear_pixels.shape[1] / float(virtual.level_shapes[0][-1])
        nuclear_pixels = nuclear_pixels[
            math.floor(view.y * factor) : math.ceil((view.y + view.height) * factor),
            math.floor(view.x * factor) : math.ceil((view.x + view.width) * factor),
        ]
    nuclei = segment_fluorescent_nuclei(nuclear_pixels, mpp)
    share, _, _, count = positive_cell_agreement(source, target, nuclei, valid)
    return (share, count) if count else None


def _marker(layer: napari.layers.Image) -> str:
    """The marker a virtual layer shows (mIF layers name theirs), else the layer's name."""
    return str(layer.metadata.get("marker", layer.name))


def _marker_label(layer: Layer | None) -> str:
    """A short marker name: "Ki67" from target "IHC:Ki67" or an mIF layer's marker; ""
    when the layer does not say."""
    if layer is None:
        return ""
    if "marker" in layer.metadata:
        return str(layer.metadata["marker"])
    return str(layer.metadata.get("target", "")).split(":", 1)[-1]


def _pixel_size(mpp: float | None) -> str:
    """The pixel size nuclei were found at; unknown means `eval.nuclei.DEFAULT_MPP`."""
    return f"{mpp:.2g} um/px" if mpp else f"{DEFAULT_MPP} um/px?"


def _percent(result: LabellingIndex) -> str:
    return "no nuclei" if not result.total else f"{result.index:.0f} %"
