"""Training (or fine-tuning) the RGB VAE on H&E tiles: ``mupd train-vae``.

Loss: L1 reconstruction in [-1, 1] plus a small KL term. After training,
``scaling_factor`` is set so that latents of the training tiles have unit variance
(what the diffusion transformer expects). A linear patch codec (``kind: patch_pca``) is
fitted in closed form instead, on every training tile once.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from napari_mupd.errors import ConfigError
from napari_mupd.model.vae import PatchCodec, build_vae, fit_patch_codec, fit_scaling_factor
from napari_mupd.train.augment import dihedral
from napari_mupd.train.config import TrainConfig, model_config
from napari_mupd.train.datasets import Sample, build_dataset

VAE_DEFAULTS = {
    "steps": 2000,
    "batch_size": 8,
    "lr": 1e-3,
    "kl_weight": 1e-6,
    "init": None,
    "decoder_only": False,
}


def rgb_tiles(config: TrainConfig, size: int) -> list[Sequence[Sample]]:
    """Every dataset of the config that holds H&E: the targets of the H&E tasks and the
    sources of the stain tasks (IHC is drawn by the stain renderer, not the VAE)."""
    return [build_dataset(d, size, config.path) for task in config.tasks for d in task.data]


def train_vae(
    config: TrainConfig,
    *,
    out: str | os.PathLike | None = None,
    log: Callable[[int, float], None] | None = None,
) -> Path:
    """Train the config's RGB VAE on all its tiles; writes ``out`` (default ``out_dir/vae``).

    ``vae_training`` sets ``steps``, ``batch_size``, ``lr``, ``kl_weight``, ``init`` (a VAE
    folder to fine-tune instead of starting from random weights) and ``decoder_only``
    (with ``init``: train the decoder alone, so the latents, and a transformer trained on
    them, stay valid; the scaling factor is kept).
    """
    from tqdm.auto import tqdm

    settings = {**VAE_DEFAULTS, **config.vae_training}
    mupd = model_config(config)
    torch.manual_seed(config.seed)
    vae = build_vae(mupd.vae)
    out = Path(out) if out is not None else config.path(config.out_dir) / "vae"
    if isinstance(vae, PatchCodec):
        return _fit_codec(vae, config, out)
    if settings["decoder_only"] and not settings["init"]:
        raise ConfigError("vae_training: decoder_only needs init (the VAE whose decoder to train)")
    if settings["init"]:  # fine-tune a VAE folder written by an earlier train-vae
        vae.load_state_dict(load_file(config.path(settings["init"]) / "vae.safetensors"))
    trained = list(vae.parameters())
    if settings["decoder_only"]:
        parts = [m for m in (vae.decoder, vae.post_quant_conv) if m is not None]
        trained = [p for m in parts for p in m.parameters()]
    datasets = rgb_tiles(config, mupd.resolution)
    optimizer = torch.optim.AdamW(trained, lr=settings["lr"])
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (out / "log.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "l1", "kl", "seconds"])
        for step in tqdm(range(settings["steps"]), desc="train-vae", unit="step", disable=None):
            rng = np.random.default_rng([config.seed, step])
            x = _batch(datasets, settings["batch_size"], rng) * 2 - 1
            with torch.set_grad_enabled(not settings["decoder_only"]):
                posterior = vae.encode(x).latent_dist
            z = posterior.sample(generator=torch.Generator().manual_seed(step))
            recon = vae.decode(z).sample
            l1 = (recon - x).abs().mean()
            kl = posterior.kl().mean()
            loss = l1 + settings["kl_weight"] * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % 10 == 0 or step == settings["steps"] - 1:
                writer.writerow(
                    [
                        step,
                        f"{l1.item():.5f}",
                        f"{kl.item():.1f}",
                        f"{time.perf_counter() - start:.1f}",
                    ]
                )
                fh.flush()
                if log is not None:
                    log(step, l1.item())
    vae.eval()
    if settings["decoder_only"]:  # the init's latents, so the init's scaling
        init_config = config.path(settings["init"]) / "config.json"
        scaling = float(json.loads(init_config.read_text())["scaling_factor"])
    else:
        sample = _batch(datasets, 64, np.random.default_rng([config.seed, settings["steps"]]))
        scaling = fit_scaling_factor(vae, sample)
    vae.register_to_config(scaling_factor=scaling)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, out / "vae.safetensors")
    (out / "config.json").write_text(json.dumps(dict(vae.config), indent=2, default=list))
    return out


def _fit_codec(codec: PatchCodec, config: TrainConfig, out: Path) -> Path:
    """Fit a patch codec on every RGB tile of the config's training splits (held-out tiles
    are left out, as the transformer's are); writes ``out``."""
    size = model_config(config).resolution
    tiles = [
        sample.he
        for data in rgb_tiles(config, size)
        for sample in (data[i] for i in range(len(data)))
    ]
    if not tiles:
        raise ConfigError("train-vae: the config has no RGB tiles to fit the codec on")
    x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255.0
    fit_patch_codec(codec, x)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, out / "vae.safetensors")
    (out / "config.json").write_text(json.dumps(codec.config, indent=2))
    return out


def _batch(datasets: list[Sequence[Sample]], n: int, rng: np.random.Generator) -> torch.Tensor:
    tiles = []
    for _ in range(n):
        data = datasets[int(rng.integers(len(datasets)))]
        sample = data[int(rng.integers(len(data)))]
        tiles.append(dihedral([sample.he], rng)[0])
    return torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255.0
