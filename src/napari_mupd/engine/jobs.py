"""Whole-slide staining jobs: chunked, resumable, on a dask.distributed cluster.

The output grid is cut into chunks; each is a dask task that stains its window (tiles
and noise come from one grid over the whole region, so chunks meet without seams),
writes it into the OME-Zarr and then drops a marker file in `progress_dir` beside the
output. A rerun skips chunks with a marker: a job killed at any point resumes to the same
result as an uninterrupted run. The markers go when the job completes.

A tile on a chunk border is computed once, by the chunk that owns it
(:class:`~napari_mupd.engine.tiling.ChunkLayout`), which leaves it in the progress folder
for its neighbours; they run after it (dask dependencies, at most three chunks deep) and
blend it in the same order as the owner, so every pixel is the sum it would be in one call
over the whole grid. A shared tile is deleted once every chunk that needs it is marked
done, so a killed job leaves what its rerun needs.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import shutil
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_mupd._version import __version__
from napari_mupd.engine.sampling import PipelineTileModel
from napari_mupd.engine.tiling import Chunk, ChunkLayout
from napari_mupd.engine.tissue import MIN_TISSUE, slide_tissue
from napari_mupd.engine.virtual_stain import Grid, TileFilter, stain_grid
from napari_mupd.errors import JobError
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.imaging.regions import Region
from napari_mupd.io import Slide, open_slide
from napari_mupd.io.ome_zarr import build_pyramid, create_ome_zarr
from napari_mupd.model.loading import load_pipeline

ZARR_CHUNK = 512


def progress_dir(out: str | os.PathLike) -> Path:
    """Where a job marks its finished chunks (``y_x`` files): beside the OME-Zarr, so
    readers of the output never meet them; removed when the job completes."""
    path = Path(out)
    return path.with_name(path.name + ".progress")


@dataclass(frozen=True)
class JobSpec:
    """Everything that defines a whole-slide staining job's output."""

    slide: str
    model: str
    target: str
    out: str
    region: Region | None = None  # level-0 pixels; None: the whole slide
    text: str | None = None
    steps: int | None = None
    seed: int = 0
    samples: int = 1
    mpp: float | None = None
    output_mpp: float | None = None  # IHC drawn this fine (None: the model's grid)
    source_mpp: float | None = None  # the slide's pixel size when its file does not say
    guidance: float = 1.0
    chunk: int = 1024
    batch_size: int = 4
    min_tissue: float = MIN_TISSUE
    device: str | None = None

    def key(self) -> dict[str, Any]:
        """The fields that change the pixels (not the device or batch size)."""
        out = dataclasses.asdict(self)
        for volatile in ("out", "device", "batch_size"):
            out.pop(volatile)
        return out


# -- per-process state: a dask worker opens each slide once (the model is cached by
# model.loading, the tissue map by engine.tissue) -------------------------------------------
_SLIDES: dict[str, Slide] = {}
_LOCK = threading.Lock()


def _open(path: str) -> Slide:
    with _LOCK:
        if path not in _SLIDES or _SLIDES[path].closed:
            _SLIDES[path] = open_slide(path)
        return _SLIDES[path]


@dataclass(frozen=True)
class _Context:
    slide: Slide
    grid: Grid
    model: PipelineTileModel
    tissue: TileFilter
    detail: int  # output pixels per grid pixel

    def layout(self, chunk: int) -> ChunkLayout:
        """The job's chunks of ``chunk`` grid px, its tiles, and which chunk computes each."""
        t = self.model.tile_size
        return ChunkLayout.of(self.grid.shape, chunk, t, t // 4)


def _context(spec: JobSpec) -> _Context:
    slide = _open(spec.slide)
    if spec.source_mpp is not None:
        slide.mpp = (spec.source_mpp, spec.source_mpp)
    device = spec.device
    if device in (None, "auto", "cuda") and "device" in _WORKER:
        device = _WORKER["device"]  # this worker's own GPU
    pipe = load_pipeline(spec.model, device)
    model = PipelineTileModel(
        pipe, spec.target, text=spec.text, steps=spec.steps, guidance=spec.guidance, mpp=spec.mpp
    )
    w, h = slide.dimensions
    grid = Grid.for_region(slide, spec.region or Region(0, 0, w, h), model.mpp)
    tissue_map = slide_tissue(slide)

    def tissue(tile: Region) -> bool:
        return tissue_map.has_tissue(grid.to_level0(tile), spec.min_tissue)

    detail = grid.detail_for(slide, spec.output_mpp) if model.renders_detail else 1
    return _Context(slide, grid, model, tissue, detail)


class SharedTiles:
    """A chunk's :class:`~napari_mupd.engine.virtual_stain.TileStore`: the tiles it shares
    with other chunks, computed by their owner and kept as ``.npy`` files (exact float32)
    in the job's progress folder until every chunk that needs them is done."""

    def __init__(self, spec: JobSpec, layout: ChunkLayout, window: Region) -> None:
        self.progress = progress_dir(spec.out)
        self.folder = self.progress / "tiles"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.layout, self.samples = layout, spec.samples
        self.chunk = (window.y // layout.chunk, window.x // layout.chunk)
        self.touched: set[tuple[int, int]] = set()  # shared tiles read or written

    def _path(self, sample: int, y: int, x: int) -> Path:
        return self.folder / f"{sample}-{y}-{x}.npy"

    def borrowed(self, sample: int, y: int, x: int) -> bool:
        """Whether another chunk computed this tile (its owner; a tile the owner left no
        file for, e.g. in a job resumed with ``share_tiles=False``, is computed here)."""
        if self.layout.owner(y, x) == self.chunk:
            return False
        self.touched.add((y, x))
        return self._path(sample, y, x).exists()

    def load(self, sample: int, y: int, x: int) -> np.ndarray:
        return np.load(self._path(sample, y, x))

    def save(self, sample: int, y: int, x: int, tile: np.ndarray) -> None:
        """Keep a tile this chunk owns for the other chunks it touches (atomically)."""
        if self.layout.owner(y, x) != self.chunk or len(self.layout.chunks(y, x)) == 1:
            return
        path = self._path(sample, y, x)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(tile))
        os.replace(tmp, path)
        self.touched.add((y, x))

    def release(self) -> None:
        """Delete the shared tiles that every chunk needing them has used (called after
        this chunk's marker: of chunks finishing together, the last sees all markers)."""
        c = self.layout.chunk
        for y, x in self.touched:
            chunks = self.layout.chunks(y, x)
            if all((self.progress / f"{r * c}_{q * c}").exists() for r, q in chunks):
                for sample in range(self.samples):
                    self._path(sample, y, x).unlink(missing_ok=True)


def stain_chunk(spec: JobSpec, window: Region, share_tiles: bool = True, after: Any = ()) -> Region:
    """Stain one window (grid pixels) of the output, write it and mark it done (a dask task).

    With ``share_tiles``, tiles this window shares with other chunks come from (or go to)
    :class:`SharedTiles`; ``after`` are the chunks that compute the ones it reads (dask
    futures: the task waits for them).
    """
    import zarr

    if "threads" in _WORKER:  # torch's OpenMP thread count is per calling thread
        import torch

        torch.set_num_threads(_WORKER["threads"])
    ctx = _context(spec)
    store = SharedTiles(spec, ctx.layout(spec.chunk), window) if share_tiles else None
    mean, std = stain_grid(
        ctx.slide,
        ctx.grid,
        ctx.model,
        window=window,
        seed=spec.seed,
        samples=spec.samples,
        batch_size=spec.batch_size,
        tissue=ctx.tissue,
        detail=ctx.detail,
        store=store,
    )
    k = ctx.detail
    y0, x0 = k * window.y, k * window.x
    y1, x1 = y0 + k * window.height, x0 + k * window.width
    group: Any = zarr.open_group(spec.out, mode="r+")  # zarr types its items loosely
    group["0"][:, y0:y1, x0:x1] = np.moveaxis(to_uint8(mean), -1, 0)
    if std is not None:
        group["std/0"][:, y0:y1, x0:x1] = np.moveaxis(std.astype(np.float32), -1, 0)
    marker = progress_dir(spec.out) / f"{window.y}_{window.x}"
    tmp = marker.with_suffix(".tmp")
    tmp.write_text("")
    os.replace(tmp, marker)
    if store is not None:
        store.release()
    return window


def plan(spec: JobSpec) -> tuple[_Context, list[Region]]:
    """The job's context and its chunk windows (grid pixels); checks its inputs."""
    ctx = _context(spec)
    slide, grid, tissue = ctx.slide, ctx.grid, ctx.tissue
    if spec.chunk % ZARR_CHUNK:
        raise JobError(f"chunk must be a multiple of {ZARR_CHUNK}, got {spec.chunk}")
    h, w = grid.shape
    windows = [
        Region(x, y, min(spec.chunk, w - x), min(spec.chunk, h - y))
        for y in range(0, h, spec.chunk)
        for x in range(0, w, spec.chunk)
    ]
    squares = [Region(c.x, c.y, max(c.width, c.height), max(c.width, c.height)) for c in windows]
    if not any(tissue(square) for square in squares):
        raise JobError(f"{slide.path.name}: no tissue found in the region to stain")
    return ctx, windows


def prepare_output(
    spec: JobSpec, ctx: _Context, windows: list[Region], overwrite: bool = False
) -> set[tuple[int, int]]:
    """Create the OME-Zarr, or check an existing one is this job's; returns the (x, y)
    top-left grid pixels of the chunks already done."""
    import zarr

    out = Path(spec.out)
    if out.exists() and not overwrite:
        try:
            existing: Any = zarr.open_group(str(out), mode="r").attrs.get("napari_mupd", {})
        except Exception as exc:  # not a zarr at all
            raise JobError(f"{out} exists and is not a napari-mupd output") from exc
        if existing.get("job") != json.loads(json.dumps(spec.key())):
            raise JobError(f"{out} holds another job's output; choose another path or --overwrite")
        if existing.get("complete"):
            return {(w.x, w.y) for w in windows}
        progress = progress_dir(out)
        markers = [p.name.split("_") for p in progress.glob("*_*") if p.suffix != ".tmp"]
        return {(int(x), int(y)) for y, x in markers}  # markers are named y_x
    mpp, k = ctx.slide.mpp, ctx.detail
    scale, translate = ctx.grid.placement(mpp, k)
    attrs = {"job": spec.key(), "napari_mupd_version": __version__, "complete": False}
    units = "micrometer" if mpp else "pixel"
    for path, dtype in [(out, "uint8"), *([(out / "std", "float32")] if spec.samples > 1 else [])]:
        create_ome_zarr(  # the per-pixel std over samples is an image of its own
            path,
            (ctx.grid.shape[0] * k, ctx.grid.shape[1] * k),
            ctx.model.channels,
            dtype=dtype,
            chunk=ZARR_CHUNK,
            scale=scale,
            translate=translate,
            units=units,
            attrs=attrs if path == out else None,
        )
    shutil.rmtree(progress_dir(out), ignore_errors=True)  # an overwritten job's
    progress_dir(out).mkdir()
    return set()


def local_cluster(workers: int) -> Any:
    """A LocalCluster of ``workers`` single-threaded processes (torch threads are set later)."""
    from dask.distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=40,
    )


def run_job(
    spec: JobSpec,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    share_tiles: bool = True,
) -> Path:
    """Stain a slide (or ``spec.region``) into ``spec.out``; resumes an interrupted run.

    A local cluster gets ``workers`` processes (default: one per GPU, else one). Each
    worker runs torch on ``threads`` threads (default: its host's cores shared evenly)
    and, unless ``spec.device`` names one, on a GPU of its own. ``share_tiles=False``
    runs the chunks independently, each computing every tile it touches (tiles on chunk
    borders two to four times: 1.4x the work at 512 px chunks); the default computes each
    tile once.
    """
    from dask.distributed import Client, as_completed

    ctx, windows = plan(spec)
    done = prepare_output(spec, ctx, windows, overwrite)
    todo = [w for w in windows if (w.x, w.y) not in done]
    if progress is not None:
        progress(len(windows) - len(todo), len(windows))
    if todo:
        cluster = None
        if scheduler is None:
            cluster = local_cluster(workers or default_workers(spec.device))
        with Client(scheduler or cluster) as client:
            try:
                _setup_workers(client, threads, spec.device)
                futures = _submit(client, spec, ctx.layout(spec.chunk), todo, share_tiles)
                finished = len(windows) - len(todo)
                for future in as_completed(futures):
                    future.result()
                    finished += 1
                    if progress is not None:
                        progress(finished, len(windows))
            finally:
                if cluster is not None:
                    cluster.close()
    import zarr

    group: Any = zarr.open_group(spec.out, mode="r+")
    build_pyramid(group)
    if "std" in group:
        build_pyramid(group["std"])
    group.attrs["napari_mupd"] = {**group.attrs["napari_mupd"], "complete": True}
    shutil.rmtree(progress_dir(spec.out), ignore_errors=True)
    return Path(spec.out)


def _submit(
    client: Any, spec: JobSpec, layout: ChunkLayout, todo: list[Region], share_tiles: bool
) -> list[Any]:
    """One task per chunk to do, each after the chunks whose tiles it reads, in the
    layout's schedule (dask runs the earlier ones first)."""
    windows: dict[Chunk, Region] = {(w.y // spec.chunk, w.x // spec.chunk): w for w in todo}
    order = layout.schedule(list(windows)) if share_tiles else list(windows)
    futures: dict[Chunk, Any] = {}
    for n, chunk in enumerate(order):
        after = [futures[d] for d in layout.depends(chunk) if d in futures] if share_tiles else []
        futures[chunk] = client.submit(
            stain_chunk,
            spec,
            windows[chunk],
            share_tiles,
            after,
            pure=False,
            priority=len(order) - n,
        )
    return list(futures.values())


def default_workers(device: str | None) -> int:
    """One local worker per CUDA GPU (when ``device`` allows CUDA), else one."""
    if device not in (None, "auto", "cuda"):
        return 1
    import torch

    return max(1, torch.cuda.device_count())


def _setup_workers(client: Any, threads: int | None, device: str | None) -> None:
    """Share each host's cores (and GPUs) among the workers on it."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    per_host = Counter(info["host"] for info in workers.values())
    rank: Counter[str] = Counter()
    for address, info in sorted(workers.items()):
        host = info["host"]
        args = (threads, per_host[host], rank[host], device)
        client.run(_prepare_worker, *args, workers=[address])
        rank[host] += 1


def _prepare_worker(
    threads: int | None, workers_on_host: int, rank: int = 0, device: str | None = None
) -> None:
    """Set the worker's torch threads and GPU, and undo dask's malloc tuning for torch.

    The ``rank``-th worker of a host takes GPU ``rank % GPUs`` when ``device`` allows
    CUDA. dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also
    turns off glibc's dynamic mmap threshold: every tensor over 128 KiB is then a fresh
    mmap and a storm of page faults, and the model runs at half speed (benchmarks/
    bench_engine.py measured 1.05 M page faults and 2.2 s of system time per chunk).
    """
    _WORKER["threads"] = threads or max(1, (os.cpu_count() or 1) // workers_on_host)
    gpus = default_workers(device) if device in (None, "auto", "cuda") else 0
    import torch

    if gpus and torch.cuda.is_available():
        _WORKER["device"] = f"cuda:{rank % gpus}"
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc
            return
        libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)


_WORKER: dict[str, Any] = {}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
