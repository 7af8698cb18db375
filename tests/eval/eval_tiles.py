"""Small generated tiles with known content for the evaluation tests."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.draw import disk

from napari_mupd.imaging.stains import compose_stains

PINK = (235, 200, 220)
PURPLE = (70, 50, 140)


def smooth_field(size: int, sigma: float, seed: int = 0) -> np.ndarray:
    """Periodic Gaussian-smoothed white noise scaled to [0, 1]: its autocorrelation at a
    shift of d px is exp(-d^2 / (4 sigma^2))."""
    noise = np.random.default_rng(seed).normal(size=(size, size))
    field = gaussian_filter(noise, sigma, mode="wrap")
    return (field - field.min()) / np.ptp(field)


def discs(shape: tuple[int, int], centres, radius: int, colour, background=PINK) -> np.ndarray:
    """An RGB uint8 image of flat discs on a flat background."""
    image = np.empty((*shape, 3), np.uint8)
    image[:] = background
    for c in centres:
        image[disk(c, radius, shape=shape)] = colour
    return image


def he_ihc_pair(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A paired H&E and H-DAB IHC tile: the same nuclei, purple in the H&E; in the IHC,
    blue (haematoxylin) or, for about half of them, brown (DAB)."""
    rng = np.random.default_rng(seed)
    n = max(3, size * size // 150)
    centres = rng.integers(4, size - 4, size=(n, 2))
    positive = rng.random(n) < 0.5
    he = discs((size, size), centres, 4, PURPLE)
    densities = np.zeros((size, size, 3), np.float32)
    densities[..., 0] = 0.05
    for c, pos in zip(centres, positive, strict=True):
        densities[disk(c, 4, shape=(size, size))] = (0.2, 0.0, 0.6) if pos else (0.5, 0.0, 0.0)
        he[disk(c, 4, shape=(size, size))] = (120, 60, 110) if pos else PURPLE
    noise = rng.normal(0, 3, he.shape)
    return np.clip(he + noise, 0, 255).astype(np.uint8), compose_stains(densities)
