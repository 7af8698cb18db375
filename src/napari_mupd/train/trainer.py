"""The MuPD training loop: mixed tasks, flow matching, AdamW, EMA, checkpoints, resume.

Distribution and mixed precision come from ``accelerate`` (``accelerate launch
-m napari_mupd.cli train CONFIG`` for several GPUs). Every step draws its data and its
noise from generators seeded by ``(seed, step)``, so a resumed run continues exactly
where a stopped one was.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from napari_mupd.errors import ConfigError
from napari_mupd.model import MuPDConfig, MuPDPipeline
from napari_mupd.model.config import split_target
from napari_mupd.model.encoders.image import image_to_tensor
from napari_mupd.model.loading import load_pipeline
from napari_mupd.model.stain_renderer import pooled_stains, stain_densities
from napari_mupd.model.vae import PatchCodec, turn_latents
from napari_mupd.train.augment import dihedral, stain_jitter
from napari_mupd.train.config import TaskConfig, TrainConfig, model_config
from napari_mupd.train.datasets import Sample, build_dataset, sources
from napari_mupd.train.loss import TrainingBatch, make_training_batch, trainable
from napari_mupd.train.renderer import load_renderer

ProgressCallback = Callable[[int, dict[str, float]], None]


@dataclass
class Task:
    """A task with its datasets (and their cached latents), ready to draw batches."""

    config: TaskConfig
    datasets: list[Sequence[Sample]]
    latents: list[dict[str, torch.Tensor]] | None = None

    def pick(self, n: int, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """A dataset (in proportion to size) and ``n`` sample indices."""
        sizes = np.array([len(d) for d in self.datasets], float)
        d = int(rng.choice(len(sizes), p=sizes / sizes.sum()))
        return d, rng.integers(len(self.datasets[d]), size=n)


def _augment(sample: Sample, rng: np.random.Generator) -> Sample:
    images = [sample.image] + ([sample.source] if sample.source is not None else [])
    images = dihedral(images, rng)
    image, source = images[0], (images[1] if len(images) > 1 else None)
    if source is not None:
        source = stain_jitter(source, rng)  # the input varies; the real target stays
    elif sample.target == "H&E":
        image = stain_jitter(image, rng)
    return Sample(image, sample.target, source, sample.text, sample.rna, sample.meta)


def build_pipeline(config: TrainConfig, genes: Sequence[str] = ()) -> MuPDPipeline:
    """The pipeline to train: a checkpoint to fine-tune, or a preset plus overrides."""
    if config.init:
        pipe = load_pipeline(config.path(config.init), "cpu", cache=False)
        wanted = model_config(config)
        add_targets(pipe, wanted)
        pipe.config.source_guidance = wanted.source_guidance
    else:
        mupd = model_config(config, genes)
        pipe = MuPDPipeline.from_config(mupd, device="cpu", seed=config.seed)
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            pipe.transformer.initialize_weights()
    if config.vae:
        load_vae(pipe, config.path(config.vae))
    if config.renderer:
        if pipe.stain_renderer is None:
            raise ConfigError("renderer: the model has no IHC target to render")
        load_renderer(pipe.stain_renderer, config.path(config.renderer))
    return pipe


@torch.no_grad()
def add_targets(pipe: MuPDPipeline, config: MuPDConfig) -> None:
    """Grow ``pipe`` to ``config``'s targets (the checkpoint's, then new IHC ones): each new
    target's embedding starts as the mean of the checkpoint's IHC target embeddings."""
    old = pipe.config.targets
    if config.targets == old:
        return
    embed = pipe.transformer.target_embed
    ihc = [i for i, t in enumerate(old) if split_target(t)[0] == "IHC"] or list(range(len(old)))
    grown = torch.nn.Embedding(len(config.targets), embed.embedding_dim)
    grown.weight[: len(old)] = embed.weight
    grown.weight[len(old) :] = embed.weight[ihc].mean(dim=0)
    pipe.transformer.target_embed = grown.to(embed.weight.device)
    pipe.transformer.config = pipe.config = config


@torch.no_grad()
def fit_stain_stats(pipe: MuPDPipeline, tasks: Sequence[Task], limit: int = 512) -> None:
    """Set ``pipe.config.stain_stats`` from the stain tasks' tiles (up to ``limit`` per
    dataset): per-channel mean and std of the IHC targets' stain latents and of the
    sources' features, so the transformer sees unit-variance inputs and targets."""
    targets, sources = [], []
    for task in tasks:
        if task.config.kind != "stain":
            continue
        for dataset in task.datasets:
            samples = [dataset[i] for i in range(min(len(dataset), limit))]
            sources += [s.source for s in samples if s.source is not None]
            targets += [s.image for s in samples if split_target(s.target)[0] == "IHC"]
    stats = dict(pipe.config.stain_stats)
    for key, tiles in (("latent", targets), ("source", sources)):
        if tiles:
            x = image_to_tensor(np.stack(tiles), what=f"{key} tiles")
            feats = pooled_stains(stain_densities(x))
            stats[f"{key}_mean"] = feats.mean(dim=(0, 2, 3)).tolist()
            stats[f"{key}_std"] = feats.std(dim=(0, 2, 3)).clamp_min(1e-4).tolist()
    pipe.config.stain_stats = stats


def load_vae(pipe: MuPDPipeline, folder: Path) -> None:
    """Load a VAE trained by ``mupd train-vae`` (weights and scaling factor) or a patch
    codec it fitted."""
    vae_config = json.loads((folder / "config.json").read_text())
    if vae_config.get("kind") != pipe.config.vae.get("kind"):
        raise ConfigError(
            f"vae: {folder} holds a {vae_config.get('kind') or 'AutoencoderKL'}, the model "
            f"config a {pipe.config.vae.get('kind') or 'AutoencoderKL'}"
        )
    if isinstance(pipe.vae, PatchCodec) and vae_config.get("space", "rgb") != pipe.vae.space:
        raise ConfigError(
            f"vae: {folder} codes {vae_config.get('space', 'rgb')} blocks, the model config "
            f"{pipe.vae.space} (space: in model.vae)"
        )
    pipe.vae.load_state_dict(load_file(folder / "vae.safetensors"))
    if not isinstance(pipe.vae, PatchCodec):
        scaling = float(vae_config["scaling_factor"])
        pipe.vae.register_to_config(scaling_factor=scaling)
        pipe.config.vae = {**pipe.config.vae, "scaling_factor": scaling}


def _needs_vae(task: Task) -> bool:
    """Whether a task's targets go through a VAE (worth caching): all but IHC, whose stain
    latents are cheap and are best computed on the augmented tiles."""
    if task.config.kind != "stain":
        return True
    return any(split_target(d[0].target)[0] != "IHC" for d in task.datasets)


def expression_genes(tasks: Sequence[Task]) -> list[str]:
    """Gene symbols of the RNA tasks' data, in first-seen order."""
    seen: dict[str, None] = {}
    for task in tasks:
        for dataset in task.datasets:
            for gene in getattr(dataset, "expression", pd.DataFrame()).columns:
                seen.setdefault(str(gene))
    return list(seen)


class Trainer:
    """Trains a MuPD pipeline from a :class:`TrainConfig`."""

    def __init__(self, config: TrainConfig) -> None:
        from accelerate import Accelerator
        from tqdm.auto import tqdm

        self.config = config
        self.out = config.path(config.out_dir)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available()
        )
        size = model_config(config).resolution
        self.tasks = [
            Task(t, [build_dataset(d, size, config.path) for d in t.data]) for t in config.tasks
        ]
        self.pipe = build_pipeline(config, expression_genes(self.tasks)).to(self.accelerator.device)
        for task in self.tasks:
            if task.config.kind == "stain":
                targets = {d[0].target for d in task.datasets}
                for target in targets:
                    spec = self.pipe.config.resolve_target(target)  # unknown targets fail now
                    if spec.kind == "mIF" and spec.markers != spec.panel:
                        # a tile is encoded as the whole panel, in the panel's order
                        raise ConfigError(
                            f"task {task.config.name!r}: target {target!r} must name every "
                            f"marker of the panel in its order: {spec.name!r}"
                        )
        self.pipe.vae.requires_grad_(False)
        if not config.init:
            fit_stain_stats(self.pipe, self.tasks)
        if config.cache_latents:
            for task in tqdm(self.tasks, desc="encode tiles", unit="task", disable=None):
                if _needs_vae(task):
                    task.latents = self._cache_latents(task)
        module = trainable(self.pipe, config.timesteps)
        self.ema = {k: v.detach().clone().float() for k, v in module.state_dict().items()}
        optimizer = torch.optim.AdamW(
            module.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.module, self.optimizer = self.accelerator.prepare(module, optimizer)
        self.step = 0

    # -- checkpoints -----------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Saved checkpoints, oldest first."""
        return sorted((self.out / "checkpoints").glob("step-*"))

    def save_checkpoint(self) -> Path:
        """Write weights, EMA, optimiser state and step atomically (rename into place)."""
        final = self.out / "checkpoints" / f"step-{self.step:07d}"
        tmp = final.with_name(final.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        module = self.accelerator.unwrap_model(self.module)
        save_file(
            {k: v.contiguous() for k, v in module.state_dict().items()},
            tmp / "trainable.safetensors",
        )
        save_file({k: v.contiguous() for k, v in self.ema.items()}, tmp / "ema.safetensors")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": self.step}))
        tmp.rename(final)
        return final

    def resume(self, checkpoint: Path | None = None) -> bool:
        """Continue from ``checkpoint`` (default: the latest); False if there is none."""
        saved = self.checkpoints()
        if checkpoint is None and not saved:
            return False
        checkpoint = checkpoint or saved[-1]
        module = self.accelerator.unwrap_model(self.module)
        module.load_state_dict(load_file(checkpoint / "trainable.safetensors"))
        self.ema = load_file(checkpoint / "ema.safetensors")
        state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
        self.optimizer.load_state_dict(state)
        self.step = json.loads((checkpoint / "state.json").read_text())["step"]
        return True

    def export(self, folder: Path | None = None, *, ema: bool = True) -> Path:
        """Save the pipeline (EMA weights by default) with ``save_pretrained``."""
        folder = folder or self.out / "final"
        module = self.accelerator.unwrap_model(self.module)
        if ema:
            current = {k: v.clone() for k, v in module.state_dict().items()}
            module.load_state_dict(self.ema)
        self.pipe.save_pretrained(folder)
        if ema:
            module.load_state_dict(current)
        return folder

    # -- training --------------------------------------------------------------------
    def _lr(self, step: int) -> float:
        warm = self.config.warmup_steps
        return self.config.lr * min(1.0, (step + 1) / warm) if warm else self.config.lr

    def _batch(self, task: Task, rng: np.random.Generator) -> TrainingBatch:
        d, index = task.pick(self.config.batch_size, rng)
        dataset = task.datasets[d]
        samples = [dataset[int(i)] for i in index]
        kind = task.config.kind
        kwargs: dict[str, Any] = {}
        if kind == "text":
            kwargs["text"] = [s.text for s in samples]
        elif kind == "rna":
            kwargs["rna"] = pd.DataFrame([s.rna for s in samples]).fillna(0.0)
        if task.latents is not None:  # augment in latent space: dihedral only
            cached = task.latents[d]
            moves = [(int(rng.integers(4)), bool(rng.integers(2))) for _ in index]
            codec = self.pipe.vae if split_target(samples[0].target)[0] == "H&E" else None
            kwargs["latents"] = turn_latents(cached["image"][index], moves, codec)
            if kind == "stain":  # block statistics of the source
                kwargs["source_latents"] = turn_latents(cached["source"][index], moves)
            # the reference of an image task is the target itself, turned another way: the
            # model learns to make tissue like the reference, not to copy its layout
            if kind == "image":
                refs = [(int(rng.integers(4)), bool(rng.integers(2))) for _ in index]
                vae_latents = cached["image"][index, : self.pipe.config.latent_channels]
                kwargs["reference_latents"] = turn_latents(vae_latents, refs, self.pipe.vae)
            return make_training_batch(self.pipe, samples[0].target, **kwargs)
        if kind == "image":  # the target itself, augmented on its own (as above)
            kwargs["reference"] = np.stack([_augment(s, rng).image for s in samples])
        if self.config.augment:
            samples = [_augment(s, rng) for s in samples]
        if kind == "stain":
            kwargs["source"] = np.stack(sources(samples))
        images = np.stack([s.image for s in samples])
        return make_training_batch(self.pipe, samples[0].target, images, **kwargs)

    @torch.no_grad()
    def _cache_latents(self, task: Task, chunk: int = 32) -> list[dict[str, torch.Tensor]]:
        out = []
        for dataset in task.datasets:
            keys = ["image"] + (["source"] if task.config.kind == "stain" else [])
            cached: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
            for start in range(0, len(dataset), chunk):
                samples = [dataset[i] for i in range(start, min(start + chunk, len(dataset)))]
                images = np.stack([s.image for s in samples])
                latents = self.pipe.encode_target(images, samples[0].target)[0]
                cached["image"].append(latents.cpu())
                if "source" in cached:
                    source_tiles = np.stack(sources(samples))
                    cached["source"].append(self.pipe.encode_source(source_tiles).cpu())
            out.append({k: torch.cat(v) for k, v in cached.items()})
        return out

    def train_step(self) -> dict[str, float]:
        """One optimiser step on one task; returns what it logged."""
        config = self.config
        rng = np.random.default_rng([config.seed, self.step])
        weights = np.array([t.config.weight for t in self.tasks], float)
        task = self.tasks[rng.choice(len(self.tasks), p=weights / weights.sum())]
        batch = self._batch(task, rng)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.step)
        self.module.train()
        with self.accelerator.autocast():
            loss = self.module(batch, generator)
        self.accelerator.backward(loss)
        grad_norm = self.accelerator.clip_grad_norm_(self.module.parameters(), config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        decay = min(config.ema_decay, (1 + self.step) / (10 + self.step))
        state = self.accelerator.unwrap_model(self.module).state_dict()
        with torch.no_grad():
            for k, v in state.items():
                self.ema[k].mul_(decay).add_(v.detach().float(), alpha=1 - decay)
        self.step += 1
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm),
            "lr": self._lr(self.step - 1),
            "task": self.tasks.index(task),
        }

    def train(
        self,
        steps: int | None = None,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Path:
        """Train until ``steps`` (default ``config.steps``); checkpoint and export at the end."""
        from tqdm.auto import tqdm

        total = steps or self.config.steps
        self.out.mkdir(parents=True, exist_ok=True)
        log_path = self.out / "log.csv"
        new_log = not log_path.exists()
        writer = _tensorboard(self.out / "tb")
        with (
            log_path.open("a", newline="") as fh,
            tqdm(total=total, initial=self.step, desc="train", unit="step", disable=None) as bar,
        ):
            log = csv.writer(fh)
            if new_log:
                log.writerow(["step", "task", "loss", "grad_norm", "lr", "seconds"])
            start = time.perf_counter()
            while self.step < total and not should_stop():
                info = self.train_step()
                if not math.isfinite(info["loss"]):
                    raise FloatingPointError(f"loss became {info['loss']} at step {self.step}")
                task = self.tasks[int(info["task"])].config.name
                if self.step % self.config.log_every == 0 or self.step == total:
                    log.writerow(
                        [
                            self.step,
                            task,
                            f"{info['loss']:.5f}",
                            f"{info['grad_norm']:.4f}",
                            f"{info['lr']:.3g}",
                            f"{time.perf_counter() - start:.1f}",
                        ]
                    )
                    fh.flush()
                    if writer is not None:
                        writer.add_scalar(f"loss/{task}", info["loss"], self.step)
                bar.update(1)
                bar.set_postfix(loss=f"{info['loss']:.4f}", task=task)
                if progress is not None:
                    progress(self.step, info)
                if self.step % self.config.checkpoint_every == 0:
                    self.save_checkpoint()
        if writer is not None:
            writer.close()
        if self.step >= total:
            if not self.checkpoints() or self.checkpoints()[-1].name != f"step-{self.step:07d}":
                self.save_checkpoint()
            return self.export()
        return self.save_checkpoint()


def _tensorboard(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; the CSV log is always written
        return None
    return SummaryWriter(str(folder))
