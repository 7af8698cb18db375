"""A downstream task with room to gain: classification from very few real tiles.

The 10-shot check of :mod:`~napari_mupd.eval.experiments.fewshot` is saturated on the
repository's data (real tiles alone score ~1), so it cannot show whether extra tiles help.
Here real tiles are scarce (``shots``: e.g. 1 and 3 per class) and four training sets are
compared, each scored on the same held-out test tiles:

- **real only**: the ``shots`` real training-split tiles per class;
- **real + augmented**: plus ``extra`` classical augmentations per class of those same
  real tiles (:mod:`napari_mupd.imaging.augment`: flips / rotations, zoom, HED stain
  jitter, brightness / contrast, blur);
- **real + synthetic**: plus ``extra`` tiles per class generated from the class caption;
- **real + both**: plus both sets (``2 * extra`` per class).

Classes are the captioned datasets of the config's text tasks that hold out a test split
(as in text adherence). A logistic regression on the histology features
(:mod:`napari_mupd.eval.features`) is trained per set; the score is the balanced accuracy
on the held-out tiles (the mean over classes of the share of their tiles classified right;
chance is 1 / classes). Each seed draws other real tiles, other augmentations and another
slice of the synthetic tiles; the table gives mean and std over seeds, and the gain over
real only, paired by seed (same real tiles), with its std.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from napari_mupd.errors import EvalError
from napari_mupd.eval.adherence import balanced_share, logistic_regression
from napari_mupd.eval.experiments.adherence import captioned_classes, spread
from napari_mupd.eval.features import histology_features
from napari_mupd.imaging.augment import Augmentation
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.train.config import TrainConfig

Log = Callable[[str], None]
#: Classical augmentation of the "real + augmented" arm: mild, as the tile export offers.
AUGMENTATION = Augmentation(
    flips=True, stain_jitter=0.05, brightness=0.05, contrast=0.1, blur=1.0, zoom=0.2
)
ARMS = ("real only", "real + augmented", "real + synthetic", "real + both")


def _synthetic(
    pipe: Any, caption: str, n: int, k: int, guidance: float, steps: int | None, log: Log
) -> np.ndarray:
    """Features of ``n`` tiles generated from ``caption`` (class ``k``), in chunks."""
    feats = []
    for start in range(0, n, 32):
        out = pipe(
            text=caption,
            num_images=min(32, n - start),
            num_inference_steps=steps,
            guidance_scale={"text": guidance},
            generator=1000 * (k + 1) + start,
        )
        feats.append(histology_features(list(to_uint8(out.images))))
    log(f"downstream: generated {n} tiles for {caption!r}")
    return np.concatenate(feats)


def downstream_experiment(
    pipe: Any,
    config: TrainConfig,
    *,
    shots: Sequence[int] = (1, 3),
    extra: int = 12,
    seeds: int = 10,
    guidance: float = 1.0,
    max_pool: int = 64,
    max_test: int = 64,
    augmentation: Augmentation = AUGMENTATION,
    steps: int | None = None,
    log: Log = print,
) -> pd.DataFrame:
    """Balanced accuracy of the four training sets (see the module docstring).

    Rows: ``ARMS``; columns per ``s`` in ``shots``: ``"s-shot"`` (mean over seeds),
    ``"s-shot std"``, ``"s-shot gain"`` (mean paired difference to real only) and
    ``"s-shot gain std"``. Real tiles are drawn from at most ``max_pool`` training tiles
    per class, scored on at most ``max_test`` test tiles per class (evenly spaced).
    ``attrs``: classes, test_tiles, chance, extra, seeds, guidance, augmentation and
    ``per_seed`` (one row per shots, seed and arm).
    """
    size = pipe.config.resolution
    texts = [task for task in config.tasks if task.kind == "text"]
    classes = [c for task in texts for c in captioned_classes(task, config, size)]
    if len(classes) < 2:
        raise EvalError("the downstream task needs two captioned classes with held-out tiles")
    if max(shots) > min(len(train) for _, train, _ in classes):
        raise EvalError(f"a class has fewer training tiles than {max(shots)} shots")
    log(f"downstream: {len(classes)} classes: " + "; ".join(c for c, _, _ in classes))
    pools = [[train[i].image for i in spread(len(train), max_pool)] for _, train, _ in classes]
    pool_feats = [histology_features(p) for p in pools]
    tests = [
        histology_features([test[i].image for i in spread(len(test), max_test)])
        for _, _, test in classes
    ]
    test_x = np.concatenate(tests)
    test_y = np.concatenate([np.full(len(t), k) for k, t in enumerate(tests)])
    synthetic = [
        _synthetic(pipe, caption, extra * seeds, k, guidance, steps, log)
        for k, (caption, _, _) in enumerate(classes)
    ]
    n = len(classes)
    rows = []
    for s in shots:
        for seed in range(seeds):
            rng = np.random.default_rng([seed, s])
            picks = [rng.choice(len(p), size=s, replace=False) for p in pools]
            real = [f[p] for f, p in zip(pool_feats, picks, strict=True)]
            augmented = []
            for pool, p in zip(pools, picks, strict=True):
                tiles = [augmentation.draw(rng).apply(pool[p[j % s]]) for j in range(extra)]
                augmented.append(histology_features(tiles))
            synth = [f[seed * extra : (seed + 1) * extra] for f in synthetic]
            sets = {
                "real only": real,
                "real + augmented": [np.concatenate(x) for x in zip(real, augmented, strict=True)],
                "real + synthetic": [np.concatenate(x) for x in zip(real, synth, strict=True)],
                "real + both": [
                    np.concatenate(x) for x in zip(real, augmented, synth, strict=True)
                ],
            }
            for arm, per_class in sets.items():
                x = np.concatenate(per_class)
                y = np.concatenate([np.full(len(f), k) for k, f in enumerate(per_class)])
                predict = logistic_regression(x, y, n)
                score = balanced_share(predict(test_x), test_y)
                rows.append({"shots": s, "seed": seed, "arm": arm, "balanced_accuracy": score})
        log(f"downstream: {s}-shot done")
    per_seed = pd.DataFrame(rows)
    table = pd.DataFrame(index=pd.Index(ARMS, name="training set"))
    for s in shots:
        scores = per_seed[per_seed["shots"] == s].pivot(
            index="seed", columns="arm", values="balanced_accuracy"
        )
        gain = scores.sub(scores["real only"], axis=0)
        label = f"{s}-shot"
        table[label] = scores.mean()
        table[f"{label} std"] = scores.std()
        table[f"{label} gain"] = gain.mean()
        table[f"{label} gain std"] = gain.std()
    table.attrs.update(
        classes=[c for c, _, _ in classes],
        test_tiles=len(test_y),
        chance=1 / n,
        extra=extra,
        seeds=seeds,
        guidance=guidance,
        augmentation=augmentation.to_dict(),
        per_seed=per_seed,
    )
    return table
