"""Tile grids with overlap and blending weights that sum to one."""

from __future__ import annotations

import numpy as np


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
