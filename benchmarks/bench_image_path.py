"""Can the image path represent every target? Round trips of held-out tiles.

    python benchmarks/bench_image_path.py [--model FOLDER] [--config configs/demo/train.yaml]

For each set of real tiles the table gives the mean absolute error (0-255), PSNR, and
the stain optical densities of the reconstruction relative to the input (DAB and
haematoxylin ratios; eosin in OD units, which an IHC should not gain):

- the RGB VAE (encode -> decode) on held-out H&E tiles (the test splits of the config),
  and on IHC tiles, where it is *not* used any more (it shows why: it cannot draw IHC);
- the stain renderer (stain latent + the tile's own nuclear density -> H-DAB) on the IHC
  tiles: scikit-image's colon IHC (never seen in training) and the held-out test splits
  of the serial IHC sections.

Goal for the IHC path: DAB within 10 %, eosin < 0.005 OD, MAE < 10/255.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from skimage import data

from napari_mupd.eval.experiments.heldout import split_datasets
from napari_mupd.model.loading import load_pipeline
from napari_mupd.model.stain_renderer import (
    compose_stains,
    pooled_stains,
    stain_densities,
    structure_map,
)
from napari_mupd.model.vae import decode, encode
from napari_mupd.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def to_tensor(tiles: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255


def row(name: str, path: str, x: torch.Tensor, y: torch.Tensor) -> str:
    """One table row: reconstruction ``y`` of ``x`` (B, 3, H, W) in [0, 1]."""
    y = (y * 255).round() / 255  # as an image would be saved
    dx, dy = stain_densities(x), stain_densities(y)
    mae = float((y - x).abs().mean()) * 255
    mse = float(((y - x) ** 2).mean())
    psnr = 10 * np.log10(1 / mse) if mse > 0 else float("inf")
    dab = float(dy[:, 2].mean() / dx[:, 2].mean())
    hema = float(dy[:, 0].mean() / dx[:, 0].mean())
    eosin_in, eosin_out = float(dx[:, 1].mean()), float(dy[:, 1].mean())
    return (
        f"| {name} | {path} | {len(x)} | {mae:.1f} | {psnr:.1f} | {dab:.2f} | {hema:.2f} "
        f"| {eosin_in:.4f} -> {eosin_out:.4f} |"
    )


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint (default: the bundled one)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo" / "train.yaml"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    pipe = load_pipeline(args.model, "cpu")
    config = TrainConfig.from_yaml(args.config)
    size = pipe.config.resolution
    he, ihc = [], {}
    for task in config.tasks:
        for dataset in split_datasets(task, config, size, "test"):
            samples = [dataset[i] for i in range(len(dataset))]
            if task.kind == "stain":
                he += [s.source for s in samples if s.source is not None]
                ihc[task.name] = [s.image for s in samples]
            else:
                he += [s.image for s in samples]
    colon = data.immunohistochemistry()
    ihc = {"scikit-image colon IHC (16 tiles)": [
        colon[y : y + 128, x : x + 128] for y in range(0, 512, 128) for x in range(0, 512, 128)
    ], **ihc}  # fmt: skip
    lines = [
        f"Round trips through {pipe.config.name} ({pipe.model_hash[:12]}), held-out tiles",
        "",
        "| tiles | path | n | MAE (/255) | PSNR (dB) | DAB out/in | haematoxylin out/in "
        "| eosin OD in -> out |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    x = to_tensor(he)
    y = torch.cat([decode(pipe.vae, encode(pipe.vae, x[i : i + 32])) for i in range(0, len(x), 32)])
    lines.append(row("H&E, test splits of the config", "RGB VAE", x, y))
    assert pipe.stain_renderer is not None
    for name, tiles in ihc.items():
        x = to_tensor(tiles)
        vae = decode(pipe.vae, encode(pipe.vae, x))
        lines.append(row(name, "RGB VAE (not used for IHC)", x, vae))
        d = stain_densities(x)
        drawn = compose_stains(pipe.stain_renderer(pooled_stains(d), structure_map(d)))
        lines.append(row(name, "stain renderer", x, drawn))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
