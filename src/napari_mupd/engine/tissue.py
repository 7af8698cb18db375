"""Tissue detection on a slide overview, so tiling skips glass and background."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu

from napari_mupd.io import Slide

#: Saturation below this is glass whatever Otsu says (an empty slide has no tissue mode).
MIN_SATURATION = 0.07


def tissue_mask(rgb: np.ndarray, *, min_object_fraction: float = 0.0005) -> np.ndarray:
    """Boolean mask of stained tissue in an RGB uint8 image (an overview or a tile).

    Stained tissue is saturated and not too bright; glass is white or grey. The
    threshold on saturation is Otsu's, floored at :data:`MIN_SATURATION`; the mask is
    then closed, hole-filled, and objects smaller than ``min_object_fraction`` of the
    image are dropped.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {rgb.shape}")
    hsv = rgb2hsv(rgb)
    saturation, value = hsv[..., 1], hsv[..., 2]
    candidates = saturation[value > 0.1]  # ignore pure black (pen marks, borders)
    threshold = MIN_SATURATION
    if candidates.size and np.ptp(candidates) > 0:
        threshold = max(threshold, float(threshold_otsu(candidates)))
    mask = (saturation > threshold) & (value > 0.1)
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3)), iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    labels, count = ndimage.label(mask)
    if count:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= max(1, min_object_fraction * mask.size)
        keep[0] = False
        mask = keep[labels]
    return mask


def slide_tissue_mask(slide: Slide, max_size: int = 1024) -> tuple[np.ndarray, float]:
    """Tissue mask of a slide's overview and the level-0 pixels per mask pixel."""
    overview = slide.thumbnail(max_size)
    return tissue_mask(overview), slide.dimensions[0] / overview.shape[1]


def tissue_fraction(mask: np.ndarray, scale: float, box: tuple[int, int, int, int]) -> float:
    """Fraction of tissue in a level-0 box (x, y, w, h), read off a mask at ``scale``."""
    x, y, w, h = box
    x0, y0 = int(x / scale), int(y / scale)
    x1, y1 = max(x0 + 1, int(np.ceil((x + w) / scale))), max(y0 + 1, int(np.ceil((y + h) / scale)))
    window = mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
    return float(window.mean()) if window.size else 0.0
