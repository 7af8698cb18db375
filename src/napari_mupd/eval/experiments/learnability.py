"""Can `mupd train` learn a virtual stain at all? A check with a known answer.

Real H&E tiles get an "IHC" computed from their own stain densities by a fixed rule
(`rule_ihc`): every nucleus keeps its place; the nuclei of cell-dense neighbourhoods turn
brown (DAB), the others stay blue. The rule is deterministic and local, so a model that
trains correctly must reproduce it on held-out tiles: DAB Pearson r and structure r near 1.
If it does not, something in the recipe (conditioning, latents, renderer, sampler) is
broken, whatever the real data would say.

`run_learnability` writes the pairs as folders, trains the renderer and the transformer as
``mupd train-renderer`` / ``mupd train`` do on a generated config, and scores the held-out
tiles against the colour-deconvolution baseline fitted on the same training pairs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from scipy.ndimage import gaussian_filter

from napari_mupd.errors import MetricWarning
from napari_mupd.eval.baselines import ColourDeconvolutionBaseline
from napari_mupd.eval.metrics import patch_and_slide_pearson
from napari_mupd.eval.structure import structure_score
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.imaging.resize import resize
from napari_mupd.imaging.stains import compose_stains, dab_density, stain_densities
from napari_mupd.imaging.tissue import tissue_mask
from napari_mupd.io import open_slide
from napari_mupd.model.loading import load_pipeline
from napari_mupd.train.config import TrainConfig
from napari_mupd.train.datasets import spatial_split
from napari_mupd.train.renderer import train_renderer
from napari_mupd.train.trainer import Trainer

#: Smoothed haematoxylin density (OD) at which half of the nuclei are positive, its width,
#: and the smoothing (px): cell-dense neighbourhoods are positive.
RULE_THRESHOLD, RULE_WIDTH, RULE_SIGMA = 0.3, 0.05, 8.0


def rule_ihc(he: np.ndarray) -> np.ndarray:
    """The known "IHC" of an H&E tile: haematoxylin kept where it is, turned to DAB where
    the neighbourhood (a Gaussian of `RULE_SIGMA` px) is dense in haematoxylin."""
    h = stain_densities(he)[..., 0]
    positive = 1 / (1 + np.exp(-(gaussian_filter(h, RULE_SIGMA) - RULE_THRESHOLD) / RULE_WIDTH))
    densities = np.stack([0.8 * h * (1 - positive), np.zeros_like(h), 1.2 * h * positive], -1)
    return compose_stains(densities)


def write_pairs(
    slide: str | Path, out: Path, *, mpp: float, size: int, test_fraction: float = 0.3
) -> dict[str, int]:
    """Tissue tiles of ``slide`` at ``mpp`` with their rule IHC, as ``out/{train,test}/
    {he,ihc}/``; the rightmost ``test_fraction`` of the tissue tiles are the test split
    (training tiles end left of the first test tile)."""
    with open_slide(slide) as s:
        factor = mpp / s.mpp[0] if s.mpp else 1.0
        w, h = s.dimensions
        image = resize(s.read_region((0, 0), 0, (w, h)), (round(h / factor), round(w / factor)))
    mask = tissue_mask(image)
    boxes = [
        (y, x)
        for y in range(0, image.shape[0] - size + 1, size // 2)
        for x in range(0, image.shape[1] - size + 1, size // 2)
        if mask[y : y + size, x : x + size].mean() >= 0.5
    ]
    counts = {"train": 0, "test": 0}
    for split in ("train", "test"):
        keep = spatial_split([x for _, x in boxes], size, test_fraction, split)
        for (y, x), k in zip(boxes, keep, strict=True):
            if not k:
                continue
            tile = image[y : y + size, x : x + size]
            for kind, pixels in (("he", tile), ("ihc", rule_ihc(tile))):
                folder = out / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"{y:05d}_{x:05d}.png")
            counts[split] += 1
    return counts


def learnability_config(root: Path, *, steps: int, renderer_steps: int, mpp: float) -> Path:
    """A training YAML for the rule pairs under ``root`` (a small demo model)."""
    config = {
        "out_dir": "run",
        "seed": 0,
        "renderer": "run/renderer",
        "model": {
            "preset": "demo",
            "name": "mupd-learnability",
            "resolution": 128,
            "mpp": mpp,
            "hidden_size": 128,
            "depth": 4,
            "num_heads": 4,
            "targets": ["H&E", "IHC:Rule"],
            "nuclear_markers": ["Rule"],  # its DAB sits on nuclei
            "mif_vae": None,
            "default_steps": {"H&E": 20, "IHC": 20, "mIF": 1},
        },
        "steps": steps,
        "batch_size": 8,
        "lr": 3e-4,
        "warmup_steps": 50,
        "ema_decay": 0.995,
        "checkpoint_every": steps,
        "log_every": 50,
        "renderer_training": {"steps": renderer_steps},
        "tasks": [
            {
                "name": "he-to-rule",
                "kind": "stain",
                "data": [
                    {
                        "paired_folders": {
                            "source_dir": "train/he",
                            "target_dir": "train/ihc",
                            "target": "IHC:Rule",
                        }
                    }
                ],
            }
        ],
    }
    path = root / "learnability.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _read(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]


def score(pred: list[np.ndarray], real: list[np.ndarray], sources: list[np.ndarray]) -> dict:
    """DAB patch r (pixel), DAB r on 4-px blocks and structure r, means over tiles."""
    blocks = [_block(dab_density(t)) for t in pred], [_block(dab_density(t)) for t in real]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        pixel = patch_and_slide_pearson(
            [dab_density(t) for t in pred], [dab_density(t) for t in real]
        )
        block = patch_and_slide_pearson(*blocks)
    structure = [structure_score(p, s) for p, s in zip(pred, sources, strict=True)]
    return {
        "dab_patch_r": pixel.patch_r,
        "dab_block_r": block.patch_r,
        "structure_r": float(np.nanmean(structure)),
    }


def _block(image: np.ndarray, size: int = 4) -> np.ndarray:
    h, w = image.shape[0] // size * size, image.shape[1] // size * size
    return image[:h, :w].reshape(h // size, size, w // size, size).mean(axis=(1, 3))


def run_learnability(
    root: Path,
    slide: str | Path,
    *,
    steps: int = 1500,
    renderer_steps: int = 600,
    mpp: float = 1.0,
    size: int = 128,
    sampling_steps: tuple[int, ...] = (1, 20),
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Pairs, renderer, transformer, scores: {method: {metric: value}} on the test tiles."""
    counts = write_pairs(slide, root, mpp=mpp, size=size)
    log(f"rule pairs: {counts['train']} training and {counts['test']} test tiles of {size} px")
    path = learnability_config(root, steps=steps, renderer_steps=renderer_steps, mpp=mpp)
    config = TrainConfig.from_yaml(path)  # what `mupd train-renderer` and `mupd train` run
    train_renderer(config)
    pipe = load_pipeline(Trainer(config).train(), "cpu", cache=False)
    sources, reals = _read(root / "test" / "he"), _read(root / "test" / "ihc")
    results: dict[str, dict[str, Any]] = {}
    for n in sampling_steps:
        for nuclei in ("cells", "mean"):
            out = pipe(
                image=np.stack(sources),
                target="IHC:Rule",
                num_inference_steps=n,
                generator=0,
                nuclei=nuclei,
            )
            name = f"MuPD ({n} step{'s' if n > 1 else ''}, {nuclei} read-out)"
            results[name] = score(list(to_uint8(np.asarray(out.images))), reals, sources)
    train_he, train_ihc = _read(root / "train" / "he"), _read(root / "train" / "ihc")
    baseline = ColourDeconvolutionBaseline().fit(train_he, train_ihc)
    results["colour deconvolution"] = score(list(baseline.predict(sources)), reals, sources)
    results["the rule itself (ceiling)"] = score(reals, reals, sources)
    return results
