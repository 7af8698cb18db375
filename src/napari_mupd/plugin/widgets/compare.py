"""The "Compare stains" dock widget: a real section against a virtual stain.

View the two side by side (napari's grid, one shared camera) or overlaid (opacity,
``F`` flips the virtual layer), register the real serial section onto the virtual /
H&E side (landmark pairs on two Points layers, or automatically from the
haematoxylin), and compute agreement metrics with a 2-D histogram of marker intensity.
"""

from __future__ import annotations

from collections.abc import Callable

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSlider, Label, PushButton, Table
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.components.grid import GridCanvas
from napari.utils.key_bindings import KeyBinding
from napari.utils.notifications import show_info
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget

from napari_mupd.engine.registration import register_auto, register_landmarks
from napari_mupd.errors import Cancelled, MuPDError, RegionError
from napari_mupd.eval.compare import Comparison, compare_stains
from napari_mupd.plugin.layers import layer_thumbnail, read_on_grid, world_matrix
from napari_mupd.plugin.widgets._controls import button_row, layer_menu
from napari_mupd.plugin.widgets._runner import Cancel, Report, TaskRunner

SIDE_BY_SIDE, OVERLAY = "side by side", "overlay"
AUTOMATIC, LANDMARKS = "automatic", "landmarks"
#: Longer side (pixels) of the common-scale overviews registered automatically.
OVERVIEW_SIZE = 1024
FLIP_KEY = "F"


class CompareStainsWidget(Container):
    """Pick a real and a virtual image layer; view, register and measure them."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        image, points = napari.layers.Image, napari.layers.Points
        self.real = layer_menu(viewer, image, label="real", tooltip="the real serial section")
        self.virtual = layer_menu(viewer, image, label="virtual", tooltip="the virtual stain")
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
        self.measure = PushButton(text="Compute metrics")
        self.cancel_measure = PushButton(text="Cancel")
        self.table = Table(value={"data": [], "index": [], "columns": ["value"]})
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
                button_row(self.measure, self.cancel_measure),
                self.status,
                self.table,
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
        self._hidden: list[napari.layers.Layer] = []  # layers side by side mode hid
        self.mode.changed.connect(self.show_mode)
        self.opacity.changed.connect(self._set_opacity)
        self.method.changed.connect(self._show_method)
        self.register.changed.connect(self.start_registration)
        self.measure.changed.connect(self.start_metrics)
        self._show_method()
        self._visibility = _OnVisibility(self.native, self._on_visible)
        self._bind_flip(True)

    def _on_visible(self, visible: bool) -> None:
        """``F`` flips only while this dock is shown (removing the dock releases it)."""
        self._bind_flip(visible and self.mode.value == OVERLAY)

    # -- viewing ---------------------------------------------------------------------
    def show_mode(self) -> None:
        """Apply the view mode: a two-cell grid of just the pair (the other layers hidden
        until the overlay comes back), or the overlay."""
        real, virtual = self.real.value, self.virtual.value
        if real is None or virtual is None:
            show_info("Compare stains: pick a real and a virtual layer")
            return
        side = self.mode.value == SIDE_BY_SIDE
        if side:
            others = [la for la in self.viewer.layers if la is not real and la is not virtual]
            self._hidden = [la for la in others if la.visible]
            for layer in [*self._hidden, real, virtual]:
                layer.visible = layer is real or layer is virtual
        else:
            for layer in [*self._hidden, real, virtual]:
                if layer in self.viewer.layers:
                    layer.visible = True
            self._hidden = []
            virtual.opacity = self.opacity.value
            layers = self.viewer.layers
            if layers.index(virtual) < layers.index(real):  # the virtual stain goes on top
                layers.move(layers.index(virtual), layers.index(real) + 1)
        viewer_grid(self.viewer).enabled = side
        self._bind_flip(not side)

    def flip(self, _viewer: object = None) -> None:
        """Show or hide the virtual layer (key ``F`` in overlay mode)."""
        if self.virtual.value is not None:
            self.virtual.value.visible = not self.virtual.value.visible

    def _set_opacity(self, value: float) -> None:
        if self.virtual.value is not None:
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
        """Release the ``F`` key, then close."""
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
        """Read the real layer on the virtual layer's grid and compare, in a thread."""
        try:
            real, virtual = self._pair()
        except MuPDError as exc:
            self.measuring.fail(exc)
            return

        def job(report: Report, cancel: Cancel) -> Comparison:
            target, source, valid = read_on_grid(real, virtual)
            report(1, 2)
            if cancel():
                raise Cancelled("cancelled")
            return compare_stains(source, target, valid, markers=(_marker(virtual),))

        self.status.value = "computing metrics ..."
        structure = virtual.metadata.get("structure_r")

        def show(comparison: Comparison) -> None:
            self.show_metrics(comparison, structure)

        self.measuring.start("Compare stains", job, show)

    def show_metrics(self, comparison: Comparison, structure: float | None = None) -> None:
        """Fill the table and draw real against virtual marker intensity; ``structure`` is
        the virtual stain's structure r against its own source (from its provenance)."""
        self.comparison = comparison
        rows = comparison.rows()
        if structure is not None:
            rows = [("structure r (virtual vs its H&E)", float(structure)), *rows]
        self.table.value = {
            "data": [[round(v, 4)] for _, v in rows],
            "index": [name for name, _ in rows],
            "columns": ["value"],
        }
        self.figure.clear()
        axes = self.figure.add_subplot()
        counts, real_edges, virtual_edges = comparison.histogram()
        extent = (real_edges[0], real_edges[-1], virtual_edges[0], virtual_edges[-1])
        axes.imshow(np.log1p(counts.T), origin="lower", extent=extent, aspect="auto",
                    cmap="magma")  # fmt: skip
        marker = comparison.markers[0]
        unit = " OD" if comparison.kind == "IHC" else ""
        axes.set(xlabel=f"real {marker}{unit}", ylabel=f"virtual {marker}{unit}",
                 title=f"r = {comparison.pearson[0]:.3f}")  # fmt: skip
        self.canvas.draw_idle()
        self.status.value = f"compared {comparison.n_pixels} pixels"

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


class _OnVisibility(QObject):
    """Calls ``callback(visible)`` when ``widget`` is shown or hidden."""

    def __init__(self, widget: QWidget, callback: Callable[[bool], None]) -> None:
        super().__init__(widget)
        self.callback = callback
        widget.installEventFilter(self)

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:
        if event is not None and event.type() in (QEvent.Type.Show, QEvent.Type.Hide):
            self.callback(event.type() == QEvent.Type.Show)
        return False


def viewer_grid(viewer: napari.viewer.Viewer) -> GridCanvas:
    """The viewer's grid model: ``viewer.canvas.grid`` from napari 0.9, ``viewer.grid`` before."""
    grid = getattr(viewer.canvas, "grid", None)
    return viewer.grid if grid is None else grid


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


def _marker(layer: napari.layers.Image) -> str:
    """The marker a virtual layer shows (mIF layers name theirs), else the layer's name."""
    return str(layer.metadata.get("marker", layer.name))
