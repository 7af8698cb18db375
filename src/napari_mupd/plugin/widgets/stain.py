"""The "Virtual stain" dock widget: stain a region of a slide layer, overlaid in place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import napari
from magicgui.widgets import Container, FloatSpinBox, Label, PushButton, SpinBox

from napari_mupd.engine.sampling import PipelineTileModel
from napari_mupd.engine.tissue import MIN_TISSUE, estimate_slide_mpp
from napari_mupd.engine.virtual_stain import StainResult, stain_region
from napari_mupd.errors import ConditionError, MuPDError, RegionError, SlideError
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
from napari_mupd.plugin.widgets._runner import (
    Cancel,
    Report,
    TaskRunner,
    warm_up_model_libraries,
)

#: The largest region stained into layers here (output pixels: the model's resolution, or
#: the slide's own for IHC, which is drawn on the slide's cells).
MAX_PIXELS = 8192 * 8192


class VirtualStainWidget(Container):
    """Pick a source layer, a region and a target; the stain lands over the region."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.region = RegionPicker(viewer)
        self.slide_mpp = FloatSpinBox(
            label="slide µm/px", value=0.0, min=0.0, max=100.0, step=0.001
        )  # the source's pixel size: from its file, or set here when the file does not say
        self.estimate = PushButton(
            text="estimate µm/px from nuclei",
            tooltip="measure the size of the nuclei in the most tissue-rich part of the "
            "source (within about 30-45 %: check the value)",
        )
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
                self.slide_mpp,
                self.estimate,
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
        warm_up_model_libraries()
        self.run.changed.connect(self.start)
        self.estimate.changed.connect(self.estimate_pixel_size)
        self.region.source.changed.connect(self.show_pixel_size)
        self.model.on_config.append(self.conditions.use_config)
        with contextlib.suppress(MuPDError):  # the model picker's label says what is wrong
            self.conditions.use_config(self.model.config())
        self.show_pixel_size()
        self.added: list[Any] = []  # layers added by the last run

    def show_pixel_size(self) -> None:
        """Show the source's pixel size; let the user give it when the file does not."""
        layer = self.region.source.value
        mpp = layer_mpp(layer) if layer is not None else None
        self.slide_mpp.enabled = self.estimate.enabled = mpp is None
        if mpp is not None:
            self.slide_mpp.value = round(mpp[0], 4)
            self.slide_mpp.tooltip = "from the slide's file"
        else:
            self.slide_mpp.value = 0.0
            self.slide_mpp.tooltip = (
                "the file does not say: set it (about 0.25 for a 40x scan, 0.5 for 20x); "
                "the model reads tissue at a fixed pixel size"
            )

    def estimate_pixel_size(self) -> None:
        """Fill 'slide µm/px' with an estimate from nuclear size (in the runner's thread)."""
        try:
            image = self.region.image()
        except MuPDError as exc:
            self.runner.fail(exc)
            return
        slide = layer_slide(image)

        def job(report: Report, cancel: Cancel) -> tuple[float, Region]:
            return estimate_slide_mpp(slide)

        def done(found: tuple[float, Region]) -> None:
            mpp, region = found
            self.slide_mpp.value = round(mpp, 3)
            self.status.value = (
                f"about {mpp:.2f} µm/px from the nuclei in {region.width} x {region.height} "
                f"px at {region.x},{region.y}: an estimate, check it"
            )

        self.runner.start("Estimate pixel size", job, done)

    def source_mpp(self, image: napari.layers.Image) -> float | None:
        """The pixel size the user gave for a source whose file has none (None: it has
        one); a `SlideError` when neither says, rather than a stain at a wrong scale."""
        if layer_mpp(image) is not None:
            return None
        if self.slide_mpp.value <= 0:
            raise SlideError(
                f"{image.name!r} does not say its pixel size: set 'slide µm/px' (about 0.25 "
                "for a 40x scan, 0.5 for 20x)"
            )
        return float(self.slide_mpp.value)

    def start(self) -> None:
        """Gather the inputs on the GUI thread and stain in a worker thread."""
        try:
            image, regions = self.region.image(), self.region.regions()
            given_mpp = self.source_mpp(image)
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
                if given_mpp is not None:
                    slide.mpp = (given_mpp, given_mpp)
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
            f"Virtual {target}",
            job,
            lambda results: self.add_results(results, image, target, given_mpp),
            key=f"{model_path}|{device}|{target}|{steps}|{guidance}",
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
        self,
        results: list[StainResult],
        image: napari.layers.Image,
        target: str,
        given_mpp: float | None = None,
    ) -> Iterator[None]:
        """Add the results over the source layer, one layer per turn of the event loop
        (the runner drives it: a stain with K markers and its uncertainty would otherwise
        stall the viewer K + 1 layer insertions long)."""
        self.added = []
        for result in results:
            for data, kwargs, _ in result_layers(result, image, target, given_mpp):
                layer = self.viewer.add_image(data, **kwargs)
                if not layer.rgb:  # marker intensities and uncertainty: what the colours mean
                    layer.colorbar.visible = True
                self.added.append(layer)
                yield
        shown = [layer for layer in self.added if layer.visible]
        if shown:  # the stain, not the hidden uncertainty, is the active layer
            self.viewer.layers.selection.active = shown[0]
        seconds = sum(r.metadata["seconds"] for r in results)
        scores = [r.metadata["structure_r"] for r in results if r.metadata.get("structure_r")]
        kept = f"; structure r {min(scores):.2f}" if scores else ""
        self.status.value = f"{target}: {len(results)} region(s) in {seconds:.1f} s{kept}"
