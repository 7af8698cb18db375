"""Slide I/O benchmark: ``open_slide`` (and napari's path) vs OpenSlide vs tiffslide, 40k px.

Run from the repository root::

    .venv/bin/python benchmarks/bench_io.py            # 40,000 px slides, 1,000 regions
    .venv/bin/python benchmarks/bench_io.py --quick    # 10,000 px slides, 200 regions

The first run writes two synthetic slides with the same pixels into
``benchmarks/.cache/`` (git-ignored) and reuses them afterwards:

* an Aperio-style SVS (BigTIFF; level 0 tiled 256 x 256 JPEG; a striped
  thumbnail page second; 4x, 16x, 64x levels as tiled JPEG pages) that OpenSlide
  opens as vendor "aperio";
* a pyramidal OME-TIFF holding the same levels in SubIFDs;
* an OME-Zarr (NGFF 0.4, zarr v2, (c, y, x) chunks of 512 px, zarr's default Blosc-LZ4,
  as ``napari_mupd.io.ome_zarr.create_ome_zarr`` writes) holding the SVS's decoded
  levels, so its pixels are the SVS's; only ``open_slide`` reads it, and its "vs
  OpenSlide" ratios are against OpenSlide on the SVS.

Level 0 is a mosaic of real H&E texture: a pool of 256 px tiles cut (random
offsets, rotations and flips) from CMU-1-Small-Region.svs, JPEG-encoded once
(Q=70, YCbCr 4:2:0) and streamed to tifffile as encoded bytes, laid out under
a blobby tissue mask with white glass around it and tissue-edge tiles at the
border. Lower levels are area means of the decoded pool tiles, assembled per
strip, so writing never holds a level in memory.

Each reader is measured in a fresh subprocess (``--worker``) for open time
(median of several opens, file cache warm), random 512 x 512 region reads per
second at level 0 and level 2 (the same seeded locations for every reader, each
result converted to an (h, w, 3) uint8 numpy array inside the timed loop: PIL
images through ``np.asarray``; tiffslide is also run with its ``as_array=True``
numpy path; "napari's path" slices the layer data the napari reader hands napari,
as napari's slicer does, and converts it with ``np.asarray``) and peak RSS (the
worker's VmHWM). Readers run in rounds
(``--repeat``, default 2) and the fastest run is kept, because the machines
this runs on are shared. Pixels are checked against OpenSlide
before anything is timed, and per-region checksums of every timed read are
compared across readers afterwards, so a reader that returns the wrong pixels
(or none) cannot post a good number. Next to the measurements the script prints
the two floors: the bytes a region moves and the single-thread JPEG decode time
of the tiles it touches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_mupd.resources import sample_slide_path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_SLIDE = sample_slide_path()
DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"

GENERATOR_VERSION = 2  # bump when the written files change
TILE = 256
JPEG_QUALITY = 70  # Aperio's usual "Q=70"
SUBSAMPLING = (2, 2)
LEVEL_FACTORS = (4, 16, 64)  # downsamples of the levels after level 0
THUMB_FACTOR = 32
MPP = 0.5
REGION = 512
SEED = 20240607
TISSUE_FRACTION = 0.6  # of grid cells, edge tiles included
N_TISSUE, N_EDGE, N_BACKGROUND = 384, 96, 24
CHECKSUM_REGIONS = 64  # per level: regions whose checksums are compared across readers
NAPARI = "napari's path"
READERS = (
    "open_slide",
    NAPARI,
    "open_slide (dask)",
    "openslide",
    "tiffslide",
    "tiffslide (as_array)",
)
ZARR_READERS = ("open_slide", NAPARI, "open_slide (dask)")  # the others cannot read OME-Zarr
ZARR_CHUNK = 512  # create_ome_zarr's default


# --------------------------------------------------------------------------------------
# Synthetic slides
# --------------------------------------------------------------------------------------
@dataclass
class TilePool:
    """Distinct level-0 tiles: JPEG bytes, decoded pixels' area means per factor, class."""

    encoded: list[bytes]
    small: dict[int, np.ndarray]  # factor -> (n, TILE // f, TILE // f, 3) uint8
    n_tissue: int
    n_edge: int
    n_background: int


def _area_means(tile: np.ndarray, factors) -> dict[int, np.ndarray]:
    """Rounded means of f x f blocks for each factor (powers of two), summed level by level."""
    out, sums, done = {}, tile.astype(np.uint32), 1
    for f in sorted(factors):
        step = f // done
        s = sums.shape[0] // step
        sums = sums.reshape(s, step, s, step, 3).sum(axis=3).sum(axis=1)
        done = f
        out[f] = ((sums + f * f // 2) // (f * f)).astype(np.uint8)
    return out


def _jpeg(tile: np.ndarray) -> bytes:
    import imagecodecs

    return imagecodecs.jpeg8_encode(
        np.ascontiguousarray(tile),
        level=JPEG_QUALITY,
        colorspace="RGB",
        outcolorspace="YCBCR",
        subsampling=SUBSAMPLING,
    )


def _background_tile(rng: np.random.Generator) -> np.ndarray:
    """Glass: near white with a faint tint, shading and sensor noise."""
    base = rng.normal((239.0, 237.0, 241.0), 2.0)
    yy, xx = np.mgrid[0:TILE, 0:TILE] / TILE
    shade = rng.normal(0, 1.5) * yy + rng.normal(0, 1.5) * xx
    noise = rng.normal(0, 1.2, (TILE, TILE, 3))
    return np.clip(base + shade[..., None] + noise, 0, 255).astype(np.uint8)


def build_pool(source: np.ndarray, seed: int) -> TilePool:
    """Cut, orient, encode and summarise the tiles the slides are made of."""
    import imagecodecs

    rng = np.random.default_rng(seed)
    h, w = source.shape[:2]
    stained = (source.mean(axis=2) < 215).astype(np.int64)
    integral = np.pad(stained.cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def crop() -> tuple[np.ndarray, float]:
        """A random 256 px crop, rotated and flipped, and its fraction of stained pixels."""
        y, x = int(rng.integers(0, h - TILE)), int(rng.integers(0, w - TILE))
        tile = np.rot90(source[y : y + TILE, x : x + TILE], int(rng.integers(0, 4)))
        box = integral[[y, y, y + TILE, y + TILE], [x, x + TILE, x, x + TILE]]
        fraction = (box[0] - box[1] - box[2] + box[3]) / TILE**2
        return (tile[:, ::-1] if rng.random() < 0.5 else tile), fraction

    tissue: list[np.ndarray] = []
    tries = 0
    while len(tissue) < N_TISSUE:  # tissue tiles: mostly stained pixels
        tile, fraction = crop()
        tries += 1
        if fraction >= 0.6 or tries > 50 * N_TISSUE:
            tissue.append(tile)
    edge = []
    yy, xx = np.mgrid[0:TILE, 0:TILE] - TILE / 2
    for _ in range(N_EDGE):  # tissue fading into glass along a random line
        angle = rng.uniform(0, 2 * np.pi)
        dist = np.cos(angle) * xx + np.sin(angle) * yy - rng.uniform(-60, 60)
        alpha = 1 / (1 + np.exp(-dist / rng.uniform(4, 16)))
        glass = _background_tile(rng).astype(np.float32)
        mixed = alpha[..., None] * crop()[0] + (1 - alpha[..., None]) * glass
        edge.append(np.clip(mixed + 0.5, 0, 255).astype(np.uint8))
    background = [_background_tile(rng) for _ in range(N_BACKGROUND)]

    encoded, small = [], {f: [] for f in (*LEVEL_FACTORS, THUMB_FACTOR)}
    for tile in tissue + edge + background:
        data = _jpeg(tile)
        decoded = imagecodecs.jpeg8_decode(data)  # what readers will see at level 0
        encoded.append(data)
        for f, means in _area_means(decoded, small).items():
            small[f].append(means)
    return TilePool(
        encoded=encoded,
        small={f: np.stack(v) for f, v in small.items()},
        n_tissue=len(tissue),
        n_edge=len(edge),
        n_background=len(background),
    )


def build_layout(grid: tuple[int, int], pool: TilePool, seed: int) -> np.ndarray:
    """Pool index of every level-0 tile: tissue blobs, edge tiles around them, glass."""
    rng = np.random.default_rng(seed + 1)
    gh, gw = grid
    yy, xx = np.mgrid[0:gh, 0:gw] / max(gh, gw)
    field = np.zeros(grid)
    for _ in range(int(rng.integers(5, 9))):
        cy, cx = rng.uniform(0.15, 0.85, 2) * (gh / max(gh, gw), gw / max(gh, gw))
        ry, rx = rng.uniform(0.06, 0.22, 2)
        field = np.maximum(field, np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)))
    coarse = rng.random((9, 9))  # low-frequency wobble so blob borders are ragged
    iy = np.minimum((yy * 8.999 * max(gh, gw) / gh).astype(int), 8)
    ix = np.minimum((xx * 8.999 * max(gh, gw) / gw).astype(int), 8)
    field = field + 0.25 * coarse[iy, ix] + 0.1 * rng.random(grid)
    mask = field > np.quantile(field, 1 - TISSUE_FRACTION)
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    edge = mask & ~inner
    layout = rng.integers(pool.n_tissue + pool.n_edge, len(pool.encoded), size=grid)  # glass
    layout[inner] = rng.integers(0, pool.n_tissue, size=int(inner.sum()))
    layout[edge] = rng.integers(pool.n_tissue, pool.n_tissue + pool.n_edge, int(edge.sum()))
    return layout.astype(np.int32)


def _assemble(pool: TilePool, layout: np.ndarray, factor: int, rows: slice) -> np.ndarray:
    """Pixels of grid rows ``rows`` (all columns) at ``factor``, from the pool's means."""
    small = pool.small[factor][layout[rows]]  # (ny, gw, s, s, 3)
    ny, gw, s = small.shape[:3]
    return small.transpose(0, 2, 1, 3, 4).reshape(ny * s, gw * s, 3)


def _level_tiles(pool: TilePool, layout: np.ndarray, factor: int, shape) -> Iterator[np.ndarray]:
    """Row-major 256 px tiles of the level at ``factor``, one strip of tiles at a time."""
    lh, lw = shape
    ntr, ntc = -(-lh // TILE), -(-lw // TILE)
    for tr in range(ntr):  # one row of level tiles covers ``factor`` rows of level-0 tiles
        strip = _assemble(pool, layout, factor, slice(tr * factor, (tr + 1) * factor))
        full = np.full((TILE, ntc * TILE, 3), 255, np.uint8)
        hh, ww = min(TILE, strip.shape[0]), min(ntc * TILE, strip.shape[1])
        full[:hh, :ww] = strip[:hh, :ww]
        for tc in range(ntc):
            yield full[:, tc * TILE : (tc + 1) * TILE]


def _level_shapes(size: int) -> list[tuple[int, int]]:
    return [(size, size)] + [(size // f, size // f) for f in LEVEL_FACTORS]


def _svs_description(size: int, shape: tuple[int, int], first: bool) -> str:
    head = f"Aperio Image Library v12.0.15 \r\n{size}x{size} ({TILE}x{TILE}) "
    if not first:
        head += f"-> {shape[1]}x{shape[0]} "
    head += f"JPEG/YCC Q={JPEG_QUALITY}"
    return head + f"|AppMag = 20|MPP = {MPP}|Filename = bench-{size}|ScanScope ID = SYNTHETIC"


def write_svs(path: Path, pool: TilePool, layout: np.ndarray, size: int) -> None:
    import tifffile

    shapes = _level_shapes(size)
    jpeg = {"compression": "jpeg", "compressionargs": {"level": JPEG_QUALITY}}
    common = {"dtype": np.uint8, "photometric": "rgb", "metadata": None, **jpeg}
    side = size // THUMB_FACTOR
    thumb = _assemble(pool, layout, THUMB_FACTOR, slice(None))[:side, :side]
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(
            (pool.encoded[i] for i in layout.ravel()),  # pre-encoded level-0 tiles
            shape=(*shapes[0], 3),
            tile=(TILE, TILE),
            subsampling=SUBSAMPLING,
            description=_svs_description(size, shapes[0], True),
            **common,
        )
        tw.write(
            np.ascontiguousarray(thumb),
            rowsperstrip=16,
            description=_svs_description(size, thumb.shape[:2], False),
            **common,
        )
        for factor, shape in zip(LEVEL_FACTORS, shapes[1:], strict=True):
            tw.write(
                _level_tiles(pool, layout, factor, shape),
                shape=(*shape, 3),
                tile=(TILE, TILE),
                description=_svs_description(size, shape, False),
                **common,
            )


def write_ome(path: Path, pool: TilePool, layout: np.ndarray, size: int) -> None:
    import tifffile

    shapes = _level_shapes(size)
    common = {
        "dtype": np.uint8,
        "photometric": "rgb",
        "tile": (TILE, TILE),
        "compression": "jpeg",
        "compressionargs": {"level": JPEG_QUALITY},
    }
    metadata = {
        "axes": "YXS",
        "Name": f"bench-{size}",
        "PhysicalSizeX": MPP,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": MPP,
        "PhysicalSizeYUnit": "µm",
    }
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        tw.write(
            (pool.encoded[i] for i in layout.ravel()),
            shape=(*shapes[0], 3),
            subifds=len(LEVEL_FACTORS),
            subsampling=SUBSAMPLING,
            metadata=metadata,
            **common,
        )
        for factor, shape in zip(LEVEL_FACTORS, shapes[1:], strict=True):
            tw.write(
                _level_tiles(pool, layout, factor, shape),
                shape=(*shape, 3),
                subfiletype=1,
                metadata=None,
                **common,
            )


def ensure_slides(cache_dir: Path, size: int) -> dict[str, Path]:
    """The two benchmark files, written once per size and reused while valid."""
    import tifffile

    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "SVS": cache_dir / f"bench-{size}.svs",
        "OME-TIFF": cache_dir / f"bench-{size}.ome.tif",
    }
    params = {
        "version": GENERATOR_VERSION,
        "size": size,
        "seed": SEED,
        "quality": JPEG_QUALITY,
        "source": SOURCE_SLIDE.name,
        "tissue": TISSUE_FRACTION,
        "pool": [N_TISSUE, N_EDGE, N_BACKGROUND],
    }
    stamp = cache_dir / f"bench-{size}.json"

    def valid() -> bool:
        try:
            saved = json.loads(stamp.read_text())
        except (OSError, ValueError):
            return False
        if saved.get("params") != params:
            return False
        for name, path in paths.items():
            st = path.stat() if path.exists() else None
            if st is None or [st.st_size, st.st_mtime_ns] != saved["files"].get(name):
                return False
            try:
                with tifffile.TiffFile(path) as tif:
                    if tif.series[0].levels[0].shape[:2] != (size, size):
                        return False
            except Exception:
                return False
        return True

    if valid():
        print(f"reusing cached slides in {cache_dir}")
        return paths
    print(f"writing {size} x {size} px slides into {cache_dir} ...", flush=True)
    t0 = time.perf_counter()
    source = tifffile.imread(SOURCE_SLIDE)
    pool = build_pool(source, SEED)
    grid = (-(-size // TILE), -(-size // TILE))
    layout = build_layout(grid, pool, SEED)
    t_pool = time.perf_counter() - t0
    files = {}
    for name, path in paths.items():
        t1 = time.perf_counter()
        tmp = path.with_name(path.name + ".part")
        (write_svs if name == "SVS" else write_ome)(tmp, pool, layout, size)
        os.replace(tmp, path)
        st = path.stat()
        files[name] = [st.st_size, st.st_mtime_ns]
        print(
            f"  {name}: {path.name} {st.st_size / 2**20:,.0f} MiB "
            f"in {time.perf_counter() - t1:.1f} s"
        )
    n = layout.size
    classes = {
        "tissue": int((layout < pool.n_tissue).sum()) / n,
        "edge": int(((layout >= pool.n_tissue) & (layout < pool.n_tissue + pool.n_edge)).sum()) / n,
    }
    classes["glass"] = 1 - classes["tissue"] - classes["edge"]
    sizes = np.array([len(b) for b in pool.encoded])
    content = {
        "tile_classes": classes,
        "pool_jpeg_bytes": {
            "tissue": float(sizes[: pool.n_tissue].mean()),
            "edge": float(sizes[pool.n_tissue : pool.n_tissue + pool.n_edge].mean()),
            "glass": float(sizes[pool.n_tissue + pool.n_edge :].mean()),
        },
        "pool_tiles": len(pool.encoded),
    }
    stamp.write_text(json.dumps({"params": params, "files": files, "content": content}, indent=1))
    print(
        f"  pool + layout {t_pool:.1f} s; total write {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return paths


def ensure_zarr(cache_dir: Path, size: int, svs: Path) -> Path:
    """The OME-Zarr twin of the SVS (its decoded levels), written once and reused."""
    import shutil

    import zarr

    from napari_mupd.io import open_slide

    path = cache_dir / f"bench-{size}.ome.zarr"
    stamp = cache_dir / f"bench-{size}.ome.zarr.json"
    st = svs.stat()
    params = {"svs": [st.st_size, st.st_mtime_ns], "chunk": ZARR_CHUNK, "version": 1}
    with contextlib.suppress(OSError, ValueError, KeyError):
        saved = json.loads(stamp.read_text())
        if saved["params"] == params and saved["zattrs"] == (path / ".zattrs").stat().st_mtime_ns:
            print(f"reusing cached OME-Zarr {path.name}")
            return path
    print(f"writing {path.name} from {svs.name} ...", flush=True)
    t0 = time.perf_counter()
    tmp = path.with_name(path.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    datasets = []
    block = 4 * ZARR_CHUNK
    with open_slide(svs) as slide:
        for i, level in enumerate(slide.level_arrays[: slide.metadata["native_levels"]]):
            h, w = level.shape[:2]
            array = group.create_array(
                str(i),
                shape=(3, h, w),
                dtype="uint8",
                chunks=(3, ZARR_CHUNK, ZARR_CHUNK),
                fill_value=0,
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
            for y in range(0, h, block):
                for x in range(0, w, block):
                    pixels = level[y : y + block, x : x + block]
                    array[:, y : y + pixels.shape[0], x : x + pixels.shape[1]] = np.moveaxis(
                        pixels, -1, 0
                    )
            ds = slide.downsamples[i]
            datasets.append(
                {
                    "path": str(i),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0, MPP * ds, MPP * ds]}
                    ],
                }
            )
    group.attrs["multiscales"] = [  # written last: .zattrs dates the finished copy
        {
            "version": "0.4",
            "name": path.name,
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": datasets,
        }
    ]
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    stamp.write_text(
        json.dumps({"params": params, "zattrs": (path / ".zattrs").stat().st_mtime_ns})
    )
    print(f"  OME-Zarr: {path.name} {file_mib(path):,.0f} MiB in {time.perf_counter() - t0:.1f} s")
    return path


def file_mib(path: Path) -> float:
    """Size of a file, or of every file under a folder (an OME-Zarr), in MiB."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    return path.stat().st_size / 2**20


def readers_of(name: str) -> tuple[str, ...]:
    return ZARR_READERS if name == "OME-Zarr" else READERS


def _ours(kind: str) -> bool:
    return kind.startswith("open_slide") or kind == NAPARI


# --------------------------------------------------------------------------------------
# Readers (each measured in its own subprocess)
# --------------------------------------------------------------------------------------
def region_locations(seed: int, n: int, width: int, height: int) -> np.ndarray:
    """(n, 2) integer (x, y) top-left corners of REGION-px regions inside a level."""
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, width - REGION + 1, n)
    ys = rng.integers(0, height - REGION + 1, n)
    return np.stack([xs, ys], axis=1)


def _checksum(region: np.ndarray) -> int:
    return int(region[::37, ::41].astype(np.int64).sum()) * 7 + int(region[-1, -1].sum())


class _Reader:
    """Uniform open / dims / read(level-pixel x, y, level) -> (512, 512, 3) uint8 array."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if _ours(kind):
            from napari_mupd.io import open_slide

            self._open = open_slide
        elif kind == "openslide":
            import openslide

            self._open = openslide.OpenSlide
        elif kind.startswith("tiffslide"):
            import tiffslide

            self._open = tiffslide.TiffSlide
        else:
            raise ValueError(kind)

    def open(self, path: str):
        return self._open(path)

    def dims(self, slide) -> list[tuple[int, int]]:
        """(width, height) per level, what each reader exposes natively."""
        if _ours(self.kind):
            return [(s[1], s[0]) for s in (lv.shape for lv in slide.level_info)]
        return [tuple(d) for d in slide.level_dimensions]

    def downsample(self, slide, level: int) -> float:
        if _ours(self.kind):
            return slide.downsamples[level]
        return slide.level_downsamples[level]

    def reader(self, slide, level: int) -> Callable[[int, int], np.ndarray]:
        """A function of (x, y) in *level* pixels returning RGB uint8 (h, w, 3)."""
        ds = self.downsample(slide, level)
        size = (REGION, REGION)
        if self.kind == "open_slide":
            return lambda x, y: slide.read_region((round(x * ds), round(y * ds)), level, size)
        if self.kind == "open_slide (dask)":
            array = slide.levels[level]
            return lambda x, y: array[y : y + REGION, x : x + REGION].compute()
        if self.kind == NAPARI:
            # the layer data the reader gives napari, sliced the way napari's slicer does
            # (_ScalarFieldSliceRequest: a tuple of slices, then np.asarray)
            from napari_mupd.plugin._reader import slide_layer_data

            data = slide_layer_data(slide)[0][level]
            return lambda x, y: np.asarray(
                data[slice(y, y + REGION, 1), slice(x, x + REGION, 1), slice(None)]
            )
        if self.kind == "openslide":
            return lambda x, y: np.asarray(
                slide.read_region((round(x * ds), round(y * ds)), level, size).convert("RGB")
            )
        if self.kind == "tiffslide (as_array)":  # tiffslide's own numpy path, no PIL
            return lambda x, y: slide.read_region(
                (round(x * ds), round(y * ds)), level, size, as_array=True
            )
        return lambda x, y: np.asarray(
            slide.read_region((round(x * ds), round(y * ds)), level, size)
        )


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """High-water RSS of this process image.

    ``ru_maxrss`` is not used on Linux: it survives ``execve`` and subprocess
    starts the worker through vfork, so it would report the parent's peak.
    ``VmHWM`` belongs to the address space, which exec replaces.
    """
    with contextlib.suppress(OSError, StopIteration):
        line = next(
            line
            for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
        return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(spec: dict) -> dict:
    """Measure one reader on one file; runs in a fresh interpreter."""
    t0 = time.perf_counter()
    reader = _Reader(spec["reader"])
    import_s = time.perf_counter() - t0
    path = spec["path"]
    rss_start = _rss_mb()

    opens = []
    for _ in range(spec["opens"] + 1):  # the first absorbs lazy imports inside open
        t0 = time.perf_counter()
        slide = reader.open(path)
        reader.dims(slide)
        opens.append(time.perf_counter() - t0)
        slide.close()

    slide = reader.open(path)
    dims = reader.dims(slide)
    out = {
        "reader": spec["reader"],
        "import_s": import_s,
        "open_first_ms": opens[0] * 1e3,
        "open_ms": statistics.median(opens[1:]) * 1e3,
        "levels": len(dims),
        "rss_after_import_mb": rss_start,
    }
    for level in (0, 2):
        key = f"L{level}"
        if level >= len(dims) or min(dims[level]) < REGION:
            out[key] = None
            continue
        width, height = dims[level]
        locations = region_locations(spec["seed"] + level, spec["regions"], width, height)
        read = reader.reader(slide, level)
        sums = []
        cpu0 = os.times()
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(locations.tolist()):
            region = read(x, y)
            if i < CHECKSUM_REGIONS:
                sums.append(_checksum(region))
        elapsed = time.perf_counter() - t0
        cpu1 = os.times()
        cpu = cpu1.user + cpu1.system - cpu0.user - cpu0.system
        ok = region.shape == (REGION, REGION, 3) and region.dtype == np.uint8
        out[key] = {
            "regions": len(locations),
            "seconds": elapsed,
            "per_s": len(locations) / elapsed,
            "cpu_cores": cpu / elapsed,
            "dims": [width, height],
            "checksums": sums,
            "shape_ok": bool(ok),
        }
    slide.close()
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def spawn_worker(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"reader": spec["reader"], "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# Floors and correctness (main process)
# --------------------------------------------------------------------------------------
def floors(path: Path, level: int, seed: int, n: int, sample: int) -> dict | None:
    """Bytes a region moves and the serial imagecodecs decode time of its tiles.

    For an OME-Zarr: its chunks, decoded by the array's own numcodecs compressor.

    The decode is timed in two passes, one before the readers run and one after
    (``decode_pass``); the faster one is the floor, so a busy neighbour on a
    shared machine makes the floor look no slower than it is.
    """
    import imagecodecs
    import tifffile

    if path.is_dir():
        import numcodecs

        meta = json.loads((path / str(level) / ".zarray").read_text())
        _, height, width = meta["shape"]
        _, th, tw = meta["chunks"]
        ny, nx = -(-height // th), -(-width // tw)
        codec = numcodecs.get_codec(meta["compressor"])
        if hasattr(numcodecs, "blosc"):
            numcodecs.blosc.use_threads = False  # one thread, as for the JPEG floor
        chunk_files = [path / str(level) / "0" / str(t // nx) / str(t % nx) for t in range(ny * nx)]
        counts = np.array([f.stat().st_size if f.exists() else 0 for f in chunk_files], np.int64)
        decode = codec.decode
    else:
        with tifffile.TiffFile(path) as tif:
            levels = tif.series[0].levels
            if level >= len(levels):
                return None
            page = levels[level].pages[0]
            offsets = np.asarray(page.dataoffsets, np.int64)
            counts = np.asarray(page.databytecounts, np.int64)
            height, width = page.shape[:2]
            th, tw = page.chunks[:2]
            ny, nx = page.chunked[:2]
        decode = imagecodecs.jpeg8_decode
    locations = region_locations(seed + level, n, width, height)

    def tiles_of(x: int, y: int) -> list[int]:
        rows = range(y // th, min((y + REGION - 1) // th + 1, ny))
        cols = range(x // tw, min((x + REGION - 1) // tw + 1, nx))
        return [r * nx + c for r in rows for c in cols]

    touched = [tiles_of(x, y) for x, y in locations.tolist()]
    flat = [t for ts in touched for t in ts]
    if path.is_dir():
        data = [[chunk_files[t].read_bytes() for t in ts] for ts in touched[:sample]]
    else:
        fd = os.open(path, os.O_RDONLY)
        try:
            data = [
                [os.pread(fd, int(counts[t]), int(offsets[t])) for t in ts]
                for ts in touched[:sample]
            ]
        finally:
            os.close(fd)
    sample_data = data

    def decode_pass() -> float:
        """Seconds per region to decode its tiles serially."""
        for tiles in sample_data[:3]:  # warm up the codec
            for d in tiles:
                decode(d)
        t0 = time.perf_counter()
        for tiles in sample_data:
            for d in tiles:
                decode(d)
        return (time.perf_counter() - t0) / len(sample_data)

    decode_s = decode_pass()
    return {
        "level": level,
        "dims": [width, height],
        "tiles_per_region": len(flat) / n,
        "compressed_kb_per_region": counts[flat].sum() / n / 1024,
        "decoded_mb_per_region": len(flat) * th * tw * 3 / n / 2**20,
        "output_mb_per_region": REGION * REGION * 3 / 2**20,
        "unique_tile_fraction": len(set(flat)) / len(flat),
        "decode_ms_per_region": decode_s * 1e3,
        "floor_1thread_per_s": 1 / decode_s,
        "decode_pass": decode_pass,
    }


def refine_floor(floor: dict | None) -> None:
    """Time the decode once more and keep the faster pass."""
    if floor is None:
        return
    decode_s = min(floor.pop("decode_pass")(), floor["decode_ms_per_region"] / 1e3)
    floor["decode_ms_per_region"] = decode_s * 1e3
    floor["floor_1thread_per_s"] = 1 / decode_s


def check_pixels(paths: dict[str, Path], seed: int) -> list[str]:
    """Our pixels against OpenSlide's (SVS) and against our SVS read (OME-TIFF)."""
    import openslide

    from napari_mupd.io import open_slide
    from napari_mupd.plugin._reader import slide_layer_data

    lines, failed = [], False
    with (
        open_slide(paths["SVS"]) as ours,
        open_slide(paths["OME-TIFF"]) as ome,
        open_slide(paths["OME-Zarr"]) as zarr_slide,
    ):
        ref = openslide.OpenSlide(str(paths["SVS"]))
        layers = {
            name: slide_layer_data(s)[0] for name, s in (("SVS", ours), ("OME-Zarr", zarr_slide))
        }
        try:
            vendor = ref.properties.get("openslide.vendor")
            lines.append(
                f"OpenSlide sees the SVS as vendor {vendor!r} with {ref.level_count} levels "
                f"{[tuple(d) for d in ref.level_dimensions]}"
            )
            failed |= vendor != "aperio"
            for level in (0, 2):
                w, h = ref.level_dimensions[level]
                ds = ref.level_downsamples[level]
                locs = region_locations(seed + 1000 + level, 6, w, h).tolist()
                diffs, same = [], dict.fromkeys(("dask", "napari", "ome", "zarr", "zarr napari"), 0)
                for x, y in locs:
                    loc = (round(x * ds), round(y * ds))
                    box = (slice(y, y + REGION), slice(x, x + REGION))
                    mine = ours.read_region(loc, level, (REGION, REGION))
                    theirs = np.asarray(ref.read_region(loc, level, (REGION, REGION)))
                    diffs.append(int(np.abs(mine.astype(int) - theirs[..., :3]).max()))
                    lazy = ours.levels[level][box].compute()
                    same["dask"] += np.array_equal(lazy, mine)
                    same["napari"] += np.array_equal(np.asarray(layers["SVS"][level][box]), mine)
                    same["ome"] += np.array_equal(
                        ome.read_region(loc, level, (REGION, REGION)), mine
                    )
                    same["zarr"] += np.array_equal(
                        zarr_slide.read_region(loc, level, (REGION, REGION)), mine
                    )
                    same["zarr napari"] += np.array_equal(
                        np.asarray(layers["OME-Zarr"][level][box]), mine
                    )
                n = len(locs)
                lines.append(
                    f"L{level}: open_slide vs OpenSlide on SVS, max |diff| per region {diffs}; "
                    f"dask path equal {same['dask']}/{n}; napari's path equal "
                    f"{same['napari']}/{n}; OME-TIFF equal {same['ome']}/{n}; OME-Zarr equal "
                    f"{same['zarr']}/{n}, its napari's path {same['zarr napari']}/{n}"
                )
                failed |= max(diffs) != 0 or any(v != n for v in same.values())
        finally:
            ref.close()
    if failed:
        raise SystemExit("pixel check FAILED:\n" + "\n".join(lines))
    return lines


def warm_file_cache(path: Path) -> None:
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            with file.open("rb") as fh:
                while fh.read(64 * 2**20):
                    pass


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def machine_info(load: tuple[float, ...]) -> list[str]:
    import dask
    import imagecodecs
    import openslide
    import tifffile
    import tiffslide
    import zarr

    cpu = "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
    except OSError:
        commit = "?"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"- machine: {platform.machine()}, {cpu}, {len(os.sched_getaffinity(0))} cores usable "
        f"({os.cpu_count()} online), {mem:.0f} GiB RAM, load average at start "
        f"{' '.join(f'{v:.2f}' for v in load)}",
        f"- Python {platform.python_version()}, numpy {np.__version__}, tifffile "
        f"{tifffile.__version__}, imagecodecs {imagecodecs.__version__} "
        f"(libjpeg-turbo {imagecodecs.jpeg8_version().split()[-1]}), zarr {zarr.__version__}, "
        f"dask {dask.__version__}",
        f"- openslide-python {openslide.__version__} (OpenSlide {openslide.__library_version__}), "
        f"tiffslide {tiffslide.__version__}, napari-mupd at git {commit}",
    ]


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def report(results: dict, floor: dict, args, paths, checks, content) -> str:
    out = []
    out += machine_info(args.load_start)
    out.append(
        f"- files: {args.size:,} x {args.size:,} px, 256 px JPEG Q={JPEG_QUALITY} tiles; "
        + ", ".join(f"{name} {p.name} {file_mib(p):,.0f} MiB" for name, p in paths.items())
    )
    if content:
        cls, sizes = content["tile_classes"], content["pool_jpeg_bytes"]
        out.append(
            f"- content: level-0 tiles {cls['tissue']:.0%} tissue, {cls['edge']:.0%} tissue "
            f"edge, {cls['glass']:.0%} glass; mean JPEG tile {sizes['tissue'] / 1024:.1f} / "
            f"{sizes['edge'] / 1024:.1f} / {sizes['glass'] / 1024:.1f} KiB "
            f"(from {content['pool_tiles']} distinct tiles cut from CMU-1-Small-Region.svs)"
        )
    out.append(
        f"- {args.regions} random {REGION} x {REGION} regions per level (seed {args.seed}), "
        "the same for every reader; each reader in a fresh process, file cache warm; open = "
        f"median of {args.opens} opens after a first one (first open = that first one, in a "
        "fresh process: it pays the reader's lazy imports); peak RSS = the worker's VmHWM; "
        "L0 CPU = process CPU seconds per wall second during the level-0 loop; "
        f"{args.repeat} run(s) per reader in rounds, the fastest kept (every run's L0 below)"
    )
    out += [f"- pixel check: {line}" for line in checks]
    if args.repeat > 1:
        out.append(
            "- L0 regions/s of every run: "
            + "; ".join(
                f"{name} {kind} "
                + " / ".join(f"{v:.0f}" for v in results[name][kind].get("L0_runs", []))
                for name in paths
                for kind in results[name]
            )
        )
    out.append(
        "- vs OpenSlide: against OpenSlide on the same file where it reads that level, else "
        "on the SVS (the same pixels: OpenSlide reads the OME-TIFF as one level and cannot "
        "read OME-Zarr)"
    )
    out.append("")
    out.append(
        "| file | reader | open (ms) | first open (ms) | L0 regions/s | L2 regions/s "
        "| peak RSS (MB) | L0 vs OpenSlide | L2 vs OpenSlide | L0 vs 1-thread decode floor "
        "| L0 CPU (cores) |"
    )
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name in paths:
        fl = floor[name][0]
        for kind, r in results[name].items():
            if "error" in r:
                out.append(f"| {name} | {kind} | error: {r['error']} | | | | | | | | |")
                continue
            l0, l2 = r.get("L0"), r.get("L2")
            ratios = [vs_openslide(results, name, key, r) for key in ("L0", "L2")]
            vs_floor = f"{l0['per_s'] / fl['floor_1thread_per_s']:.2f}x" if l0 and fl else "n/a"
            l2s = _fmt(l2 and l2["per_s"]) if l2 else f"n/a ({r['levels']} level)"
            out.append(
                f"| {name} | {kind} | {r['open_ms']:.1f} | {r['open_first_ms']:.0f} "
                f"| {_fmt(l0 and l0['per_s'])} | {l2s} | {r['peak_rss_mb']:,.0f} | {ratios[0]} "
                f"| {ratios[1]} | {vs_floor} | {_fmt(l0 and l0['cpu_cores'], 2)} |"
            )
    if any(NAPARI in results[name] for name in paths):
        out.append("")
        out.append(
            "napari's path (the reader's layer data, sliced as napari does) vs OpenSlide, "
            "goal >= 2x at level 0: "
            + "; ".join(
                f"{name} L0 {vs_openslide(results, name, 'L0', results[name][NAPARI])}, "
                f"L2 {vs_openslide(results, name, 'L2', results[name][NAPARI])}"
                for name in paths
                if "error" not in results[name].get(NAPARI, {"error": 1})
            )
        )
    out.append("")
    out.append(
        "Floors (from the files' tile tables; decode = imagecodecs.jpeg8_decode of the tiles "
        "a region touches, or for the OME-Zarr its Blosc decode of the chunks, one thread, "
        "no cache, I/O excluded; the faster of a pass before and a pass after the readers):"
    )
    out.append("")
    out.append(
        "| file | level | tiles/region | compressed KiB/region | decoded MiB/region "
        "| output MiB/region | unique tiles | decode ms/region | floor regions/s (1 thread) "
        f"| ideal, {len(os.sched_getaffinity(0))} cores |"
    )
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    cores = len(os.sched_getaffinity(0))
    for name in paths:
        for f in floor[name]:
            if f is None:
                continue
            out.append(
                f"| {name} | {f['level']} ({f['dims'][0]}x{f['dims'][1]}) "
                f"| {f['tiles_per_region']:.2f} | {f['compressed_kb_per_region']:.0f} "
                f"| {f['decoded_mb_per_region']:.2f} | {f['output_mb_per_region']:.2f} "
                f"| {f['unique_tile_fraction']:.1%} | {f['decode_ms_per_region']:.2f} "
                f"| {f['floor_1thread_per_s']:,.0f} | {cores * f['floor_1thread_per_s']:,.0f} |"
            )
    return "\n".join(out)


def vs_openslide(results: dict, name: str, key: str, r: dict) -> str:
    """A row's regions/s over OpenSlide's at that level, on the same file or the SVS."""
    mine = r.get(key)
    base = results[name].get("openslide", {}).get(key) or (
        results.get("SVS", {}).get("openslide", {}).get(key)
    )
    return f"{mine['per_s'] / base['per_s']:.2f}x" if mine and base else "n/a"


def best_of(runs: list[dict]) -> dict:
    """One row from repeated runs: fastest open and reads, highest peak RSS."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    best = dict(max(ok, key=lambda r: r["L0"]["per_s"] if r["L0"] else 0))
    best["open_ms"] = min(r["open_ms"] for r in ok)
    best["open_first_ms"] = min(r["open_first_ms"] for r in ok)
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    if best.get("L2"):
        best["L2"] = max((r["L2"] for r in ok), key=lambda lv: lv["per_s"])
    best["L0_runs"] = [r["L0"]["per_s"] for r in ok if r["L0"]]
    return best


def checksum_agreement(results: dict) -> list[str]:
    """Compare the checksums of timed reads across readers (ours is the reference)."""
    lines, bad = [], False
    for name, by_reader in results.items():
        ref = by_reader.get("open_slide", {})
        for kind, r in by_reader.items():
            if kind == "open_slide" or "error" in r:
                continue
            for key in ("L0", "L2"):
                if not r.get(key) or not ref.get(key):
                    continue
                a, b = ref[key]["checksums"], r[key]["checksums"]
                same = sum(x == y for x, y in zip(a, b, strict=True))
                if same != len(a):
                    bad = True
                    lines.append(f"{name} {kind} {key}: {same}/{len(a)} regions match open_slide")
        for kind, r in by_reader.items():
            for key in ("L0", "L2"):
                if r.get(key) and not r[key]["shape_ok"]:
                    bad = True
                    lines.append(f"{name} {kind} {key}: wrong shape or dtype")
    if not bad:
        lines.append(
            f"checksums of the first {CHECKSUM_REGIONS} timed regions per level agree across "
            "all readers"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=None, help="slide side in px (40000)")
    parser.add_argument("--regions", type=int, default=None, help="regions per level (1000)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--quick", action="store_true", help="10k x 10k slides, 200 regions")
    parser.add_argument("--opens", type=int, default=9, help="opens timed per reader (9)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--floor-sample", type=int, default=1000, help="regions decoded for the floor (1000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs per reader, best kept (2; quick: 1)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    parser.add_argument(
        "--readers",
        help=f"comma-separated readers to run (default all: {', '.join(READERS)})",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    args.size = args.size or (10_000 if args.quick else 40_000)
    args.regions = args.regions or (200 if args.quick else 1000)
    args.repeat = args.repeat or (1 if args.quick else 2)
    if args.size < REGION * LEVEL_FACTORS[1]:
        parser.error(
            f"--size must be at least {REGION * LEVEL_FACTORS[1]}: level 2 must hold a region"
        )
    sys.path.insert(0, str(ROOT / "src"))

    args.load_start = os.getloadavg()
    t_start = time.perf_counter()
    paths = ensure_slides(args.cache_dir, args.size)
    paths["OME-Zarr"] = ensure_zarr(args.cache_dir, args.size, paths["SVS"])
    selected = args.readers.split(",") if args.readers else list(READERS)
    if unknown := set(selected) - set(READERS):
        parser.error(f"unknown readers {sorted(unknown)}; choose from {', '.join(READERS)}")
    stamp = json.loads((args.cache_dir / f"bench-{args.size}.json").read_text())
    for path in paths.values():
        warm_file_cache(path)
    checks = check_pixels(paths, args.seed)
    for line in checks:
        print("check:", line, flush=True)

    floor = {
        name: [
            floors(path, level, args.seed, args.regions, min(args.floor_sample, args.regions))
            for level in (0, 2)
        ]
        for name, path in paths.items()
    }
    runs: dict[str, dict[str, list[dict]]] = {
        name: {k: [] for k in readers_of(name) if k in selected} for name in paths
    }
    for round_ in range(args.repeat):  # rounds, so a busy spell hurts one run of each reader
        for name, path in paths.items():
            for kind in runs[name]:
                warm_file_cache(path)
                spec = {
                    "reader": kind,
                    "path": str(path),
                    "regions": args.regions,
                    "seed": args.seed,
                    "opens": args.opens,
                }
                t0 = time.perf_counter()
                r = spawn_worker(spec)
                runs[name][kind].append(r)
                summary = r.get("error") or (
                    f"open {r['open_ms']:.1f} ms, L0 {_fmt(r['L0'] and r['L0']['per_s'])}/s, "
                    f"L2 {_fmt(r['L2'] and r['L2']['per_s'])}/s, "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB"
                )
                print(
                    f"run {round_ + 1}/{args.repeat} {name:8s} {kind:20s} {summary}  "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    for name in paths:
        for f in floor[name]:
            refine_floor(f)
    results = {name: {k: best_of(v) for k, v in by.items()} for name, by in runs.items()}
    checks += checksum_agreement(results)
    text = report(results, floor, args, paths, checks, stamp.get("content"))
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    text += (
        f"\n\nTotal benchmark time {time.perf_counter() - t_start:.0f} s; "
        f"load average at the end {load}."
    )
    print()
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "floors": floor}, indent=1))
    return 1 if any("match" in c or "wrong" in c for c in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
