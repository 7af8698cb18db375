"""What DAB r on serial sections measures: the scale of the prediction, and the latent's part.

    python benchmarks/dab_scale.py [--model DIR] [--config configs/demo/train.yaml]
                                   [--guidance 2 4] [--samples 16] [--split train]

The held-out tiles of each virtual-IHC task of the config are H&E tiles whose IHC is the
*next* section, registered by landmarks: other cells, a few px away. Their DAB patch r
(pixel-wise, per 128-px tile) therefore rewards a smooth prediction over a sharp one. This
script scores, per marker, DAB patch r and r on 8-px blocks of:

- MuPD as users see it (``nuclei="cells"``) and its mean read-out;
- the mean read-out blurred (Gaussian, sigma 1, 2, 4 px) after the fact;
- MuPD with each block's DAB share replaced by the tile's mean share (what the latent
  says about *which* blocks are positive, taken away; the amounts still follow the source);
- the source H&E's haematoxylin alone, sharp and blurred (no model, nothing fitted: r is
  blind to scale);
- colour deconvolution fitted on the training split, sharp and blurred;
- a linear map from the source's pooled stain densities (mean, spread and root mean square
  of haematoxylin, eosin and DAB per 8-px block, and their means over 3 x 3 and 7 x 7
  blocks) to the block's DAB, ridge-fitted on the training split: how much the source's
  block features say about *where* the marker is, against what MuPD's latent says; and
  that block DAB drawn as MuPD draws (counterstain from the source, DAB share from the
  map, laid out on the source's cells by the stain renderer): a regression prior's stain;
- the transformer's own DAB amount per block (its latent, before `anchor_to_source`);
- with ``--samples K``, the mean read-out of the mean of K latent samples (the model's
  expected stain: a single sample of a calibrated model correlates with the truth only
  about as the square of its conditional mean's r);
- with ``--guidance``, MuPD again with its source H&E guided at those scales (a checkpoint
  trained with the source dropped, ``condition_dropout``, learns the sourceless stain).

Prints a markdown table. CPU, about 3 minutes on one thread.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from napari_mupd.eval.baselines import ColourDeconvolutionBaseline
from napari_mupd.eval.experiments.heldout import split_datasets
from napari_mupd.eval.metrics import marker_intensity, patch_and_slide_pearson
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.imaging.stains import hematoxylin_density, stain_densities
from napari_mupd.model.config import TargetSpec
from napari_mupd.model.guidance import GuidanceScale
from napari_mupd.model.loading import load_pipeline
from napari_mupd.model.pipeline import MuPDPipeline
from napari_mupd.model.stain_renderer import compose_stains, source_structure
from napari_mupd.train.config import TrainConfig
from napari_mupd.train.datasets import sources

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 8


def _blocks(x: np.ndarray) -> np.ndarray:
    h, w = (s // BLOCK * BLOCK for s in x.shape)
    return x[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).mean((1, 3))


def _scores(pred: Sequence[np.ndarray], real: Sequence[np.ndarray]) -> tuple[float, float]:
    """DAB patch r and patch r of 8-px block means."""
    pixel = patch_and_slide_pearson(pred, real).patch_r
    block = patch_and_slide_pearson([_blocks(p) for p in pred], [_blocks(r) for r in real])
    return pixel, block.patch_r


def _dab(tiles: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [marker_intensity(t, "IHC")[..., 0] for t in tiles]


def _blur(maps: Sequence[np.ndarray], sigma: float) -> list[np.ndarray]:
    return [ndimage.gaussian_filter(m, sigma) for m in maps]


def _block_features(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> (h/8, w/8, 27): each 8-px block's mean, spread and root mean
    square of haematoxylin, eosin and DAB density, and their means over 3 and 7 blocks."""
    d = stain_densities(rgb)
    h, w = (s // BLOCK for s in d.shape[:2])
    b = d[: h * BLOCK, : w * BLOCK].reshape(h, BLOCK, w, BLOCK, 3)
    f = np.concatenate([b.mean((1, 3)), b.std((1, 3)), np.sqrt((b**2).mean((1, 3)))], -1)
    return np.concatenate([f, *(ndimage.uniform_filter(f, (k, k, 1)) for k in (3, 7))], -1)


def _ridge_blocks(
    train_src: Sequence[np.ndarray],
    train_dab: Sequence[np.ndarray],
    test_src: Sequence[np.ndarray],
    alpha: float = 10.0,
) -> list[np.ndarray]:
    """Block DAB (h/8, w/8) of the test tiles from `_block_features`, ridge-fitted on the
    training pairs."""
    x = np.concatenate([_block_features(t).reshape(-1, 27) for t in train_src])
    y = np.concatenate([_blocks(t).ravel() for t in train_dab])
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    w = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (y - y.mean()))
    return [(_block_features(t) - mean) / std @ w + y.mean() for t in test_src]


def _drawn(
    pipe: MuPDPipeline, tiles: Sequence[np.ndarray], block_dab: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Block DAB amounts drawn as MuPD draws a virtual IHC: each block's nuclear density
    from the source (as `anchor_to_source`), its DAB share from ``block_dab``, laid out on
    the source's cells by the checkpoint's stain renderer. Returns the DAB maps."""
    assert pipe.stain_renderer is not None, "the checkpoint has no IHC target"
    x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255
    s = source_structure(x)
    total = pipe.config.source_gain * F.avg_pool2d(s.clamp(min=0), BLOCK)
    dab = torch.from_numpy(np.stack(block_dab)).float()[:, None].clamp(min=0)
    dab = torch.minimum(dab, total)
    z = torch.cat([total - dab, dab, dab, torch.zeros_like(dab)], 1)
    with torch.inference_mode():
        rgb = compose_stains(pipe.stain_renderer(z, s)).permute(0, 2, 3, 1).numpy()
    return _dab([to_uint8(t) for t in rgb])


def _mean_share(pipe: MuPDPipeline, latents: torch.Tensor) -> torch.Tensor:
    """Normalised stain latents with every block's DAB share set to its tile's mean share
    (haematoxylin + DAB per block kept)."""
    z = pipe.denormalise_latent(latents).clamp(min=0)
    total = z[:, 0:1] + z[:, 1:2]
    share = z[:, 1:2].sum((2, 3), keepdim=True) / total.sum((2, 3), keepdim=True).clamp(min=1e-6)
    dab = share * total
    rms = z[:, 2:3] * dab / z[:, 1:2].clamp(min=1e-6)
    z = torch.cat([total - dab, dab, rms, z[:, 3:]], 1)
    return pipe.normalise_latent(z)


def _denoised(
    pipe: MuPDPipeline, batch: np.ndarray, target: str, guidance: float = 1.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, TargetSpec]:
    """The sampler's steps of `MuPDPipeline.__call__`: final latents, the initial noise of
    the target's channels, the structure and the target's spec."""
    scale: GuidanceScale = {"source": guidance} if guidance != 1.0 else 1.0
    spec, steps, scales = pipe.check_inputs(target, 1, None, scale, None, "np")
    conditions = pipe.encode_conditions(spec, None, None, batch, 1)
    generator = torch.Generator().manual_seed(seed)
    noise = pipe.prepare_latents(spec, conditions.n, batch.shape[1:3], generator)

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        return pipe.predict_velocity(
            x, t, spec, conditions.streams, conditions.source, scale, scales
        )

    x, _ = pipe.denoise(noise, velocity, steps, None)
    return x, noise[:, list(spec.channels)], conditions.structure, spec


def _stain(
    pipe: MuPDPipeline,
    tiles: list[np.ndarray],
    target: str,
    guidance: float = 1.0,
    samples: int = 1,
) -> dict[str, list]:
    """MuPD's cells and mean read-outs, the mean read-out with the tile's mean share and,
    for ``samples`` > 1, the mean read-out of the mean of that many latent samples."""
    out: dict[str, list] = {
        "cells": [], "mean": [], "mean share": [], "latent mean": [], "latent dab": []
    }  # fmt: skip
    for start in range(0, len(tiles), 16):
        batch = np.stack(tiles[start : start + 16])
        x, noise, structure, spec = _denoised(pipe, batch, target, guidance)
        if samples > 1:
            more = [_denoised(pipe, batch, target, guidance, seed)[0] for seed in range(1, samples)]
            average = torch.stack([x, *more]).mean(0)
            out["latent mean"] += list(pipe.decode(average, spec, "np", structure, noise, "mean"))
        out["cells"] += list(pipe.decode(x, spec, "np", structure, noise, "cells"))
        out["mean"] += list(pipe.decode(x, spec, "np", structure, noise, "mean"))
        channels = list(spec.channels)
        dab = pipe.denormalise_latent(x[:, channels])[:, 1].clamp(min=0).numpy()
        out["latent dab"] += [np.kron(d, np.ones((BLOCK, BLOCK))) for d in dab]
        shared = x.clone()
        shared[:, channels] = _mean_share(pipe, x[:, channels])
        out["mean share"] += list(pipe.decode(shared, spec, "np", structure, noise, "mean"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled one)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo" / "train.yaml"))
    parser.add_argument(
        "--samples", type=int, default=1, help="also the mean read-out of the mean of K latents"
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "train"],
        help="tiles to score (train: "
        "how much the model memorised; the fitted baselines are then scored on their own data)",
    )
    parser.add_argument(
        "--guidance", type=float, nargs="*", default=[], help="also MuPD at these guidances"
    )
    args = parser.parse_args()
    pipe = load_pipeline(args.model, "cpu")
    config = TrainConfig.from_yaml(args.config)
    size = pipe.config.resolution
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    start = time.perf_counter()
    for task in config.tasks:
        if task.kind != "stain":
            continue
        split = split_datasets(task, config, size, args.split)
        test = [d[i] for d in split for i in range(len(d))]
        train = [d[i] for d in split_datasets(task, config, size, "train") for i in range(len(d))]
        src, real = sources(test), _dab([s.image for s in test])
        marker = f"{test[0].target.split(':')[1]} ({len(test)})"
        with torch.inference_mode():
            stained = _stain(pipe, src, test[0].target, samples=args.samples)
        latent_dab = stained.pop("latent dab")
        mupd = {k: _dab([to_uint8(t) for t in v]) for k, v in stained.items()}
        deconvolution = ColourDeconvolutionBaseline(seed=0)
        cd = _dab(list(deconvolution.fit(sources(train), [s.image for s in train]).predict(src)))
        haem = [hematoxylin_density(s) for s in src]
        ridge = _ridge_blocks(sources(train), _dab([s.image for s in train]), src)
        ones = np.ones((BLOCK, BLOCK))
        maps = {
            "MuPD (cells)": mupd["cells"],
            "MuPD (mean read-out)": mupd["mean"],
            "MuPD (mean read-out), blurred, sigma 1 px": _blur(mupd["mean"], 1),
            "MuPD (mean read-out), blurred, sigma 2 px": _blur(mupd["mean"], 2),
            "MuPD (mean read-out), blurred, sigma 4 px": _blur(mupd["mean"], 4),
            "MuPD (mean read-out), tile's mean DAB share": mupd["mean share"],
            f"MuPD (mean read-out), mean of {args.samples} latent samples": mupd["latent mean"],
            "MuPD latent's own DAB per block (before the source anchor)": latent_dab,
            "H&E haematoxylin (no model)": haem,
            "H&E haematoxylin, blurred, sigma 4 px": _blur(haem, 4),
            "colour deconvolution": cd,
            "colour deconvolution, blurred, sigma 4 px": _blur(cd, 4),
            "linear map of pooled source stain densities to block DAB": [
                np.kron(r, ones) for r in ridge
            ],
            "... its block DAB drawn on the source's cells by MuPD's renderer": _drawn(
                pipe, src, ridge
            ),
        }
        for g in args.guidance:  # the source H&E guided (classifier-free)
            with torch.inference_mode():
                guided = _stain(pipe, src, test[0].target, g)
            for key in ("cells", "mean"):
                label = "cells" if key == "cells" else "mean read-out"
                maps[f"MuPD ({label}), source guidance {g:g}"] = _dab(
                    [to_uint8(t) for t in guided[key]]
                )
        for name, pred in maps.items():
            if not pred:  # a read-out not asked for
                continue
            rows.setdefault(name, {})[marker] = _scores(pred, real)
        print(f"{marker}: {time.perf_counter() - start:.0f} s", flush=True)
    markers = list(next(iter(rows.values())))
    tiles = "held-out" if args.split == "test" else "training"
    print(f"\nDAB patch r (r on 8-px blocks), {tiles} tiles; {torch.get_num_threads()} threads\n")
    print("| read-out | " + " | ".join(markers) + " |")
    print("|---|" + "--:|" * len(markers))
    for name, scores in rows.items():
        cells = " | ".join(f"{p:.3f} ({b:.3f})" for p, b in scores.values())
        print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
