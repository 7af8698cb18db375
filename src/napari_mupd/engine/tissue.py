"""Tissue maps of slides, so that tiling, jobs and exports skip glass and background."""

from __future__ import annotations

import threading
import weakref

from napari_mupd.imaging.tissue import TissueMap, tissue_mask
from napari_mupd.io import Slide

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
