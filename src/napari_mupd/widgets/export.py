"""The "Export tiles" dock widget: training tiles of a region, written to a folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    Select,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_error, show_info

from napari_mupd.engine.export import export_tiles
from napari_mupd.engine.models import Cancelled
from napari_mupd.engine.region import Region
from napari_mupd.errors import MuPDError, RegionError
from napari_mupd.layers import layer_slide, region_from_shape, region_from_view
from napari_mupd.model.config import MuPDConfig
from napari_mupd.model.loading import available_devices, using_pipeline
from napari_mupd.resources import resolve_model
from napari_mupd.widgets._runner import Cancel, Report, TaskRunner

SHAPE = "shape (selected, else first)"
FIELD_OF_VIEW = "field of view"
WHOLE_IMAGE = "whole image"


def _path(edit: FileEdit) -> Path | None:
    """The path typed or chosen in ``edit``; None when it is empty."""
    text = edit.line_edit.value.strip()
    return Path(text).expanduser() if text else None


class ExportTilesWidget(Container):
    """Real tiles of a region with their virtual stains and synthetic H&E, plus a manifest."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self._targets: list[str] = []
        self.source = create_widget(
            annotation=napari.layers.Image,
            label="source",
            options={"choices": self._layers(napari.layers.Image)},
        )
        self.region = ComboBox(
            choices=[SHAPE, FIELD_OF_VIEW, WHOLE_IMAGE], value=SHAPE, label="region"
        )
        self.shapes = create_widget(
            annotation=napari.layers.Shapes,
            label="shapes",
            options={
                "nullable": True,
                "tooltip": "empty: the top Shapes layer",
                "choices": self._layers(napari.layers.Shapes),
            },
        )
        self.model = FileEdit(mode="d", label="model", tooltip="empty: the bundled checkpoint")
        self.device = ComboBox(choices=available_devices(), value="auto", label="device")
        self.targets = Select(label="targets", choices=lambda _: self._targets)
        self.tile_size = SpinBox(label="tile size", value=256, min=16, max=4096, step=16)
        self.count = SpinBox(label="tiles", value=16, min=1, max=1_000_000)
        self.text = LineEdit(label="text", tooltip="optional prompt for the generated tiles")
        self.rna = FileEdit(
            mode="r", filter="*.csv", label="RNA", tooltip="optional CSV: gene,value per row"
        )
        self.reference = CheckBox(value=True, text="real tile as reference for synthetic H&E")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.steps = SpinBox(label="steps", value=0, min=0, max=1000, tooltip="0: the model's")
        self.out = FileEdit(mode="d", label="output folder")
        self.run = PushButton(text="Run")
        self.cancel = PushButton(text="Cancel")
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.source,
                self.region,
                self.shapes,
                self.model,
                self.device,
                self.targets,
                self.tile_size,
                self.count,
                self.text,
                self.rna,
                self.reference,
                self.seed,
                self.steps,
                self.out,
                Container(widgets=[self.run, self.cancel], layout="horizontal", labels=False),
                self.status,
            ]
        )
        self.runner = TaskRunner(self.run, self.cancel)
        self.run.changed.connect(self.start)
        self.model.changed.connect(self.read_model)
        self.region.changed.connect(
            lambda: setattr(self.shapes, "enabled", self.region.value == SHAPE)
        )
        for event in ("inserted", "removed", "reordered"):  # the layer menus follow the viewer
            getattr(self.viewer.layers.events, event).connect(self.reset_choices)
        self.read_model()

    def _layers(self, kind: type) -> Callable[[Any], list[napari.layers.Layer]]:
        """Choices of a layer menu: this viewer's layers of ``kind``, docked or not."""
        return lambda _: [layer for layer in self.viewer.layers if isinstance(layer, kind)]

    def read_model(self) -> None:
        """Offer the checkpoint's targets and tile size; say what is wrong otherwise."""
        path = _path(self.model)
        try:
            config = MuPDConfig.load(resolve_model(str(path) if path else None))
        except (MuPDError, OSError, ValueError) as exc:
            self._targets = []
            self.targets.reset_choices()
            self.status.value = f"<font color='orange'>{exc}</font>"
            return
        self._targets = list(config.targets)
        self.targets.reset_choices()
        virtual = [t for t in self._targets if config.resolve_target(t).uses_source]
        self.targets.value = virtual[:1] or self._targets[:1]
        self.tile_size.step = 8 * config.patch_size
        self.tile_size.value = config.resolution
        self.status.value = f"{config.name}: {config.resolution} px tiles at {config.mpp} µm/px"

    def _region(self, image: napari.layers.Image) -> Region | None:
        """The region to tile on ``image``'s level 0 (None: the whole image)."""
        if self.region.value == WHOLE_IMAGE:
            return None
        if self.region.value == FIELD_OF_VIEW:
            return region_from_view(self.viewer, image)
        shapes = self.shapes.value or next(
            (la for la in reversed(self.viewer.layers) if isinstance(la, napari.layers.Shapes)),
            None,
        )
        if shapes is None or not len(shapes.data):
            raise RegionError(
                "draw a rectangle or polygon on a Shapes layer, or pick another region"
            )
        index = min(shapes.selected_data) if shapes.selected_data else 0
        return region_from_shape(shapes, index, image)

    def start(self) -> None:
        """Check the inputs here, then export in a worker thread."""
        try:
            image = self.source.value
            if image is None:
                raise MuPDError("open a slide first: there is no image layer")
            if not self.targets.value:
                raise MuPDError("choose at least one target")
            out = _path(self.out)
            if out is None:
                raise MuPDError("choose an output folder")
            rna = _path(self.rna)
            if rna is not None and not rna.is_file():
                raise MuPDError(f"RNA file {rna} does not exist")
            region = self._region(image)
            slide = layer_slide(image)
        except MuPDError as exc:
            self.status.value = f"<font color='red'>{exc}</font>"
            show_error(f"Export tiles: {exc}")
            return
        model, device = _path(self.model), self.device.value
        options = {
            "tile_size": self.tile_size.value,
            "count": self.count.value,
            "targets": list(self.targets.value),
            "text": self.text.value.strip() or None,
            "rna": None if rna is None else str(rna),
            "use_reference": self.reference.value,
            "seed": self.seed.value,
            "steps": self.steps.value or None,
        }

        def job(report: Report, cancel: Cancel) -> tuple[Path, bool]:
            with using_pipeline(model, device) as pipe:
                try:
                    path = export_tiles(
                        slide, region, pipe, out, progress=report, cancel=cancel, **options
                    )
                except Cancelled:
                    return out / "manifest.csv", False
                return path, True

        self.status.value = f"exporting to {out} ..."
        worker = self.runner.start("Export tiles", job, self._done)
        worker.errored.connect(self._failed)

    def _done(self, result: tuple[Path, bool]) -> None:
        path, complete = result
        if complete:
            message = f"manifest written to {path}"
        else:
            message = f"cancelled; the manifest of the tiles written is {path} (rerun to resume)"
        self.status.value = message
        show_info(f"Export tiles: {message}")

    def _failed(self, exc: BaseException) -> None:
        self.status.value = f"<font color='red'>{exc}</font>"
