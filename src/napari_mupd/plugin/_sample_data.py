"""npe2 sample data: the CMU-1-Small-Region slide shipped with the package."""

from __future__ import annotations

from napari_mupd.plugin import LayerData
from napari_mupd.plugin._reader import read_slide
from napari_mupd.resources import sample_slide_path


def cmu1_small_region() -> list[LayerData]:
    """The bundled H&E sample slide as an RGB multiscale layer."""
    return read_slide(str(sample_slide_path()))
