"""``mupd train``, ``mupd train-vae`` and ``mupd train-renderer``."""

from __future__ import annotations

import argparse
from pathlib import Path


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

    config = TrainConfig.from_yaml(args.config)
    init = str(Path(args.init).resolve()) if args.init else None  # from where mupd runs
    overrides = {"init": init, "steps": args.steps}
    config.vae_training.update({k: v for k, v in overrides.items() if v is not None})
    if args.decoder_only:
        config.vae_training["decoder_only"] = True
    out = train_vae(config, out=args.out)
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
    vae.add_argument("--init", help="VAE folder to start from (overrides vae_training.init)")
    vae.add_argument(
        "--decoder-only",
        action="store_true",
        help="with --init: train the decoder alone (latents, and a transformer trained on "
        "them, stay valid)",
    )
    vae.add_argument("--steps", type=int, help="training steps (overrides vae_training.steps)")
    vae.add_argument("--out", help="output folder (default: OUT_DIR/vae of the config)")
    vae.set_defaults(func=cmd_train_vae)

    renderer = sub.add_parser(
        "train-renderer", help="train the IHC stain renderer on the config's IHC tiles"
    )
    renderer.add_argument("config", help="training YAML (its renderer_training section)")
    renderer.set_defaults(func=cmd_train_renderer)
