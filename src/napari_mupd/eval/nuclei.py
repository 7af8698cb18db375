"""Nuclei from the haematoxylin channel, and nuclei statistics as a cell-composition proxy.

Segmentation: haematoxylin OD (`imaging.stains.hematoxylin_density`), Gaussian smoothing,
Otsu's threshold (floored at `MIN_NUCLEUS_OD`), small objects removed, holes filled,
then a distance-transform watershed that splits touching nuclei. Scales follow the
pixel size: nuclei are assumed `NUCLEUS_RADIUS_UM` in radius, at `DEFAULT_MPP` um/px
when the tile's mpp is unknown. This is a proxy, not a cell classifier: it counts and
sizes haematoxylin-dense blobs, and DAB-only (haematoxylin-free) nuclei are missed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import watershed

from napari_mupd.errors import EvalError, MetricWarning
from napari_mupd.eval._checks import as_tiles
from napari_mupd.imaging.stains import hematoxylin_density

#: Typical nuclear radius (um) the segmentation is tuned for.
NUCLEUS_RADIUS_UM = 3.0
#: Pixel size assumed for tiles without an mpp: the model's 20x (~0.5 um/px).
DEFAULT_MPP = 0.5
#: Otsu's threshold on haematoxylin OD is floored here, so glass and pale cytoplasm
#: are never nuclei, even in a tile without any.
MIN_NUCLEUS_OD = 0.15


def segment_nuclei(rgb: np.ndarray, mpp: float | None = None) -> np.ndarray:
    """(h, w) int32 label image of nuclei in an H&E or IHC tile (0 = background)."""
    radius = NUCLEUS_RADIUS_UM / (mpp or DEFAULT_MPP)
    h = gaussian(hematoxylin_density(rgb), sigma=max(0.5, radius / 4))
    threshold = MIN_NUCLEUS_OD
    if np.ptp(h) > 0:
        threshold = max(threshold, float(threshold_otsu(h)))
    components, n = ndimage.label(h > threshold)
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    keep = sizes >= np.pi * (radius / 2) ** 2
    keep[0] = False
    mask = ndimage.binary_fill_holes(keep[components])
    components, n = ndimage.label(mask)
    if n == 0:
        return components.astype(np.int32)
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(
        gaussian(distance, sigma=1),
        min_distance=max(1, round(0.7 * radius)),
        labels=components,
        exclude_border=False,
    )
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    unmarked = np.setdiff1d(np.arange(1, n + 1), components[tuple(peaks.T)])
    for i, label in enumerate(unmarked, start=len(peaks) + 1):  # no peak found: one nucleus
        markers[components == label] = i
    return watershed(-distance, markers, mask=mask).astype(np.int32)


def nuclei_stats(
    rgb: np.ndarray | Sequence[np.ndarray], mpp: float | None = None
) -> dict[str, Any]:
    """Nuclei count and size distribution of one tile or, pooled, of a list of tiles.

    Keys: ``count``; ``area_px`` (pixels examined); ``density_per_mm2`` (NaN without
    mpp); ``areas`` (array, one per nucleus, in ``area_unit``: "um^2" with mpp, else
    "px"); ``mean_area`` and ``median_area`` (NaN without nuclei).
    """
    areas, pixels = [], 0
    for tile in as_tiles(rgb, "rgb"):
        labels = segment_nuclei(tile, mpp)
        areas.append(np.bincount(labels.ravel())[1:])
        pixels += labels.size
    px_areas = np.concatenate(areas).astype(np.float64)
    px_areas = px_areas[px_areas > 0]
    scale = mpp**2 if mpp else 1.0
    found = px_areas * scale
    count = len(found)
    return {
        "count": count,
        "area_px": pixels,
        "density_per_mm2": count / (pixels * mpp**2 * 1e-6) if mpp else float("nan"),
        "areas": found,
        "area_unit": "um^2" if mpp else "px",
        "mean_area": float(found.mean()) if count else float("nan"),
        "median_area": float(np.median(found)) if count else float("nan"),
    }


def composition_distance(stats_a: dict[str, Any], stats_b: dict[str, Any]) -> float:
    """Distance between two `nuclei_stats` results: 0 when the nuclei look alike.

    The sum of two unit-free terms: the 1-D Wasserstein distance between the nuclear
    area distributions divided by their mean area, and the relative difference of
    nuclei per pixel, ``|d_a - d_b| / max(d_a, d_b)`` (in [0, 1]). 0.0 when neither
    has nuclei; NaN with a `MetricWarning` when only one has.
    """
    if stats_a["area_unit"] != stats_b["area_unit"]:
        raise EvalError(
            f"nuclei areas in {stats_a['area_unit']} and {stats_b['area_unit']}: "
            "give both the same mpp"
        )
    count_a, count_b = stats_a["count"], stats_b["count"]
    if count_a == 0 and count_b == 0:
        return 0.0
    if count_a == 0 or count_b == 0:
        warnings.warn(
            "composition distance is undefined: one side has no nuclei", MetricWarning, stacklevel=2
        )
        return float("nan")
    areas_a, areas_b = stats_a["areas"], stats_b["areas"]
    scale = (areas_a.mean() + areas_b.mean()) / 2
    area_term = wasserstein_distance(areas_a, areas_b) / scale
    density_a, density_b = count_a / stats_a["area_px"], count_b / stats_b["area_px"]
    count_term = abs(density_a - density_b) / max(density_a, density_b)
    return float(area_term + count_term)
