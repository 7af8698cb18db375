"""Input checks and the warning and error types shared by the evaluation modules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_mupd.errors import MuPDError


class EvalError(MuPDError, ValueError):
    """Inputs to an evaluation function do not fit together (shapes, counts, kinds)."""


class MetricWarning(UserWarning):
    """A metric is undefined for these inputs (e.g. a constant image) and came back NaN."""


def as_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """``image`` as an (h, w, 3) uint8 array, or an `EvalError` saying what it is instead."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise EvalError(
            f"{name}: expected an (h, w, 3) uint8 RGB image, got {image.dtype} {image.shape}"
        )
    return image


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
