"""OME-Zarr (NGFF 0.4 and 0.5) multiscale images: read straight from zarr, and written.

Reading: :class:`OmeZarrBackend` (what :func:`~napari_mupd.io.open_slide` uses for RGB
images) and :func:`read_ome_zarr` (any channels, e.g. a stain's markers). Writing:
:func:`create_ome_zarr` makes an empty (c, y, x) NGFF 0.4 pyramid that is filled chunk by
chunk, :func:`build_pyramid` computes its lower levels block by block (so a whole-slide
output never has to fit in memory), :func:`write_ome_zarr` writes an image at once.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_mupd.errors import SlideError
from napari_mupd.imaging.pixels import to_rgb_uint8, to_uint8
from napari_mupd.imaging.resize import area_downsample
from napari_mupd.io._backend import BackendInfo, Level, covering_tiles, level_downsample
from napari_mupd.io._cache import TileCache
from napari_mupd.io.channels import MARKER_COLOURS, Channel, is_multichannel, make_channels

_UM_PER = {"nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "centimeter": 1e4, "meter": 1e6}
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zattrs", ".zarray")


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a folder holding zarr (v2 or v3) metadata."""
    return path.is_dir() and any((path / m).exists() for m in ZARR_MARKERS)


class OmeZarrBackend:
    """The first multiscale image of an OME-Zarr group.

    Chunks are kept as RGB tiles in a byte-bounded LRU cache, as the TIFF backend keeps
    its tiles, so a read whose chunks were read before costs only copies. Chunks of a zarr
    v2 array on a local disk (what napari-mupd and ome-zarr-py write for NGFF 0.4) are
    read and decoded here, several at a time on a thread pool, bypassing zarr's
    per-call machinery; other arrays (zarr v3, sharding, filters) are read through zarr.
    """

    def __init__(self, path: Path, cache_bytes: int = 256 * 2**20) -> None:
        group = _open_group(path)
        attrs = dict(group.attrs)
        ms = _multiscale(attrs)
        self._arrays = [group[d["path"]] for d in ms["datasets"]]
        axes = self._axes = _axes(ms, self._arrays[0].ndim)
        shapes = [
            (int(a.shape[axes.index("y")]), int(a.shape[axes.index("x")])) for a in self._arrays
        ]
        tiles = [
            (int(a.chunks[axes.index("y")]), int(a.chunks[axes.index("x")])) for a in self._arrays
        ]
        self.info = BackendInfo(
            vendor="ome-zarr",
            levels=[
                Level(s, level_downsample(shapes[0], s), t)
                for s, t in zip(shapes, tiles, strict=True)
            ],
            mpp=_mpp(ms, axes),
            extra={
                "ngff_version": ms.get("version") or attrs.get("ome", {}).get("version"),
                "origin": _origin(ms, axes),
            },
            channels=_channels(attrs, self._arrays[0], axes),
        )
        self._cache = TileCache(cache_bytes)
        self._direct = [
            _LocalV2Chunks.open(Path(path) / str(d["path"]), axes, a.shape)
            for d, a in zip(ms["datasets"], self._arrays, strict=True)
        ]
        self._pool = (
            ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
            if any(self._direct) or self.info.channels
            else None
        )

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Level pixels [y:y+h, x:x+w] as (h, w, 3) uint8, from cached chunks."""
        th, tw = self.info.levels[level].tile
        lh, lw = self.info.levels[level].shape
        wanted = covering_tiles((th, tw), y, x, h, w)
        tiles = {rc: self._cache.get((level, *rc)) for rc in wanted}
        missing = [rc for rc, tile in tiles.items() if tile is None]
        direct = self._direct[level]
        if missing and direct is not None:

            def fetch(rc: tuple[int, int]) -> np.ndarray:
                tile = direct.tile(*rc)
                self._cache.put((level, *rc), tile)
                return tile

            pool = self._pool if len(missing) > 1 else None
            fetched = pool.map(fetch, missing) if pool is not None else map(fetch, missing)
            tiles.update(zip(missing, fetched, strict=True))
        elif missing:  # one zarr read of the chunks' bounding box, split into chunks
            r0, r1 = min(r for r, _ in missing), max(r for r, _ in missing) + 1
            c0, c1 = min(c for _, c in missing), max(c for _, c in missing) + 1
            by, bx = r0 * th, c0 * tw
            block = self._read_box(level, by, bx, min(r1 * th, lh) - by, min(c1 * tw, lw) - bx)
            for r, c in missing:
                # order="K" keeps a (c, y, x) zarr's planar layout: a plain copy, no shuffle
                part = block[r * th - by : (r + 1) * th - by, c * tw - bx : (c + 1) * tw - bx]
                tiles[r, c] = part = part.copy(order="K")
                self._cache.put((level, r, c), part)
        out = np.empty((h, w, 3), np.uint8)
        for (r, c), tile in tiles.items():
            assert tile is not None
            ty0, tx0 = r * th, c * tw
            sy0, sx0 = max(y, ty0), max(x, tx0)
            sy1, sx1 = min(y + h, ty0 + th), min(x + w, tx0 + tw)
            _paste(
                out[sy0 - y : sy1 - y, sx0 - x : sx1 - x],
                tile[sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0],
            )
        return out

    def read_channels(
        self, level: int, y: int, x: int, h: int, w: int, channels: tuple[int, ...]
    ) -> np.ndarray:
        """Planes ``channels`` of [y:y+h, x:x+w] as (len(channels), h, w), native dtype.

        Whole chunks (every channel of their channel block) are read through zarr,
        several at a time on a thread pool, and cached: the channel layers napari shows
        of one slide share them, so each chunk is decoded once.
        """
        array = self._arrays[level]
        axes = self._axes
        th, tw = self.info.levels[level].tile
        lh, lw = self.info.levels[level].shape
        count = len(self.info.channels)
        block = int(array.chunks[axes.index("c")])
        kept = [a for a in axes if a in ("c", "y", "x")]
        order = [kept.index(a) for a in ("c", "y", "x")]
        wanted = [
            (g, r, c)
            for g in sorted({ch // block for ch in channels})
            for r, c in covering_tiles((th, tw), y, x, h, w)
        ]
        tiles = {key: self._cache.get(("channels", level, *key)) for key in wanted}
        missing = [key for key, tile in tiles.items() if tile is None]

        def fetch(key: tuple[int, int, int]) -> np.ndarray:
            g, r, c = key
            picks = {
                "c": slice(g * block, min((g + 1) * block, count)),
                "y": slice(r * th, min((r + 1) * th, lh)),
                "x": slice(c * tw, min((c + 1) * tw, lw)),
            }
            pixels = np.transpose(np.asarray(array[tuple(picks.get(a, 0) for a in axes)]), order)
            if not pixels.dtype.isnative:
                pixels = pixels.astype(pixels.dtype.newbyteorder("="))
            pixels = np.ascontiguousarray(pixels)
            self._cache.put(("channels", level, *key), pixels)
            return pixels

        pool = self._pool if len(missing) > 1 else None
        fetched = pool.map(fetch, missing) if pool is not None else map(fetch, missing)
        tiles.update(zip(missing, fetched, strict=True))
        out = np.empty((len(channels), h, w), self.info.channels[0].dtype)
        for i, ch in enumerate(channels):
            g = ch // block
            for (tg, r, c), tile in tiles.items():
                if tg != g:
                    continue
                assert tile is not None
                ty0, tx0 = r * th, c * tw
                sy0, sx0 = max(y, ty0), max(x, tx0)
                sy1, sx1 = min(y + h, ty0 + th), min(x + w, tx0 + tw)
                out[i, sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile[
                    ch - g * block, sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0
                ]
        return out

    def _read_box(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Level pixels [y:y+h, x:x+w] straight from zarr, as (h, w, 3) uint8."""
        index = _index(self._axes, slice(y, y + h), slice(x, x + w))
        pixels = np.asarray(self._arrays[level][index])
        if not pixels.dtype.isnative:  # e.g. big-endian 16-bit
            pixels = pixels.astype(pixels.dtype.newbyteorder("="))
        return to_rgb_uint8(_yxc(pixels, self._axes))

    def close(self) -> None:
        """Stop the decoder threads and drop the cached chunks (files are opened per read)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._cache.clear()


class _LocalV2Chunks:
    """Chunks of a zarr v2 array in a local folder, read and decoded without zarr.

    Only the plain layout is taken (C order, no filters, 8- or 16-bit unsigned pixels, at
    most a numcodecs compressor); :meth:`open` returns None for anything else, and zarr
    reads it instead.
    """

    def __init__(self, folder: Path, meta: dict[str, Any], axes: list[str]) -> None:
        import numcodecs

        self.folder = folder
        self.axes = axes
        self.shape = tuple(int(n) for n in meta["shape"])
        self.chunks = tuple(int(n) for n in meta["chunks"])
        self.dtype = np.dtype(meta["dtype"])
        compressor = meta.get("compressor")
        self.codec = numcodecs.get_codec(compressor) if compressor else None
        self.separator = meta.get("dimension_separator") or "."
        self.fill = meta.get("fill_value") or 0
        c = axes.index("c") if "c" in axes else None
        self.channel_chunks = (
            range(math.ceil(self.shape[c] / self.chunks[c])) if c is not None else range(1)
        )
        self.channels = self.shape[c] if c is not None else 1
        # within a chunk: every channel, rows and columns; the first of any other axis
        self.inner = tuple(slice(None) if a in "cyx" else 0 for a in axes)

    @classmethod
    def open(cls, folder: Path, axes: list[str], shape: tuple[int, ...]) -> _LocalV2Chunks | None:
        try:
            meta = json.loads((folder / ".zarray").read_text())
        except (OSError, ValueError):
            return None
        dtype = meta.get("dtype")
        plain = (
            meta.get("zarr_format") == 2
            and meta.get("order", "C") == "C"
            and not meta.get("filters")
            and isinstance(dtype, str)
            and dtype.lstrip("<>|=") in ("u1", "u2", "b1")
            and tuple(meta.get("shape", ())) == tuple(shape)
        )
        if not plain:
            return None
        try:
            return cls(folder, meta, axes)
        except (ValueError, TypeError, KeyError):  # e.g. a compressor numcodecs does not know
            return None

    def _chunk(self, index: list[int]) -> np.ndarray:
        """One whole chunk (edge chunks are stored full size in zarr v2)."""
        key = self.separator.join(map(str, index))
        try:
            data = (self.folder / key).read_bytes()
        except FileNotFoundError:  # never written: the fill value, as zarr reads it
            return np.full(self.chunks, self.fill, self.dtype)
        try:
            raw = self.codec.decode(data) if self.codec is not None else data
            return np.frombuffer(raw, self.dtype).reshape(self.chunks)
        except Exception as exc:  # codec errors come in many types
            raise SlideError(
                f"zarr chunk {self.folder.name}/{key} cannot be decoded: {exc}"
            ) from exc

    def tile(self, row: int, col: int) -> np.ndarray:
        """Chunk (row, col) of the y/x grid, every channel, as (h, w, 3) uint8."""
        parts = []
        for ci in self.channel_chunks:
            index = [{"y": row, "x": col, "c": ci}.get(a, 0) for a in self.axes]
            parts.append(_yxc(self._chunk(index)[self.inner], self.axes))
        pixels = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
        ty, tx = self.chunks[self.axes.index("y")], self.chunks[self.axes.index("x")]
        h = min(ty, self.shape[self.axes.index("y")] - row * ty)
        w = min(tx, self.shape[self.axes.index("x")] - col * tx)
        pixels = pixels[:h, :w, : self.channels] if pixels.ndim == 3 else pixels[:h, :w]
        if not pixels.dtype.isnative:
            pixels = pixels.astype(pixels.dtype.newbyteorder("="))
        return to_rgb_uint8(pixels)


def _paste(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` for (h, w, 3) arrays; a channel at a time when ``src`` is planar
    (3-4x faster than numpy's own loop over a transposed source)."""
    if src.strides[2] > src.strides[1]:
        for ch in range(src.shape[2]):
            dst[..., ch] = src[..., ch]
    else:
        dst[...] = src


def _channels(attrs: dict[str, Any], array: Any, axes: list[str]) -> list[Channel]:
    """The channels of a multichannel image from its ``omero`` metadata (label, colour,
    window); none for brightfield (grey, RGB(A) or R/G/B-labelled channels)."""
    if "c" not in axes:
        return []
    count = int(array.shape[axes.index("c")])
    dtype = np.dtype(array.dtype).newbyteorder("=")
    omero = attrs.get("omero") or attrs.get("ome", {}).get("omero") or {}
    described = []
    for c in omero.get("channels", [])[:count]:
        window = c.get("window") or {}
        described.append(
            {
                "name": c.get("label"),
                "color": c.get("color"),
                "display_range": (window.get("start"), window.get("end")),
                "value_range": (window.get("min"), window.get("max"))
                if dtype.kind == "f"
                else None,
            }
        )
    if not is_multichannel(count, dtype, [str(d.get("name") or "") for d in described]):
        return []
    return make_channels(count, dtype, described)


def _open_group(path: str | os.PathLike) -> Any:
    import zarr  # ~200 ms to import: only when a zarr is opened

    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises many types for bad metadata
        raise SlideError(f"not a readable zarr group: {exc}") from exc


def _multiscale(attrs: dict[str, Any]) -> dict[str, Any]:
    """The first multiscale description of a group's attributes (NGFF 0.4 or 0.5)."""
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        raise SlideError("a zarr group without OME-NGFF 'multiscales' metadata")
    return dict(multiscales[0])


def _axes(ms: dict[str, Any], ndim: int) -> list[str]:
    """Axis names of the multiscale (NGFF 0.3's defaults when it names none)."""
    axes = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
    if not axes:
        axes = ["t", "c", "z", "y", "x"][-ndim:]
    if "y" not in axes or "x" not in axes or len(axes) != ndim:
        raise SlideError(f"unsupported OME-Zarr axes {axes}")
    return axes


def _index(axes: list[str], ys: slice, xs: slice) -> tuple[Any, ...]:
    """Rows ``ys`` and columns ``xs``, every channel, the first of any other axis."""
    picks = {"y": ys, "x": xs, "c": slice(None)}
    return tuple(picks.get(name, 0) for name in axes)


def _yxc(array: np.ndarray, axes: list[str]) -> np.ndarray:
    """An array indexed by :func:`_index` with its axes in (y, x[, c]) order."""
    kept = [a for a in axes if a in ("y", "x", "c")]
    order = [kept.index("y"), kept.index("x")] + ([kept.index("c")] if "c" in kept else [])
    return np.transpose(array, order)


def _mpp(ms: dict, axes: list[str]) -> tuple[float, float] | None:
    axis_meta = {a["name"]: a for a in ms.get("axes", []) if isinstance(a, dict)}
    transforms = ms["datasets"][0].get("coordinateTransformations", [])
    scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
    if scale is None:
        return None
    out = []
    for name in ("y", "x"):
        factor = _UM_PER.get(axis_meta.get(name, {}).get("unit", ""))
        if factor is None:
            return None
        out.append(float(scale[axes.index(name)]) * factor)
    return out[0], out[1]


def _origin(ms: dict, axes: list[str]) -> tuple[float, float]:
    """World (y, x) of level 0's first pixel centre: dataset and multiscale translations."""
    transforms = ms["datasets"][0].get("coordinateTransformations", [])
    top = ms.get("coordinateTransformations", [])
    origin = [0.0, 0.0]
    for t in [*transforms, *top]:
        if t.get("type") == "translation":
            shift = [float(t["translation"][axes.index(n)]) for n in "yx"]
            origin = [origin[0] + shift[0], origin[1] + shift[1]]
    return origin[0], origin[1]


@dataclass
class OmeZarrImage:
    """A whole OME-Zarr multiscale image in memory, as :func:`read_ome_zarr` returns it."""

    levels: list[np.ndarray]  # (h, w, c) arrays, finest first
    channels: list[str]  # OMERO channel labels (c0, c1, ... when there are none)
    mpp: tuple[float, float] | None  # micrometres per level-0 pixel (y, x)
    attrs: dict[str, Any] = field(default_factory=dict)  # the napari_mupd provenance


def read_ome_zarr(path: str | os.PathLike) -> OmeZarrImage:
    """Every level of the first multiscale image of an OME-Zarr, channels last."""
    try:
        group = _open_group(path)
        attrs = dict(group.attrs)
        ms = _multiscale(attrs)
        arrays = [group[d["path"]] for d in ms["datasets"]]
        axes = _axes(ms, arrays[0].ndim)
    except SlideError as exc:
        raise SlideError(f"{path}: {exc}") from exc
    everything = _index(axes, slice(None), slice(None))
    levels = [_yxc(np.asarray(a[everything]), axes) for a in arrays]
    levels = [level[..., None] if level.ndim == 2 else level for level in levels]
    labels = [c.get("label") for c in attrs.get("omero", {}).get("channels", [])]
    channels = [str(label) for label in labels if label is not None]
    if len(channels) != levels[0].shape[-1]:
        channels = [f"c{i}" for i in range(levels[0].shape[-1])]
    return OmeZarrImage(levels, channels, _mpp(ms, axes), dict(attrs.get("napari_mupd", {})))


#: Display colours (RGB hex) of markers without one in `io.channels.MARKER_COLOURS`.
COLOURS = ("FF0000", "00FF00", "00FFFF", "FF00FF", "FFFF00", "FF8000", "8000FF")


def channel_colours(channels: Sequence[str]) -> list[str]:
    """RGB channels get red, green, blue; markers their usual or a cycled colour."""
    if tuple(channels) == ("R", "G", "B"):
        return ["FF0000", "00FF00", "0000FF"]
    return [
        MARKER_COLOURS.get(c.lower(), COLOURS[i % len(COLOURS)]) for i, c in enumerate(channels)
    ]


def pyramid_shapes(shape: tuple[int, int], smallest: int = 256) -> list[tuple[int, int]]:
    """(h, w) of each 2x level until the longer side is at most ``smallest``."""
    shapes = [shape]
    while max(shapes[-1]) > smallest:
        h, w = shapes[-1]
        shapes.append((max(1, h // 2), max(1, w // 2)))
    return shapes


def create_ome_zarr(
    path: str | os.PathLike,
    shape: tuple[int, int],
    channels: Sequence[str],
    *,
    dtype: str = "uint8",
    chunk: int = 512,
    scale: tuple[float, float] = (1, 1),
    translate: tuple[float, float] = (0, 0),
    units: str = "micrometer",
    attrs: dict[str, Any] | None = None,
) -> Any:
    """Create an empty (c, y, x) NGFF 0.4 multiscale; returns the zarr group."""
    import zarr

    group: Any = zarr.open_group(str(path), mode="w", zarr_format=2)  # attrs typed as JSON
    shapes = pyramid_shapes(shape)
    datasets = []
    for i, (h, w) in enumerate(shapes):
        group.create_array(
            str(i),
            shape=(len(channels), h, w),
            dtype=dtype,
            chunks=(len(channels), chunk, chunk),
            fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        f = 2**i
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, scale[0] * f, scale[1] * f]},
                    {
                        "type": "translation",
                        "translation": [
                            0.0,
                            translate[0] + (f - 1) / 2 * scale[0],
                            translate[1] + (f - 1) / 2 * scale[1],
                        ],
                    },
                ],
            }
        )
    space = {"type": "space"} if units == "pixel" else {"type": "space", "unit": units}
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": Path(path).name,
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "y", **space},
                {"name": "x", **space},
            ],
            "datasets": datasets,
        }
    ]
    kind = np.dtype(dtype)
    top = int(np.iinfo(kind).max) if np.issubdtype(kind, np.integer) else 1.0
    group.attrs["omero"] = {
        "channels": [
            {
                "label": c,
                "color": colour,
                "active": True,
                "window": {"start": 0, "end": top, "min": 0, "max": top},
            }
            for c, colour in zip(channels, channel_colours(channels), strict=True)
        ],
        "rdefs": {"model": "color"},
    }
    group.attrs["napari_mupd"] = json.loads(json.dumps(attrs or {}, default=str))
    return group


def build_pyramid(group: Any, block: int = 2048) -> None:
    """Fill levels 1.. of an NGFF group from level 0, block by block (2x area mean)."""
    levels = sorted(group.array_keys(), key=int)
    for prev, cur in itertools.pairwise(levels):
        src, dst = group[prev], group[cur]
        _, h, w = dst.shape
        for y in range(0, h, block // 2):
            for x in range(0, w, block // 2):
                hh, ww = min(block // 2, h - y), min(block // 2, w - x)
                data = np.asarray(src[:, 2 * y : 2 * (y + hh), 2 * x : 2 * (x + ww)])
                chw = np.moveaxis(data, 0, -1)
                if dst.dtype == np.uint8:
                    small = area_downsample(chw, 2)
                else:
                    small = chw.reshape(hh, 2, ww, 2, -1).mean(axis=(1, 3)).astype(dst.dtype)
                dst[:, y : y + hh, x : x + ww] = np.moveaxis(small, -1, 0)


def write_ome_zarr(
    path: str | os.PathLike, image: np.ndarray, channels: Sequence[str], **kwargs: Any
) -> Path:
    """A whole (h, w, c) float image in [0, 1] as an OME-Zarr pyramid."""
    dtype = kwargs.pop("dtype", "uint8")
    group = create_ome_zarr(path, image.shape[:2], channels, dtype=dtype, **kwargs)
    pixels = to_uint8(image) if dtype == "uint8" else np.nan_to_num(image).astype(np.float32)
    group["0"][:] = np.moveaxis(pixels, -1, 0)
    build_pyramid(group)
    return Path(path)
