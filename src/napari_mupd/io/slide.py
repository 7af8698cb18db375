"""``open_slide``: any whole-slide image as a lazy RGB pyramid with fast region reads."""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
from dask.base import tokenize

from napari_mupd.errors import MissingDependencyError, RegionError, SlideError
from napari_mupd.imaging.resize import area_downsample, downscale
from napari_mupd.io._backend import Backend, Level, covering_tiles
from napari_mupd.io._cache import TileCache
from napari_mupd.io._level_array import LevelArray
from napari_mupd.io.channels import Channel, match_channel

BackendName = Literal["auto", "tifffile", "openslide"]
#: Lower levels are added lazily until the coarsest level fits in this many pixels.
COARSEST_SIDE = 2048
_DERIVED_TILE = (512, 512)
_BLOCK_PIXELS = 2048  # source pixels per side read at once when computing a derived level
_DERIVED_CACHE_BYTES = 64 * 2**20  # computed tiles of derived levels kept per slide
_PERCENTILES = (0.5, 99.5)  # contrast limits of a channel the file gives none for
_PERCENTILE_SIDE = 1024  # ... measured on the finest level at most this large
_OPENSLIDE_ONLY = {".mrxs", ".vms", ".vmu", ".scn", ".bif", ".svslide", ".dcm"}
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"GIF8", b"RIFF")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def open_slide(
    path: str | os.PathLike, *, series: int | None = None, backend: BackendName = "auto"
) -> Slide:
    """Open a whole-slide image (or any RGB image) lazily.

    ``series`` picks an image of a multi-series file (OME-TIFF); by default the
    largest one that is not a label, macro or thumbnail. ``backend`` forces
    "openslide" (or "tifffile") instead of choosing by content. Raises
    :class:`~napari_mupd.errors.SlideError` naming the file and the reason when
    the file cannot be read.
    """
    return Slide(path, series=series, backend=backend)


class Slide:
    """A whole-slide image: a lazy pyramid plus OpenSlide-style region reads.

    ``level_arrays`` (what napari gets) and ``levels`` (dask) are two views of the same
    pyramid; both read through :meth:`read_region`'s code path. Use it as a context
    manager, or call :meth:`close`. It pickles by path, so a dask worker that receives
    it (or one of its levels) reopens the file.
    """

    def __init__(
        self, path: str | os.PathLike, *, series: int | None = None, backend: BackendName = "auto"
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        self._options = {"series": series, "backend": backend}
        self._attach(_open_backend(self.path, series, backend))

    @classmethod
    def from_arrays(
        cls, arrays: Sequence[Any], *, mpp: tuple[float, float] | None = None, name: str = "array"
    ) -> Slide:
        """A slide over in-memory levels (numpy or dask, finest first), e.g. a layer's data.

        It reads like a file-backed slide but cannot be pickled into other processes.
        """
        from napari_mupd.io._array import ArrayBackend

        slide = cls.__new__(cls)
        slide.path = Path(name)
        slide._options = {}
        slide._attach(ArrayBackend(arrays, mpp))
        return slide

    def _attach(self, backend: Backend) -> None:
        self._backend = backend
        info = backend.info
        self._native_count = len(info.levels)
        self._level_info = _with_derived_levels(info.levels)
        self.mpp: tuple[float, float] | None = info.mpp
        self.metadata: dict[str, Any] = {
            "vendor": info.vendor,
            "objective_power": info.objective_power,
            "associated_images": sorted(info.associated),
            "native_levels": self._native_count,
            **info.extra,
        }
        self.channels: tuple[Channel, ...] = tuple(info.channels)
        self._contrast: dict[int, tuple[float, float]] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._levels: list[da.Array] | None = None
        self._level_arrays: list[LevelArray] | None = None
        self._derived_cache = TileCache(_DERIVED_CACHE_BYTES)
        self._finalizer = weakref.finalize(self, self._backend.close)

    # -- description -----------------------------------------------------------------
    @property
    def level_info(self) -> list[Level]:
        """One :class:`Level` per pyramid level, level 0 first (derived levels last)."""
        return list(self._level_info)

    @property
    def level_count(self) -> int:
        """Number of levels, native and derived."""
        return len(self._level_info)

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0, as OpenSlide reports it."""
        h, w = self._level_info[0].shape
        return w, h

    @property
    def downsamples(self) -> tuple[float, ...]:
        """Downsample of each level relative to level 0."""
        return tuple(level.downsample for level in self._level_info)

    @property
    def vendor(self) -> str:
        """Format or scanner vendor ('aperio', 'ome-tiff', 'ome-zarr', 'image', ...)."""
        return self.metadata["vendor"]

    @property
    def multichannel(self) -> bool:
        """True for fluorescence / multiplex slides (levels ``(C, Y, X)`` in the file's
        pixel type, :attr:`channels` named), False for brightfield ((Y, X, 3) uint8)."""
        return bool(self.channels)

    @property
    def channel_names(self) -> list[str]:
        """The channels' names, in the file's order (empty for brightfield)."""
        return [c.name for c in self.channels]

    def channel_index(self, channel: int | str) -> int:
        """The index of a channel given by index or name (case-insensitive; a marker's
        other names find it too: Ki-67 / Ki67, pan-cytokeratin / PanCK)."""
        if not self.channels:
            raise RegionError(f"{self.path}: a brightfield slide has no channels to pick")
        if isinstance(channel, str):
            found = match_channel(channel.strip(), self.channel_names)
            if found is not None:
                return found
            raise RegionError(
                f"{self.path}: no channel {channel!r}; it has {', '.join(self.channel_names)}"
            )
        index = int(channel)
        if not 0 <= index < len(self.channels):
            raise RegionError(
                f"{self.path}: channel {index} does not exist (the slide has {len(self.channels)})"
            )
        return index

    @property
    def nuclear_channel(self) -> int | None:
        """Index of the nuclear stain (DAPI, Hoechst, ...) of a multichannel slide, or None."""
        return match_channel("DAPI", self.channel_names) if self.channels else None

    def contrast_limits(self, channel: int | str) -> tuple[float, float]:
        """Display limits of a channel: the file's window when it gives one, else the
        0.5th-99.5th percentiles of the finest level at most 1024 px a side (an all-zero
        channel gets (0, 1))."""
        index = self.channel_index(channel)
        given = self.channels[index].display_range
        if given is not None:
            return given
        with self._lock:
            cached = self._contrast.get(index)
        if cached is not None:
            return cached
        level = next(
            (i for i, info in enumerate(self._level_info) if max(info.shape) <= _PERCENTILE_SIDE),
            self.level_count - 1,
        )
        h, w = self._level_info[level].shape
        plane = self._read_channels(level, 0, 0, h, w, (index,))[0]
        lo, hi = (float(v) for v in np.percentile(plane, _PERCENTILES))
        if hi <= lo:
            hi = max(float(plane.max()), lo + (1.0 if plane.dtype.kind in "iub" else 1e-6))
            if hi <= lo:
                hi = lo + 1.0
        with self._lock:
            self._contrast[index] = (lo, hi)
        return lo, hi

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    @property
    def level_arrays(self) -> list[LevelArray]:
        """The pyramid as (Y, X, 3) uint8 array-likes that read when indexed; (C, Y, X)
        in the file's pixel type for a multichannel slide.

        Indexing one (``arrays[0][y0:y1, x0:x1]``) returns a numpy array read through
        the same parallel, cached tile decoder as :meth:`read_region`, with no dask graph
        per read: this is what the napari reader hands napari.
        """
        with self._lock:
            if self._level_arrays is None:
                self._level_arrays = [LevelArray(self, i) for i in range(self.level_count)]
            return list(self._level_arrays)

    def channel_arrays(self, channel: int | str) -> list[LevelArray]:
        """One channel of a multichannel slide as (Y, X) array-likes, level 0 first.

        Indexing one reads only that channel's tiles: the napari reader gives each
        channel layer these.
        """
        index = self.channel_index(channel)
        return [LevelArray(self, i, channel=index) for i in range(self.level_count)]

    @property
    def levels(self) -> list[da.Array]:
        """The pyramid as (Y, X, 3) uint8 dask arrays chunked at the native tile size
        ((C, Y, X), one channel per chunk, for a multichannel slide).

        For whole-level work (``map_blocks``, ``to_zarr``, a cluster); to read a window
        now, index :attr:`level_arrays` instead, which builds no task graph.
        """
        arrays = self.level_arrays
        with self._lock:
            if self._levels is None:
                self._levels = [self._dask_level(a) for a in arrays]
            return list(self._levels)

    def __repr__(self) -> str:
        w, h = self.dimensions
        channels = f" channels={len(self.channels)}" if self.channels else ""
        return (
            f"<Slide {self.path.name!r} {w}x{h} {self.vendor} "
            f"levels={self.level_count} mpp={self.mpp}{channels}>"
        )

    # -- reading -----------------------------------------------------------------------
    def read_region(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        channels: Sequence[int | str] | None = None,
    ) -> np.ndarray:
        """Read a (h, w, 3) uint8 region, OpenSlide style; (C, h, w) for multichannel.

        The signature is OpenSlide's ``read_region`` (the rest of the package takes a
        :class:`~napari_mupd.imaging.regions.Region`): ``location`` is the (x, y)
        top-left in level-0 pixels, ``size`` the (width, height) at ``level``. Pixels
        outside the slide are white; a region entirely outside raises
        :class:`~napari_mupd.errors.RegionError`.

        On a multichannel slide the result is ``(len(channels), h, w)`` in the file's
        pixel type, ``channels`` given by name (case-insensitive) or index, all of them
        by default; pixels outside the slide are 0.
        """
        self._check_open()
        picked: tuple[int, ...] | None = None
        if channels is not None or self.multichannel:
            if channels is None:
                picked = tuple(range(len(self.channels)))
            elif isinstance(channels, str | int):
                raise RegionError(
                    f"{self.path}: channels must be a list of names or indices, got {channels!r}"
                )
            else:
                picked = tuple(self.channel_index(c) for c in channels)
                if not picked:
                    raise RegionError(f"{self.path}: no channels asked for")
        if not 0 <= level < self.level_count:
            raise RegionError(
                f"{self.path.name}: level {level} does not exist (the slide has {self.level_count})"
            )
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise RegionError(f"{self.path.name}: region size must be positive, got {size}")
        ds = self._level_info[level].downsample
        x = math.floor(location[0] / ds + 1e-6)
        y = math.floor(location[1] / ds + 1e-6)
        lh, lw = self._level_info[level].shape
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, lh), min(x + w, lw)
        if y0 >= y1 or x0 >= x1:
            raise RegionError(
                f"{self.path.name}: region at {tuple(location)} of size {(w, h)} on level "
                f"{level} lies outside the slide ({lw}x{lh} at that level)"
            )
        if picked is not None:
            planes = self._read_channels(level, y0, x0, y1 - y0, x1 - x0, picked)
            if (y0, x0, y1, x1) == (y, x, y + h, x + w):
                return planes
            full = np.zeros((len(picked), h, w), planes.dtype)
            full[:, y0 - y : y1 - y, x0 - x : x1 - x] = planes
            return full
        inside = self._read_level(level, y0, x0, y1 - y0, x1 - x0)
        if (y0, x0, y1, x1) == (y, x, y + h, x + w):
            return inside
        out = np.full((h, w, 3), 255, np.uint8)
        out[y0 - y : y1 - y, x0 - x : x1 - x] = inside
        return out

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """The whole slide, downsampled so that its longer side is at most ``max_size``
        (RGB uint8; a multichannel slide as its channels' additive colour composite)."""
        self._check_open()
        level = next(
            (i for i, info in enumerate(self._level_info) if max(info.shape) <= max_size),
            self.level_count - 1,
        )
        h, w = self._level_info[level].shape
        if self.multichannel:
            image = self.composite(self._read_channels(level, 0, 0, h, w, self._all_channels))
        else:
            image = self._read_level(level, 0, 0, h, w)
        scale = max_size / max(h, w)
        if scale >= 1:
            return image
        return downscale(image, (max(1, round(h * scale)), max(1, round(w * scale))))

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image ('label', 'macro', 'thumbnail', ...) as RGB uint8."""
        self._check_open()
        associated = self._backend.info.associated
        if name not in associated:
            raise SlideError(
                f"{self.path.name}: no associated image {name!r}; "
                f"it has {sorted(associated) or 'none'}"
            )
        return associated[name]()

    @property
    def _all_channels(self) -> tuple[int, ...]:
        return tuple(range(len(self.channels)))

    def composite(
        self, planes: np.ndarray, channels: Sequence[int | str] | None = None
    ) -> np.ndarray:
        """(C, h, w) planes of ``channels`` (all by default) as an (h, w, 3) uint8
        additive composite: each scaled by its :meth:`contrast_limits`, tinted by its
        colour."""
        picked = (
            self._all_channels if channels is None else [self.channel_index(c) for c in channels]
        )
        out = np.zeros((*planes.shape[1:], 3), np.float32)
        for plane, index in zip(planes, picked, strict=True):
            lo, hi = self.contrast_limits(index)
            scaled = np.clip((plane.astype(np.float32) - lo) / (hi - lo), 0, 1)
            out += scaled[..., None] * np.asarray(self.channels[index].rgb, np.float32)
        return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)

    def _read_channels(
        self, level: int, y: int, x: int, h: int, w: int, channels: tuple[int, ...]
    ) -> np.ndarray:
        """Planes ``channels`` of [y:y+h, x:x+w] of a level as (len(channels), h, w)."""
        self._check_open()
        if not self.multichannel:
            raise RegionError(f"{self.path}: a brightfield slide has no channels to pick")
        if level < self._native_count:
            try:
                return self._backend.read_channels(level, y, x, h, w, channels)  # type: ignore[attr-defined]
            except SlideError as exc:
                raise SlideError(f"{self.path}: {exc}") from exc
        out = np.empty((len(channels), h, w), self.channels[0].dtype)
        for i, ch in enumerate(channels):
            out[i] = self._read_derived(level, y, x, h, w, channel=ch)
        return out

    def _read_level(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Pixels [y:y+h, x:x+w] of a level; the box must lie inside the level."""
        self._check_open()
        if self.multichannel:
            planes = self._read_channels(level, y, x, h, w, self._all_channels)
            return np.moveaxis(planes, 0, -1)
        if level < self._native_count:
            try:
                return self._backend.read(level, y, x, h, w)
            except SlideError as exc:
                raise SlideError(f"{self.path}: {exc}") from exc
        return self._read_derived(level, y, x, h, w)

    def _read_derived(
        self, level: int, y: int, x: int, h: int, w: int, channel: int | None = None
    ) -> np.ndarray:
        """Pixels of a derived level, from its tiles (computed once, then cached); one
        (h, w) plane when ``channel`` is given."""
        th, tw = self._level_info[level].tile
        lh, lw = self._level_info[level].shape
        out: np.ndarray
        if channel is None:
            out = np.empty((h, w, 3), np.uint8)
        else:
            out = np.empty((h, w), self.channels[channel].dtype)
        for r, c in covering_tiles((th, tw), y, x, h, w):
            ty0, tx0 = r * th, c * tw
            tile = self._derived_cache.get((level, channel, r, c))
            if tile is None:
                box = (level, ty0, tx0, min(th, lh - ty0), min(tw, lw - tx0))
                tile = self._compute_derived(*box, channel)
                self._derived_cache.put((level, channel, r, c), tile)
            sy0, sx0 = max(y, ty0), max(x, tx0)
            sy1, sx1 = min(y + h, ty0 + th), min(x + w, tx0 + tw)
            out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile[
                sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0
            ]
        return out

    def _compute_derived(
        self, level: int, y: int, x: int, h: int, w: int, channel: int | None = None
    ) -> np.ndarray:
        """Area-average a box of a derived level from the coarsest native level, by blocks:
        RGB uint8, or one ``channel`` of a multichannel slide in its pixel type."""
        source = self._native_count - 1
        factor = round(self._level_info[level].downsample / self._level_info[source].downsample)
        sh, sw = self._level_info[source].shape
        if channel is None:
            out = np.empty((h, w, 3), np.uint8)
        else:
            out = np.empty((h, w), self.channels[channel].dtype)
        step = max(1, _BLOCK_PIXELS // factor)
        for by in range(0, h, step):
            for bx in range(0, w, step):
                bh, bw = min(step, h - by), min(step, w - bx)
                sy, sx = (y + by) * factor, (x + bx) * factor
                sy1, sx1 = min(sy + bh * factor, sh), min(sx + bw * factor, sw)
                if channel is None:
                    block = self._read_level(source, sy, sx, sy1 - sy, sx1 - sx)
                else:
                    block = self._read_channels(source, sy, sx, sy1 - sy, sx1 - sx, (channel,))[0]
                pad = [(0, bh * factor - block.shape[0]), (0, bw * factor - block.shape[1])]
                pad += [(0, 0)] * (block.ndim - 2)
                if any(p[1] for p in pad):
                    block = np.pad(block, pad, mode="edge")
                out[by : by + bh, bx : bx + bw] = _block_mean(block, factor, out.dtype)
        return out

    def _dask_level(self, array: LevelArray) -> da.Array:
        level = array.level
        h, w = self._level_info[level].shape
        th, tw = self._level_info[level].tile
        stat = self.path.stat() if self.path.is_file() else None
        token = (str(self.path), self._options, stat.st_mtime_ns if stat else 0, level)
        if self.multichannel:
            return da.from_array(
                array,
                chunks=(1, min(th, h), min(tw, w)),
                name=f"mupd-slide-{tokenize(*token)}",
                asarray=False,
                fancy=False,
                lock=False,
                meta=np.empty((0, 0, 0), array.dtype),
            )
        return da.from_array(
            array,
            chunks=(min(th, h), min(tw, w), 3),
            name=f"mupd-slide-{tokenize(*token)}",
            asarray=False,
            fancy=False,
            lock=False,
            meta=np.empty((0, 0, 0), np.uint8),
        )

    # -- life cycle --------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise SlideError(f"{self.path}: the slide has been closed")

    def close(self) -> None:
        """Close the file; reads afterwards raise :class:`SlideError`."""
        self._closed = True
        self._finalizer()
        self._derived_cache.clear()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self):
        if self.vendor == "array":
            raise TypeError("a slide over in-memory arrays cannot be pickled")
        return (_reopen, (str(self.path), self._options))


def _reopen(path: str, options: dict[str, Any]) -> Slide:
    return Slide(path, **options)


_WORKER_SLIDES: dict[tuple[str, tuple], Slide] = {}
_WORKER_LOCK = threading.Lock()


def _worker_slide(path: str, options: dict[str, Any]) -> Slide:
    """One open slide per path and options in a process that received pickled levels."""
    key = (path, tuple(sorted(options.items())))
    with _WORKER_LOCK:
        slide = _WORKER_SLIDES.get(key)
        if slide is None or slide.closed:
            slide = _WORKER_SLIDES[key] = Slide(path, **options)
        return slide


def _with_derived_levels(levels: list[Level]) -> list[Level]:
    """Append lazily computed 2x levels until the coarsest fits ``COARSEST_SIDE``."""
    out = list(levels)
    coarsest = levels[-1]
    factor = 1
    while max(out[-1].shape) > COARSEST_SIDE:
        factor *= 2
        shape = (math.ceil(coarsest.shape[0] / factor), math.ceil(coarsest.shape[1] / factor))
        downsample = coarsest.downsample * factor
        out.append(
            replace(coarsest, shape=shape, downsample=downsample, tile=_DERIVED_TILE, native=False)
        )
    return out


def _open_backend(path: Path, series: int | None, backend: BackendName) -> Backend:
    """Pick the backend for a path, turning every failure into a SlideError."""
    try:
        if backend == "openslide":
            from napari_mupd.io._openslide import OpenSlideBackend

            return OpenSlideBackend(path)
        if backend == "tifffile":
            return _open_tiff(path, series, fall_back=False)
        if backend != "auto":
            raise SlideError(f"unknown backend {backend!r}; use 'auto', 'tifffile' or 'openslide'")
        return _select_backend(path, series)
    except SlideError as exc:
        if str(path) in str(exc):
            raise
        raise SlideError(f"{path}: {exc}") from exc
    except MissingDependencyError as exc:
        raise SlideError(f"{path}: {exc}") from exc


def _select_backend(path: Path, series: int | None) -> Backend:
    from napari_mupd.io._image import ImageBackend
    from napari_mupd.io._openslide import OpenSlideBackend, import_openslide, openslide_can_read

    if not path.exists():
        raise SlideError("no such file or folder")
    if path.is_dir():
        from napari_mupd.io._dicom import dicom_files
        from napari_mupd.io.ome_zarr import OmeZarrBackend, is_zarr  # imports zarr

        if is_zarr(path):
            return OmeZarrBackend(path)
        files = dicom_files(path)
        if files:
            return _open_dicom(path, files[0])
        raise SlideError(
            "a folder that is not an OME-Zarr (no zarr.json or .zattrs inside) "
            "nor a DICOM whole-slide image (no DICOM files inside)"
        )
    size = path.stat().st_size
    if size == 0:
        raise SlideError("the file is empty (0 bytes)")
    with path.open("rb") as fh:
        magic = fh.read(8)
    if magic.startswith(_TIFF_MAGIC):
        return _open_tiff(path, series, fall_back=True)
    if magic.startswith(_IMAGE_MAGIC):
        return ImageBackend(path)
    from napari_mupd.io._dicom import is_dicom_file

    if is_dicom_file(path):
        return _open_dicom(path, path)
    if magic.startswith(b"ZISRAWFI"):  # Zeiss CZI
        from napari_mupd.io._czi import CziBackend

        return CziBackend(path)
    if path.suffix.lower() in _OPENSLIDE_ONLY:
        import_openslide()
    if openslide_can_read(path):
        return OpenSlideBackend(path)
    raise SlideError(
        f"not a slide format napari-mupd reads (starts with {magic[:8]!r}); "
        "TIFF, SVS, NDPI, OME-TIFF, OME-Zarr, PNG and JPEG are read directly, other "
        "formats through OpenSlide: pip install 'napari-mupd[openslide]'"
    )


def _open_dicom(path: Path, first: Path) -> Backend:
    """wsidicom for a DICOM folder or file; OpenSlide when only it is installed."""
    from napari_mupd.io._dicom import DicomBackend
    from napari_mupd.io._openslide import OpenSlideBackend, openslide_can_read

    try:
        return DicomBackend(path)
    except MissingDependencyError:
        if openslide_can_read(first):
            return OpenSlideBackend(first)
        raise


def _open_tiff(path: Path, series: int | None, *, fall_back: bool) -> Backend:
    """tifffile, or OpenSlide (when ``fall_back``) for a TIFF tifffile cannot parse."""
    from napari_mupd.io._openslide import OpenSlideBackend, openslide_can_read
    from napari_mupd.io._tiff import TiffBackend

    try:
        return TiffBackend(path, series)
    except SlideError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files
        if fall_back and openslide_can_read(path):
            return OpenSlideBackend(path)
        raise SlideError(f"a corrupt or truncated TIFF ({type(exc).__name__}: {exc})") from exc


def _block_mean(block: np.ndarray, factor: int, dtype: np.dtype) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block: RGB uint8 through `area_downsample`,
    a channel plane in its own pixel type (integers rounded)."""
    if block.ndim == 3:
        return area_downsample(block, factor)
    bh, bw = block.shape[0] // factor, block.shape[1] // factor
    mean = block.reshape(bh, factor, bw, factor).mean(axis=(1, 3))
    if dtype.kind in "iub":
        mean = np.rint(mean)
    return mean.astype(dtype)
