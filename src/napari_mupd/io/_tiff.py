"""TIFF-family slides (SVS, OME-TIFF, NDPI, Philips, Ventana, generic tiled TIFF).

Tiles are read with ``os.pread`` and decoded by tifffile's own decoder for the
page (JPEG with shared tables, JPEG 2000, LZW, deflate, WebP, ...), several at a
time on a thread pool, and kept in a bounded LRU cache. This is what tifffile's
zarr store does per chunk, without zarr's per-call overhead, so a region read
costs one decode per tile it touches and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_mupd.errors import SlideError
from napari_mupd.imaging.pixels import to_rgb_uint8
from napari_mupd.io import _tiff_metadata
from napari_mupd.io._backend import BackendInfo, Level, level_downsample
from napari_mupd.io._cache import TileCache
from napari_mupd.io.channels import Channel, is_multichannel, make_channels

ASSOCIATED_NAMES = ("thumbnail", "label", "macro", "overview", "map")


def associated_name(series: tifffile.TiffPageSeries) -> str | None:
    """'label', 'macro', ... when a series is an associated image, else None."""
    name = (series.name or "").lower()
    return next((a for a in ASSOCIATED_NAMES if a in name), None)


def _keyframe(page: tifffile.TiffPage | tifffile.TiffFrame) -> tifffile.TiffPage:
    """The page that describes ``page``'s layout (itself, or a frame's key page)."""
    keyframe = page.keyframe
    if keyframe is None:
        raise SlideError("a TIFF frame without its key page")
    return keyframe


class _TiledPlane:
    """One TIFF page read tile by tile (tiles or strips, chunky samples)."""

    def __init__(self, page: tifffile.TiffPage | tifffile.TiffFrame, fd: int) -> None:
        keyframe = _keyframe(page)
        self.decode_fn = keyframe.decode
        self.offsets = page.dataoffsets
        self.counts = page.databytecounts
        self.tile = (int(keyframe.chunks[0]), int(keyframe.chunks[1]))
        self.grid = (int(keyframe.chunked[0]), int(keyframe.chunked[1]))
        self.samples = int(keyframe.samplesperpixel)
        self.dtype = keyframe.dtype
        self.fd = fd
        self.kwargs: dict[str, Any] = {"_fullsize": True}
        if page.jpegtables is not None:
            self.kwargs["jpegtables"] = page.jpegtables
        if keyframe.jpegheader is not None:
            self.kwargs["jpegheader"] = keyframe.jpegheader

    @staticmethod
    def supports(page: tifffile.TiffPage | tifffile.TiffFrame) -> bool:
        keyframe = _keyframe(page)
        chunked = keyframe.chunked
        return (
            keyframe.imagedepth == 1
            and (keyframe.planarconfig == 1 or keyframe.samplesperpixel == 1)
            and len(chunked) >= 2
            and int(np.prod(chunked)) == int(chunked[0]) * int(chunked[1])
            and len(page.dataoffsets) == int(chunked[0]) * int(chunked[1])
        )

    def decode(self, index: int) -> np.ndarray:
        th, tw = self.tile
        count = self.counts[index]
        if count == 0:  # sparse file: tile never written
            return np.full((th, tw, self.samples), np.iinfo(self.dtype).max, self.dtype)
        data = os.pread(self.fd, count, self.offsets[index])
        if len(data) != count:
            raise SlideError(f"tile {index} lies beyond the end of the file (truncated?)")
        try:
            array = self.decode_fn(data, index, **self.kwargs)[0]
        except Exception as exc:  # codec errors come in many types
            raise SlideError(f"tile {index} cannot be decoded: {exc}") from exc
        if array is None:
            raise SlideError(f"tile {index} holds no image data")
        return np.asarray(array).reshape(th, tw, -1)

    def data_end(self) -> int:
        counts = np.asarray(self.counts, dtype=np.int64)
        offsets = np.asarray(self.offsets, dtype=np.int64)
        return int((offsets + counts).max(initial=0))


class _ZarrPlane:
    """Fallback for page layouts the tile path does not handle (planar, 3-D tiles)."""

    def __init__(self, page: tifffile.TiffPage | tifffile.TiffFrame) -> None:
        import zarr  # only this rare layout needs it; importing zarr costs ~200 ms

        self.store = page.aszarr()
        array = zarr.open(self.store, mode="r")
        if not isinstance(array, zarr.Array):
            raise SlideError("a TIFF page that does not read as one array")
        self.array = array
        keyframe = _keyframe(page)
        self.samples = int(keyframe.samplesperpixel)
        self.dtype = keyframe.dtype
        self.planar = keyframe.planarconfig == 2 and self.samples > 1
        yx = self.array.chunks[1:3] if self.planar else self.array.chunks[:2]
        self.tile = (int(yx[0]), int(yx[1]))

    def read(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        if self.planar:  # (samples, y, x)
            return np.moveaxis(np.asarray(self.array[:, y : y + h, x : x + w]), 0, -1)
        return np.asarray(self.array[y : y + h, x : x + w]).reshape(h, w, -1)

    def close(self) -> None:
        self.store.close()


class TiffBackend:
    """Native levels of one series of a TIFF file."""

    def __init__(self, path: Path, series: int | None = None, cache_bytes: int = 256 * 2**20):
        self.path = path
        self._tif = tifffile.TiffFile(path)
        fd = os.open(path, os.O_RDONLY)
        self._fd: int | None = fd
        try:
            self._series_index = self._main_series(series)
            main = self._tif.series[self._series_index]
            self._planes = [self._level_planes(level, fd) for level in main.levels]
            self._channels, self._skipped = self._find_channels(main)
            if not self._channels:
                self._planes = [
                    self._brightfield_planes(p, lv)
                    for p, lv in zip(self._planes, main.levels, strict=True)
                ]
            self._check_not_truncated(os.fstat(fd).st_size)
        except Exception:
            self.close()
            raise
        self._cache = TileCache(cache_bytes)
        self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
        self.info = self._read_info(main)

    def _main_series(self, series: int | None) -> int:
        all_series = self._tif.series
        if not all_series:
            raise SlideError("a corrupt or truncated TIFF: no readable image in it")
        if series is not None:
            if not 0 <= series < len(all_series):
                raise SlideError(f"series {series} does not exist (the file has {len(all_series)})")
            return series
        candidates = [i for i, s in enumerate(all_series) if associated_name(s) is None] or [0]
        return max(candidates, key=lambda i: _yx(all_series[i])[0] * _yx(all_series[i])[1])

    def _level_planes(
        self, level: tifffile.TiffPageSeries, fd: int
    ) -> list[_TiledPlane | _ZarrPlane]:
        axes = level.axes.replace("S", "")
        planes = [p for p in level.pages if p is not None]
        extra = [a for a in axes if a not in "YX"]
        if len(planes) > 1 and extra not in (["C"], ["I"], ["Q"]):
            planes = planes[:1]  # a time or z stack: show its first plane
        return [_TiledPlane(p, fd) if _TiledPlane.supports(p) else _ZarrPlane(p) for p in planes]

    @staticmethod
    def _brightfield_planes(
        planes: list[_TiledPlane | _ZarrPlane], level: tifffile.TiffPageSeries
    ) -> list[_TiledPlane | _ZarrPlane]:
        """Pages of a brightfield level: colour planes (axis C), else the first page."""
        extra = [a for a in level.axes.replace("S", "") if a not in "YX"]
        return planes if extra == ["C"] else planes[:1]

    def _find_channels(self, main: tifffile.TiffPageSeries) -> tuple[list[Channel], list[str]]:
        """The channels of a multichannel series (none for brightfield), and the levels
        dropped because their channel count differs from level 0's."""
        planes = self._planes[0]
        keyframe = main.keyframe
        if keyframe.photometric in (2, 6) or (len(planes) > 1 and planes[0].samples > 1):
            return [], []  # colour samples (RGB, YCbCr), e.g. a z-stack of RGB pages
        count = len(planes) if len(planes) > 1 else planes[0].samples
        dtype = np.dtype(planes[0].dtype).newbyteorder("=")
        described = _tiff_metadata.channel_metadata(self._tif, self._series_index, count)
        names = [d.get("name") for d in described]
        multi = is_multichannel(count, dtype, names) or (
            count > 1 and _tiff_metadata.vendor(self._tif) == "qptiff"
        )
        if not multi:
            return [], []
        skipped: list[str] = []
        for i in range(1, len(self._planes)):
            level_planes = self._planes[i]
            n = len(level_planes) if len(level_planes) > 1 else level_planes[0].samples
            if n != count:
                skipped.append(
                    f"levels {i} and up dropped: level {i} has {n} channels, level 0 has {count}"
                )
                self._planes = self._planes[:i]
                break
        return make_channels(count, dtype, described), skipped

    def _check_not_truncated(self, size: int) -> None:
        for planes in self._planes:
            for plane in planes:
                if isinstance(plane, _TiledPlane) and plane.data_end() > size:
                    raise SlideError(
                        f"image data ends at byte {plane.data_end()} but the file has "
                        f"{size} bytes: the file is truncated"
                    )

    def _read_info(self, main: tifffile.TiffPageSeries) -> BackendInfo:
        shapes = [_yx(level) for level in main.levels][: len(self._planes)]
        levels = [
            Level(shape, level_downsample(shapes[0], shape), planes[0].tile)
            for shape, planes in zip(shapes, self._planes, strict=True)
        ]
        meta = _tiff_metadata.read_metadata(self._tif, self._series_index)
        associated: dict[str, Callable[[], np.ndarray]] = {}
        for series in self._tif.series:
            name = associated_name(series)
            if name and name not in associated and series is not main:
                associated[name] = _series_reader(series)
        description = self._tif.pages.first.description or ""
        compression = main.keyframe.compression
        return BackendInfo(
            vendor=_tiff_metadata.vendor(self._tif),
            levels=levels,
            mpp=meta["mpp"],
            objective_power=meta["objective_power"],
            associated=associated,
            extra={
                "series": self._series_index,
                "series_names": [s.name for s in self._tif.series],
                "compression": getattr(compression, "name", str(compression)),
                "description": description[:2000],
                **({"skipped_levels": self._skipped} if self._skipped else {}),
            },
            channels=self._channels,
        )

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Level pixels [y:y+h, x:x+w] as (h, w, 3) uint8."""
        parts = [self._read_plane(level, i, y, x, h, w) for i in range(len(self._planes[level]))]
        array = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
        return to_rgb_uint8(array)

    def read_channels(
        self, level: int, y: int, x: int, h: int, w: int, channels: tuple[int, ...]
    ) -> np.ndarray:
        """Planes ``channels`` of [y:y+h, x:x+w] as (len(channels), h, w), native dtype."""
        dtype = self._channels[0].dtype
        out = np.empty((len(channels), h, w), dtype)
        if len(self._planes[level]) > 1:  # a page per channel: read only those asked for
            for i, c in enumerate(channels):
                out[i] = self._read_plane(level, c, y, x, h, w)[..., 0]
        else:  # one page, a sample per channel
            pixels = self._read_plane(level, 0, y, x, h, w)
            for i, c in enumerate(channels):
                out[i] = pixels[..., c]
        return out

    def _read_plane(self, level: int, p: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        plane = self._planes[level][p]
        if isinstance(plane, _ZarrPlane):
            return plane.read(y, x, h, w)
        th, tw = plane.tile
        ny, nx = plane.grid
        rows = range(y // th, min((y + h - 1) // th + 1, ny))
        cols = range(x // tw, min((x + w - 1) // tw + 1, nx))
        wanted = [(r, c) for r in rows for c in cols]
        cached = {rc: self._cache.get((level, p, rc)) for rc in wanted}
        tiles = {rc: tile for rc, tile in cached.items() if tile is not None}
        missing = [rc for rc, tile in cached.items() if tile is None]

        def fetch(rc: tuple[int, int]) -> np.ndarray:
            tile = plane.decode(rc[0] * nx + rc[1])
            self._cache.put((level, p, rc), tile)
            return tile

        fetched = self._pool.map(fetch, missing) if len(missing) > 1 else map(fetch, missing)
        tiles.update(zip(missing, fetched, strict=True))
        out = np.empty((h, w, plane.samples), plane.dtype)
        for (r, c), tile in tiles.items():
            ty0, tx0 = r * th, c * tw
            sy0, sx0 = max(y, ty0), max(x, tx0)
            sy1, sx1 = min(y + h, ty0 + th), min(x + w, tx0 + tw)
            out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile[
                sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0, : plane.samples
            ]
        return out

    def close(self) -> None:
        """Close the file and stop the decoder threads."""
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=True)
        for planes in getattr(self, "_planes", []):
            for plane in planes:
                if isinstance(plane, _ZarrPlane):
                    plane.close()
        if getattr(self, "_cache", None) is not None:
            self._cache.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tif.close()


def _series_reader(series: tifffile.TiffPageSeries) -> Callable[[], np.ndarray]:
    """Reads an associated image (label, macro, ...) as RGB uint8 when called."""
    return lambda: to_rgb_uint8(np.squeeze(series.asarray()))


def _yx(series: tifffile.TiffPageSeries) -> tuple[int, int]:
    axes = series.axes
    return int(series.shape[axes.index("Y")]), int(series.shape[axes.index("X")])
