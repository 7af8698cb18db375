"""Formats only OpenSlide reads (MRXS, VMS, SCN, BIF, ...), through openslide-python."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_mupd.errors import MissingDependencyError, SlideError
from napari_mupd.imaging.pixels import to_rgb_uint8
from napari_mupd.io._backend import BackendInfo, Level


def import_openslide():
    """Import openslide or raise an error naming the extra that installs it."""
    try:
        import openslide
    except ImportError as exc:  # openslide-python missing, or its C library
        raise MissingDependencyError(
            "openslide-python", "openslide", "Reading this slide format"
        ) from exc
    return openslide


def openslide_can_read(path: Path) -> bool:
    """Whether OpenSlide is installed and recognises ``path``."""
    try:
        openslide = import_openslide()
    except MissingDependencyError:
        return False
    return openslide.OpenSlide.detect_format(str(path)) is not None


class OpenSlideBackend:
    """Native levels read through OpenSlide."""

    def __init__(self, path: Path) -> None:
        openslide = import_openslide()
        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            raise SlideError(f"OpenSlide cannot read it: {exc}") from exc
        props = self._slide.properties
        levels = []
        for i, ((w, h), ds) in enumerate(
            zip(self._slide.level_dimensions, self._slide.level_downsamples, strict=True)
        ):
            tile = (
                int(props.get(f"openslide.level[{i}].tile-height", 256)),
                int(props.get(f"openslide.level[{i}].tile-width", 256)),
            )
            levels.append(Level((h, w), float(ds), tile))
        mpp = None
        if "openslide.mpp-x" in props and "openslide.mpp-y" in props:
            mpp = (float(props["openslide.mpp-y"]), float(props["openslide.mpp-x"]))
        power = props.get("openslide.objective-power")
        self.info = BackendInfo(
            vendor=f"openslide:{props.get('openslide.vendor', 'unknown')}",
            levels=levels,
            mpp=mpp,
            objective_power=float(power) if power else None,
            associated={name: self._associated(name) for name in self._slide.associated_images},
        )

    def _associated(self, name: str) -> Callable[[], np.ndarray]:
        """Reads the associated image ``name`` as RGB uint8 when called."""
        return lambda: to_rgb_uint8(np.asarray(self._slide.associated_images[name]))

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Level pixels [y:y+h, x:x+w] as (h, w, 3) uint8."""
        ds = self.info.levels[level].downsample
        location = (round(x * ds), round(y * ds))
        rgba = np.asarray(self._slide.read_region(location, level, (w, h)))
        return to_rgb_uint8(rgba)

    def close(self) -> None:
        """Close the OpenSlide handle."""
        self._slide.close()
