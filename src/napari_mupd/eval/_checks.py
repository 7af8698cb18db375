"""Input checks shared by the evaluation modules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_mupd.errors import EvalError
from napari_mupd.imaging.pixels import as_rgb


def as_tiles(tiles: np.ndarray | Sequence[np.ndarray], name: str = "tiles") -> list[np.ndarray]:
    """One (h, w, 3) uint8 tile or a sequence of them as a non-empty list of RGB tiles."""
    if isinstance(tiles, np.ndarray) and tiles.ndim == 3:
        tiles = [tiles]
    out = [as_rgb(t, f"{name}[{i}]") for i, t in enumerate(tiles)]
    if not out:
        raise EvalError(f"{name}: no tiles given")
    return out


def same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Raise an `EvalError` unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise EvalError(f"{what}: shapes differ, {a.shape} vs {b.shape}")
