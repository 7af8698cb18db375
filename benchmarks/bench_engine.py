"""Engine benchmark: a 512 px region with the bundled model, and whole-slide jobs on
1 and 2 dask workers.

    python benchmarks/bench_engine.py                 # CPU, the bundled sample slide
    python benchmarks/bench_engine.py --device cuda   # region timing on a GPU

Part 1 stains the 512 x 512 level-0 px region of the sample with the most tissue, as
``mupd demo`` does, with the bundled checkpoint (best of ``--repeats`` after a warm-up),
next to its floor measured in the same run: the bare pipeline called on the same tiles
in the same batches, with no slide reads, noise fields or blending. The difference is
the engine's overhead.

Part 2 stains the whole sample slide with ``run_job`` (OME-Zarr, resumable chunks) on a
dask LocalCluster: 1 worker x 1 torch thread, 2 workers x 1 thread (the scaling ratio
compares these two), and the default split of the cores (1 worker x all threads). Each
split runs twice, "before" (``share_tiles=False``: independent chunks, each staining
every tile it touches, so tiles on chunk borders run in two to four chunks) and "after"
(the default: each tile computed once by the chunk that owns it and shared through the
job's progress folder). It reports the tiles computed either way, useful tiles/s
(distinct tissue tiles of the grid per second of job wall time, cluster start and model
loading included), and each worker's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_mupd import __version__, open_slide
from napari_mupd.engine.jobs import JobSpec, _context, local_cluster, plan, run_job
from napari_mupd.engine.sampling import PipelineTileModel
from napari_mupd.engine.tissue import most_tissue_region
from napari_mupd.engine.virtual_stain import Grid, stain_region, window_tiles
from napari_mupd.imaging.regions import Region
from napari_mupd.model.loading import load_pipeline
from napari_mupd.resources import bundled_model_path, sample_slide_path


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def region_table(args: argparse.Namespace) -> list[str]:
    """Engine vs bare pipeline on the demo region."""
    pipe = load_pipeline(None, args.device)
    model = PipelineTileModel(pipe, args.target, steps=args.steps)
    with open_slide(args.slide) as slide:
        region = most_tissue_region(slide, 512)
        grid = Grid.for_region(slide, region, model.mpp)
        t = model.tile_size
        whole = Region(0, 0, grid.shape[1], grid.shape[0])
        boxes = window_tiles(grid.shape, t, t // 4, whole)
        sources = np.stack([grid.read(slide, box) for box in boxes])

        def engine() -> float:
            start = time.perf_counter()
            stain_region(slide, region, model, seed=0)
            return time.perf_counter() - start

        def bare() -> float:
            start = time.perf_counter()
            for i in range(0, len(sources), 4):
                model(sources[i : i + 4], None, lambda: False)
            return time.perf_counter() - start

        engine(), bare()  # warm-up
        t_engine = min(engine() for _ in range(args.repeats))
        t_bare = min(bare() for _ in range(args.repeats))
    steps = model.steps or pipe.config.default_steps["IHC"]
    return [
        f"Region: {region.width} x {region.height} level-0 px at x={region.x} y={region.y} of "
        f"{Path(args.slide).name} -> {grid.shape[1]} x {grid.shape[0]} px at {model.mpp} um/px, "
        f"{len(boxes)} tiles of {t} px, {steps} steps, {pipe.config.name} on {pipe.device}, "
        f"{torch.get_num_threads()} torch threads, best of {args.repeats}.",
        "",
        "| path | s/region | tiles/s | vs bare pipeline | goal |",
        "|---|--:|--:|--:|---|",
        f"| stain_region (engine) | {t_engine:.2f} | {len(boxes) / t_engine:.2f} "
        f"| {t_engine / t_bare:.2f}x | < 10 s on CPU |",
        f"| bare pipeline, same tiles and batches | {t_bare:.2f} | {len(boxes) / t_bare:.2f} "
        "| 1.00x | (floor) |",
        "",
        f"Peak RSS of this process after part 1: {peak_rss_mb():.0f} MB.",
    ]


def _worker_peak_rss() -> float:
    return peak_rss_mb()


def _worker_cpu() -> float:
    """CPU seconds (user + system) the worker process has used since it started."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def job_tiles(spec: JobSpec) -> tuple[int, int, int, int]:
    """Distinct tissue tiles, tiles computed over all chunks before (independent chunks)
    and after (shared border tiles), and chunks of a job."""
    ctx, windows = plan(spec)
    grid, tissue, t = ctx.grid, ctx.tissue, ctx.model.tile_size
    layout = ctx.layout(spec.chunk)
    whole = Region(0, 0, grid.shape[1], grid.shape[0])
    distinct = len(window_tiles(grid.shape, t, t // 4, whole, tissue))
    before = after = 0
    for w in windows:
        tiles = window_tiles(grid.shape, t, t // 4, w, tissue)
        before += len(tiles)
        here = (w.y // spec.chunk, w.x // spec.chunk)
        after += sum(layout.owner(tile.y, tile.x) == here for tile in tiles)
    return distinct, before, after, len(windows)


def run_cluster(
    spec: JobSpec, workers: int, threads: int | None, share_tiles: bool = True
) -> tuple[float, list[float], float]:
    """Wall time of one job on a fresh LocalCluster, the workers' peak RSS (MB) and the
    CPU seconds they used (start and model loading included: a measure of work that
    other jobs on a shared machine disturb less than wall time)."""
    from dask.distributed import Client

    cluster = local_cluster(workers)
    try:
        start = time.perf_counter()
        run_job(
            spec,
            scheduler=cluster.scheduler_address,
            threads=threads,
            overwrite=True,
            share_tiles=share_tiles,
        )
        wall = time.perf_counter() - start
        with Client(cluster) as client:
            rss = list(client.run(_worker_peak_rss).values())
            cpu = sum(client.run(_worker_cpu).values())
    finally:
        cluster.close()
    return wall, rss, cpu


def slide_table(args: argparse.Namespace) -> list[str]:
    """Whole-slide jobs on 1 and 2 workers."""
    out = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    spec = JobSpec(
        slide=str(args.slide),
        model=str(bundled_model_path()),
        target=args.target,
        out=str(out / "slide.ome.zarr"),
        steps=args.steps,
        mpp=args.mpp,
        chunk=512,
    )
    distinct, before, after, chunks = job_tiles(spec)
    grid = _context(spec).grid
    rows = [
        f"Whole slide: {Path(args.slide).name} at {args.mpp} um/px -> {grid.shape[1]} x "
        f"{grid.shape[0]} px grid, {chunks} chunks of 512 px, {distinct} distinct tissue tiles; "
        f"computed before: {before} ({before / distinct:.2f}x, tiles on chunk borders run in "
        f"every chunk they touch), after: {after} ({after / distinct:.2f}x, goal <= 1.05). "
        "Wall time includes cluster start and model loading.",
        "",
        "| workers x torch threads | wall before (s) | wall after (s) | wall: after vs before "
        "| worker CPU before (s) | worker CPU after (s) | CPU: after vs before "
        "| tiles/s after (distinct) | after vs 1 x 1 | peak RSS per worker after (MB) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    base = None
    results = {}
    runs: dict[tuple[int, int | None, bool], list[float]] = {}
    for workers, threads in ((1, 1), (2, 1), (1, None)):
        walls: dict[bool, list[float]] = {False: [], True: []}
        cpus: dict[bool, list[float]] = {False: [], True: []}
        rss: list[float] = []
        for _ in range(args.repeats_job):
            for share in (False, True):  # interleaved, so that load drifts hit both alike
                wall, peaks, cpu = run_cluster(spec, workers, threads, share)
                walls[share].append(wall)
                cpus[share].append(cpu)
                rss = peaks if share else rss
        old, new = min(walls[False]), min(walls[True])
        cpu_old, cpu_new = min(cpus[False]), min(cpus[True])
        runs[(workers, threads, False)], runs[(workers, threads, True)] = walls[False], walls[True]
        base = base or new
        results[(workers, threads)] = new
        label = f"{workers} x {threads or (os.cpu_count() or 1) // workers}"
        rows.append(
            f"| {label} | {old:.1f} | {new:.1f} | {old / new:.2f}x faster | {cpu_old:.1f} "
            f"| {cpu_new:.1f} | {cpu_old / cpu_new:.2f}x less | {distinct / new:.2f} "
            f"| {base / new:.2f}x | {', '.join(f'{r:.0f}' for r in rss)} |"
        )
    ratio = results[(1, 1)] / results[(2, 1)]
    rows.append(f"\nScaling 1 -> 2 workers (1 thread each, after): {ratio:.2f}x (goal >= 1.7x).")
    rows.append(
        "Each run: "
        + "; ".join(
            f"{w} x {t or (os.cpu_count() or 1) // w} {'after' if s else 'before'} "
            + ", ".join(f"{x:.1f} s" for x in runs[(w, t, s)])
            for (w, t, s) in runs
        )
        + "."
    )
    shutil.rmtree(out, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", default=str(sample_slide_path()))
    parser.add_argument("--target", default="IHC:Ki67")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--mpp", type=float, default=0.5, help="whole-slide job pixel size")
    parser.add_argument("--repeats", type=int, default=3, help="region timings")
    parser.add_argument("--repeats-job", type=int, default=1, help="whole-slide runs")
    parser.add_argument("--skip-slide", action="store_true", help="part 1 only")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"napari-mupd {__version__}, torch {torch.__version__}, {platform.processor() or ''} "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at start\n"
    )
    print("\n".join(region_table(args)))
    if not args.skip_slide and args.device == "cpu":
        print()
        print("\n".join(slide_table(args)))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
