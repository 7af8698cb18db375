"""Training the stain renderer on IHC tiles alone: ``mupd train-renderer``.

Self-supervised: each IHC tile gives its own stain latent (8 x 8 block statistics of its
haematoxylin and DAB) and its own structure map (haematoxylin + DAB); the renderer learns
to draw the tile back from the two. The structure map gets a random gain, so magnitudes
must come from the latent and only shapes from the structure (at inference the map is an
H&E's haematoxylin, whose scale differs); tiles are randomly upsampled so the renderer
learns to draw cells of any size (it renders at the slide's resolution, finer than the
model's). Only the targets of the config's IHC tasks are used: no pairs are needed.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from napari_mupd.errors import ConfigError
from napari_mupd.model.config import MuPDConfig, split_target
from napari_mupd.model.stain_renderer import (
    StainRenderer,
    compose_stains,
    pooled_stains,
    stain_densities,
    structure_map,
)
from napari_mupd.train.config import TrainConfig, model_config
from napari_mupd.train.datasets import build_dataset

RENDERER_DEFAULTS = {
    "steps": 1500,
    "batch_size": 32,
    "lr": 2e-3,
    "crop": 64,  # px side of the training crops
    "max_upscale": 4,  # crops are upsampled 1x..max_upscale x
    "gain_sigma": 0.3,  # log-normal gain of the structure map
}
WEIGHTS = "stain_renderer.safetensors"


def ihc_tiles(config: TrainConfig, size: int) -> list[np.ndarray]:
    """The IHC target tiles of the config's stain tasks."""
    tiles = [
        sample.image
        for task in config.tasks
        if task.kind == "stain"
        for spec in task.data
        for sample in build_dataset(spec, size, config.path)
        if split_target(sample.target)[0] == "IHC"
    ]
    if not tiles:
        raise ConfigError("train-renderer needs stain tasks with IHC targets")
    return tiles


def renderer_loss(renderer: StainRenderer, rgb: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """L1 in RGB plus L1 in stain densities of drawing ``rgb`` (B, 3, H, W) in [0, 1] back
    from its stain latent and its structure map times ``gain`` (B,)."""
    d = stain_densities(rgb)
    out = renderer(pooled_stains(d), structure_map(d) * gain[:, None, None, None])
    return (compose_stains(out) - rgb).abs().mean() + (out - d).abs().mean()


def _batch(tiles: np.ndarray, settings: dict, rng: np.random.Generator) -> torch.Tensor:
    crop, n = int(settings["crop"]), int(settings["batch_size"])
    pick = rng.integers(len(tiles), size=n)
    scale = int(rng.integers(1, int(settings["max_upscale"]) + 1))
    side = -(-crop // scale)
    out = []
    for i in pick:
        tile = tiles[i]
        top, left = (int(rng.integers(s - side + 1)) for s in tile.shape[:2])
        patch = np.rot90(tile[top : top + side, left : left + side], int(rng.integers(4)))
        out.append(patch[:, ::-1] if rng.integers(2) else patch)
    rgb = torch.from_numpy(np.ascontiguousarray(np.stack(out))).permute(0, 3, 1, 2).float() / 255
    if scale > 1:
        rgb = F.interpolate(rgb, scale_factor=scale, mode="bilinear", align_corners=False)
    return rgb[..., :crop, :crop].clamp(0, 1)


def train_renderer(config: TrainConfig, *, log: Callable[[int, float], None] | None = None) -> Path:
    """Train the config's stain renderer on its IHC tiles; writes ``out_dir/renderer``.

    ``renderer_training`` sets ``steps``, ``batch_size``, ``lr``, ``crop``,
    ``max_upscale`` and ``gain_sigma`` (see `RENDERER_DEFAULTS`).
    """
    from tqdm.auto import tqdm

    settings = {**RENDERER_DEFAULTS, **config.renderer_training}
    unknown = set(settings) - set(RENDERER_DEFAULTS)
    if unknown:
        raise ConfigError(f"renderer_training: unknown option(s) {', '.join(sorted(unknown))}")
    mupd: MuPDConfig = model_config(config)
    tiles = ihc_tiles(config, mupd.resolution)
    if min(min(t.shape[:2]) for t in tiles) < settings["crop"]:
        raise ConfigError(f"renderer_training: crop {settings['crop']} px exceeds a tile")
    stack = np.stack(tiles)
    torch.manual_seed(config.seed)
    renderer = StainRenderer(**mupd.stain_renderer)
    optimizer = torch.optim.AdamW(renderer.parameters(), lr=settings["lr"])
    out = config.path(config.out_dir) / "renderer"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (out / "log.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "loss", "seconds"])
        for step in tqdm(
            range(settings["steps"]), desc="train-renderer", unit="step", disable=None
        ):
            rng = np.random.default_rng([config.seed, step])
            rgb = _batch(stack, settings, rng)
            gain = torch.from_numpy(np.exp(rng.normal(0, settings["gain_sigma"], len(rgb))))
            loss = renderer_loss(renderer, rgb, gain.float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % 10 == 0 or step == settings["steps"] - 1:
                writer.writerow([step, f"{loss.item():.5f}", f"{time.perf_counter() - start:.1f}"])
                fh.flush()
                if log is not None:
                    log(step, loss.item())
    save_file({k: v.contiguous() for k, v in renderer.state_dict().items()}, out / WEIGHTS)
    (out / "config.json").write_text(json.dumps(mupd.stain_renderer, indent=2) + "\n")
    return out


def load_renderer(renderer: StainRenderer, folder: Path) -> None:
    """Load weights written by `train_renderer` into ``renderer``."""
    renderer.load_state_dict(load_file(folder / WEIGHTS))
