"""Slides in, pixels out: lazy pyramids over tifffile, zarr and OpenSlide."""

from napari_mupd.io._backend import Level
from napari_mupd.io._level_array import LevelArray
from napari_mupd.io.slide import COARSEST_SIDE, Slide, open_slide

__all__ = ["COARSEST_SIDE", "Level", "LevelArray", "Slide", "open_slide"]
