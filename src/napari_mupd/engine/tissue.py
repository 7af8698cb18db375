"""Tissue maps of slides, so that tiling, jobs and exports skip glass and background."""

from __future__ import annotations

import threading
import weakref

import numpy as np

from napari_mupd.imaging.regions import Region
from napari_mupd.imaging.scale import estimate_mpp
from napari_mupd.imaging.tissue import TissueMap, tissue_mask
from napari_mupd.io import Slide

#: Tiles with less tissue than this fraction are glass: not stained, not exported.
MIN_TISSUE = 0.05

#: Tissue maps of open slides by overview size, computed once per slide.
_MAPS: weakref.WeakKeyDictionary[Slide, dict[int, TissueMap]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def slide_tissue(slide: Slide, max_size: int = 1024) -> TissueMap:
    """The tissue map of a slide's overview (longer side ``max_size``), cached per slide."""
    with _LOCK:
        cached = _MAPS.setdefault(slide, {})
        if max_size not in cached:
            overview = slide.thumbnail(max_size)
            scale = slide.dimensions[0] / overview.shape[1]
            cached[max_size] = TissueMap(tissue_mask(overview), scale)
        return cached[max_size]


def most_tissue_region(slide: Slide, size: int) -> Region:
    """The ``size`` x ``size`` level-0 region with the most tissue (on a quarter-size step)."""
    tissue = slide_tissue(slide, max_size=512)
    w, h = slide.dimensions
    step = max(1, size // 4)
    regions = [
        Region(x, y, size, size)
        for y in range(0, max(1, h - size), step)
        for x in range(0, max(1, w - size), step)
    ]
    return max(regions, key=tissue.fraction)


def estimate_slide_mpp(slide: Slide, size: int = 1024) -> tuple[float, Region]:
    """A slide's pixel size (um/px) estimated from the nuclei of its most-tissue
    ``size`` x ``size`` level-0 region (`imaging.scale.estimate_mpp`), and that region."""
    width, height = slide.dimensions
    size = min(size, width, height)
    region = most_tissue_region(slide, size)
    pixels = np.asarray(slide.read_region((region.x, region.y), 0, (size, size)))[..., :3]
    return estimate_mpp(pixels), region
