"""Zeiss CZI slides through ``pylibCZIrw`` (the ``czi`` extra).

Fluorescence CZI files (Gray8 / Gray16 / Gray32Float channels) open as multichannel
slides, brightfield ones (Bgr24 / Bgra32) as RGB. Levels are 2x zooms of the whole
bounding rectangle read through libCZI, which picks the file's own pyramid subblocks;
the first Z plane and time point are shown.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from napari_mupd.errors import MissingDependencyError, SlideError
from napari_mupd.imaging.pixels import to_rgb_uint8
from napari_mupd.io._backend import BackendInfo, Level
from napari_mupd.io.channels import make_channels

CZI_MAGIC = b"ZISRAWFILE"
_TILE = (512, 512)  # reads are any box; this is the dask chunk size
_SMALLEST = 1024  # levels are added until the coarsest fits this many pixels
_GREY = {"Gray8": np.uint8, "Gray16": np.uint16, "Gray32Float": np.float32}
_COLOUR = {"Bgr24", "Bgra32", "Bgr48"}


def is_czi_file(path: Path) -> bool:
    """Whether ``path`` starts with the CZI file magic."""
    try:
        with path.open("rb") as fh:
            return fh.read(len(CZI_MAGIC)) == CZI_MAGIC
    except OSError:
        return False


def import_pyczi() -> Any:
    try:
        from pylibCZIrw import czi as pyczi
    except ImportError as exc:
        raise MissingDependencyError("pylibCZIrw", "czi", "Reading Zeiss CZI files") from exc
    return pyczi


class CziBackend:
    """A CZI file's bounding rectangle as a pyramid of 2x zooms."""

    def __init__(self, path: Path) -> None:
        pyczi = import_pyczi()
        try:
            self._reader = pyczi.CziReader(str(path))
        except Exception as exc:  # libCZI raises RuntimeError and others for bad files
            raise SlideError(f"not a readable CZI file ({exc})") from exc
        self._lock = threading.Lock()
        try:
            self.info = self._read_info()
        except Exception:
            self._reader.close()
            raise

    def _read_info(self) -> BackendInfo:
        rect = self._reader.total_bounding_rectangle
        self._origin = (int(rect.x), int(rect.y))
        base = (int(rect.h), int(rect.w))
        if base[0] <= 0 or base[1] <= 0:
            raise SlideError("a CZI file with no image data")
        levels = [Level(base, 1.0, _TILE)]
        while max(levels[-1].shape) > _SMALLEST:
            factor = 2 ** len(levels)
            shape = (math.ceil(base[0] / factor), math.ceil(base[1] / factor))
            levels.append(Level(shape, float(factor), _TILE))
        box = self._reader.total_bounding_box
        self._count = int(box.get("C", (0, 1))[1] - box.get("C", (0, 1))[0])
        types = dict(self._reader.pixel_types)
        kinds = {types.get(c, next(iter(types.values()))) for c in range(self._count)}
        meta = _metadata(self._reader)
        channels = []
        if not kinds <= _COLOUR:
            unknown = kinds - set(_GREY)
            if unknown:
                raise SlideError(f"CZI pixel type {sorted(unknown)[0]} is not supported")
            dtype = np.dtype(_GREY[sorted(kinds)[0]])
            channels = make_channels(self._count, dtype, _channel_metadata(meta, self._count))
        return BackendInfo(
            vendor="zeiss",
            levels=levels,
            mpp=_mpp(meta),
            objective_power=None,
            extra={"pixel_types": sorted(kinds), "origin_px": self._origin},
            channels=channels,
        )

    def _read(self, level: int, y: int, x: int, h: int, w: int, channel: int) -> np.ndarray:
        factor = self.info.levels[level].downsample
        x0, y0 = self._origin
        roi = (
            x0 + round(x * factor),
            y0 + round(y * factor),
            max(1, round(w * factor)),
            max(1, round(h * factor)),
        )
        try:
            with self._lock:
                pixels = self._reader.read(
                    roi=roi, plane={"C": channel, "Z": 0, "T": 0}, zoom=1 / factor
                )
        except Exception as exc:  # libCZI errors
            raise SlideError(f"CZI region {roi} cannot be read: {exc}") from exc
        pixels = np.asarray(pixels)[:h, :w]
        if pixels.shape[:2] != (h, w):  # rounding of the zoomed size: pad with the edge
            pad = [(0, h - pixels.shape[0]), (0, w - pixels.shape[1])] + [(0, 0)] * (
                pixels.ndim - 2
            )
            pixels = np.pad(pixels, pad, mode="edge")
        return pixels

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Level pixels as (h, w, 3) uint8 RGB (CZI stores BGR)."""
        pixels = self._read(level, y, x, h, w, 0)
        if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
            pixels = pixels[..., [2, 1, 0]]
        return to_rgb_uint8(pixels)

    def read_channels(
        self, level: int, y: int, x: int, h: int, w: int, channels: tuple[int, ...]
    ) -> np.ndarray:
        """Planes ``channels`` as (len(channels), h, w) in the file's pixel type."""
        dtype = self.info.channels[0].dtype
        out = np.empty((len(channels), h, w), dtype)
        for i, c in enumerate(channels):
            out[i] = self._read(level, y, x, h, w, c).reshape(h, w)
        return out

    def close(self) -> None:
        """Close the file."""
        self._reader.close()


def _metadata(reader: Any) -> dict[str, Any]:
    try:
        return dict(reader.metadata.get("ImageDocument", {}).get("Metadata", {}))
    except Exception:  # metadata that does not parse: defaults
        return {}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _channel_metadata(meta: dict[str, Any], count: int) -> list[dict[str, Any]]:
    info = meta.get("Information", {}).get("Image", {}).get("Dimensions", {})
    described = _as_list(info.get("Channels", {}).get("Channel"))
    display = _as_list(meta.get("DisplaySetting", {}).get("Channels", {}).get("Channel"))
    out: list[dict[str, Any]] = []
    for i in range(count):
        d = described[i] if i < len(described) and isinstance(described[i], dict) else {}
        s = display[i] if i < len(display) and isinstance(display[i], dict) else {}
        colour = s.get("Color") or d.get("Color")
        if isinstance(colour, str) and len(colour.lstrip("#")) == 8:  # #AARRGGBB
            colour = colour.lstrip("#")[2:]
        out.append(
            {
                "name": d.get("@Name") or s.get("@Name") or d.get("Fluor"),
                "fluor": d.get("Fluor"),
                "color": colour,
                "emission": d.get("EmissionWavelength"),
                "excitation": d.get("ExcitationWavelength"),
                "exposure": d.get("ExposureTime"),
            }
        )
    return out


def _mpp(meta: dict[str, Any]) -> tuple[float, float] | None:
    items = _as_list(meta.get("Scaling", {}).get("Items", {}).get("Distance"))
    sizes = {}
    for item in items:
        try:
            sizes[item.get("@Id")] = float(item.get("Value")) * 1e6  # metres
        except (TypeError, ValueError, AttributeError):
            continue
    y, x = sizes.get("Y"), sizes.get("X")
    if not y or not x or not (0.01 < y < 100 and 0.01 < x < 100):
        return None
    return y, x
