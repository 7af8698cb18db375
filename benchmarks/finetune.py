"""The fine-tune recipe, measured: a new marker from a few real pairs, in minutes on a CPU.

    python benchmarks/finetune.py --base runs/no-kidney/final [--steps 1500] [--out DIR]
    python benchmarks/finetune.py --train-base          # first train the base (~30 min)

"Your own pairs" are the rat-kidney H&E / pan-cytokeratin serial sections of data/
(registered by their landmarks, at the model's stain pixel size), written as paired tile
folders: the left 75 % for fine-tuning, the right 25 % held out. The base checkpoint is
configs/demo/train.yaml without the kidney task, so it has never seen this tissue or
marker; its VAE and stain renderer are the bundled checkpoint's (what configs/demo/ trained
first), so a fresh clone needs nothing under runs/. The recipe (docs/training.md): ``init``
the base, ``new_targets: [IHC:PanCK]``, a ``paired_folders`` task, ``mupd train``. The held-out
tiles are scored against the baselines fitted on the same training pairs: a per-pixel
linear colour map, colour deconvolution and the H&E's darkness. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from napari_mupd.eval.baselines import (
    ColourDeconvolutionBaseline,
    DarknessBaseline,
    LinearColourMapBaseline,
)
from napari_mupd.eval.report import evaluate_pairs
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.model.loading import load_pipeline
from napari_mupd.resources import bundled_model_path
from napari_mupd.train.config import TrainConfig
from napari_mupd.train.datasets import build_dataset
from napari_mupd.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo" / "train.yaml"
COLUMNS = ["patch_r", "block_r", "structure_r", "ssim", "fid"]


def bundled_parts(out: Path) -> tuple[Path, Path]:
    """The bundled checkpoint's VAE and stain renderer as `mupd train-vae` and
    `mupd train-renderer` write them (folders for a training config's ``vae``/``renderer``)."""
    bundled = bundled_model_path()
    vae, renderer = out / "vae", out / "renderer"
    for folder, name in ((vae, "vae.safetensors"), (renderer, "stain_renderer.safetensors")):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundled / name, folder / name)
    config = json.loads((bundled / "config.json").read_text())["vae"]
    (vae / "config.json").write_text(json.dumps(config, indent=2))
    return vae, renderer


def base_config(out: Path) -> Path:
    """configs/demo/train.yaml without the kidney task (and its target), writing to ``out``."""
    raw = yaml.safe_load(DEMO.read_text())
    raw["tasks"] = [t for t in raw["tasks"] if t["name"] != "he-to-PanCK"]
    raw["model"]["targets"] = [t for t in raw["model"]["targets"] if t != "IHC:PanCK"]
    raw["vae"], raw["renderer"] = (str(p) for p in bundled_parts(out / "bundled"))
    for task in raw["tasks"]:
        for spec in task["data"]:
            for args in spec.values():
                for k, v in args.items():
                    if isinstance(v, str) and (DEMO.parent / v).exists():
                        args[k] = str((DEMO.parent / v).resolve())
    raw["out_dir"] = str(out)
    path = out.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def kidney_pairs(root: Path, size: int) -> dict[str, tuple[list, list]]:
    """The kidney pair as paired tile folders ``root/{train,test}/{he,ihc}``."""
    raw = yaml.safe_load(DEMO.read_text())
    (spec,) = next(t for t in raw["tasks"] if t["name"] == "he-to-PanCK")["data"]
    args = dict(spec["serial_sections"])
    for key in ("fixed_image", "moving_image", "fixed_landmarks", "moving_landmarks"):
        args[key] = str((DEMO.parent / args[key]).resolve())
    out = {}
    for split in ("train", "test"):
        dataset = build_dataset({"serial_sections": {**args, "split": split}}, size)
        he, ihc = [], []
        for i in range(len(dataset)):
            sample = dataset[i]
            assert sample.source is not None
            for kind, tile in (("he", sample.source), ("ihc", sample.image)):
                folder = root / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(tile).save(folder / f"{i:04d}.png")
            he.append(sample.source)
            ihc.append(sample.image)
        out[split] = (he, ihc)
    return out


def finetune_config(root: Path, base: Path, steps: int) -> TrainConfig:
    """The recipe of docs/training.md, on the kidney training pairs."""
    raw = {
        "out_dir": str(root / "run"),
        "init": str(base),
        "new_targets": ["IHC:PanCK"],
        "steps": steps,
        "batch_size": 8,
        "lr": 2e-4,
        "warmup_steps": 50,
        "ema_decay": 0.995,
        "checkpoint_every": steps,
        "tasks": [
            {
                "name": "my-panck-pairs",
                "kind": "stain",
                "data": [
                    {
                        "paired_folders": {
                            "source_dir": "train/he",
                            "target_dir": "train/ihc",
                            "target": "IHC:PanCK",
                        }
                    }
                ],
            }
        ],
    }
    (root / "finetune.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return TrainConfig.from_yaml(root / "finetune.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", help="checkpoint that has never seen the kidney")
    parser.add_argument("--train-base", action="store_true", help="train that base first")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", help="work folder (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="mupd-finetune-")).resolve()
    base = Path(args.base) if args.base else root / "base" / "final"
    if args.train_base:
        start = time.perf_counter()
        Trainer(TrainConfig.from_yaml(base_config(root / "base"))).train()
        print(f"base trained in {(time.perf_counter() - start) / 60:.1f} min")
    base_pipe = load_pipeline(base, "cpu", cache=False)
    pairs = kidney_pairs(root, base_pipe.config.resolution)
    (train_he, train_ihc), (test_he, test_ihc) = pairs["train"], pairs["test"]
    start = time.perf_counter()
    tuned = load_pipeline(Trainer(finetune_config(root, base, args.steps)).train(), "cpu")
    minutes = (time.perf_counter() - start) / 60
    with torch.inference_mode():
        out = tuned(image=np.stack(test_he), target="IHC:PanCK", generator=0)
    methods = {
        f"MuPD fine-tuned ({args.steps} steps, {minutes:.1f} min)": list(
            to_uint8(np.asarray(out.images))
        ),
        "linear colour map": list(
            LinearColourMapBaseline().fit(train_he, train_ihc).predict(test_he)
        ),
        "colour deconvolution": list(
            ColourDeconvolutionBaseline().fit(train_he, train_ihc).predict(test_he)
        ),
        "H&E darkness": list(DarknessBaseline().fit(train_he, train_ihc).predict(test_he)),
    }
    df = evaluate_pairs(methods, test_ihc, sources=test_he)
    print(
        f"\nFine-tune recipe: {len(train_he)} kidney training pairs, {len(test_he)} held out "
        f"({torch.get_num_threads()} CPU threads)\n"
    )
    print("| method | DAB patch r | DAB r, 8-px blocks | structure r | SSIM | feature FID |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, row in df[COLUMNS].iterrows():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")


if __name__ == "__main__":
    main()
