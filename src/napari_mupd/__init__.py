"""napari-mupd: multimodal pathology diffusion (MuPD) for napari, with a Qt-free core."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-mupd")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

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
