"""The "Virtual stain" dock widget: stain a region of a slide layer, overlaid in place."""

from __future__ import annotations

from typing import Any

import napari
from magicgui.widgets import Container, Label, PushButton, SpinBox

from napari_mupd.engine.sampling import PipelineTileModel
from napari_mupd.engine.tissue import MIN_TISSUE
from napari_mupd.engine.virtual_stain import StainResult, stain_region
from napari_mupd.errors import ConditionError, MuPDError, RegionError
from napari_mupd.eval.structure import structure_or_none
from napari_mupd.imaging.regions import Region
from napari_mupd.model.loading import using_pipeline
from napari_mupd.plugin.layers import layer_mpp, layer_slide, result_layers
from napari_mupd.plugin.widgets._controls import (
    Conditions,
    ModelPicker,
    RegionPicker,
    button_row,
)
from napari_mupd.plugin.widgets._runner import Cancel, Report, TaskRunner

#: The largest region stained into layers here (output pixels: the model's resolution, or
#: the slide's own for IHC, which is drawn on the slide's cells).
MAX_PIXELS = 8192 * 8192


class VirtualStainWidget(Container):
    """Pick a source layer, a region and a target; the stain lands over the region."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.region = RegionPicker(viewer)
        self.model = ModelPicker(kinds=("IHC", "mIF"))
        self.conditions = Conditions()
        self.steps = SpinBox(
            label="steps (0: model's)", value=0, min=0, max=500, tooltip="0: the model's default"
        )
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.samples = SpinBox(
            label="samples", value=1, min=1, max=32, tooltip=">1: mean and uncertainty layer"
        )
        self.run = PushButton(text="Run")
        self.cancel = PushButton(text="Cancel")
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.region,
                self.model,
                self.conditions,
                self.steps,
                self.seed,
                self.samples,
                button_row(self.run, self.cancel),
                self.status,
            ]
        )
        self.runner = TaskRunner("Virtual stain", self.run, self.cancel, self.status)
        self.run.changed.connect(self.start)
        self.added: list[Any] = []  # layers added by the last run

    def start(self) -> None:
        """Gather the inputs on the GUI thread and stain in a worker thread."""
        try:
            image, regions = self.region.image(), self.region.regions()
            target = self.model.target.value
            if not target:
                raise ConditionError("the model has no virtual staining target")
            text, rna = self.conditions.prompt(), self.conditions.rna_path()
            self.check_size(image, regions)
        except MuPDError as exc:
            self.runner.fail(exc)
            return
        model_path, device = self.model.path, self.model.device.value
        steps, seed, samples = self.steps.value or None, self.seed.value, self.samples.value
        guidance = self.conditions.guidance()

        def job(report: Report, cancel: Cancel) -> list[StainResult]:
            with using_pipeline(model_path, device) as pipe:
                model = PipelineTileModel(
                    pipe, target, text=text, rna=rna, steps=steps, guidance=guidance
                )
                slide = layer_slide(image)
                out_mpp = slide.mpp[0] if slide.mpp else None
                results = []
                for i, region in enumerate(regions):

                    def progress(done: int, total: int, i: int = i) -> None:
                        report(i * total + done, len(regions) * total)

                    result = stain_region(
                        slide,
                        region,
                        model,
                        seed=seed,
                        samples=samples,
                        output_mpp=out_mpp,
                        min_tissue=MIN_TISSUE,
                        progress=progress,
                        cancel=cancel,
                    )
                    if result.channels == ("R", "G", "B") and result.source is not None:
                        score = structure_or_none(result.rgb_uint8(), result.source)
                        result.metadata["structure_r"] = score
                    results.append(result)
                return results

        self.status.value = f"staining {len(regions)} region(s) with {target} ..."
        self.runner.start(
            f"Virtual {target}", job, lambda results: self.add_results(results, image, target)
        )

    def check_size(self, image: napari.layers.Image, regions: list[Region]) -> None:
        """Refuse regions too big to hold in memory as layers (whole slides: mupd stain)."""
        config = self.model.config()
        spec = config.resolve_target(self.model.target.value or config.targets[-1])
        mpp = config.mpp_for(spec)
        slide_mpp = layer_mpp(image)
        d = mpp / slide_mpp[0] if mpp and slide_mpp else 1.0
        if spec.kind == "IHC":  # drawn at the slide's own resolution
            d, mpp = 1.0, slide_mpp[0] if slide_mpp else mpp
        for region in regions:
            pixels = (region.width / d) * (region.height / d)
            if pixels > MAX_PIXELS:
                side = int(MAX_PIXELS**0.5)
                raise RegionError(
                    f"the region is {region.width / d:.0f} x {region.height / d:.0f} px at "
                    f"{mpp:g} µm/px; stain up to about {side} x {side} px here, zoom in "
                    "or draw a smaller shape, and use `mupd stain` for whole slides"
                )

    def add_results(
        self, results: list[StainResult], image: napari.layers.Image, target: str
    ) -> None:
        """Add the results over the source layer."""
        self.added = []
        for result in results:
            for data, kwargs, _ in result_layers(result, image, target):
                layer = self.viewer.add_image(data, **kwargs)
                if not layer.rgb:  # marker intensities and uncertainty: what the colours mean
                    layer.colorbar.visible = True
                self.added.append(layer)
        shown = [layer for layer in self.added if layer.visible]
        if shown:  # the stain, not the hidden uncertainty, is the active layer
            self.viewer.layers.selection.active = shown[0]
        seconds = sum(r.metadata["seconds"] for r in results)
        scores = [r.metadata["structure_r"] for r in results if r.metadata.get("structure_r")]
        kept = f"; structure r {min(scores):.2f}" if scores else ""
        self.status.value = f"{target}: {len(results)} region(s) in {seconds:.1f} s{kept}"
