"""Staining a region of a slide: the model's pixel grid, tiles, noise, blending, alignment.

The output lies on a grid of ``downsample`` level-0 pixels per output pixel, with the
region's top-left level-0 pixel corner as its origin. Output pixel (i, j) covers level-0
pixels ``[y + i*d, y + (i+1)*d) x [x + j*d, x + (j+1)*d)``; in napari world
coordinates (level-0 pixel k centred at k * mpp) that is ``scale = d * mpp`` and
``translate = (y + (d - 1) / 2) * mpp``, which is what :class:`StainResult` carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from skimage.draw import polygon2mask

from napari_mupd import __version__
from napari_mupd.engine.models import Cancel, Cancelled, TileModel
from napari_mupd.engine.noise import noise_window
from napari_mupd.engine.tiling import Blender, tile_starts
from napari_mupd.errors import RegionError
from napari_mupd.io import Slide

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Region:
    """A rectangle of level-0 pixels, optionally restricted to a polygon (level-0 x, y)."""

    x: int
    y: int
    width: int
    height: int
    polygon: tuple[tuple[float, float], ...] | None = None

    @classmethod
    def from_micrometres(
        cls, x: float, y: float, width: float, height: float, mpp: tuple[float, float]
    ) -> Region:
        """A rectangle given in micrometres on a slide of pixel size ``mpp`` (y, x)."""
        return cls(
            round(x / mpp[1]), round(y / mpp[0]), round(width / mpp[1]), round(height / mpp[0])
        )

    @classmethod
    def from_polygon(cls, xy: Sequence[Sequence[float]]) -> Region:
        """The bounding box of a polygon of level-0 (x, y) vertices, masked by it."""
        points = np.asarray(xy, float)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
            raise RegionError(f"a polygon needs at least 3 (x, y) vertices, got {points.shape}")
        x0, y0 = np.floor(points.min(axis=0) + 1e-6).astype(int)  # tolerate round-off
        x1, y1 = np.ceil(points.max(axis=0) - 1e-6).astype(int)
        return cls(int(x0), int(y0), int(x1 - x0), int(y1 - y0), tuple(map(tuple, points.tolist())))

    def check(self, slide: Slide) -> None:
        """Raise :class:`RegionError` unless the region overlaps the slide."""
        width, height = slide.dimensions
        if self.width <= 0 or self.height <= 0:
            raise RegionError(f"region {self} has no area")
        if (
            self.x >= width
            or self.y >= height
            or self.x + self.width <= 0
            or self.y + self.height <= 0
        ):
            raise RegionError(
                f"region x={self.x}, y={self.y}, {self.width}x{self.height} lies outside "
                f"{slide.path.name} ({width}x{height} px)"
            )


@dataclass(frozen=True)
class Grid:
    """The model's pixel grid over a region: level-0 pixels per output pixel and shape."""

    region: Region
    downsample: float
    level: int
    shape: tuple[int, int]

    @classmethod
    def for_region(cls, slide: Slide, region: Region, mpp: float | None) -> Grid:
        """The grid at pixel size ``mpp`` (the slide's own when it or ``mpp`` is unknown)."""
        region.check(slide)
        downsample = 1.0
        if mpp is not None and slide.mpp is not None:
            downsample = mpp / slide.mpp[0]
        level = max(
            (i for i, d in enumerate(slide.downsamples) if d <= downsample + 1e-6), default=0
        )
        shape = (
            max(1, round(region.height / downsample)),
            max(1, round(region.width / downsample)),
        )
        return cls(region, downsample, level, shape)

    def read(self, slide: Slide, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Source pixels [y:y+h, x:x+w] of the grid (white off the slide), uint8 RGB."""
        d = self.downsample
        x0 = self.region.x + x * d
        y0 = self.region.y + y * d
        level_ds = slide.downsamples[self.level]
        factor = d / level_ds  # level pixels per grid pixel
        lw, lh = max(1, round(w * factor)), max(1, round(h * factor))
        try:
            pixels = slide.read_region((round(x0), round(y0)), self.level, (lw, lh))
        except RegionError:  # a tile entirely off the slide: glass
            return np.full((h, w, 3), 255, np.uint8)
        if (lh, lw) == (h, w):
            return pixels
        filt = Image.Resampling.BOX if factor > 1 else Image.Resampling.BICUBIC
        return np.asarray(Image.fromarray(pixels).resize((w, h), filt))

    def mask(self) -> np.ndarray | None:
        """The polygon as a boolean mask on the grid (None for rectangles)."""
        if self.region.polygon is None:
            return None
        d = self.downsample
        rc = [
            ((py - self.region.y) / d, (px - self.region.x) / d) for px, py in self.region.polygon
        ]
        return polygon2mask(self.shape, np.asarray(rc))

    def placement(
        self, mpp: tuple[float, float] | None
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """napari ``scale`` and ``translate`` (y, x) that lay the grid over the slide layer."""
        sy, sx = mpp if mpp is not None else (1.0, 1.0)
        d, r = self.downsample, self.region
        return (d * sy, d * sx), ((r.y + (d - 1) / 2) * sy, (r.x + (d - 1) / 2) * sx)


@dataclass
class StainResult:
    """A stained region: the image on the model grid, its uncertainty and its placement."""

    image: np.ndarray  # (H, W, C) float32 in [0, 1]
    channels: tuple[str, ...]
    scale: tuple[float, float]
    translate: tuple[float, float]
    units: str  # "micrometer" when the slide's pixel size is known, else "pixel"
    std: np.ndarray | None = None  # (H, W, C) per-pixel std over samples
    mask: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def rgb_uint8(self) -> np.ndarray:
        """The image as uint8 (RGB targets)."""
        return (np.clip(np.nan_to_num(self.image, nan=1.0), 0, 1) * 255 + 0.5).astype(np.uint8)


def window_tiles(
    shape: tuple[int, int],
    tile: int,
    overlap: int,
    window: tuple[int, int, int, int],
    tissue: Callable[[int, int, int], bool] | None = None,
) -> list[tuple[int, int]]:
    """Top-left corners of the grid's tiles that touch ``window`` (and have tissue)."""
    y0, x0, y1, x1 = window
    ys = [y for y in tile_starts(shape[0], tile, overlap, 8) if y < y1 and y + tile > y0]
    xs = [x for x in tile_starts(shape[1], tile, overlap, 8) if x < x1 and x + tile > x0]
    return [(y, x) for y in ys for x in xs if tissue is None or tissue(y, x, tile)]


def stain_grid(
    slide: Slide,
    grid: Grid,
    model: TileModel,
    *,
    window: tuple[int, int, int, int] | None = None,
    seed: int = 0,
    samples: int = 1,
    batch_size: int = 4,
    overlap: int | None = None,
    tissue: Callable[[int, int, int], bool] | None = None,
    progress: Progress | None = None,
    cancel: Cancel = lambda: False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Stain ``window`` (y0, x0, y1, x1 of the grid; default all) tile by tile.

    Tiles lie on one grid over the whole ``grid`` and each draws its noise from one
    field, so any window gives the same pixels as staining everything at once.
    ``tissue(y, x, size)`` may skip tiles without tissue (left at the fill value: white
    for RGB, 0 for marker channels). Returns the mean and, for ``samples`` > 1, the std.
    """
    t = model.tile_size
    overlap = t // 4 if overlap is None else overlap
    height, width = grid.shape
    y0, x0, y1, x1 = window or (0, 0, height, width)
    ys_all, xs_all = tile_starts(height, t, overlap, 8), tile_starts(width, t, overlap, 8)
    boxes = window_tiles(grid.shape, t, overlap, (y0, x0, y1, x1), tissue)
    fill = 1.0 if model.channels == ("R", "G", "B") else 0.0
    c = len(model.channels)
    mean = np.full((y1 - y0, x1 - x0, c), fill, np.float32)
    std = np.zeros_like(mean) if samples > 1 else None
    if not boxes:
        return mean, std
    # blend on the union of the tiles touching the window, then crop the window
    by0, bx0 = min(y for y, _ in boxes), min(x for _, x in boxes)
    by1, bx1 = max(y for y, _ in boxes) + t, max(x for _, x in boxes) + t
    avg, m2 = None, None  # Welford: exact zero spread for identical samples
    total = len(boxes) * samples
    done = 0
    for k in range(samples):
        blender = Blender(
            by1 - by0,
            bx1 - bx0,
            c,
            t,
            overlap,
            [y - by0 for y in ys_all],
            [x - bx0 for x in xs_all],
        )
        for start in range(0, len(boxes), batch_size):
            if cancel():
                raise Cancelled("cancelled")
            batch = boxes[start : start + batch_size]
            sources = np.stack([grid.read(slide, y, x, t, t) for y, x in batch])
            noise = None
            if model.latent_channels:
                noise = np.stack(
                    [
                        noise_window(
                            seed + k, model.latent_channels, y // 8, x // 8, t // 8, t // 8
                        )
                        for y, x in batch
                    ]
                )
            tiles = model(sources, noise, cancel)
            for (y, x), tile in zip(batch, tiles, strict=True):
                blender.add(y - by0, x - bx0, tile)
            done += len(batch)
            if progress is not None:
                progress(done, total)
        blended = blender.result().astype(np.float64)
        if avg is None:
            avg, m2 = blended, np.zeros_like(blended)
        else:
            delta = blended - avg
            avg = avg + delta / (k + 1)
            m2 = m2 + delta * (blended - avg)
    assert avg is not None and m2 is not None
    cy0, cx0 = max(y0, by0), max(x0, bx0)
    cy1, cx1 = min(y1, by1), min(x1, bx1)
    crop = np.s_[cy0 - by0 : cy1 - by0, cx0 - bx0 : cx1 - bx0]
    out = np.s_[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    covered = avg[crop]
    mean[out] = np.where(np.isnan(covered), fill, covered)
    if std is not None:
        std[out] = np.nan_to_num(np.sqrt(m2[crop] / samples))
    return mean, std


def stain_region(
    slide: Slide,
    region: Region,
    model: TileModel,
    *,
    seed: int = 0,
    samples: int = 1,
    mpp: float | None = None,
    batch_size: int = 4,
    overlap: int | None = None,
    progress: Progress | None = None,
    cancel: Cancel = lambda: False,
) -> StainResult:
    """Virtually stain a region of a slide with ``model``; the result knows where it lies."""
    started = time.perf_counter()
    grid = Grid.for_region(slide, region, mpp if mpp is not None else model.mpp)
    mask = grid.mask()
    tissue = None
    if mask is not None:
        tissue = lambda y, x, t: bool(mask[y : y + t, x : x + t].any())  # noqa: E731
    mean, std = stain_grid(
        slide,
        grid,
        model,
        seed=seed,
        samples=samples,
        batch_size=batch_size,
        overlap=overlap,
        tissue=tissue,
        progress=progress,
        cancel=cancel,
    )
    scale, translate = grid.placement(slide.mpp)
    metadata = {
        "napari_mupd_version": __version__,
        "source": str(slide.path),
        "region": {
            "x": region.x,
            "y": region.y,
            "width": region.width,
            "height": region.height,
            "polygon": region.polygon,
        },
        "level": grid.level,
        "downsample": grid.downsample,
        "seed": seed,
        "samples": samples,
        "seconds": round(time.perf_counter() - started, 3),
        **(model.provenance() if hasattr(model, "provenance") else {}),
    }
    return StainResult(
        mean,
        model.channels,
        scale,
        translate,
        "micrometer" if slide.mpp else "pixel",
        std,
        mask,
        metadata,
    )
