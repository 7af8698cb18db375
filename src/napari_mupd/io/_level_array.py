"""One pyramid level as a numpy-like array that reads pixels when indexed (napari's layer data).

Indexing a :class:`LevelArray` reads the box it covers with the slide's own region
reader (for TIFF: the parallel, cached tile decoder behind ``read_region``) and returns a
numpy array, like a zarr array does: no dask graph is built per slice, and nothing is
kept beyond the slide's tile caches, so memory stays bounded whatever is read.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari_mupd.io.slide import Slide

#: A strided read whose box is larger than this (and than twice its output) is read in
#: strips of rows, so ``level[::16, ::16]`` of a 100k px level never holds the whole box.
MAX_BOX_BYTES = 256 * 2**20


class LevelArray:
    """Level ``level`` of ``slide`` as a read-only (Y, X, 3) uint8 array-like.

    On a multichannel slide it is (C, Y, X) in the file's pixel type, or (Y, X) for one
    channel (``channel``): indexing reads only the channels the index covers.

    It has ``shape``, ``dtype``, ``ndim``, ``size`` and ``nbytes``, and numpy's indexing
    (integers, slices with any step, ``...``, ``None``, integer and boolean arrays);
    ``level[y0:y1, x0:x1]`` returns the same pixels as
    ``slide.read_region`` of that box. ``np.asarray(level)`` reads the whole level. It
    pickles by path: a process that unpickles it reopens the file once and shares it.
    """

    def __init__(self, slide: Slide, level: int, channel: int | None = None) -> None:
        self.slide = slide
        self.level = level
        self.channel = channel
        h, w = slide.level_info[level].shape
        self.shape: tuple[int, ...]
        if channel is not None:
            self.shape = (h, w)
            self.dtype = np.dtype(slide.channels[channel].dtype)
        elif slide.multichannel:
            self.shape = (len(slide.channels), h, w)
            self.dtype = np.dtype(slide.channels[0].dtype)
        else:
            self.shape = (h, w, 3)
            self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)
        # the axes read as a box: y, x (and channels first on a (C, Y, X) level)
        self._boxed = 3 if self.ndim == 3 and slide.multichannel else 2

    @property
    def size(self) -> int:
        """Number of elements (h * w * 3, or c * h * w)."""
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes the whole level takes once read."""
        return self.size * self.dtype.itemsize

    @property
    def tile(self) -> tuple[int, int]:
        """(h, w) of the level's native tiles (the dask chunks of ``Slide.levels``)."""
        return self.slide.level_info[self.level].tile

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.shape))
        channel = f" channel {self.channel}" if self.channel is not None else ""
        return (
            f"<LevelArray {self.slide.path.name!r} level {self.level}{channel} {shape} "
            f"{self.dtype}>"
        )

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> Any:
        items = _expand(key, self.shape)
        box: list[tuple[int, int]] = []  # (start, stop) read along y and x
        local: list[Any] = []  # the index into the box that gives the result
        axis = 0
        for item in items:
            if item is None:
                local.append(None)
                continue
            if axis < self._boxed:
                start, stop, inner = _cover(item, self.shape[axis], axis)
                box.append((start, stop))
                local.append(inner)
            else:
                local.append(item)  # RGB: numpy indexes the three of them
            axis += 1
        if self._boxed == 3:  # (C, Y, X): read the channels the index covers
            (c0, c1), (y0, y1), (x0, x1) = box
            if c1 <= c0 or y1 <= y0 or x1 <= x0:
                empty = np.empty((c1 - c0, y1 - y0, x1 - x0), self.dtype)
                return empty[tuple(local)]
            planes = self.slide._read_channels(
                self.level, y0, x0, y1 - y0, x1 - x0, tuple(range(c0, c1))
            )
            return planes[tuple(local)]
        (y0, y1), (x0, x1) = box
        if y1 <= y0 or x1 <= x0:
            return np.empty((y1 - y0, x1 - x0, *self.shape[2:]), self.dtype)[tuple(local)]
        if _needs_strips(items, local, y1 - y0, x1 - x0):
            return self._read_in_strips(items, x1 - x0)
        if self.channel is not None:
            pixels = self.slide._read_channels(
                self.level, y0, x0, y1 - y0, x1 - x0, (self.channel,)
            )[0]
        else:
            pixels = self.slide._read_level(self.level, y0, x0, y1 - y0, x1 - x0)
        return pixels[tuple(local)]

    def _read_in_strips(self, items: list[Any], box_width: int) -> np.ndarray:
        """A strided read of a large box, a few rows of output at a time."""
        rows = range(*items[0].indices(self.shape[0]))
        per_strip = max(1, MAX_BOX_BYTES // (abs(rows.step) * box_width * 3))
        out: np.ndarray | None = None
        for i in range(0, len(rows), per_strip):
            part_rows = rows[i : i + per_strip]
            first, last = part_rows[0], part_rows[-1]
            stop = last + (1 if part_rows.step > 0 else -1)
            part = self[(slice(first, stop if stop >= 0 else None, part_rows.step), *items[1:])]
            if out is None:
                out = np.empty((len(rows), *part.shape[1:]), part.dtype)
            out[i : i + len(part_rows)] = part
        assert out is not None
        return out

    def __reduce__(self):
        if self.slide.vendor == "array":
            raise TypeError("a level of a slide over in-memory arrays cannot be pickled")
        return (
            _worker_level,
            (str(self.slide.path), self.slide._options, self.level, self.channel),
        )


def _worker_level(
    path: str, options: dict[str, Any], level: int, channel: int | None = None
) -> LevelArray:
    from napari_mupd.io.slide import _worker_slide

    return LevelArray(_worker_slide(path, options), level, channel)


def _expand(key: Any, shape: tuple[int, ...]) -> list[Any]:
    """``key`` as one item per axis (``None`` kept): ``...`` filled, boolean arrays as
    their ``nonzero()`` (numpy's own rule), integer arrays as arrays."""
    items: list[Any] = []
    for item in key if isinstance(key, tuple) else (key,):
        if isinstance(item, list | np.ndarray):
            array = np.asarray(item)
            if array.dtype == bool and array.ndim > 0:
                item = array
            elif array.ndim == 0:
                item = array.item()
            elif np.issubdtype(array.dtype, np.integer) or not array.size:
                item = array.astype(np.intp)
            else:
                raise IndexError(f"arrays used as indices must be integers, got {array.dtype}")
        items.append(item)
    ellipses = [i for i, item in enumerate(items) if item is Ellipsis]
    if len(ellipses) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    ndim = len(shape)
    used = sum(_axes_used(item) for item in items)
    if used > ndim:
        raise IndexError(
            f"too many indices for array: array is {ndim}-dimensional, but {used} were indexed"
        )
    fill = [slice(None)] * (ndim - used)
    if ellipses:
        items[ellipses[0] : ellipses[0] + 1] = fill
    else:
        items += fill
    out: list[Any] = []
    axis = 0
    for item in items:
        if isinstance(item, np.ndarray) and item.dtype == bool:
            if item.shape != shape[axis : axis + item.ndim]:
                raise IndexError(
                    f"boolean index of shape {item.shape} does not match the indexed axes "
                    f"{shape[axis : axis + item.ndim]}"
                )
            out.extend(item.nonzero())
        else:
            out.append(item)
        axis += _axes_used(item)
    return out


def _axes_used(item: Any) -> int:
    """How many axes of the array an index item consumes."""
    if item is None or item is Ellipsis:
        return 0
    if isinstance(item, np.ndarray) and item.dtype == bool:
        return item.ndim
    return 1


def _cover(item: Any, n: int, axis: int) -> tuple[int, int, Any]:
    """(start, stop) of the pixels ``item`` selects along an axis of length ``n``, and
    the same selection relative to ``start``."""
    if isinstance(item, slice):
        r = range(*item.indices(n))
        if not r:
            return 0, 0, slice(0, 0)
        lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
        stop = r[-1] - lo + (1 if r.step > 0 else -1)
        return lo, hi, slice(r[0] - lo, stop if stop >= 0 else None, r.step)
    if isinstance(item, np.ndarray):
        if item.size == 0:
            return 0, 0, item
        index = np.where(item < 0, item + n, item)
        if index.min() < 0 or index.max() >= n:
            bad = item[(index < 0) | (index >= n)].flat[0]
            raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {n}")
        lo = int(index.min())
        return lo, int(index.max()) + 1, index - lo
    try:
        i = operator.index(item)
    except TypeError:
        raise IndexError(
            "only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) and "
            f"integer or boolean arrays are valid indices, got {item!r}"
        ) from None
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
    i %= n
    return i, i + 1, 0


def _needs_strips(items: list[Any], local: list[Any], h: int, w: int) -> bool:
    """Whether a read's box is large and mostly skipped (strided rows or columns)."""
    box = h * w * 3
    if box <= MAX_BOX_BYTES or not isinstance(items[0], slice) or h < 2:
        return False
    if any(item is None or isinstance(item, np.ndarray) for item in items):
        return False
    rows = len(range(h)[local[0]])
    cols = len(range(w)[local[1]]) if isinstance(local[1], slice) else 1
    return box > 2 * rows * cols * 3
