"""Tile grids with overlap and blending weights that sum to one, and which chunk of a
whole-slide job computes each tile."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: A chunk of a job by its (row, column) in the chunk grid.
Chunk = tuple[int, int]


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``.

    Neighbours overlap by at least ``overlap`` pixels; starts are multiples of
    ``align`` (e.g. 8, the VAE's stride, so tiles share one latent noise grid). The
    last tile may extend past ``length`` (callers pad); a length shorter than a tile
    gives one tile.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"need tile > 0 and 0 <= overlap < tile, got {tile}, {overlap}")
    step = max(align, (tile - overlap) // align * align)
    starts = list(range(0, max(length - tile, 0) + 1, step))
    last = -(-max(length - tile, 0) // align) * align
    if starts[-1] < last:
        starts.append(last)
    return starts


def ramp(tile: int, overlap: int, rise: bool, fall: bool) -> np.ndarray:
    """1-D weights: a linear rise over ``overlap`` at the start (if ``rise``), a fall at
    the end (if ``fall``), 1 in between; never exactly 0, so every pixel is covered."""
    w = np.ones(tile, np.float64)
    if overlap > 0:
        edge = (np.arange(overlap) + 0.5) / overlap
        if rise:
            w[:overlap] = np.minimum(w[:overlap], edge)
        if fall:
            w[-overlap:] = np.minimum(w[-overlap:], edge[::-1])
    return w


class Blender:
    """Accumulates weighted tiles into an (h, w, c) canvas; ``result`` normalises.

    Weights are separable ramps that fall off only towards neighbouring tiles, so the
    normalised weights of the tiles covering any pixel sum to exactly one.
    """

    def __init__(
        self,
        height: int,
        width: int,
        channels: int,
        tile: int,
        overlap: int,
        ys: list[int],
        xs: list[int],
    ) -> None:
        self.sum = np.zeros((height, width, channels), np.float64)
        self.weight = np.zeros((height, width, 1), np.float64)
        self.tile, self.overlap = tile, overlap
        self.ys, self.xs = ys, xs

    def weights(self, y: int, x: int) -> np.ndarray:
        """The (tile, tile) weight of the tile at (y, x)."""
        wy = ramp(self.tile, self.overlap, y != self.ys[0], y != self.ys[-1])
        wx = ramp(self.tile, self.overlap, x != self.xs[0], x != self.xs[-1])
        return np.outer(wy, wx)

    def add(self, y: int, x: int, tile: np.ndarray) -> None:
        """Add a (tile, tile, c) tile whose top-left is (y, x) on the canvas (clipped)."""
        h, w = self.sum.shape[:2]
        th, tw = min(self.tile, h - y), min(self.tile, w - x)
        wts = self.weights(y, x)[:th, :tw, None]
        self.sum[y : y + th, x : x + tw] += tile[:th, :tw] * wts
        self.weight[y : y + th, x : x + tw] += wts

    def result(self) -> np.ndarray:
        """The blended canvas; pixels no tile covered are NaN."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.sum / self.weight).astype(np.float32)


@dataclass(frozen=True)
class ChunkLayout:
    """A grid cut into square chunks of ``chunk`` px and tiled with ``tile`` px tiles
    starting at ``ys`` x ``xs``, and which chunk computes each tile.

    A tile is needed by every chunk it touches and computed by one of them, its owner; the
    others read it. The owner is the touching chunk of lowest :meth:`rank`: its class, the
    parity of its row plus that of its column, first. Chunks at (even, even) compute every
    tile that touches them; (even, odd) and (odd, even) ones every tile they share with no
    (even, even) chunk; (odd, odd) ones only what they share with nobody. Neighbours are
    never of one class, so (when tiles are no larger than chunks) a chunk waits for two
    classes of neighbours at most: a dependency chain is three chunks long, however big the
    slide, and every tile is computed once.
    """

    chunk: int
    tile: int
    ys: tuple[int, ...]  # tile starts along y and x (tile_starts of the grid)
    xs: tuple[int, ...]
    shape: tuple[int, int]  # the grid's (height, width)

    @classmethod
    def of(
        cls, shape: tuple[int, int], chunk: int, tile: int, overlap: int, align: int = 8
    ) -> ChunkLayout:
        """The layout of a grid of ``shape`` tiled as :func:`tile_starts` tiles it."""
        ys = tile_starts(shape[0], tile, overlap, align)
        xs = tile_starts(shape[1], tile, overlap, align)
        return cls(chunk, tile, tuple(ys), tuple(xs), shape)

    @property
    def grid(self) -> tuple[int, int]:
        """Chunks along y and x."""
        return -(-self.shape[0] // self.chunk), -(-self.shape[1] // self.chunk)

    def _span(self, start: int, axis: int) -> range:
        """Indices along ``axis`` of the chunks a tile starting at ``start`` touches."""
        return range(
            start // self.chunk, min(self.grid[axis], (start + self.tile - 1) // self.chunk + 1)
        )

    @staticmethod
    def rank(chunk: Chunk) -> tuple[int, int, int]:
        """The order in which chunks claim the tiles they touch (lowest first)."""
        r, c = chunk
        return r % 2 + c % 2, r, c

    def chunks(self, y: int, x: int) -> list[Chunk]:
        """The chunks the tile at (y, x) touches: every one of them needs it."""
        return [(r, c) for r in self._span(y, 0) for c in self._span(x, 1)]

    def owner(self, y: int, x: int) -> Chunk:
        """The chunk that computes the tile at (y, x)."""
        return min(self.chunks(y, x), key=self.rank)

    @cached_property
    def _spans(self) -> tuple[list[range], list[range]]:
        """The distinct chunk spans of the tiles along y and along x."""
        return (
            list(dict.fromkeys(self._span(y, 0) for y in self.ys)),
            list(dict.fromkeys(self._span(x, 1) for x in self.xs)),
        )

    def depends(self, chunk: Chunk) -> set[Chunk]:
        """The other chunks that compute tiles ``chunk`` needs (each of lower rank)."""
        r, c = chunk
        rows = [s for s in self._spans[0] if r in s]
        cols = [s for s in self._spans[1] if c in s]
        owners = {
            min(((i, j) for i in rs for j in cs), key=self.rank) for rs in rows for cs in cols
        }
        return owners - {chunk}

    def schedule(self, chunks: list[Chunk] | None = None) -> list[Chunk]:
        """``chunks`` (default: all) with each after the chunks it depends on, band by band
        down the grid, so that a shared tile is read soon after it is written."""
        rows, cols = self.grid
        todo = set(
            chunks if chunks is not None else [(r, c) for r in range(rows) for c in range(cols)]
        )
        deps = {chunk: self.depends(chunk) & todo for chunk in todo}

        def key(chunk: Chunk) -> tuple[int, tuple[int, int, int]]:
            return max([chunk[0], *(d[0] for d in self.depends(chunk))]), self.rank(chunk)

        waiting = {chunk: len(d) for chunk, d in deps.items()}
        dependents: dict[Chunk, list[Chunk]] = {chunk: [] for chunk in todo}
        for chunk, d in deps.items():
            for dep in d:
                dependents[dep].append(chunk)
        ready = [(key(chunk), chunk) for chunk, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, chunk = heapq.heappop(ready)
            order.append(chunk)
            for other in dependents[chunk]:
                waiting[other] -= 1
                if waiting[other] == 0:
                    heapq.heappush(ready, (key(other), other))
        return order
