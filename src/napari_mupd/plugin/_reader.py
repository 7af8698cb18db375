"""npe2 reader: whole-slide images as RGB multiscale image layers, or one layer per
channel (additive, in the file's colours) for multichannel fluorescence slides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_mupd._version import __version__
from napari_mupd.io import Slide, open_slide
from napari_mupd.io._dicom import has_dicom
from napari_mupd.io.ome_zarr import is_zarr
from napari_mupd.plugin import LayerData

SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".mrxs", ".vms", ".vmu", ".svslide",
    ".png", ".jpg", ".jpeg", ".qptiff", ".dcm", ".czi",
)  # fmt: skip
#: A multichannel slide opens with layers for its first ``VISIBLE_CHANNELS`` channels
#: only; the Channels dock adds (or removes) the others.
VISIBLE_CHANNELS = 8


def single_path(path: str | list[str]) -> Path | None:
    """The one path napari asks a reader about (None for several at once)."""
    if isinstance(path, list):
        return Path(path[0]) if len(path) == 1 else None
    return Path(path)


def napari_get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Return :func:`read_slide` when ``path`` looks like something we read."""
    p = single_path(path)
    if p is None:
        return None
    if p.suffix.lower() in SLIDE_SUFFIXES or p.suffix.lower() == ".zarr" or is_zarr(p):
        return read_slide
    if p.is_dir() and has_dicom(p):  # a DICOM whole-slide image folder
        return read_slide
    return None


def read_slide(path: str | list[str]) -> list[LayerData]:
    """Open a slide and describe it as one RGB multiscale layer.

    Errors are :class:`~napari_mupd.errors.SlideError`; napari shows them as a
    notification.
    """
    slide = open_slide(single_path(path) or path[0])
    _close_with_layer(slide)
    if slide.multichannel:
        return channel_layer_data(slide)
    return [slide_layer_data(slide)]


def slide_layer_data(slide: Slide, name: str | None = None) -> LayerData:
    """Layer data for a slide: the pyramid, scale in micrometres and provenance.

    The pyramid is :attr:`Slide.level_arrays`: napari's slices read through the slide's
    parallel, cached tile decoder (what ``read_region`` uses), with no dask graph per slice.
    """
    kwargs: dict[str, Any] = {
        "name": name or slide.path.name.split(".")[0],
        "rgb": True,
        "multiscale": True,
        "contrast_limits": (0, 255),
        "metadata": {
            "slide": slide,
            "source": str(slide.path),
            "mpp": slide.mpp,
            "vendor": slide.vendor,
            "objective_power": slide.metadata.get("objective_power"),
            "associated_images": slide.metadata.get("associated_images", []),
            "reader": f"napari-mupd {__version__}",
        },
    }
    if slide.mpp is not None:
        kwargs["scale"] = slide.mpp
        kwargs["units"] = ("micrometer", "micrometer")
    if any(slide.metadata.get("origin", (0, 0))):  # e.g. a stained region written as OME-Zarr
        kwargs["translate"] = slide.metadata["origin"]
    return (slide.level_arrays, kwargs, "image")


def channel_layer_data(slide: Slide) -> list[LayerData]:
    """Layers for the first :data:`VISIBLE_CHANNELS` channels of a multichannel slide
    (`channel_layer`); the Channels dock adds the others."""
    return [channel_layer(slide, channel.index) for channel in slide.channels[:VISIBLE_CHANNELS]]


def channel_layer(slide: Slide, index: int) -> LayerData:
    """One channel as a layer: named after the channel, additive blending, the channel's
    colour as colormap, contrast limits from the file (else a low-resolution
    percentile), scale in micrometres."""
    from napari.utils import Colormap

    channel = slide.channels[index]
    _, kwargs, kind = slide_layer_data(slide, name=channel.name)
    r, g, b = channel.rgb
    kwargs.update(
        rgb=False,
        blending="additive",
        colormap=Colormap(
            [[0.0, 0.0, 0.0, 1.0], [r, g, b, 1.0]], name=f"{channel.name} #{channel.color}"
        ),
        contrast_limits=slide.contrast_limits(channel.index),
    )
    kwargs["metadata"] = {
        **kwargs["metadata"],
        "channel": channel.name,
        "channel_index": channel.index,
        "channel_info": channel.as_dict(),
    }
    return (slide.channel_arrays(channel.index), kwargs, kind)


def _close_with_layer(slide: Slide) -> None:
    """Close the slide's file when the last layer showing it leaves the viewer."""
    import napari

    viewer = napari.current_viewer()
    if viewer is None:
        return  # without a viewer the slide is closed when garbage collected

    def on_removed(event: Any) -> None:
        layers = viewer.layers
        if event.value.metadata.get("slide") is not slide:
            return
        if any(layer.metadata.get("slide") is slide for layer in layers):
            return
        layers.events.removed.disconnect(on_removed)
        slide.close()

    viewer.layers.events.removed.connect(on_removed)


__all__ = [
    "channel_layer",
    "channel_layer_data",
    "napari_get_reader",
    "read_slide",
    "slide_layer_data",
]
