"""Training configuration: one YAML file, paths relative to it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from napari_mupd.errors import ConfigError
from napari_mupd.model.config import MuPDConfig, split_target
from napari_mupd.train.loss import DEFAULT_TIMESTEPS, TimestepSampling

TaskKind = Literal["text", "rna", "image", "stain", "plain"]


@dataclass
class TaskConfig:
    """One training task: which conditions it trains and the data it draws from.

    ``kind``: "text" (caption -> H&E), "rna" (expression -> H&E), "image" (reference
    tile -> H&E), "stain" (source H&E -> IHC/mIF target), "plain" (unconditional H&E).
    ``data``: dataset specs, each ``{type: {arguments}}`` (see ``datasets.build_dataset``).
    """

    name: str
    kind: TaskKind
    data: list[dict[str, Any]]
    weight: float = 1.0


@dataclass
class TrainConfig:
    """Everything ``mupd train`` needs; ``base_dir`` resolves relative paths."""

    out_dir: str
    tasks: list[TaskConfig]
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "demo"})
    init: str | None = None  # a pipeline folder to fine-tune
    new_targets: list[str] = field(default_factory=list)  # IHC targets to add when fine-tuning
    vae: str | None = None  # a VAE folder from ``mupd train-vae``
    vae_training: dict[str, Any] = field(default_factory=dict)  # steps, batch_size, lr, kl_weight
    renderer: str | None = None  # a stain renderer folder from ``mupd train-renderer``
    renderer_training: dict[str, Any] = field(default_factory=dict)  # see train.renderer
    steps: int = 1000
    batch_size: int = 8
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    log_every: int = 10
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    augment: bool = True
    cache_latents: bool = True  # encode every tile once; augment latents by flips/rotations
    seed: int = 0
    # how t is drawn: "uniform" (SiT) or "logit_normal" (SD3, the bundled checkpoint until
    # 2026-12-07, which then rarely trains the high-noise steps; docs/training.md)
    timesteps: TimestepSampling = DEFAULT_TIMESTEPS
    base_dir: str = "."

    def path(self, value: str | os.PathLike) -> Path:
        """A config path resolved against the YAML file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        """Read and validate a YAML training config."""
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{p}: cannot read the config: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        return cls.from_dict(raw, base_dir=p.parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: str | os.PathLike = ".") -> TrainConfig:
        """Build from a plain dict (``tasks`` as dicts); unknown keys are errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        if not raw.get("tasks"):
            raise ConfigError("a training config needs at least one task")
        tasks = []
        for task in raw["tasks"]:
            try:
                tasks.append(TaskConfig(**task))
            except TypeError as exc:
                raise ConfigError(f"task {task.get('name', task)}: {exc}") from exc
            if tasks[-1].kind not in ("text", "rna", "image", "stain", "plain"):
                raise ConfigError(f"task {tasks[-1].name}: unknown kind {tasks[-1].kind!r}")
        config = cls(**{**raw, "tasks": tasks, "base_dir": str(Path(base_dir).resolve())})
        if config.steps < 1 or config.batch_size < 1:
            raise ConfigError("steps and batch_size must be positive")
        if config.timesteps not in get_args(TimestepSampling):
            raise ConfigError(
                f"timesteps: {config.timesteps!r}; one of {', '.join(get_args(TimestepSampling))}"
            )
        return config


def model_config(config: TrainConfig, genes: Sequence[str] = ()) -> MuPDConfig:
    """The MuPD config a training config describes (preset plus overrides).

    ``genes: from_data`` in the model section takes the RNA panel from ``genes``
    (the expression columns of the training data).
    """
    if config.init:
        loaded = with_targets(MuPDConfig.load(config.path(config.init)), config.new_targets)
        if "source_guidance" in config.model:  # the checkpoint's own unless asked
            loaded.source_guidance = bool(config.model["source_guidance"])
        return loaded
    if config.new_targets:
        raise ConfigError("new_targets adds targets to a checkpoint: give init too")
    model = dict(config.model)
    base = getattr(MuPDConfig, model.pop("preset", "demo"))().to_dict()
    if model.get("genes") == "from_data":
        model["genes"] = list(genes) or base["genes"]
    # new models learn the stain without its source too, so that guidance can steer it
    return MuPDConfig.from_dict({**base, "source_guidance": True, **model})


def with_targets(model: MuPDConfig, targets: Sequence[str]) -> MuPDConfig:
    """``model`` with IHC ``targets`` added (fine-tuning a checkpoint on a new marker)."""
    known = {t.lower() for t in model.targets}
    added = [t for t in targets if t.lower() not in known]
    for target in added:
        if split_target(target)[0] != "IHC":
            raise ConfigError(f"new_targets: {target!r}; only IHC targets can be added")
    return MuPDConfig.from_dict({**model.to_dict(), "targets": [*model.targets, *added]})
