"""Does the model's first sampling step point the right way? x_0 predicted from noise.

    python benchmarks/first_step.py [--model DIR ...] [--config configs/demo/train.yaml]
                                    [--tiles 48] [--noises 4]

Every flow-matching sampler takes its first step at t = 1, where x_t is pure noise and the
best possible prediction of the clean latent is its conditional mean E[x_0 | conditions].
This script noises the held-out tiles of the config's caption and virtual-stain tasks at
t = 0.5, 0.9 and 1, asks each checkpoint for ``x_0 = x_t - t v``, and prints the mean
squared error against the real latent beside the peer every model should beat at t = 1:
the held-out latents' own mean (one constant latent for all tiles, an oracle that knows the
test split's mean). A model worse than that peer at t = 1 starts every sample the wrong way
(the bundled checkpoint before 2026-12-07, trained with logit-normal t, did).

CPU, about a minute per checkpoint on two threads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from napari_mupd.eval.experiments.heldout import split_datasets
from napari_mupd.model.loading import load_pipeline
from napari_mupd.model.pipeline import MuPDPipeline
from napari_mupd.train.config import TaskConfig, TrainConfig
from napari_mupd.train.datasets import Sample, sources

ROOT = Path(__file__).resolve().parents[1]
TIMES = (0.5, 0.9, 1.0)


def _held_out(task: TaskConfig, config: TrainConfig, size: int, most: int) -> list[Sample]:
    samples = [d[i] for d in split_datasets(task, config, size, "test") for i in range(len(d))]
    keep = np.unique(np.linspace(0, len(samples) - 1, min(most, len(samples))).astype(int))
    return [samples[i] for i in keep]


@torch.inference_mode()
def x0_errors(pipe: MuPDPipeline, samples: list[Sample], noises: int) -> tuple[list[float], float]:
    """Mean squared error of ``x_t - t v`` against the clean latent at each of `TIMES`, and
    the peer's: the clean latents' own mean (in this checkpoint's latent space)."""
    target = samples[0].target
    spec, _, _ = pipe.check_inputs(target, 1, None, 1.0, None, "np")
    channels = list(spec.channels)
    if spec.kind == "H&E":
        conditions = pipe.encode_conditions(spec, [s.text for s in samples], None, None, 1)
    else:
        conditions = pipe.encode_conditions(spec, None, None, np.stack(sources(samples)), 1)
    z, _ = pipe.encode_target(np.stack([s.image for s in samples]), target)
    z = z[:, channels] if z.shape[1] > len(channels) else z
    clean = torch.zeros(len(z), pipe.config.canvas_channels, *z.shape[-2:])
    clean[:, channels] = z
    mask = torch.zeros_like(clean)
    mask[:, channels] = 1
    out = []
    for t in TIMES:
        error = 0.0
        for seed in range(noises):
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)) * mask
            x_t = (1 - t) * clean + t * noise
            v = pipe.predict_velocity(x_t, t, spec, conditions.streams, conditions.source)
            error += float(((x_t - t * v)[:, channels] - z).pow(2).mean())
        out.append(error / noises)
    return out, float((z - z.mean((0, 2, 3), keepdim=True)).pow(2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", nargs="*", default=[None], help="checkpoints (default: the bundled one)"
    )
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo" / "train.yaml"))
    parser.add_argument("--tiles", type=int, default=48, help="held-out tiles per task")
    parser.add_argument("--noises", type=int, default=4, help="noise draws per tile")
    args = parser.parse_args()
    config = TrainConfig.from_yaml(args.config)
    pipes = {m or "bundled": load_pipeline(m, "cpu", cache=False) for m in args.model}
    size = next(iter(pipes.values())).config.resolution
    print(f"\nx_0 predicted at t = {', '.join(map(str, TIMES))}: mean squared error on held-out")
    print(f"latents ({args.tiles} tiles a task, {args.noises} noises each)\n")
    print("| task | model | " + " | ".join(f"t = {t:g}" for t in TIMES) + " | t = 1 vs peer |")
    print("|---|---|" + "--:|" * (len(TIMES) + 1))
    for task in config.tasks:
        if task.kind not in ("text", "stain"):
            continue
        samples = _held_out(task, config, size, args.tiles)
        for name, pipe in pipes.items():
            errors, peer = x0_errors(pipe, samples, args.noises)
            cells = " | ".join(f"{e:.3f}" for e in errors)
            print(f"| {task.name} | peer: the held-out latents' mean | | | {peer:.3f} | |")
            print(f"| {task.name} | {name} | {cells} | {errors[-1] / peer - 1:+.0%} |", flush=True)


if __name__ == "__main__":
    main()
