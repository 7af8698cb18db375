"""A checkpoint on the held-out split of its training config, against baselines.

What ``mupd eval --config`` runs and what the model card reports: for each task whose
datasets hold out a test split (``holdout`` > 0), the checkpoint's tiles are scored
against the real test tiles next to the baselines, fitted on the training split.

- ``stain`` tasks: virtual stains of the test H&E tiles (as users see them, each nucleus
  brown or blue; and the "mean read-out", the expected stain per pixel), paired with the
  real (registered) IHC: Pearson r of DAB (per pixel and on 8-px blocks), structure r,
  SSIM, PSNR, DAB Dice, feature FID/KID, nuclei. Baselines, all fitted on the training
  split: colour deconvolution, a per-pixel linear colour map, the H&E's darkness, nearest
  neighbour, and a U-Net regression of the same parameter count as the transformer.
- ``text`` and ``rna`` tasks: one tile per test condition, compared as distributions
  with the real test tiles (feature FID/KID, nuclei composition). Baseline: the
  nearest neighbour from the training split (same caption, or the most correlated
  expression profile), i.e. retrieval instead of generation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from napari_mupd.errors import DatasetError
from napari_mupd.eval.baselines import (
    ColourDeconvolutionBaseline,
    DarknessBaseline,
    LinearColourMapBaseline,
    NearestNeighbourBaseline,
    RegressionBaseline,
)
from napari_mupd.eval.report import evaluate_pairs
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.train.config import TaskConfig, TrainConfig
from napari_mupd.train.datasets import Sample, build_dataset, sources

DISTRIBUTION_COLUMNS = ["n_tiles", "fid", "kid", "nuclei_distance"]
#: The dataset arguments that name an H&E source (to score each source once).
SOURCE_KEYS = ("slide", "fixed_image", "image", "folder", "csv")
Log = Callable[[str], None]


def split_datasets(
    task: TaskConfig, config: TrainConfig, size: int, split: str
) -> list[Sequence[Sample]]:
    """The task's datasets that hold out a test split, built for ``split``."""
    out = []
    for spec in task.data:
        ((kind, args),) = spec.items()
        if (args or {}).get("holdout", 0) > 0:
            out.append(build_dataset({kind: {**args, "split": split}}, size, config.path))
    return out


def _samples(datasets: Sequence[Sequence[Sample]]) -> list[Sample]:
    return [d[i] for d in datasets for i in range(len(d))]


def _generate(pipe: Any, batch: int, log: Log, **kwargs: Any) -> list[np.ndarray]:
    """Run the pipeline over conditions in chunks of ``batch``."""
    key = next(k for k in ("image", "text", "rna") if k in kwargs)
    conditions = kwargs.pop(key)
    out: list[np.ndarray] = []
    for start in range(0, len(conditions), batch):
        chunk = conditions[start : start + batch]
        if key == "rna":
            chunk = pd.DataFrame(list(chunk)).fillna(0.0)
        elif key == "image":
            chunk = np.stack(chunk)
        out += list(to_uint8(pipe(**{key: chunk}, **kwargs).images))
        log(f"  generated {len(out)}/{len(conditions)}")
    return out


def evaluate_stain(
    pipe: Any,
    task: TaskConfig,
    config: TrainConfig,
    *,
    steps: int | None,
    seed: int,
    regression_steps: int,
    log: Log,
    regression_params: int | None = None,
) -> pd.DataFrame | None:
    """MuPD virtual stains of the test H&E tiles against the baselines.

    The U-Net has as many parameters as the transformer unless ``regression_params``.
    """
    size = pipe.config.resolution
    test = _samples(split_datasets(task, config, size, "test"))
    if not test:
        return None
    train = _samples(split_datasets(task, config, size, "train"))
    test_src, reals = sources(test), [s.image for s in test]
    train_src, train_tgt = sources(train), [s.image for s in train]
    target = test[0].target
    log(f"{task.name}: {len(test)} test tiles, {len(train)} training tiles ({target})")
    kwargs = {"image": test_src, "target": target, "num_inference_steps": steps, "generator": seed}
    methods = {"MuPD": _generate(pipe, 16, log, **kwargs)}
    if pipe.config.resolve_target(target).kind == "IHC":  # the expected stain, per pixel
        methods["MuPD (mean read-out)"] = _generate(pipe, 16, log, nuclei="mean", **kwargs)
    methods["colour deconvolution"] = list(
        ColourDeconvolutionBaseline(seed=seed).fit(train_src, train_tgt).predict(test_src)
    )
    methods["linear colour map"] = list(
        LinearColourMapBaseline(seed=seed).fit(train_src, train_tgt).predict(test_src)
    )
    methods["H&E darkness"] = list(
        DarknessBaseline(seed=seed).fit(train_src, train_tgt).predict(test_src)
    )
    methods["nearest neighbour"] = list(
        NearestNeighbourBaseline().fit(train_src, train_tgt).predict(test_src)
    )
    params = regression_params or sum(p.numel() for p in pipe.transformer.parameters())
    regression = RegressionBaseline(params=params, crop=min(size, 128), lr=5e-3)
    regression.fit(train_src, train_tgt, steps=regression_steps, seed=seed)
    methods[f"U-Net regression ({regression.num_parameters / 1e6:.1f} M)"] = list(
        regression.predict(test_src)
    )
    return evaluate_pairs(methods, reals, kind="IHC", sources=test_src)


def evaluate_generation(
    pipe: Any, task: TaskConfig, config: TrainConfig, *, steps: int | None, seed: int, log: Log
) -> pd.DataFrame | None:
    """Tiles generated from held-out captions or expression vs the real test tiles."""
    size = pipe.config.resolution
    test = _samples(split_datasets(task, config, size, "test"))
    if not test:
        return None
    train = _samples(split_datasets(task, config, size, "train"))
    reals = [s.image for s in test]
    log(f"{task.name}: {len(test)} held-out conditions, {len(train)} training tiles")
    if task.kind == "text":
        generated = _generate(
            pipe, 16, log, text=[s.text for s in test], num_inference_steps=steps, generator=seed
        )
        rng = np.random.default_rng(seed)
        nearest = []
        for s in test:
            same = [t.image for t in train if t.text == s.text] or [t.image for t in train]
            nearest.append(same[int(rng.integers(len(same)))])
    else:
        generated = _generate(
            pipe, 16, log, rna=[s.rna for s in test], num_inference_steps=steps, generator=seed
        )
        nearest = [_most_correlated(s, train).image for s in test]
    df = evaluate_pairs({"MuPD": generated, "nearest neighbour (training split)": nearest}, reals)
    return df[DISTRIBUTION_COLUMNS]


def _most_correlated(sample: Sample, train: list[Sample]) -> Sample:
    if sample.rna is None:
        raise DatasetError("an RNA task needs an expression profile for every sample")
    pool = [t for t in train if t.meta.get("dataset") == sample.meta.get("dataset")] or train
    profiles = pd.DataFrame([t.rna for t in pool]).fillna(0.0)
    query = sample.rna.reindex(profiles.columns).fillna(0.0).to_numpy(float)
    x = np.log1p(np.clip(profiles.to_numpy(float), 0, None))
    q = np.log1p(np.clip(query, 0, None))
    x, q = x - x.mean(axis=1, keepdims=True), q - q.mean()
    scores = x @ q / (np.linalg.norm(x, axis=1) * np.linalg.norm(q) + 1e-12)
    return pool[int(np.argmax(scores))]


def evaluate_structure(
    pipe: Any,
    config: TrainConfig,
    *,
    steps: int | None,
    seed: int,
    log: Log,
    demo_size: int = 512,
    max_tiles: int = 16,
) -> pd.DataFrame | None:
    """Structure r of virtual IHC on the held-out H&E tiles of every source of the config
    (one row per dataset and IHC target; the first ``max_tiles`` test tiles of each
    dataset, each dataset once), and on the bundled sample slide at `mupd demo`'s settings
    (the model's pixel size, drawn at the slide's own): no paired IHC is needed."""
    from napari_mupd.engine.sampling import PipelineTileModel
    from napari_mupd.engine.tissue import most_tissue_region
    from napari_mupd.engine.virtual_stain import stain_region
    from napari_mupd.eval.structure import structure_or_none
    from napari_mupd.io import open_slide
    from napari_mupd.resources import sample_slide_path

    targets = [f"IHC:{m}" for m in pipe.config.ihc_markers]
    if not targets:
        return None
    size = pipe.config.resolution
    rows = []
    seen: set[str] = set()
    for task in config.tasks:
        for spec in task.data:
            ((kind, args),) = spec.items()
            image = next((args.get(k) for k in SOURCE_KEYS if args and args.get(k)), None)
            key = repr(image or sorted((args or {}).items()))  # each H&E source once
            if (args or {}).get("holdout", 0) <= 0 or key in seen:
                continue
            seen.add(key)
            dataset = build_dataset({kind: {**args, "split": "test"}}, size, config.path)
            samples = [dataset[i] for i in range(min(len(dataset), max_tiles))]
            tiles = [s.he for s in samples]
            name = getattr(dataset, "name", None) or type(dataset).__name__
            for target in targets:
                virtual = _generate(
                    pipe, 16, log, image=tiles, target=target, num_inference_steps=steps,
                    generator=seed,
                )  # fmt: skip
                scores = [structure_or_none(v, t) for v, t in zip(virtual, tiles, strict=True)]
                found = [x for x in scores if x is not None]
                rows.append(
                    {
                        "source": f"{task.name}: {name}",
                        "target": target,
                        "tiles": len(found),
                        "structure_r": float(np.mean(found)) if found else float("nan"),
                    }
                )
    with open_slide(sample_slide_path()) as slide:
        region = most_tissue_region(slide, demo_size)
        for target in targets:
            model = PipelineTileModel(pipe, target, steps=steps)
            out_mpp = slide.mpp[0] if slide.mpp else None
            result = stain_region(slide, region, model, seed=seed, output_mpp=out_mpp)
            assert result.source is not None
            score = structure_or_none(to_uint8(result.image), result.source)
            rows.append(
                {
                    "source": f"mupd demo: {slide.path.name} {demo_size} px region",
                    "target": target,
                    "tiles": 1,
                    "structure_r": float("nan") if score is None else score,
                }
            )
    return pd.DataFrame(rows).set_index("source")


def evaluate_checkpoint(
    pipe: Any,
    config: TrainConfig,
    *,
    steps: int | None = None,
    seed: int = 0,
    regression_steps: int = 300,
    regression_params: int | None = None,
    log: Log = print,
) -> dict[str, pd.DataFrame]:
    """Every held-out task of ``config``: {task name: metrics table}."""
    results = {}
    for task in config.tasks:
        if task.kind == "stain":
            df = evaluate_stain(
                pipe,
                task,
                config,
                steps=steps,
                seed=seed,
                regression_steps=regression_steps,
                regression_params=regression_params,
                log=log,
            )
        elif task.kind in ("text", "rna"):
            df = evaluate_generation(pipe, task, config, steps=steps, seed=seed, log=log)
        else:
            df = None
        if df is not None:
            results[task.name] = df
    structure = evaluate_structure(pipe, config, steps=steps, seed=seed, log=log)
    if structure is not None:
        results["structure"] = structure
    return results
