"""GPU checks in one run, one table: run by ``benchmarks/gpu_check.sh`` (see docs/benchmarks.md).

    bash benchmarks/gpu_check.sh                         # on a GPU machine: < 8 min on one H200
    MUPD_GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh   # the CPU fallback, tiny sizes

Rows:

1. a 512 x 512 level-0 px region of the sample slide (the one ``mupd demo`` stains, IHC
   drawn at the slide's pixel size) with the bundled model, fp32 and bf16 (the pipeline's
   bf16 autocast; fp32 turns it off), best of 3 after a warm-up; goal < 0.5 s;
2. transformer throughput and model FLOP utilisation in bf16 at the SiT-B and SiT-XL
   presets (random weights, no condition streams: the work of a DiT of that size),
   against the GPU's nominal dense bf16 peak and a bf16 GEMM measured in the same run;
3. 200 steps of ``mupd train`` through ``accelerate launch --mixed_precision bf16``
   (configs/gpu/train.yaml: SiT-B on the repository's own data), steps/s from its log;
4. a whole-slide job (``run_job``, 512 px chunks, the sample at 0.5 um/px) with one dask
   worker per GPU, with the tiles computed per distinct tile.

Without a GPU (or with ``--tiny`` / ``MUPD_GPU_CHECK_TINY=1``) every row runs on the CPU at
tiny sizes (a 128 px region, the tiny preset, 2 training steps, a 2-chunk job on a worker
thread) in seconds, so that the script itself is tested (tests/test_gpu_check.py); its
numbers mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from bench_engine import job_tiles
from bench_model import PEAK_TFLOPS, analytic_flops, inputs
from napari_mupd import __version__, open_slide
from napari_mupd.engine import jobs
from napari_mupd.engine.sampling import PipelineTileModel
from napari_mupd.engine.tissue import most_tissue_region
from napari_mupd.engine.virtual_stain import stain_region
from napari_mupd.imaging.regions import Region
from napari_mupd.model import MuPDConfig, MuPDTransformer
from napari_mupd.model.loading import load_pipeline
from napari_mupd.resources import bundled_model_path, sample_slide_path

ROOT = Path(__file__).resolve().parents[1]
#: What benchmarks/gpu_prepare.sh leaves for a machine without imagecodecs (the GPU image).
PREPARED = ROOT / "benchmarks" / ".cache" / "gpu"
TRAIN_CONFIG = ROOT / "configs" / "gpu" / "train.yaml"
GOAL_REGION_S = 0.5

Row = dict[str, str]


def sample_slide() -> tuple[Path, float | None]:
    """The bundled sample slide, or the JPEG copy gpu_prepare.sh wrote (and its pixel size)
    where its JPEG tiles cannot be decoded (no imagecodecs)."""
    svs = sample_slide_path()
    try:
        with open_slide(svs) as slide:
            slide.read_region((0, 0), 0, (64, 64))
        return svs, None
    except Exception as exc:  # the GPU image has tifffile but not imagecodecs
        jpg = PREPARED / "CMU-1-Small-Region.jpg"
        if not jpg.exists():
            raise SystemExit(
                f"gpu_check: cannot read {svs.name} ({exc}) and {jpg} is missing: "
                "run benchmarks/gpu_prepare.sh first"
            ) from exc
        mpp = json.loads(jpg.with_suffix(".json").read_text())["mpp"]
        return jpg, float(mpp)


def timed(run: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def autocast(device: str, bf16: bool) -> torch.autocast:
    return torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)


def region_rows(device: str, tiny: bool, slide_path: Path, mpp: float | None) -> list[Row]:
    """The demo region with the bundled model in fp32 and bf16."""
    rows = []
    for precision in ("fp32", "bf16"):
        rows.append(region_row(device, tiny, slide_path, mpp, precision))
        free(device)
    return rows


def region_row(device: str, tiny: bool, slide_path: Path, mpp: float | None, precision: str) -> Row:
    steps = 2 if tiny else None
    repeats = 1 if tiny else 3
    pipe = load_pipeline(None, device, cache=False)  # a private copy to set autocast on
    pipe.autocast = lambda: autocast(device, precision == "bf16")  # type: ignore[method-assign]
    model = PipelineTileModel(pipe, "IHC:Ki67", steps=steps)
    with open_slide(slide_path) as slide:
        if mpp is not None:
            slide.mpp = (mpp, mpp)
        assert slide.mpp is not None
        region = most_tissue_region(slide, 128 if tiny else 512)
        out_mpp = slide.mpp[0]

        def run() -> Any:
            return stain_region(slide, region, model, seed=0, output_mpp=out_mpp)

        result = run()  # warm-up: kernels, allocator, the slide's tissue map
        best = min(timed(run, device) for _ in range(repeats))
    h, w = result.image.shape[:2]
    n_steps = steps or pipe.config.default_steps["IHC"]
    return {
        "check": f"{region.width} px region, bundled model",
        "precision": precision,
        "work": f"{region.width}x{region.height} level-0 px of {slide_path.name} -> "
        f"{w}x{h} px, {pipe.config.name}, {n_steps} steps",
        "result": f"{best:.3f} s (best of {repeats})",
        "goal": f"< {GOAL_REGION_S} s on a GPU",
        "met": "-" if device == "cpu" else ("yes" if best < GOAL_REGION_S else "no"),
    }


def free(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()


def peak_flops(device: str) -> tuple[float, str, float]:
    """The nominal dense bf16 peak (GPU; on a CPU the measured fp32 GEMM), its label, and a
    bf16 GEMM measured now."""
    n = 8192 if device == "cuda" else 256
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ a
    best = min(timed(lambda: a @ a, device) for _ in range(5 if device == "cuda" else 2))
    measured = 2 * n**3 / best
    if device != "cuda":
        f32 = torch.randn(n, n)
        fp32 = 2 * n**3 / min(timed(lambda: f32 @ f32, device) for _ in range(3))
        return fp32, f"fp32 GEMM measured on {torch.get_num_threads()} CPU threads", measured
    name = torch.cuda.get_device_name()
    nominal = next((v for k, v in PEAK_TFLOPS.items() if k in name), 989.0) * 1e12
    return nominal, f"nominal dense bf16 peak of the {name}", measured


def transformer_rows(device: str, tiny: bool) -> list[Row]:
    """Forward throughput and MFU in bf16 at SiT-B and SiT-XL (tiny on the CPU fallback)."""
    peak = peak_flops(device)
    rows = []
    for name, preset, batch in (("SiT-B", MuPDConfig.sit_b, 64), ("SiT-XL", MuPDConfig.sit_xl, 32)):
        config = MuPDConfig.tiny() if tiny else preset()
        rows.append(transformer_row(device, name, config, 2 if tiny else batch, peak, tiny))
        free(device)
    return rows


def transformer_row(
    device: str,
    name: str,
    config: MuPDConfig,
    batch: int,
    peak: tuple[float, str, float],
    tiny: bool,
) -> Row:
    nominal, label, gemm = peak
    torch.manual_seed(0)
    with torch.device(device):
        model = MuPDTransformer(config).eval()
    x, t, ids, _ = inputs(config, False, device, batch)
    repeats = 3 if tiny else 20

    def forwards() -> None:
        with autocast(device, True):
            for _ in range(repeats):
                model(x, t, ids, None)

    with torch.inference_mode():
        forwards()  # warm-up
        secs = timed(forwards, device) / repeats
    flops = analytic_flops(config, False) * batch
    rate = flops / secs
    params = sum(p.numel() for p in model.parameters())
    tokens = (config.latent_size // config.patch_size) ** 2
    return {
        "check": f"transformer forward, {name}" + (f" (tiny: {config.name})" if tiny else ""),
        "precision": "bf16",
        "work": f"{params / 1e6:.1f} M params, batch {batch} x {tokens} tokens, "
        f"{flops / batch / 1e9:.2f} GFLOP/tile",
        "result": f"{batch / secs:,.0f} tile-steps/s, {rate / 1e12:.3g} TFLOP/s: "
        f"MFU {rate / nominal:.1%} of {nominal / 1e12:.3g} TFLOP/s ({label}), "
        f"{rate / gemm:.1%} of a bf16 GEMM measured now ({gemm / 1e12:.3g} TFLOP/s)",
        "goal": "reported",
        "met": "-",
    }


def _absolute(value: Any, base: Path) -> Any:
    """Dataset arguments that name files next to the config, as absolute paths."""
    if isinstance(value, dict):
        return {k: _absolute(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    if isinstance(value, str) and (base / value).exists():
        return str((base / value).resolve())
    return value


def train_row(device: str, tiny: bool, python: str, timeout: float) -> Row:
    """`mupd train` for 200 steps (2 on the CPU fallback) through `accelerate launch`."""
    tmp = Path(tempfile.mkdtemp(prefix="mupd-gpu-train-"))
    raw = yaml.safe_load(TRAIN_CONFIG.read_text())
    raw["tasks"] = _absolute(raw["tasks"], TRAIN_CONFIG.parent)
    raw["out_dir"] = str(tmp / "run")
    if tiny:
        raw["model"] = {**raw["model"], "preset": "tiny"}
        raw.update(steps=2, batch_size=2, warmup_steps=0, log_every=1)
        for task in raw["tasks"]:
            for data in task["data"]:
                if "serial_sections" in data:
                    data["serial_sections"]["stride"] = 256
    config = tmp / "train.yaml"
    config.write_text(yaml.safe_dump(raw))
    precision = raw["mixed_precision"]
    cmd = [python, "-m", "accelerate.commands.launch", "--num_processes", "1"]
    cmd += ["--num_machines", "1", "--mixed_precision", precision, "--dynamo_backend", "no"]
    cmd += ["--cpu"] if device == "cpu" else []
    cmd += ["-m", "napari_mupd.cli", "train", str(config), "--restart"]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        failure = None if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()
    except subprocess.TimeoutExpired:
        failure = f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - start
    preset = raw["model"]["preset"]
    work = f"{raw['steps']} steps, {preset} preset, batch {raw['batch_size']}"
    row = {
        "check": "mupd train through accelerate",
        "precision": precision,
        "work": work,
        "goal": "runs, finite loss",
    }
    if failure is not None:
        last = failure.splitlines()[-1] if failure else "?"
        shutil.rmtree(tmp, ignore_errors=True)
        return {**row, "result": f"failed after {wall:.0f} s: {last}", "met": "no"}
    with (tmp / "run" / "log.csv").open() as fh:
        log = list(csv.DictReader(fh))
    shutil.rmtree(tmp, ignore_errors=True)
    first, last = log[0], log[-1]
    steps = int(last["step"]) - int(first["step"])
    secs = float(last["seconds"]) - float(first["seconds"])
    rate = f"{steps / secs:.2f} steps/s (steps {first['step']}-{last['step']})" if secs > 0 else ""
    return {
        **row,
        "result": f"{rate}, loss {float(first['loss']):.3f} -> {float(last['loss']):.3f}, "
        f"{wall:.0f} s in all (start, data, checkpoint, export)",
        "met": "yes" if all(float(r["loss"]) < float("inf") for r in log) else "no",
    }


def _worker_device() -> str:
    return str(jobs._WORKER.get("device", "cpu"))


def job_row(device: str, tiny: bool, slide_path: Path, mpp: float | None) -> Row:
    """A whole-slide job on a LocalCluster of one worker per GPU."""
    from dask.distributed import Client

    out = Path(tempfile.mkdtemp(prefix="mupd-gpu-job-"))
    spec = jobs.JobSpec(
        slide=str(slide_path),
        model=str(bundled_model_path()),
        target="IHC:Ki67",
        out=str(out / "slide.ome.zarr"),
        region=Region(512, 512, 1100, 400) if tiny else None,
        steps=1 if tiny else None,
        mpp=1.0 if tiny else 0.5,
        source_mpp=mpp,
        chunk=512,
        device=None if device == "cuda" else "cpu",
    )
    distinct, before, after, chunks = job_tiles(spec)
    workers = jobs.default_workers(spec.device)
    if tiny:  # a worker thread in this process: no second torch import
        from dask.distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        )
    else:
        cluster = jobs.local_cluster(workers)
    try:
        start = time.perf_counter()
        jobs.run_job(spec, scheduler=cluster.scheduler_address)
        wall = time.perf_counter() - start
        with Client(cluster) as client:
            devices = sorted(client.run(_worker_device).values())
    finally:
        cluster.close()
        shutil.rmtree(out, ignore_errors=True)
    per_gpu = device == "cpu" or devices == [f"cuda:{i}" for i in range(workers)]
    return {
        "check": "whole-slide job, one worker per GPU",
        "precision": "bf16" if device == "cuda" else "fp32",
        "work": f"{slide_path.name}{' (a 1100x400 region)' if tiny else ''} at {spec.mpp} um/px: "
        f"{chunks} chunks of 512 px, {distinct} tissue tiles, {after} computed "
        f"({after / distinct:.2f}x; {before} with independent chunks)",
        "result": f"{wall:.1f} s, {distinct / wall:.1f} tiles/s on {workers} worker(s) "
        f"({', '.join(devices)}; cluster start and model loading included)",
        "goal": "1 worker per GPU, each on its own",
        "met": "-" if device == "cpu" else ("yes" if per_gpu else "no"),
    }


def table(rows: list[Row], device: str) -> list[str]:
    out = [
        "| check | device | precision | work | result | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['check']} | {device} | {r['precision']} | {r['work']} | {r['result']} "
            f"| {r['goal']} | {r['met']} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the CPU fallback, tiny sizes")
    parser.add_argument("--markdown", help="also write the report to this file")
    parser.add_argument("--train-timeout", type=float, default=330.0, help="seconds")
    args = parser.parse_args()
    tiny = args.tiny or os.environ.get("MUPD_GPU_CHECK_TINY", "") not in ("", "0")
    started = time.perf_counter()
    cuda = torch.cuda.is_available() and not tiny
    device = "cuda" if cuda else "cpu"
    tiny = tiny or not cuda
    head = [
        f"napari-mupd {__version__}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs",
    ]
    if cuda:
        props = torch.cuda.get_device_properties(0)
        head.append(
            f"GPU: {torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB"
        )
    else:
        why = "asked for (MUPD_GPU_CHECK_TINY)" if torch.cuda.is_available() else "no GPU here"
        head.append(f"no GPU run: {why}; CPU fallback at tiny sizes (the numbers mean nothing)")
    print("\n".join(head), flush=True)
    slide_path, mpp = sample_slide()
    rows: list[Row] = []
    for part in (
        lambda: region_rows(device, tiny, slide_path, mpp),
        lambda: transformer_rows(device, tiny),
        lambda: [train_row(device, tiny, sys.executable, args.train_timeout)],
        lambda: [job_row(device, tiny, slide_path, mpp)],
    ):
        rows += part()
        print(f"  ... {rows[-1]['check']}: {rows[-1]['result']}", flush=True)
    label = f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu"
    report = [
        *head,
        "",
        *table(rows, label),
        "",
        f"gpu_check: {time.perf_counter() - started:.0f} s in all",
    ]
    print("\n" + "\n".join(report[len(head) + 1 :]))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
