"""napari-mupd: multimodal pathology diffusion (MuPD) for napari, with a Qt-free core."""

from __future__ import annotations

from napari_mupd._version import __version__
from napari_mupd.errors import (
    ConditionError,
    MissingDependencyError,
    MuPDError,
    RegionError,
    SlideError,
)
from napari_mupd.io import Slide, open_slide

__all__ = [
    "ConditionError",
    "MissingDependencyError",
    "MuPDError",
    "RegionError",
    "Slide",
    "SlideError",
    "__version__",
    "open_slide",
]
