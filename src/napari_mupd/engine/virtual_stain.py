"""Virtual staining of a slide region: the model's pixel grid, tiles, noise, blending, alignment.

The model runs on a grid of ``downsample`` level-0 pixels per grid pixel, with the region's
top-left level-0 pixel corner as its origin. A model that renders detail (virtual IHC) can
draw its output ``detail`` times finer than its grid, on the source read at that
resolution: output pixels are then ``d = downsample / detail`` level-0 pixels. Output pixel
(i, j) covers level-0 pixels ``[y + i*d, y + (i+1)*d) x [x + j*d, x + (j+1)*d)``; in napari
world coordinates (level-0 pixel k centred at k * mpp) that is ``scale = d * mpp`` and
``translate = (y + (d - 1) / 2) * mpp``, which is what :class:`StainResult` carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from skimage.draw import polygon2mask

from napari_mupd._version import __version__
from napari_mupd.engine.noise import noise_window
from napari_mupd.engine.sampling import Cancel, Progress, TileModel
from napari_mupd.engine.tiling import Blender, tile_starts
from napari_mupd.engine.tissue import slide_tissue
from napari_mupd.errors import Cancelled, RegionError, SlideError
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.imaging.regions import Region
from napari_mupd.imaging.resize import resize
from napari_mupd.io import Slide

#: Whether a tile (a region of grid pixels) is worth staining.
TileFilter = Callable[[Region], bool]


class TileStore(Protocol):
    """Tiles shared by the chunks of a whole-slide job, so that each is computed once:
    ``borrowed`` says another chunk computed the tile of sample ``sample`` at grid pixel
    (y, x) and ``load`` reads it; ``save`` offers a tile this chunk computed to the others."""

    def borrowed(self, sample: int, y: int, x: int) -> bool: ...

    def load(self, sample: int, y: int, x: int) -> np.ndarray: ...

    def save(self, sample: int, y: int, x: int, tile: np.ndarray) -> None: ...


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
        if slide.multichannel:
            raise SlideError(
                f"{slide.path}: a multichannel (fluorescence) slide with "
                f"{len(slide.channels)} channels ({', '.join(slide.channel_names[:6])}"
                f"{', ...' if len(slide.channels) > 6 else ''}); virtual staining reads a "
                "brightfield H&E slide"
            )
        region.check_within(slide.dimensions, slide.path.name)
        downsample = 1.0
        if mpp is not None and slide.mpp is not None:
            downsample = mpp / slide.mpp[0]
        level = _level_for(slide, downsample)
        shape = (
            max(1, round(region.height / downsample)),
            max(1, round(region.width / downsample)),
        )
        return cls(region, downsample, level, shape)

    def read(self, slide: Slide, window: Region, detail: int = 1) -> np.ndarray:
        """Source pixels of a ``window`` of grid pixels (white off the slide), uint8 RGB,
        at ``detail`` output pixels per grid pixel: (detail * h, detail * w, 3)."""
        d = self.downsample
        x0 = self.region.x + window.x * d
        y0 = self.region.y + window.y * d
        level = self.level if detail == 1 else _level_for(slide, d / detail)
        factor = d / slide.downsamples[level]  # level pixels per grid pixel
        h, w = window.height * detail, window.width * detail
        lw, lh = max(1, round(window.width * factor)), max(1, round(window.height * factor))
        try:
            pixels = slide.read_region((round(x0), round(y0)), level, (lw, lh))
        except RegionError:  # a tile entirely off the slide: glass
            return np.full((h, w, 3), 255, np.uint8)
        return resize(pixels, (h, w))

    def detail_for(self, slide: Slide, output_mpp: float | None) -> int:
        """Output pixels per grid pixel for output at ``output_mpp`` (None: the grid's own),
        at most the slide's level 0; 1 when the slide's pixel size is unknown."""
        if output_mpp is None or slide.mpp is None:
            return 1
        if output_mpp <= 0:
            raise RegionError(f"the output pixel size must be positive, got {output_mpp}")
        finest = max(1, int(self.downsample + 1e-6))
        return max(1, min(finest, round(self.downsample * slide.mpp[0] / output_mpp)))

    def to_level0(self, window: Region) -> Region:
        """A window of grid pixels as the region of level-0 pixels it covers."""
        d, r = self.downsample, self.region
        return Region(
            round(r.x + window.x * d),
            round(r.y + window.y * d),
            round(window.width * d),
            round(window.height * d),
        )

    def mask(self, detail: int = 1) -> np.ndarray | None:
        """The polygon as a boolean mask on the grid, ``detail`` times finer (None for
        rectangles)."""
        if self.region.polygon is None:
            return None
        d = self.downsample / detail
        rc = [
            ((py - self.region.y) / d, (px - self.region.x) / d) for px, py in self.region.polygon
        ]
        shape = (self.shape[0] * detail, self.shape[1] * detail)
        return polygon2mask(shape, np.asarray(rc))

    def placement(
        self, mpp: tuple[float, float] | None, detail: int = 1
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """napari ``scale`` and ``translate`` (y, x) that lay the output (``detail`` pixels
        per grid pixel) over the slide layer."""
        sy, sx = mpp if mpp is not None else (1.0, 1.0)
        d, r = self.downsample / detail, self.region
        return (d * sy, d * sx), ((r.y + (d - 1) / 2) * sy, (r.x + (d - 1) / 2) * sx)


def _level_for(slide: Slide, downsample: float) -> int:
    """The coarsest level at least as fine as ``downsample``."""
    return max((i for i, d in enumerate(slide.downsamples) if d <= downsample + 1e-6), default=0)


@dataclass
class StainResult:
    """A stained region: the image on the model grid, its uncertainty and its placement."""

    image: np.ndarray  # (H, W, C) float32 in [0, 1]
    channels: tuple[str, ...]
    scale: tuple[float, float]
    translate: tuple[float, float]
    units: str  # "micrometer" when the slide's pixel size is known, else "pixel"
    std: np.ndarray | None = None  # (H, W, C) per-pixel std over samples
    mask: np.ndarray | None = None  # (H, W) bool: stained (tissue, inside the polygon)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: np.ndarray | None = None  # (H, W, 3) uint8: the slide on the output's grid

    def rgb_uint8(self) -> np.ndarray:
        """The image as uint8 (RGB targets; uncovered pixels white)."""
        return to_uint8(self.image, nan=1.0)

    def rgba_uint8(self) -> np.ndarray:
        """The image as uint8 RGBA, transparent where nothing was stained (glass, outside
        the polygon), so the slide shows through."""
        alpha = np.full(self.image.shape[:2], 255, np.uint8)
        if self.mask is not None:
            alpha[~self.mask] = 0
        return np.concatenate([self.rgb_uint8(), alpha[..., None]], axis=-1)


def window_tiles(
    shape: tuple[int, int],
    tile: int,
    overlap: int,
    window: Region,
    tissue: TileFilter | None = None,
) -> list[Region]:
    """The tiles of a grid of ``shape`` (h, w) that touch ``window`` (and pass ``tissue``),
    as regions of grid pixels, row by row."""
    y0, x0 = window.y, window.x
    y1, x1 = y0 + window.height, x0 + window.width
    ys = [y for y in tile_starts(shape[0], tile, overlap, 8) if y < y1 and y + tile > y0]
    xs = [x for x in tile_starts(shape[1], tile, overlap, 8) if x < x1 and x + tile > x0]
    tiles = [Region(x, y, tile, tile) for y in ys for x in xs]
    return [t for t in tiles if tissue is None or tissue(t)]


def stain_grid(
    slide: Slide,
    grid: Grid,
    model: TileModel,
    *,
    window: Region | None = None,
    seed: int = 0,
    samples: int = 1,
    batch_size: int = 4,
    overlap: int | None = None,
    tissue: TileFilter | None = None,
    detail: int = 1,
    store: TileStore | None = None,
    progress: Progress | None = None,
    cancel: Cancel = lambda: False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Stain ``window`` (a region of grid pixels; default: the whole grid) tile by tile.

    Tiles lie on one grid over the whole ``grid`` and each draws its noise from one
    field, so any window gives the same pixels as staining everything at once.
    ``tissue(tile)`` (a region of grid pixels) may skip tiles without tissue (left at
    the fill value: white for RGB, 0 for marker channels). ``detail`` > 1 (a model that
    `renders_detail`) draws ``detail`` output pixels per grid pixel. Tiles that ``store``
    says another chunk computed are read from it, and the others offered to it. Returns the
    mean and, for ``samples`` > 1, the std, of shape (detail * window height, detail *
    width, C). Tiles are blended in one order (row by row, over the grid) whoever computed
    them, so every pixel is the same sum, to the bit, for any window.
    """
    if detail > 1 and not model.renders_detail:
        raise RegionError("this model draws on its own grid only (detail must be 1)")
    t = model.tile_size
    overlap = t // 4 if overlap is None else overlap
    height, width = grid.shape
    window = window or Region(0, 0, width, height)
    k = detail
    y0, x0 = window.y, window.x
    y1, x1 = y0 + window.height, x0 + window.width
    ys_all, xs_all = tile_starts(height, t, overlap, 8), tile_starts(width, t, overlap, 8)
    boxes = [(tile.y, tile.x) for tile in window_tiles(grid.shape, t, overlap, window, tissue)]
    fill = 1.0 if model.channels == ("R", "G", "B") else 0.0
    c = len(model.channels)
    mean = np.full((k * (y1 - y0), k * (x1 - x0), c), fill, np.float32)
    std = np.zeros_like(mean) if samples > 1 else None
    if not boxes:
        return mean, std
    # blend on the union of the tiles touching the window, then crop the window
    by0, bx0 = min(y for y, _ in boxes), min(x for _, x in boxes)
    by1, bx1 = max(y for y, _ in boxes) + t, max(x for _, x in boxes) + t
    avg, m2 = None, None  # Welford: exact zero spread for identical samples
    owns = [  # the tiles this call computes, per sample
        [(y, x) for y, x in boxes if store is None or not store.borrowed(i, y, x)]
        for i in range(samples)
    ]
    total = sum(len(own) for own in owns)
    done = 0
    if progress is not None:  # the tile count before the first tile: the caller may ask
        progress(0, total)
    for i, own in enumerate(owns):
        blender = Blender(
            k * (by1 - by0),
            k * (bx1 - bx0),
            c,
            k * t,
            k * overlap,
            [k * (y - by0) for y in ys_all],
            [k * (x - bx0) for x in xs_all],
        )
        computed: dict[tuple[int, int], np.ndarray] = {}
        queue = _InOrder(blender, boxes, set(own), (by0, bx0), k, store, i)
        for start in range(0, len(own), batch_size):
            if cancel():
                raise Cancelled("cancelled")
            batch = own[start : start + batch_size]
            sources = np.stack([grid.read(slide, Region(x, y, t, t)) for y, x in batch])
            details = None
            if k > 1:
                details = np.stack([grid.read(slide, Region(x, y, t, t), k) for y, x in batch])
            noise = None
            if model.latent_channels:
                noise = np.stack(
                    [
                        noise_window(
                            seed + i, model.latent_channels, Region(x // 8, y // 8, t // 8, t // 8)
                        )
                        for y, x in batch
                    ]
                )
            tiles = (
                model(sources, noise, cancel, details) if k > 1 else model(sources, noise, cancel)
            )
            for (y, x), tile in zip(batch, tiles, strict=True):
                if store is not None:
                    store.save(i, y, x, tile)
                computed[(y, x)] = tile
            queue.blend(computed)
            done += len(batch)
            if progress is not None:
                progress(done, total)
        queue.blend(computed)  # the borrowed tiles after the last computed one
        blended = blender.result().astype(np.float64)
        if avg is None or m2 is None:
            avg, m2 = blended, np.zeros_like(blended)
        else:
            delta = blended - avg
            avg = avg + delta / (i + 1)
            m2 = m2 + delta * (blended - avg)
    assert avg is not None and m2 is not None
    cy0, cx0 = max(y0, by0), max(x0, bx0)
    cy1, cx1 = min(y1, by1), min(x1, bx1)
    crop = np.s_[k * (cy0 - by0) : k * (cy1 - by0), k * (cx0 - bx0) : k * (cx1 - bx0)]
    out = np.s_[k * (cy0 - y0) : k * (cy1 - y0), k * (cx0 - x0) : k * (cx1 - x0)]
    covered = avg[crop]
    mean[out] = np.where(np.isnan(covered), fill, covered)
    if std is not None:
        std[out] = np.nan_to_num(np.sqrt(m2[crop] / samples))
    return mean, std


class _InOrder:
    """Blends a window's tiles in the order of ``boxes`` (row by row, what one call over
    the whole grid does), as they become available: computed here, or borrowed from a
    store when they are not among ``own``."""

    def __init__(
        self,
        blender: Blender,
        boxes: list[tuple[int, int]],
        own: set[tuple[int, int]],
        origin: tuple[int, int],
        detail: int,
        store: TileStore | None,
        sample: int,
    ) -> None:
        self.blender, self.boxes, self.own, self.origin = blender, boxes, own, origin
        self.detail, self.store, self.sample = detail, store, sample
        self.added = 0  # boxes blended so far

    def blend(self, computed: dict[tuple[int, int], np.ndarray]) -> None:
        """Blend the next boxes while their tiles are at hand (computed ones are taken
        out of ``computed``)."""
        k, (oy, ox) = self.detail, self.origin
        while self.added < len(self.boxes):
            y, x = self.boxes[self.added]
            if (y, x) in computed:
                tile = computed.pop((y, x))
            elif self.store is not None and (y, x) not in self.own:
                tile = self.store.load(self.sample, y, x)
            else:
                return  # computed later
            self.blender.add(k * (y - oy), k * (x - ox), tile)
            self.added += 1


def stain_region(
    slide: Slide,
    region: Region,
    model: TileModel,
    *,
    seed: int = 0,
    samples: int = 1,
    mpp: float | None = None,
    output_mpp: float | None = None,
    min_tissue: float | None = None,
    batch_size: int = 4,
    overlap: int | None = None,
    progress: Progress | None = None,
    cancel: Cancel = lambda: False,
) -> StainResult:
    """Virtually stain a region of a slide with ``model``; the result knows where it lies.

    The model runs at ``mpp`` (default: its own); a model that renders detail draws the
    result at ``output_mpp`` (e.g. the slide's own pixel size; default: the model's grid),
    on the source's own cells at that resolution. With ``min_tissue``, tiles with less
    tissue than that fraction (the slide's tissue map, as whole-slide jobs use) are
    skipped; the result's ``mask`` says which pixels were stained.
    """
    started = time.perf_counter()
    grid = Grid.for_region(slide, region, mpp if mpp is not None else model.mpp)
    detail = grid.detail_for(slide, output_mpp) if model.renders_detail else 1
    mask = grid.mask()
    tissue_map = slide_tissue(slide) if min_tissue is not None else None

    def tissue(tile: Region) -> bool:
        if (
            mask is not None
            and not mask[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width].any()
        ):
            return False
        return tissue_map is None or tissue_map.has_tissue(grid.to_level0(tile), min_tissue or 0.0)

    mean, std = stain_grid(
        slide,
        grid,
        model,
        seed=seed,
        samples=samples,
        batch_size=batch_size,
        overlap=overlap,
        tissue=tissue,
        detail=detail,
        progress=progress,
        cancel=cancel,
    )
    t = model.tile_size
    overlap = t // 4 if overlap is None else overlap
    whole = Region(0, 0, grid.shape[1], grid.shape[0])
    stained = np.zeros((grid.shape[0] * detail, grid.shape[1] * detail), bool)
    for tile in window_tiles(grid.shape, t, overlap, whole, tissue):
        stained[
            detail * tile.y : detail * (tile.y + t), detail * tile.x : detail * (tile.x + t)
        ] = True
    polygon = grid.mask(detail)
    if polygon is not None:
        stained &= polygon
    scale, translate = grid.placement(slide.mpp, detail)
    source = grid.read(slide, Region(0, 0, grid.shape[1], grid.shape[0]), detail)
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
        "detail": detail,
        "output_downsample": grid.downsample / detail,  # level-0 px per output pixel
        "min_tissue": min_tissue,
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
        stained,
        metadata,
        source,
    )
