"""``mupd train``, ``mupd train-vae`` and ``mupd train-renderer``."""

from __future__ import annotations

import argparse


def cmd_train(args: argparse.Namespace) -> int:
    """Train or fine-tune MuPD from a YAML config; resumes from the latest checkpoint."""
    from napari_mupd.train.config import TrainConfig
    from napari_mupd.train.trainer import Trainer

    config = TrainConfig.from_yaml(args.config)
    trainer = Trainer(config)
    if not args.restart and trainer.resume():
        print(f"resuming at step {trainer.step}")
    out = trainer.train(steps=args.steps)
    print(f"wrote {out}")
    return 0


def cmd_train_vae(args: argparse.Namespace) -> int:
    """Train the RGB VAE on the config's tiles."""
    from napari_mupd.train.config import TrainConfig
    from napari_mupd.train.vae import train_vae

    out = train_vae(TrainConfig.from_yaml(args.config))
    print(f"wrote {out}")
    return 0


def cmd_train_renderer(args: argparse.Namespace) -> int:
    """Train the stain renderer on the IHC targets of the config's stain tasks."""
    from napari_mupd.train.config import TrainConfig
    from napari_mupd.train.renderer import train_renderer

    out = train_renderer(TrainConfig.from_yaml(args.config))
    print(f"wrote {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``train``, ``train-vae`` and ``train-renderer``."""
    train = sub.add_parser("train", help="train or fine-tune MuPD on your paired data")
    train.add_argument("config", help="training YAML (see docs/training.md)")
    train.add_argument("--steps", type=int, help="stop at this step (default: the config's)")
    train.add_argument("--restart", action="store_true", help="ignore existing checkpoints")
    train.set_defaults(func=cmd_train)

    vae = sub.add_parser("train-vae", help="train the RGB VAE on the config's tiles")
    vae.add_argument("config", help="training YAML (its vae_training section)")
    vae.set_defaults(func=cmd_train_vae)

    renderer = sub.add_parser(
        "train-renderer", help="train the IHC stain renderer on the config's IHC tiles"
    )
    renderer.add_argument("config", help="training YAML (its renderer_training section)")
    renderer.set_defaults(func=cmd_train_renderer)
