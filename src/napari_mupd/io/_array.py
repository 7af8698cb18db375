"""In-memory pyramids (numpy or dask arrays, e.g. a napari layer's data) as a backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_mupd.errors import SlideError
from napari_mupd.imaging.pixels import to_rgb_uint8
from napari_mupd.io._backend import BackendInfo, Level, level_downsample


class ArrayBackend:
    """Levels from (Y, X[, C]) arrays, finest first; pixels are converted to RGB uint8."""

    def __init__(self, arrays: Sequence[Any], mpp: tuple[float, float] | None = None) -> None:
        if not arrays:
            raise SlideError("no image data")
        shapes = [tuple(a.shape) for a in arrays]
        if any(len(s) not in (2, 3) or (len(s) == 3 and s[2] not in (1, 3, 4)) for s in shapes):
            raise SlideError(f"expected (Y, X) or (Y, X, 1|3|4) image levels, got {shapes}")
        self._arrays = list(arrays)
        base = shapes[0][:2]
        self.info = BackendInfo(
            vendor="array",
            levels=[Level(s[:2], level_downsample(base, s[:2]), (512, 512)) for s in shapes],
            mpp=mpp,
        )

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Pixels [y:y+h, x:x+w] of a level as (h, w, 3) uint8."""
        return to_rgb_uint8(np.asarray(self._arrays[level][y : y + h, x : x + w]))

    def close(self) -> None:
        """Nothing to release."""
