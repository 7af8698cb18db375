"""MuPD model benchmark: size, FLOPs per forward, and sampling throughput vs diffusers' DiT.

    python benchmarks/bench_model.py                        # CPU, fp32
    python benchmarks/bench_model.py --device cuda --dtype bf16   # GPU, with MFU

Prints markdown tables. Part 1: parameters and FLOPs of one transformer forward (batch
1, one tile at the config's resolution; analytic count and torch's FlopCounterMode on
the meta device) for the tiny, demo, SiT-B and SiT-XL configs. Part 2: an Euler
sampling loop for a 256 px tile (32x32x4 latent) with the demo config: ours without
conditions (the same work as a DiT), ours with text + RNA + reference image, and an
equal-size ``diffusers.DiTTransformer2DModel`` (same width, depth, heads, patch) in the
same run, with the ratio, achieved GFLOP/s and the compute floor from a measured GEMM
peak (CPU) or the nominal peak (GPU: model FLOP utilisation).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_mupd.model import MuPDConfig, MuPDPipeline, MuPDTransformer, StreamInput

#: Dense bf16 peak (TFLOP/s) of GPUs we may meet, for model FLOP utilisation.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}


def stream_lengths(config: MuPDConfig, conditioned: bool) -> dict[str, int]:
    """Token counts per stream for a fully conditioned call (text at its maximum length)."""
    if not conditioned:
        return {}
    return {"text": config.text_max_tokens, "rna": config.rna_tokens, "image": config.image_tokens}


def analytic_flops(config: MuPDConfig, conditioned: bool) -> int:
    """Multiply-adds x 2 of one transformer forward for one tile (encoders excluded)."""
    d, p, r = config.hidden_size, config.patch_size, config.mlp_ratio
    n = (config.latent_size // p) ** 2
    dims = {"text": config.text_dim, "rna": config.rna_dim, "image": config.image_dim}
    lengths = stream_lengths(config, conditioned)
    block = 2 * d * 6 * d  # adaLN
    block += 2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d  # self-attention
    block += 4 * n * d * int(r * d)  # MLP
    if lengths:
        block += 2 * n * d * d * 2  # DCA query and output projections
        block += sum(2 * ln * dims[m] * 2 * d + 4 * n * ln * d for m, ln in lengths.items())
    c_in = config.canvas_channels + config.latent_channels + 1
    rest = 2 * n * p * p * c_in * d + 2 * n * d * p * p * config.canvas_channels
    rest += 2 * (256 * d + d * d) + 2 * d * 2 * d
    return config.depth * block + rest


def inputs(config: MuPDConfig, conditioned: bool, device: str, batch: int = 1):
    """Random latents, time, target ids and streams for `batch` tiles."""
    b, h = batch, config.latent_size
    x = torch.randn(b, config.canvas_channels, h, h, device=device)
    t = torch.full((b,), 0.5, device=device)
    ids = torch.zeros(b, dtype=torch.long, device=device)
    dims = {"text": config.text_dim, "rna": config.rna_dim, "image": config.image_dim}
    streams = {
        m: StreamInput(
            torch.randn(b, ln, dims[m], device=device),
            torch.ones(b, dtype=torch.bool, device=device),
        )
        for m, ln in stream_lengths(config, conditioned).items()
    }
    return x, t, ids, streams


def counted_flops(config: MuPDConfig, conditioned: bool) -> int:
    """FlopCounterMode on the meta device (no memory; CPU SDPA is not counted otherwise)."""
    with torch.device("meta"):
        model = MuPDTransformer(config)
        x, t, ids, streams = inputs(config, conditioned, "meta")
    with FlopCounterMode(display=False) as counter:
        model(x, t, ids, streams)
    return int(counter.get_total_flops())


def parameter_table() -> list[str]:
    rows = [
        "| config | transformer params | all params (+encoders, VAEs) | latent | tokens "
        "| GFLOP/forward uncond (analytic / counted) | GFLOP/forward text+RNA+image |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for name in ("tiny", "demo", "sit_b", "sit_xl"):
        config = getattr(MuPDConfig, name)()
        with torch.device("meta"):
            parts = MuPDPipeline.from_config(config, device="meta").components
        count = [
            sum(p.numel() for p in m.parameters()) for k, m in parts.items() if k != "scheduler"
        ]
        side = config.latent_size
        tokens = (side // config.patch_size) ** 2
        un, un_c = analytic_flops(config, False), counted_flops(config, False)
        co, co_c = analytic_flops(config, True), counted_flops(config, True)
        rows.append(
            f"| {config.name} | {count[0] / 1e6:.2f} M | {sum(count) / 1e6:.2f} M "
            f"| {side}x{side}x{config.canvas_channels} | {tokens} "
            f"| {un / 1e9:.3f} / {un_c / 1e9:.3f} | {co / 1e9:.3f} / {co_c / 1e9:.3f} |"
        )
    return rows


def dit_like(config: MuPDConfig, device: str) -> torch.nn.Module:
    """diffusers' DiT with the same width, depth, heads and patch as `config`."""
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        num_attention_heads=config.num_heads,
        attention_head_dim=config.hidden_size // config.num_heads,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        num_layers=config.depth,
        sample_size=config.latent_size,
        patch_size=config.patch_size,
        num_embeds_ada_norm=len(config.targets),
    ).to(device)


def euler_loop(step: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor, steps: int,
               device: str) -> float:  # fmt: skip
    """Wall time (s) of one Euler loop of `steps` evaluations from `x`."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    grid = torch.linspace(1.0, 0.0, steps + 1).tolist()
    for t, t_next in itertools.pairwise(grid):
        x = x + (t_next - t) * step(x, t)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def best_times(loops: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Best time of each loop; the loops take turns so that load from other processes
    on a shared machine hits them alike. The first round warms up and is dropped."""
    best = dict.fromkeys(loops, float("inf"))
    for r in range(repeats + 1):
        for name, run in loops.items():
            secs = run()
            if r:
                best[name] = min(best[name], secs)
    return best


def _best_rate(work: float, run: Callable[[], object], device: str, tries: int = 10) -> float:
    """Best `work` per second over `tries` timed calls of `run` (after a warm-up call)."""
    run()
    best = float("inf")
    for _ in range(tries):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return work / best


def gemm_peak(device: str, dtype: torch.dtype) -> float:
    """Best measured FLOP/s of square matmuls (1024 and 2048; 8192 on a GPU): the ceiling."""
    best = 0.0
    for n in (1024, 2048) if device == "cpu" else (8192,):
        a = torch.randn(n, n, device=device, dtype=dtype)
        best = max(best, _best_rate(2 * n**3, lambda a=a: a @ a, device))
    return best


def copy_bandwidth(device: str) -> float:
    """Measured bytes/s of a 64 MiB copy (read + write), best of 10."""
    a = torch.empty(16 * 2**20, device=device)
    b = torch.empty_like(a)
    return _best_rate(2 * a.numel() * 4, lambda: b.copy_(a), device)


def throughput_table(args: argparse.Namespace) -> list[str]:
    config = MuPDConfig.demo()
    device, steps = args.device, args.steps
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    torch.manual_seed(0)
    ours = MuPDTransformer(config).to(device).eval()
    dit = dit_like(config, device).eval()
    b = args.batch
    x, _, ids, streams = inputs(config, True, device, b)
    rgb = x[:, : config.latent_channels].contiguous()
    labels = torch.zeros(b, dtype=torch.long, device=device)

    def ours_step(cond: bool) -> Callable[[torch.Tensor, float], torch.Tensor]:
        def f(z: torch.Tensor, t: float) -> torch.Tensor:
            with autocast:
                tt = torch.full((b,), t, device=device)
                return ours(z, tt, ids, streams if cond else None).float()

        return f

    def dit_step(z: torch.Tensor, t: float) -> torch.Tensor:
        with autocast:
            tt = torch.full((b,), t * 1000, device=device)
            return dit(z, timestep=tt, class_labels=labels).sample.float()

    if args.dtype == "bf16" and device == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), args.peak_tflops) * 1e12
        peak_label = f"nominal bf16 peak of {name}"
    else:
        peak = gemm_peak(device, torch.float32)
        peak_label = f"best fp32 GEMM measured on {torch.get_num_threads()} threads"

    flops_un, flops_co = analytic_flops(config, False), analytic_flops(config, True)
    with torch.inference_mode():
        times = best_times(
            {
                "dit": lambda: euler_loop(dit_step, rgb, steps, device),
                "uncond": lambda: euler_loop(ours_step(False), x, steps, device),
                "cond": lambda: euler_loop(ours_step(True), x, steps, device),
            },
            args.repeats,
        )
    t_dit, t_un, t_co = times["dit"], times["uncond"], times["cond"]
    dit_params = sum(p.numel() for p in dit.parameters())
    ours_params = sum(p.numel() for p in ours.parameters())
    rows = [
        f"Sampling 256 px tiles (32x32x4 latent), {steps} Euler steps, batch {b}, "
        f"{device} {args.dtype}, best of {args.repeats}; compute ceiling {peak / 1e9:.0f} GFLOP/s "
        f"({peak_label}).",
        "",
        "| model | params | GFLOP/step | s/tile | tiles/s | GFLOP/s | of ceiling "
        "| floor s/tile | speed vs DiT (same FLOPs) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, params, flops, secs in (
        ("diffusers DiTTransformer2DModel", dit_params, flops_un, t_dit),
        ("MuPDTransformer, no condition", ours_params, flops_un, t_un),
        ("MuPDTransformer, text+RNA+image", ours_params, flops_co, t_co),
    ):
        rate = flops * steps * b / secs
        dit_rate = flops_un * steps * b / t_dit
        rows.append(
            f"| {label} | {params / 1e6:.2f} M | {flops / 1e9:.3f} | {secs / b:.3f} "
            f"| {b / secs:.2f} "
            f"| {rate / 1e9:.1f} | {rate / peak:.1%} | {flops * steps / peak:.3f} "
            f"| {rate / dit_rate:.2f}x |"
        )
    weight_bytes = ours_params * (2 if args.dtype == "bf16" else 4)
    bandwidth = copy_bandwidth(device)
    memory_floor = weight_bytes * steps / bandwidth / b
    bound = "compute" if flops_un * steps / peak > memory_floor else "memory"
    rows.append(
        f"\nMemory floor: the weights ({weight_bytes / 1e6:.1f} MB) read once per step at the "
        f"measured copy bandwidth ({bandwidth / 1e9:.1f} GB/s): {memory_floor:.3f} s/tile, "
        f"so the {bound} floor is the binding one."
    )
    if device == "cpu":
        pipe = MuPDPipeline.from_config(config, device=device)
        kwargs = {"text": "tumor with lymphocytes", "rna": {"CD3E": 2.0, "MKI67": 1.0},
                  "image": np.zeros((256, 256, 3), np.uint8), "num_inference_steps": steps,
                  "generator": 0}  # fmt: skip
        pipe(**kwargs)
        start = time.perf_counter()
        pipe(**kwargs)
        rows.append(
            f"\nFull pipeline (encoders + {steps} steps + VAE decode, demo VAE): "
            f"{time.perf_counter() - start:.3f} s/tile."
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="tiles per forward")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak if unknown")
    args = parser.parse_args()
    if args.dtype == "bf16" and args.device != "cuda":
        parser.error("bf16 autocast is used on CUDA only")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} CPU threads\n")
    print("\n".join(parameter_table()))
    print()
    print("\n".join(throughput_table(args)))


if __name__ == "__main__":
    main()
