"""Can the image path represent every target? Round trips of held-out tiles.

    python benchmarks/bench_image_path.py [--model FOLDER] [--config configs/demo/train.yaml]

For each set of real tiles the table gives the mean absolute error (0-255), PSNR, and
the stain optical densities of the reconstruction relative to the input (DAB and
haematoxylin ratios; eosin in OD units, which an IHC should not gain):

- the H&E codec (encode -> decode; the bundled one is a 16-component patch PCA) on
  held-out H&E tiles (the test splits of the config), beside peers fitted in the same
  run on the training tiles: each 8 x 8 block's mean colour (bilinear), a patch PCA with 4
  components (the latent size of the AutoencoderKL it replaced), and patch PCAs with 32
  components of RGB and of optical density (``space: od``; per source too); and on IHC
  tiles, where it is not used;
- the stain renderer (stain latent + the tile's own nuclear density -> H-DAB) on the IHC
  tiles: scikit-image's colon IHC (never seen in training) and the held-out test splits
  of the serial IHC sections.

Goal: DAB (IHC) or haematoxylin and eosin (H&E) within 10 %, no eosin invented in IHC
(< 0.005 OD), MAE < 10/255.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data

from napari_mupd.eval.experiments.heldout import split_datasets
from napari_mupd.model.loading import load_pipeline
from napari_mupd.model.stain_renderer import (
    compose_stains,
    pooled_stains,
    stain_densities,
    structure_map,
)
from napari_mupd.model.vae import PatchCodec, decode, encode, fit_patch_codec
from napari_mupd.train.config import TrainConfig
from napari_mupd.train.vae import rgb_tiles

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


def source_name(spec: dict) -> str:
    """A dataset entry's file (its image, slide or folder name)."""
    args = next(iter(spec.values()))
    key = next(k for k in ("slide", "fixed_image", "image", "folder", "csv") if k in args)
    return Path(str(args[key])).name


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
    he, ihc, sources = [], {}, {}
    for task in config.tasks:
        specs = [spec for spec in task.data if next(iter(spec.values())).get("holdout", 0) > 0]
        for spec, dataset in zip(specs, split_datasets(task, config, size, "test"), strict=True):
            samples = [dataset[i] for i in range(len(dataset))]
            tiles = [s.he for s in samples]
            he += tiles
            sources[source_name(spec)] = tiles
            if task.kind == "stain":
                ihc[task.name] = [s.image for s in samples]
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
    name = "H&E, test splits of the config"
    lines.append(row(name, f"H&E codec ({type(pipe.vae).__name__})", x, y))
    blocks = F.interpolate(F.avg_pool2d(x, 8), scale_factor=8, mode="bilinear")
    lines.append(row(name, "peer: 8 x 8 block colour, bilinear", x, blocks.clamp(0, 1)))
    train = [s.he for d in rgb_tiles(config, size)
             for s in (d[i] for i in range(len(d)))]  # fmt: skip
    peers = {
        f"peer: {space.upper()} patch PCA, {k} components": PatchCodec(
            latent_channels=k, space=space
        )
        for k, space in ((4, "rgb"), (32, "rgb"), (32, "od"))
    }
    for label, codec in peers.items():
        fit_patch_codec(codec, to_tensor(train))
        lines.append(row(name, label, x, decode(codec, encode(codec, x))))
    per_source = {"H&E codec": pipe.vae, **dict(list(peers.items())[1:])}
    for source, tiles in sources.items():  # each H&E source once
        x = to_tensor(tiles)
        for label, codec in per_source.items():
            lines.append(row(f"H&E, {source}", label, x, decode(codec, encode(codec, x))))
    assert pipe.stain_renderer is not None
    for name, tiles in ihc.items():
        x = to_tensor(tiles)
        vae = decode(pipe.vae, encode(pipe.vae, x))
        lines.append(row(name, "H&E codec (not used for IHC)", x, vae))
        d = stain_densities(x)
        drawn = compose_stains(pipe.stain_renderer(pooled_stains(d), structure_map(d)))
        lines.append(row(name, "stain renderer", x, drawn))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
