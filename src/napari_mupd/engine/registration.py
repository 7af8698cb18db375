"""Registering serial sections: affine transforms from matching landmarks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from skimage.transform import AffineTransform, warp

from napari_mupd.errors import MuPDError


class RegistrationError(MuPDError, ValueError):
    """Two sections could not be registered."""


@dataclass(frozen=True)
class Registration:
    """An affine map from a moving image's pixel (x, y) to the fixed image's.

    ``residuals`` are the distances (fixed pixels) between mapped and fixed
    landmarks after the fit.
    """

    matrix: np.ndarray
    residuals: np.ndarray

    @property
    def transform(self) -> AffineTransform:
        """The map as a scikit-image transform."""
        return AffineTransform(matrix=self.matrix)

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) moving (x, y) points into the fixed image."""
        return self.transform(np.asarray(xy, dtype=float))

    def warp(self, moving: np.ndarray, shape: tuple[int, int], *, cval: float = 1.0) -> np.ndarray:
        """Resample ``moving`` onto the fixed image's (h, w) grid (uint8 in, uint8 out).

        Pixels with no source are ``cval`` (white by default).
        """
        out = warp(
            moving,
            self.transform.inverse,
            output_shape=shape,
            order=1,
            cval=cval,
            preserve_range=False,
        )
        return (out * 255 + 0.5).astype(np.uint8) if moving.dtype == np.uint8 else out

    def valid_mask(self, moving_shape: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
        """Where the warped moving image has data on the fixed grid."""
        ones = np.ones(moving_shape, np.float32)
        return warp(ones, self.transform.inverse, output_shape=shape, order=0, cval=0) > 0.5


def read_landmarks(path: str | os.PathLike, scale: float = 1.0) -> np.ndarray:
    """(N, 2) landmark (x, y) from a CSV with X and Y columns (ANHIR / QuPath style)."""
    table = pd.read_csv(path)
    columns = {c.strip().lower(): c for c in table.columns}
    if "x" not in columns or "y" not in columns:
        raise RegistrationError(f"{path}: a landmark CSV needs X and Y columns")
    return table[[columns["x"], columns["y"]]].to_numpy(dtype=float) * scale


def register_landmarks(moving_xy: np.ndarray, fixed_xy: np.ndarray) -> Registration:
    """Least-squares affine map taking moving landmarks onto fixed ones."""
    moving_xy, fixed_xy = np.asarray(moving_xy, float), np.asarray(fixed_xy, float)
    if moving_xy.shape != fixed_xy.shape or moving_xy.ndim != 2 or moving_xy.shape[1] != 2:
        raise RegistrationError(
            f"landmarks must be two (N, 2) arrays of equal length, got {moving_xy.shape} "
            f"and {fixed_xy.shape}"
        )
    if len(moving_xy) < 3:
        raise RegistrationError(
            f"an affine map needs at least 3 landmark pairs, got {len(moving_xy)}"
        )
    transform = AffineTransform.from_estimate(moving_xy, fixed_xy)
    if not transform:
        raise RegistrationError("the landmarks are degenerate (collinear or repeated)")
    residuals = np.linalg.norm(transform(moving_xy) - fixed_xy, axis=1)
    return Registration(transform.params, residuals)
