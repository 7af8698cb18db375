"""Generate H&E tiles from the captions of a training config, beside a real held-out tile.

    python examples/synthesis_grid.py [--model FOLDER] [--config configs/demo/train.yaml]
        [--seeds 4] [--guidance 2] [--out synthesis.png]

One row per caption of the config's captioned slides: the first column is a real tile of
that slide's held-out split, the others are tiles generated from the caption alone, one
seed each (the same seeds in every row, so rows differ by their caption only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from napari_mupd.model.loading import load_pipeline
from napari_mupd.train.config import TrainConfig
from napari_mupd.train.datasets import build_dataset

ROOT = Path(__file__).resolve().parents[1]


def held_out_tiles(config: TrainConfig, size: int) -> dict[str, np.ndarray]:
    """The first held-out tile of each captioned slide, by caption."""
    out = {}
    for task in config.tasks:
        if task.kind != "text":
            continue
        for spec in task.data:
            ((kind, args),) = spec.items()
            if kind == "slide_tiles" and args.get("holdout", 0) > 0:
                tiles = build_dataset({kind: {**args, "split": "test"}}, size, config.path)
                if len(tiles):
                    out[args["caption"]] = tiles[len(tiles) // 2].image
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint (default: the bundled one)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo" / "train.yaml"))
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--out", default="synthesis.png")
    args = parser.parse_args()
    pipe = load_pipeline(args.model, "cpu")
    size = pipe.config.resolution
    rows = []
    for caption, real in held_out_tiles(TrainConfig.from_yaml(args.config), size).items():
        tiles = [real]
        for seed in range(args.seeds):
            out = pipe(text=caption, generator=seed, guidance_scale=args.guidance)
            tiles.append((np.asarray(out.images[0]) * 255).round().astype(np.uint8))
        rows.append(np.concatenate(tiles, axis=1))
        print(f"{caption}: {args.seeds} tiles")
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
