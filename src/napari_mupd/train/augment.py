"""Augmentations that respect histology: dihedral flips/rotations and mild stain jitter."""

from __future__ import annotations

import numpy as np
from skimage.color import hed2rgb, rgb2hed

from napari_mupd.imaging.pixels import to_uint8


def dihedral(images: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Apply one random flip/90-degree rotation (of 8) to every image alike (pairs stay aligned)."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for image in images:
        image = np.rot90(image, k, axes=(0, 1))
        out.append(np.ascontiguousarray(image[:, ::-1] if flip else image))
    return out


def stain_jitter(rgb: np.ndarray, rng: np.random.Generator, strength: float = 0.05) -> np.ndarray:
    """Perturb haematoxylin, eosin and DAB densities by small random scales and shifts.

    The HED space of Ruifrok & Johnston (scikit-image's ``rgb2hed``); ``strength``
    0.05 is the mild setting of Tellez et al. (2018).
    """
    hed = rgb2hed(rgb)
    scale = rng.uniform(1 - strength, 1 + strength, 3)
    shift = rng.uniform(-strength, strength, 3) * hed.reshape(-1, 3).std(axis=0)
    out = hed2rgb(hed * scale + shift)
    return to_uint8(out)
