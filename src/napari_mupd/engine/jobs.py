"""Whole-slide staining jobs: chunked, resumable, on a dask.distributed cluster.

The output grid is cut into chunks; each is a dask task that stains its window (tiles
and noise come from one grid over the whole region, so chunks meet without seams),
writes it into the OME-Zarr and then drops a marker file. A rerun skips chunks with a
marker: a job killed at any point resumes to the same result as an uninterrupted run.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_mupd import __version__
from napari_mupd.engine.region import Grid, Region, stain_grid
from napari_mupd.engine.tissue import slide_tissue_mask, tissue_fraction
from napari_mupd.engine.writers import build_pyramid, create_ome_zarr, to_dtype
from napari_mupd.errors import MuPDError

ZARR_CHUNK = 512
DONE = ".mupd-done"


class JobError(MuPDError):
    """A staining job cannot start or continue."""


@dataclass(frozen=True)
class JobSpec:
    """Everything that defines a whole-slide staining job's output."""

    slide: str
    model: str
    target: str
    out: str
    region: tuple[int, int, int, int] | None = None  # x, y, w, h in level-0 pixels
    text: str | None = None
    steps: int | None = None
    seed: int = 0
    samples: int = 1
    mpp: float | None = None
    guidance: float = 1.0
    chunk: int = 1024
    batch_size: int = 4
    min_tissue: float = 0.05
    device: str | None = None

    def key(self) -> dict[str, Any]:
        """The fields that change the pixels (not the device or batch size)."""
        out = dataclasses.asdict(self)
        for volatile in ("out", "device", "batch_size"):
            out.pop(volatile)
        return out


# -- per-process caches (a dask worker loads the model and opens the slide once) ----------
_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def _cached(key: tuple, build: Callable[[], Any]) -> Any:
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def _context(spec: JobSpec) -> tuple[Any, Grid, Any, Callable[[int, int, int], bool]]:
    from napari_mupd.engine.models import PipelineTileModel
    from napari_mupd.io import open_slide
    from napari_mupd.model import MuPDPipeline

    slide = _cached(("slide", spec.slide), lambda: open_slide(spec.slide))
    device = spec.device
    if device in (None, "auto", "cuda") and "device" in _WORKER:
        device = _WORKER["device"]  # this worker's own GPU
    pipe = _cached(
        ("pipe", spec.model, device),
        lambda: MuPDPipeline.from_pretrained(spec.model, device=device),
    )
    model = PipelineTileModel(
        pipe, spec.target, text=spec.text, steps=spec.steps, guidance=spec.guidance, mpp=spec.mpp
    )
    w, h = slide.dimensions
    region = Region(*spec.region) if spec.region else Region(0, 0, w, h)
    grid = Grid.for_region(slide, region, model.mpp)
    mask, scale = _cached(("tissue", spec.slide), lambda: slide_tissue_mask(slide))
    d = grid.downsample

    def tissue(y: int, x: int, t: int) -> bool:
        box = (round(region.x + x * d), round(region.y + y * d), round(t * d), round(t * d))
        return tissue_fraction(mask, scale, box) >= spec.min_tissue

    return slide, grid, model, tissue


def stain_chunk(spec: JobSpec, window: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Stain one window of the output, write it and mark it done (a dask task)."""
    import zarr

    if "threads" in _WORKER:  # torch's OpenMP thread count is per calling thread
        import torch

        torch.set_num_threads(_WORKER["threads"])
    slide, grid, model, tissue = _context(spec)
    mean, std = stain_grid(
        slide,
        grid,
        model,
        window=window,
        seed=spec.seed,
        samples=spec.samples,
        batch_size=spec.batch_size,
        tissue=tissue,
    )
    y0, x0, y1, x1 = window
    group = zarr.open_group(spec.out, mode="r+")
    group["0"][:, y0:y1, x0:x1] = np.moveaxis(to_dtype(mean, "uint8"), -1, 0)
    if std is not None:
        group["std/0"][:, y0:y1, x0:x1] = np.moveaxis(std.astype(np.float32), -1, 0)
    marker = Path(spec.out) / DONE / f"{y0}_{x0}"
    tmp = marker.with_suffix(".tmp")
    tmp.write_text("")
    os.replace(tmp, marker)
    return window


def plan(spec: JobSpec) -> tuple[Grid, list[tuple[int, int, int, int]], tuple[str, ...]]:
    """The grid, the chunk windows and the channels of a job (checks its inputs)."""
    slide, grid, model, tissue = _context(spec)
    if spec.chunk % ZARR_CHUNK:
        raise JobError(f"chunk must be a multiple of {ZARR_CHUNK}, got {spec.chunk}")
    h, w = grid.shape
    windows = [
        (y, x, min(y + spec.chunk, h), min(x + spec.chunk, w))
        for y in range(0, h, spec.chunk)
        for x in range(0, w, spec.chunk)
    ]
    if not any(tissue(y0, x0, max(y1 - y0, x1 - x0)) for y0, x0, y1, x1 in windows):
        raise JobError(f"{slide.path.name}: no tissue found in the region to stain")
    return grid, windows, model.channels


def prepare_output(
    spec: JobSpec, grid: Grid, channels: tuple[str, ...], mpp: Any, overwrite: bool = False
) -> set[tuple[int, int]]:
    """Create the OME-Zarr, or check an existing one is this job's; returns done chunks."""
    import zarr

    out = Path(spec.out)
    if out.exists() and not overwrite:
        try:
            existing = zarr.open_group(str(out), mode="r").attrs.get("napari_mupd", {})
        except Exception as exc:  # not a zarr at all
            raise JobError(f"{out} exists and is not a napari-mupd output") from exc
        if existing.get("job") != json.loads(json.dumps(spec.key())):
            raise JobError(f"{out} holds another job's output; choose another path or --overwrite")
        done = {
            tuple(map(int, p.name.split("_")))
            for p in (out / DONE).glob("*_*")
            if not p.name.endswith(".tmp")
        }
        return done
    scale, translate = grid.placement(mpp)
    attrs = {"job": spec.key(), "napari_mupd_version": __version__, "complete": False}
    units = "micrometer" if mpp else "pixel"
    layout = {"chunk": ZARR_CHUNK, "scale": scale, "translate": translate, "units": units}
    create_ome_zarr(out, grid.shape, channels, attrs=attrs, **layout)
    if spec.samples > 1:  # the per-pixel std over samples, as an image of its own
        create_ome_zarr(out / "std", grid.shape, channels, dtype="float32", **layout)
    (out / DONE).mkdir(exist_ok=True)
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
) -> Path:
    """Stain a slide (or ``spec.region``) into ``spec.out``; resumes an interrupted run.

    A local cluster gets ``workers`` processes (default: one per GPU, else one). Each
    worker runs torch on ``threads`` threads (default: its host's cores shared evenly)
    and, unless ``spec.device`` names one, on a GPU of its own.
    """
    from dask.distributed import Client, as_completed

    grid, windows, channels = plan(spec)
    slide = _context(spec)[0]
    done = prepare_output(spec, grid, channels, slide.mpp, overwrite)
    todo = [w for w in windows if (w[0], w[1]) not in done]
    if progress is not None:
        progress(len(windows) - len(todo), len(windows))
    if todo:
        cluster = None
        if scheduler is None:
            cluster = local_cluster(workers or default_workers(spec.device))
        with Client(scheduler or cluster) as client:
            try:
                _setup_workers(client, threads, spec.device)
                futures = client.map(stain_chunk, [spec] * len(todo), todo, pure=False)
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

    group = zarr.open_group(spec.out, mode="r+")
    build_pyramid(group)
    if "std" in group:
        build_pyramid(group["std"])
    group.attrs["napari_mupd"] = {**group.attrs["napari_mupd"], "complete": True}
    return Path(spec.out)


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
