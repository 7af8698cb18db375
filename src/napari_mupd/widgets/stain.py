"""The "Virtual stain" dock widget: stain a region of a slide layer, overlaid in place."""

from __future__ import annotations

from typing import Any

import napari
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox, create_widget

from napari_mupd.engine.models import PipelineTileModel
from napari_mupd.engine.region import Region, StainResult, stain_region
from napari_mupd.errors import RegionError
from napari_mupd.layers import layer_slide, region_from_shape, region_from_view, result_layers
from napari_mupd.model.loading import load_pipeline
from napari_mupd.widgets._controls import Conditions, ModelPicker
from napari_mupd.widgets._runner import Cancel, Report, TaskRunner

FIELD_OF_VIEW = "field of view"
SHAPES = "shapes (selected, else all)"


class VirtualStainWidget(Container):
    """Pick a source layer, a region and a target; the stain lands over the region."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.source = create_widget(annotation=napari.layers.Image, label="source")
        self.region = ComboBox(choices=[SHAPES, FIELD_OF_VIEW], value=SHAPES, label="region")
        self.shapes = create_widget(
            annotation=napari.layers.Shapes,
            label="shapes",
            options={"nullable": True, "tooltip": "empty: the top Shapes layer"},
        )
        self.model = ModelPicker(kinds=("IHC", "mIF"))
        self.conditions = Conditions()
        self.steps = SpinBox(label="steps", value=0, min=0, max=500, tooltip="0: the model's")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.samples = SpinBox(
            label="samples", value=1, min=1, max=32, tooltip=">1: mean and uncertainty layer"
        )
        self.run = PushButton(text="Run")
        self.cancel = PushButton(text="Cancel")
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.source,
                self.region,
                self.shapes,
                self.model,
                self.conditions,
                self.steps,
                self.seed,
                self.samples,
                Container(widgets=[self.run, self.cancel], layout="horizontal", labels=False),
                self.status,
            ]
        )
        self.runner = TaskRunner(self.run, self.cancel)
        self.run.changed.connect(self.start)
        self.region.changed.connect(lambda: setattr(self.shapes, "enabled", self._use_shapes))
        self.added: list[Any] = []  # layers added by the last run

    @property
    def _use_shapes(self) -> bool:
        return self.region.value == SHAPES

    def regions(self) -> list[Region]:
        """The regions to stain, in level-0 pixels of the source layer."""
        image = self.source.value
        if image is None:
            raise RegionError("open a slide first (File > Open, or File > Open Sample)")
        if not self._use_shapes:
            return [region_from_view(self.viewer, image)]
        shapes = self.shapes.value or next(
            (la for la in reversed(self.viewer.layers) if isinstance(la, napari.layers.Shapes)),
            None,
        )
        if shapes is None or len(shapes.data) == 0:
            raise RegionError("draw a rectangle or polygon on a Shapes layer, or stain the view")
        chosen = sorted(shapes.selected_data) or range(len(shapes.data))
        return [region_from_shape(shapes, i, image) for i in chosen]

    def start(self) -> None:
        """Gather the inputs on the GUI thread and stain in a worker thread."""
        try:
            image, regions = self.source.value, self.regions()
            target = self.model.target.value
            if not target:
                raise RegionError("the model has no virtual staining target")
            text, rna = self.conditions.prompt(), self.conditions.rna_path()
        except Exception as exc:  # shown to the user; the viewer stays alive
            napari.utils.notifications.show_error(str(exc))
            return
        model_path, device = self.model.path, self.model.device.value
        steps, seed, samples = self.steps.value or None, self.seed.value, self.samples.value
        guidance = self.conditions.guidance()

        def job(report: Report, cancel: Cancel) -> list[StainResult]:
            pipe = load_pipeline(model_path, device)
            model = PipelineTileModel(
                pipe, target, text=text, rna=rna, steps=steps, guidance=guidance
            )
            slide = layer_slide(image)
            results = []
            for i, region in enumerate(regions):

                def progress(done: int, total: int, i: int = i) -> None:
                    report(i * total + done, len(regions) * total)

                results.append(
                    stain_region(
                        slide,
                        region,
                        model,
                        seed=seed,
                        samples=samples,
                        progress=progress,
                        cancel=cancel,
                    )
                )
            return results

        self.status.value = f"staining {len(regions)} region(s) with {target} ..."
        worker = self.runner.start(
            f"Virtual {target}", job, lambda results: self.show(results, target)
        )
        worker.errored.connect(lambda exc: setattr(self.status, "value", f"stopped: {exc}"))

    def show(self, results: list[StainResult], target: str) -> None:
        """Add the results over the source layer."""
        image = self.source.value
        self.added = []
        for result in results:
            for data, kwargs, _ in result_layers(result, image, target):
                self.added.append(self.viewer.add_image(data, **kwargs))
        seconds = sum(r.metadata["seconds"] for r in results)
        self.status.value = f"{target}: {len(results)} region(s) in {seconds:.1f} s"
