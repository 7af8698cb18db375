"""The "Export tiles" dock widget: training tiles of a region, written to a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_info

from napari_mupd.engine.export import export_tiles
from napari_mupd.errors import Cancelled, ConditionError, MuPDError, OutputError
from napari_mupd.model.config import MuPDConfig
from napari_mupd.model.loading import using_pipeline
from napari_mupd.plugin.layers import layer_slide
from napari_mupd.plugin.widgets._controls import (
    FIELD_OF_VIEW,
    WHOLE_IMAGE,
    ModelPicker,
    RegionPicker,
    button_row,
    typed_path,
)
from napari_mupd.plugin.widgets._runner import Cancel, Report, TaskRunner

__all__ = ["FIELD_OF_VIEW", "WHOLE_IMAGE", "ExportTilesWidget"]


class ExportTilesWidget(Container):
    """Real tiles of a region with their virtual stains and synthetic H&E, plus a manifest."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.region = RegionPicker(viewer, whole_image=True)
        self.model = ModelPicker(kinds=("H&E", "IHC", "mIF"), multiple=True)
        self.tile_size = SpinBox(label="tile size", value=256, min=16, max=4096, step=16)
        self.n_tiles = SpinBox(label="tiles", value=16, min=1, max=1_000_000)
        self.text = LineEdit(label="text", tooltip="optional prompt for the generated tiles")
        self.rna = FileEdit(
            mode=FileDialogMode.EXISTING_FILE,
            filter="*.csv",
            label="RNA",
            tooltip="optional CSV: gene,value per row",
        )
        # "&&": Qt shows a single "&" ("H&E" would read "HE", the "&" taken as a shortcut)
        self.reference = CheckBox(value=True, text="real tile as reference for synthetic H&&E")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.steps = SpinBox(
            label="steps (0: model's)", value=0, min=0, max=1000, tooltip="0: the model's default"
        )
        self.out = FileEdit(mode=FileDialogMode.EXISTING_DIRECTORY, label="output folder")
        self.run = PushButton(text="Run")
        self.cancel = PushButton(text="Cancel")
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.region,
                self.model,
                self.tile_size,
                self.n_tiles,
                self.text,
                self.rna,
                self.reference,
                self.seed,
                self.steps,
                self.out,
                button_row(self.run, self.cancel),
                self.status,
            ]
        )
        self.runner = TaskRunner("Export tiles", self.run, self.cancel, self.status)
        self.run.changed.connect(self.start)
        self.model.on_config.append(self._tile_size_of)
        self._tile_size_of(self.model.config())

    def _tile_size_of(self, config: MuPDConfig) -> None:
        """The model's own tile size by default, in the steps it accepts."""
        self.tile_size.step = 8 * config.patch_size
        self.tile_size.value = config.resolution

    def start(self) -> None:
        """Check the inputs here, then export in a worker thread."""
        try:
            image = self.region.image()
            if not self.model.target.value:
                raise ConditionError("choose at least one target")
            out = typed_path(self.out)
            if out is None:
                raise OutputError("choose an output folder")
            rna = typed_path(self.rna)
            if rna is not None and not rna.is_file():
                raise ConditionError(f"RNA file {rna} does not exist")
            region = self.region.region()
            slide = layer_slide(image)
        except MuPDError as exc:
            self.runner.fail(exc)
            return
        model, device = self.model.path, self.model.device.value
        options: dict[str, Any] = {
            "tile_size": self.tile_size.value,
            "count": self.n_tiles.value,
            "targets": list(self.model.target.value),
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
        self.runner.start("Export tiles", job, self._done)

    def _done(self, result: tuple[Path, bool]) -> None:
        path, complete = result
        if complete:
            message = f"manifest written to {path}"
        else:
            message = f"cancelled; the manifest of the tiles written is {path} (rerun to resume)"
        self.status.value = message
        show_info(f"Export tiles: {message}")
