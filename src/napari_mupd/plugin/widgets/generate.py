"""The "Generate tissue" dock widget: synthetic H&E from a prompt, RNA and a reference."""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QTimer

from napari_mupd.engine.synthesis import mosaic, reference_tile, synthesize
from napari_mupd.errors import ConditionError, MuPDError
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.model.config import MuPDConfig
from napari_mupd.model.encoders.text import PromptWords
from napari_mupd.model.loading import using_pipeline
from napari_mupd.plugin.layers import layer_slide
from napari_mupd.plugin.widgets._controls import (
    ModelPicker,
    RegionPicker,
    WordsLine,
    button_row,
    layer_menu,
    typed_path,
)
from napari_mupd.plugin.widgets._runner import (
    Cancel,
    Report,
    TaskRunner,
    warm_up_model_libraries,
)

NO_RNA, RNA_FILE, RNA_SPOTS = "none", "file (.csv, .h5ad)", "selected Visium spots"
STACK, GRID = "stack", "grid"


class GenerateTissueWidget(Container):
    """Text, RNA (a file or spots picked on a Points layer) and a reference tile -> N tiles."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.prompt = LineEdit(label="prompt", tooltip="e.g. 'H&E, colon, adenocarcinoma'")
        self.words = WordsLine()  # the prompt's words the model does not know
        self.text_scale = FloatSpinBox(label="text guidance", value=1.0, min=0.0, max=20.0)
        self.rna_source = ComboBox(choices=[NO_RNA, RNA_FILE, RNA_SPOTS], value=NO_RNA, label="RNA")
        self.rna_file = FileEdit(
            mode=FileDialogMode.EXISTING_FILE, filter="*.csv *.h5ad", label="RNA file"
        )
        self.spots = layer_menu(
            viewer, napari.layers.Points, label="spots", nullable=True,
            tooltip="empty: the top layer of Visium spots",
        )  # fmt: skip
        self.legend = Label(value="")  # the spots' cluster colours
        self.rna_scale = FloatSpinBox(label="RNA guidance", value=1.0, min=0.0, max=20.0)
        self.use_reference = CheckBox(text="reference tile from a region", value=False)
        self.reference = RegionPicker(viewer, source_label="reference")
        self.image_scale = FloatSpinBox(label="image guidance", value=1.0, min=0.0, max=20.0)
        self.model = ModelPicker(kinds=("H&E",))
        self.n_tiles = SpinBox(label="tiles", value=4, min=1, max=64)
        self.layout_choice = ComboBox(choices=[STACK, GRID], value=GRID, label="show as")
        self.steps = SpinBox(
            label="steps (0: model's)", value=0, min=0, max=500, tooltip="0: the model's default"
        )
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.run = PushButton(text="Generate")
        self.cancel = PushButton(text="Cancel")
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.prompt,
                self.words,
                self.text_scale,
                self.rna_source,
                self.rna_file,
                self.spots,
                self.legend,
                self.rna_scale,
                self.use_reference,
                self.reference,
                self.image_scale,
                self.model,
                self.n_tiles,
                self.layout_choice,
                self.steps,
                self.seed,
                button_row(self.run, self.cancel),
                self.status,
            ]
        )
        self.runner = TaskRunner("Generate tissue", self.run, self.cancel, self.status)
        warm_up_model_libraries()
        self.run.changed.connect(self.start)
        for control in (self.rna_source, self.use_reference, self.prompt, self.spots):
            control.changed.connect(self._toggle)
        for event in ("inserted", "removed"):
            getattr(viewer.layers.events, event).connect(self._toggle)
        self._toggle()
        self.prompt.changed.connect(self._check_words)
        self.model.on_config.append(self._read_vocabulary)
        try:
            self._read_vocabulary(self.model.config())
        except MuPDError:  # the picker's label says what is wrong
            self._check_words()
        self.added: list[Any] = []

    def _read_vocabulary(self, config: MuPDConfig) -> None:
        """The chosen model's vocabulary, then the prompt checked against it."""
        self.words.use_config(config)
        self._check_words()

    def _check_words(self, *_: object) -> None:
        self.words.check(self.prompt.value)

    def _toggle(self, *_: object) -> None:
        """Show the controls of the chosen conditions only (a scale with its condition)."""
        spots = self.rna_source.value == RNA_SPOTS
        self.rna_file.visible = self.rna_source.value == RNA_FILE
        self.spots.visible = spots
        self.rna_scale.visible = self.rna_source.value != NO_RNA
        self.text_scale.visible = bool(self.prompt.value.strip())
        self.reference.visible = self.image_scale.visible = self.use_reference.value
        layer = self.spots_layer() if spots else None
        self.legend.value = cluster_legend(layer.metadata.get("clusters", {})) if layer else ""
        self.legend.visible = bool(self.legend.value)

    def spots_layer(self) -> napari.layers.Points | None:
        """The chosen Points layer, else the top one with Visium spots."""
        return self.spots.value or next(
            (
                la
                for la in reversed(self.viewer.layers)
                if isinstance(la, napari.layers.Points) and "visium" in la.metadata
            ),
            None,
        )

    def rna(self) -> Any:
        """The RNA condition: a CSV path, the mean of an .h5ad, or of the selected spots."""
        from napari_mupd.io.visium import spots_expression

        if self.rna_source.value == RNA_FILE:
            path = typed_path(self.rna_file)
            if path is None or not path.is_file():
                raise ConditionError(f"choose an RNA file (.csv or .h5ad); {path} is not a file")
            if path.suffix.lower() != ".h5ad":
                return str(path)
            return spots_expression(path)  # the mean of every spot
        if self.rna_source.value == RNA_SPOTS:
            points = self.spots_layer()
            if points is None or "visium" not in points.metadata:
                raise ConditionError("open Visium spots (.h5ad or a Space Ranger folder) first")
            if not points.selected_data:
                raise ConditionError(f"select spots on {points.name!r} (the select tool, 'S')")
            barcodes = points.features["barcode"].iloc[sorted(points.selected_data)].tolist()
            return spots_expression(points.metadata["visium"]["path"], barcodes)
        return None

    def start(self) -> None:
        """Gather the conditions on the GUI thread; sample in a worker thread."""
        try:
            text = self.prompt.value.strip() or None
            rna = self.rna()
            reference_args = None
            if self.use_reference.value:
                image = self.reference.image()
                reference_args = (layer_slide(image), self.reference.regions()[0])
            if text is None and rna is None and reference_args is None:
                raise ConditionError("give a prompt, an RNA profile or a reference region")
        except MuPDError as exc:
            self.runner.fail(exc)
            return
        model_path, device = self.model.path, self.model.device.value
        n, seed, steps = self.n_tiles.value, self.seed.value, self.steps.value or None
        scales = {
            "text": self.text_scale.value,
            "rna": self.rna_scale.value,
            "image": self.image_scale.value,
        }
        guidance: float | dict[str, float] = (
            1.0 if all(v == 1.0 for v in scales.values()) else scales
        )

        def job(report: Report, cancel: Cancel) -> tuple[np.ndarray, dict[str, Any]]:
            with using_pipeline(model_path, device) as pipe:
                reference = None
                if reference_args is not None:
                    slide, region = reference_args
                    config = pipe.config
                    reference = reference_tile(slide, region, config.resolution, config.mpp)
                images, meta = synthesize(
                    pipe,
                    text=text,
                    rna=rna,
                    reference=reference,
                    num_images=n,
                    seed=seed,
                    steps=steps,
                    guidance=guidance,
                    progress=report,
                    cancel=cancel,
                )
                meta["mpp"] = pipe.config.mpp
                words = pipe.check_words(text) if text else None
                meta["text_words"] = None if words is None else vars(words)
                if reference_args is not None:
                    meta["reference_region"] = vars(reference_args[1])
                return images, meta

        self.status.value = f"generating {n} tile(s) ..."
        self.runner.start(
            "Generate tissue",
            job,
            self.add_results,
            key=f"{model_path}|{device}|{n}|{steps}",
            unit="step",
        )

    def add_results(self, output: tuple[np.ndarray, dict[str, Any]]) -> None:
        """Show the tiles as a stack (one slider) or a grid, at the model's pixel size."""
        images, meta = output
        pixels = to_uint8(images)
        data = pixels if self.layout_choice.value == STACK else mosaic(pixels)
        label = meta.get("text") or ("RNA" if "rna" in meta.get("conditions", []) else "reference")
        # micrometres when the open layers use them (then tiles and slide share a scale)
        layers = self.viewer.layers
        physical = not layers or any(str(u) == "micrometer" for la in layers for u in la.units)
        mpp = meta["mpp"] if physical else 1.0
        right = float(layers.extent.world[1][-1]) + 20 * mpp if layers else 0.0
        unit = "micrometer" if physical else "pixel"
        spatial: dict[str, tuple[Any, ...]] = {
            "scale": (mpp, mpp),
            "translate": (0.0, right),
            "units": (unit, unit),
        }
        if data.ndim == 4:  # a stack: the first axis is the sample
            spatial = {
                "scale": (1.0, mpp, mpp),
                "translate": (0.0, 0.0, right),
                "units": ("pixel", unit, unit),
            }
        layer = self.viewer.add_image(
            data,
            rgb=True,
            name=f"synthetic H&E [{_short(label)}, seed {meta['seed']}]",
            metadata={"napari_mupd": "synthetic", **meta},
            **spatial,
        )
        if data.ndim == 4:  # the stack's slider says what it steps through
            self.viewer.dims.axis_labels = ("sample", *self.viewer.dims.axis_labels[-2:])
        # the view moves on the next turn of the event loop: napari's layer insertion and
        # the slide's re-slicing at the new zoom are two stalls, not one twice as long
        QTimer.singleShot(0, lambda: self._show(layer))
        self.added = [layer]
        self.status.value = f"{len(images)} tile(s), seed {meta['seed']}"
        words = meta.get("text_words")
        if words and (words["unknown"] or words["cut"]):  # the model's own answer
            found = PromptWords(**words)
            self.words.say(found)
            self.status.value += f"; {found.note()}"

    def _show(self, layer: napari.layers.Image) -> None:
        """Centre the view on the new tiles and zoom so that they fit (if still there)."""
        if layer not in self.viewer.layers:
            return
        (y0, x0), (y1, x1) = (np.asarray(e, float)[-2:] for e in layer.extent.world)
        camera = self.viewer.scene.camera
        camera.center = ((y0 + y1) / 2, (x0 + x1) / 2)
        height, width = self.viewer.canvas.size
        camera.zoom = 0.9 * min(height / (y1 - y0), width / (x1 - x0))


def _short(text: str, limit: int = 40) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with an ellipsis."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def cluster_legend(clusters: dict[str, Any], most: int = 12) -> str:
    """Rich text for a Visium reader's ``metadata["clusters"]``: a coloured square and
    name per cluster (the first ``most``), "" when there are none."""
    colours = clusters.get("colours", {})
    if not colours:
        return ""
    items = [f"<font color='{c}'>&#9632;</font>&nbsp;{n}" for n, c in list(colours.items())[:most]]
    more = f" (+{len(colours) - most})" if len(colours) > most else ""
    return f"{clusters.get('column', 'clusters')}: " + "  ".join(items) + more
