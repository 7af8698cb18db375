"""The "Export tiles" dock widget: training tiles of a region, written to a folder.

Augmentation controls add augmented copies of each tile (see `napari_mupd.engine.export`);
**Preview tiles** draws where the tiles will be cut as a Shapes layer over the slide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_info

from napari_mupd.engine.export import export_tiles, plan_export, tile_regions
from napari_mupd.errors import Cancelled, ConditionError, MuPDError, OutputError
from napari_mupd.imaging.augment import LIMITS, Augmentation
from napari_mupd.imaging.regions import Region
from napari_mupd.model.config import MuPDConfig
from napari_mupd.model.loading import using_pipeline
from napari_mupd.plugin.layers import layer_slide
from napari_mupd.plugin.widgets._controls import (
    FIELD_OF_VIEW,
    TILE_PREVIEW,
    WHOLE_IMAGE,
    ModelPicker,
    RegionPicker,
    button_row,
    typed_path,
)
from napari_mupd.plugin.widgets._runner import (
    Cancel,
    Report,
    TaskRunner,
    warm_up_model_libraries,
)

__all__ = ["FIELD_OF_VIEW", "PREVIEW", "WHOLE_IMAGE", "ExportTilesWidget", "tile_rectangles"]

#: Metadata key of a tile preview layer (its value: the source layer's name).
PREVIEW = TILE_PREVIEW


def tile_rectangles(regions: list[Region]) -> list[np.ndarray]:
    """Rectangles (4 corners, (y, x)) over level-0 regions in an image layer's data
    coordinates, where pixel k is centred at k: corners at ``k - 0.5``."""
    out = []
    for r in regions:
        y0, x0, y1, x1 = r.y - 0.5, r.x - 0.5, r.y + r.height - 0.5, r.x + r.width - 0.5
        out.append(np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float))
    return out


def _placement(image: napari.layers.Image) -> dict[str, Any]:
    """Transform keywords that put a 2-D layer on ``image``'s data coordinates (last two
    axes): scale, translate and units; rotate, shear and affine too for a 2-D image."""
    place: dict[str, Any] = {
        "scale": tuple(image.scale[-2:]),
        "translate": tuple(image.translate[-2:]),
        "units": tuple(str(u) for u in image.units[-2:]),
    }
    if image.ndim == 2:
        place |= {"rotate": image.rotate, "shear": image.shear,
                  "affine": image.affine.affine_matrix}  # fmt: skip
    return place


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
        self.augment = _AugmentControls()
        self.out = FileEdit(mode=FileDialogMode.EXISTING_DIRECTORY, label="output folder")
        self.preview = PushButton(text="Preview tiles")
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
                self.augment,
                self.out,
                button_row(self.preview, self.run, self.cancel),
                self.status,
            ]
        )
        self.runner = TaskRunner("Export tiles", self.run, self.cancel, self.status)
        warm_up_model_libraries()
        self.run.changed.connect(self.start)
        self.preview.changed.connect(self.show_preview)
        self.model.on_config.append(self._tile_size_of)
        self._tile_size_of(self.model.config())

    def _tile_size_of(self, config: MuPDConfig) -> None:
        """The model's own tile size by default, in the steps it accepts."""
        self.tile_size.step = 8 * config.patch_size
        self.tile_size.value = config.resolution

    def show_preview(self) -> None:
        """Draw the tiles the export would cut, as rectangles on a Shapes layer over the
        source (one per source layer, redrawn on each click)."""
        try:
            image = self.region.image()
            region = self.region.region()
            slide = layer_slide(image)
            config = self.model.config()
            t = self.tile_size.value
            grid, spots = plan_export(
                slide, region, tile_size=t, mpp=config.mpp, count=self.n_tiles.value,
                seed=self.seed.value,
            )  # fmt: skip
        except MuPDError as exc:
            self.runner.fail(exc, "Preview tiles")
            return
        regions = tile_regions(grid, spots, t)
        rectangles = tile_rectangles(regions)
        style = {
            "edge_width": max(1.0, regions[0].width / 32),
            "edge_color": "yellow",
            "face_color": "transparent",
        }
        active = self.viewer.layers.selection.active
        layer = next(
            (la for la in self.viewer.layers
             if isinstance(la, napari.layers.Shapes) and la.metadata.get(PREVIEW) == image.name),
            None,
        )  # fmt: skip
        if layer is None:
            layer = self.viewer.add_shapes(
                rectangles, shape_type="rectangle", name=f"{image.name} [tile preview]",
                metadata={PREVIEW: image.name}, **style, **_placement(image),
            )  # fmt: skip
        else:
            for key, value in _placement(image).items():
                setattr(layer, key, value)
            layer.selected_data = set(range(layer.nshapes))
            layer.remove_selected()
            layer.add_rectangles(rectangles, **style)
        layer.features = {"id": [spot.id for spot in spots]}
        if active is not None and active is not layer:
            self.viewer.layers.selection.active = active  # keep drawing where the user was
        size = f"{t} px tiles ({regions[0].width} px of the slide)"
        message = f"preview: {len(spots)} {size}"
        if len(spots) < self.n_tiles.value:
            message += f"; only {len(spots)} of the {self.n_tiles.value} asked for have tissue"
        self.status.value = message

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
            augment = self.augment.augmentation()
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
            "augment": augment,
            "copies": self.augment.copies.value,
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


class _AugmentControls(Container):
    """Augmented copies: flips, stain jitter, brightness / contrast, blur, zoom; all off
    at 0 (the geometric ones move every tile of a copy, the others the H&E only)."""

    def __init__(self) -> None:
        def amount(label: str, name: str, step: float, tooltip: str) -> FloatSpinBox:
            return FloatSpinBox(label=label, value=0.0, min=0.0, max=LIMITS[name], step=step,
                                tooltip=tooltip)  # fmt: skip

        self.flips = CheckBox(value=False, text="augment: random flips / quarter turns")
        self.stain_jitter = amount(
            "stain jitter", "stain_jitter", 0.01,
            "H, E and DAB densities x 1 +- S, shifted +- S std (0.05: mild); H&E tiles only",
        )  # fmt: skip
        self.brightness = amount(
            "brightness +-", "brightness", 0.01, "a shift of up to +- this of the full range"
        )
        self.contrast = amount("contrast +-", "contrast", 0.01, "contrast x 1 +- this")
        self.blur = amount("blur sigma (px)", "blur", 0.1, "Gaussian blur, sigma up to this")
        self.zoom = amount(
            "zoom +-", "zoom", 0.05, "zoom by a factor in [1/(1+Z), 1+Z], mirror-padded"
        )
        self.copies = SpinBox(
            label="augmented copies", value=1, min=1, max=1000,
            tooltip="copies <id>_aug<j> of each tile and its targets, when augmenting",
        )  # fmt: skip
        super().__init__(
            widgets=[self.flips, self.stain_jitter, self.brightness, self.contrast, self.blur,
                     self.zoom, self.copies],
            labels=True,
        )  # fmt: skip
        self.margins = (0, 0, 0, 0)

    def augmentation(self) -> Augmentation | None:
        """The chosen augmentation, or None when all of it is off."""
        augment = Augmentation(
            flips=self.flips.value,
            stain_jitter=self.stain_jitter.value,
            brightness=self.brightness.value,
            contrast=self.contrast.value,
            blur=self.blur.value,
            zoom=self.zoom.value,
        )
        return augment if augment.active else None
