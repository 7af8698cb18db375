"""Tissue detection in RGB images, and the one test of whether a region holds tissue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu

from napari_mupd.imaging.regions import Region

#: Saturation below this is glass whatever Otsu says (an empty slide has no tissue mode).
MIN_SATURATION = 0.07
#: Saturation above this is tissue whatever Otsu says: where dense tissue sets Otsu's
#: threshold (a tumour in lung, a tile full of nuclei), pale tissue stays tissue.
MAX_SATURATION = 0.12
#: Gaps narrower than this fraction of the image's longer side (alveoli, the lumen
#: of small vessels, cracks) are closed into the tissue around them.
CLOSING_FRACTION = 0.01


def tissue_mask(rgb: np.ndarray, *, min_object_fraction: float = 0.0005) -> np.ndarray:
    """Boolean mask of stained tissue in an RGB uint8 image (an overview or a tile).

    Stained tissue is saturated and not too bright; glass is white or grey. The
    threshold on saturation is Otsu's, kept within [:data:`MIN_SATURATION`,
    :data:`MAX_SATURATION`]; the mask is then closed over gaps up to
    :data:`CLOSING_FRACTION` of the image, hole-filled, and objects smaller than
    ``min_object_fraction`` of the image are dropped.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {rgb.shape}")
    hsv = rgb2hsv(rgb)
    saturation, value = hsv[..., 1], hsv[..., 2]
    candidates = saturation[value > 0.1]  # ignore pure black (pen marks, borders)
    threshold = MIN_SATURATION
    if candidates.size and np.ptp(candidates) > 0:
        threshold = min(MAX_SATURATION, max(threshold, float(threshold_otsu(candidates))))
    mask = (saturation > threshold) & (value > 0.1)
    r = max(2, round(CLOSING_FRACTION * max(mask.shape)))
    # padded, so that tissue cut by the image's edge is not eroded there
    mask = ndimage.binary_closing(np.pad(mask, r, mode="edge"), iterations=r)[r:-r, r:-r]
    mask = ndimage.binary_fill_holes(mask)
    labels, count = ndimage.label(mask)
    if count:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= max(1, min_object_fraction * mask.size)
        keep[0] = False
        mask = keep[labels]
    return np.asarray(mask, dtype=bool)


@dataclass(frozen=True)
class TissueMap:
    """A tissue mask laid over level-0 pixels: mask pixel (i, j) covers ``scale`` x
    ``scale`` level-0 pixels from (j * scale, i * scale) on."""

    mask: np.ndarray
    scale: float = 1.0

    def fraction(self, region: Region) -> float:
        """Fraction of tissue in a level-0 region (its bounding box), 0 off the mask."""
        s = self.scale
        x0, y0 = int(region.x / s), int(region.y / s)
        x1 = max(x0 + 1, int(np.ceil((region.x + region.width) / s)))
        y1 = max(y0 + 1, int(np.ceil((region.y + region.height) / s)))
        window = self.mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
        return float(window.mean()) if window.size else 0.0

    def has_tissue(self, region: Region, min_fraction: float) -> bool:
        """Whether at least ``min_fraction`` of ``region`` is tissue: the one test of
        "is there tissue here" for tiles, chunks and regions."""
        return self.fraction(region) >= min_fraction
