"""Colour deconvolution of brightfield tiles into haematoxylin, eosin and DAB densities.

Optical density (OD) is decadic, as in ImageJ and QuPath: ``OD = -log10(I / 255)`` per
RGB channel, with intensities floored at 1 so black pixels stay finite (OD <= 2.41).
Stain densities are the OD unmixed with the fixed Ruifrok & Johnston (2001) H, E, DAB
vectors (scikit-image's ``rgb_from_hed``). One fixed matrix is used for every image,
so a prediction and its real target are measured on the same scale. The same matrix
serves H&E (eosin gets its own channel instead of leaking into DAB or haematoxylin,
as it does with an H-DAB-only matrix) and H-DAB IHC (the eosin channel stays near 0).

Known limit: the vectors are not fitted to a scanner or lab. Very dark haematoxylin or
purple H&E pixels leak up to ~0.3 OD into the DAB channel, so the mean DAB density
of an H&E image is not zero, and can exceed that of a sparsely positive IHC: compare
DAB between images of the same stain, or compare its strong tail.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from skimage.color import hed_from_rgb, rgb_from_hed
from skimage.filters import threshold_otsu

from napari_mupd.errors import EvalError
from napari_mupd.imaging.pixels import as_rgb

#: Default DAB OD above which a pixel is DAB-positive, chosen on real images. On
#: scikit-image's colon IHC it keeps 92 % of the brown pixels and none of the blue
#: nuclei. On the 5 % mouse-lung sections, dark haematoxylin-only nuclei leak up to
#: ~0.3 OD into DAB: at 0.35, 0.22 % of the Ki67 section is positive (its brown nuclei)
#: against 0.10 % of CD31, 0.05 % of H&E and 0 % of Cc10 and proSPC (0.30: 0.30 %,
#: 0.36 %, 0.24 %; 0.40 keeps only 85 % of the colon IHC's brown).
DAB_THRESHOLD = 0.35

#: Otsu's threshold is floored here, so a tile without DAB does not split its noise.
MIN_OTSU_THRESHOLD = 0.1

#: Optical density (R, G, B) -> stain densities (H, E, DAB): ``densities = od @ HED_FROM_RGB``.
HED_FROM_RGB = np.asarray(hed_from_rgb, dtype=np.float32)
#: Stain densities (H, E, DAB) -> optical density (R, G, B): ``od = densities @ RGB_FROM_HED``.
RGB_FROM_HED = np.asarray(rgb_from_hed, dtype=np.float32)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Decadic optical density (h, w, 3) float32 of a uint8 RGB image."""
    rgb = as_rgb(rgb, "rgb")
    return -np.log10(np.maximum(rgb, 1).astype(np.float32) / 255)


def stain_densities(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 haematoxylin, eosin and DAB densities (OD units, clipped at 0)."""
    return np.maximum(optical_density(rgb) @ HED_FROM_RGB, 0)


def hematoxylin_density(rgb: np.ndarray) -> np.ndarray:
    """(h, w) float32 haematoxylin OD of an H&E or IHC image."""
    return stain_densities(rgb)[..., 0]


def dab_density(rgb: np.ndarray) -> np.ndarray:
    """(h, w) float32 DAB OD of an IHC image (the marker intensity of brightfield IHC)."""
    return stain_densities(rgb)[..., 2]


def nuclear_density(rgb: np.ndarray) -> np.ndarray:
    """(h, w) float32 nuclear optical density of an IHC image: haematoxylin + DAB (a
    nucleus is blue, or brown when the marker is nuclear and positive)."""
    d = stain_densities(rgb)
    return d[..., 0] + d[..., 2]


def dab_positive_mask(
    rgb: np.ndarray, threshold: float | Literal["otsu"] | None = None
) -> np.ndarray:
    """Boolean mask of DAB-positive pixels.

    ``threshold`` is a DAB OD, `DAB_THRESHOLD` (0.35) when None, or ``"otsu"`` for Otsu's
    threshold of this image's DAB OD, floored at `MIN_OTSU_THRESHOLD`. A fixed threshold
    is the default because a prediction and its target must be cut at the same level
    for a Dice score to mean anything.
    """
    dab = dab_density(rgb)
    if threshold is None:
        threshold = DAB_THRESHOLD
    elif isinstance(threshold, str):
        if threshold != "otsu":
            raise EvalError(f"threshold must be a DAB OD, None or 'otsu', not {threshold!r}")
        threshold = MIN_OTSU_THRESHOLD
        if np.ptp(dab) > 0:
            threshold = max(threshold, float(threshold_otsu(dab)))
    return dab > threshold


def compose_stains(densities: np.ndarray) -> np.ndarray:
    """Render (h, w, 3) haematoxylin, eosin and DAB densities as a uint8 RGB image.

    The inverse of `stain_densities` for non-negative densities (up to rounding).
    """
    od = np.asarray(densities, dtype=np.float32) @ RGB_FROM_HED
    return np.clip(255 * np.power(10, -od) + 0.5, 0, 255).astype(np.uint8)
