"""Adherence of a checkpoint to its conditions, on the held-out split of its config.

What ``mupd eval --config`` reports as "adherence" (scores: :mod:`napari_mupd.eval.adherence`,
features: :mod:`napari_mupd.eval.features`). For each condition type the config's tasks
hold out:

- **text** (``kind: text``): the classes are the captioned datasets with a test split.
  A logistic regression fitted on real training-split tiles of every class (at most
  ``max_real`` each) assigns each tile generated from a class's caption to a class.
- **RNA** (``kind: rna``), per Visium dataset: the classes are the spots' expression
  clusters (the file's ``leiden`` / ``louvain`` / ``clusters`` / ``cluster`` column, else
  k-means on the expression, :func:`expression_clusters`). Tiles are generated from each
  held-out spot's expression; a nearest-centroid classifier of the real training-split
  tiles by cluster says which cluster each lands nearest.
- **reference image** (``kind: image``): tiles generated from each held-out tile as the
  reference, scored by their distance to it against the other references.

Each is run at every ``guidance`` scale (per-modality classifier-free guidance on that
condition only), and for the unconditional model (no condition, the floor: its tiles
cannot depend on the condition, so it scores chance up to noise). Every condition gets the
same seed, so the tiles of two conditions differ by the condition alone. Baseline: a random
real tile of the training split in place of a generated one. Ceiling (text and RNA): the
real held-out tiles of each class, scored by the same classifier, i.e. how well the
features tell the classes apart at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from napari_mupd.eval.adherence import chance, label_adherence, reference_adherence
from napari_mupd.eval.experiments.heldout import split_datasets
from napari_mupd.eval.features import FEATURE_NAMES, histology_features
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.train.config import TaskConfig, TrainConfig
from napari_mupd.train.datasets import Sample, SpatialSpots

Log = Callable[[str], None]
GUIDANCE = (1.0, 2.0, 4.0)
#: obs columns that hold a Visium file's own clusters, the first found is used.
CLUSTER_COLUMNS = ("leiden", "louvain", "clusters", "cluster")
#: Columns of the features: all, and the stain statistics alone (blur does not move them).
ALL = list(range(len(FEATURE_NAMES)))
STAIN = [
    i for i, n in enumerate(FEATURE_NAMES)
    if n.split("_")[0] in ("h", "e", "dab") or n == "tissue_fraction"
]  # fmt: skip
#: Random real tiles drawn per generated tile for the baseline.
BASELINE_DRAWS = 100
FLOOR, BASELINE, CEILING = (
    "unconditional (floor)",
    "random real tile (baseline)",
    "real held-out tile (ceiling)",
)


def guided(g: float) -> str:
    """The row name of guidance scale ``g``."""
    return f"guidance {g:g}"


def spread(n: int, most: int) -> list[int]:
    """At most ``most`` indices of ``range(n)``, evenly spaced (all when n <= most)."""
    if n <= most:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, most).round()})


def _images(dataset: Sequence[Sample], indices: Sequence[int]) -> list[np.ndarray]:
    return [dataset[i].image for i in indices]


class _Generator:
    """The pipeline at one seed: every call draws the same noise."""

    def __init__(self, pipe: Any, tiles: int, steps: int | None, seed: int, log: Log) -> None:
        self.pipe, self.tiles, self.steps, self.seed, self.log = pipe, tiles, steps, seed, log
        self._floor: np.ndarray | None = None

    def __call__(self, guidance: float | None = None, **condition: Any) -> np.ndarray:
        """Features (tiles, F) of tiles generated from ``condition`` at ``guidance`` (on
        that condition only), or with no condition when none is given."""
        scale: float | dict[str, float] = 1.0
        if condition:
            ((key, _),) = condition.items()
            scale = {"image" if key == "image" else key: float(guidance or 1.0)}
        out = self.pipe(
            **condition,
            num_images=self.tiles,
            num_inference_steps=self.steps,
            guidance_scale=scale,
            generator=self.seed,
        )
        return histology_features(list(to_uint8(out.images)))

    def floor(self) -> np.ndarray:
        """Features of the unconditional tiles (generated once: no condition to vary)."""
        if self._floor is None:
            self._floor = self()
        return self._floor


def _label_row(
    condition: str,
    method: str,
    feats: np.ndarray,
    wanted: np.ndarray,
    real: np.ndarray,
    real_labels: np.ndarray,
    classifier: Any,
) -> dict:
    """One row: label adherence on all features and on the stain features alone."""
    scores = {
        column: label_adherence(
            feats[:, cols], wanted, real[:, cols], real_labels, classifier=classifier
        )
        for column, cols in (("adherence", ALL), ("stain_only", STAIN))
    }
    return {"condition": condition, "method": method, **scores, "chance": chance(wanted),
            "tiles": len(wanted)}  # fmt: skip


def _label_rows(
    condition: str,
    generate: _Generator,
    conditions: list[dict[str, Any]],
    wanted: np.ndarray,
    real: np.ndarray,
    real_labels: np.ndarray,
    ceiling: tuple[np.ndarray, np.ndarray] | None,
    guidance: Sequence[float],
    classifier: str,
    seed: int,
) -> list[dict]:
    """Rows of one label-adherence condition set: floor, each guidance, baseline, ceiling.

    The baseline draws ``BASELINE_DRAWS`` times as many random real tiles (their features
    are at hand), so that its score is an estimate, not one draw.
    """

    def row(method: str, feats: np.ndarray, wanted: np.ndarray) -> dict:
        return _label_row(condition, method, feats, wanted, real, real_labels, classifier)

    labels = np.repeat(wanted, generate.tiles)
    rows = [row(FLOOR, np.concatenate([generate.floor()] * len(conditions)), labels)]
    for g in guidance:
        rows.append(row(guided(g), np.concatenate([generate(g, **c) for c in conditions]), labels))
        generate.log(
            f"adherence: {condition}, {guided(g)}: {rows[-1]['adherence']:.3f} "
            f"({rows[-1]['stain_only']:.3f} on stain features)"
        )
    draws = np.repeat(labels, BASELINE_DRAWS)
    picks = np.random.default_rng(seed).integers(len(real), size=len(draws))
    rows.append(row(BASELINE, real[picks], draws))
    if ceiling is not None and len(ceiling[0]):
        rows.append(row(CEILING, *ceiling))
    return rows


def captioned_classes(
    task: TaskConfig, config: TrainConfig, size: int
) -> list[tuple[str, Sequence[Sample], Sequence[Sample]]]:
    """(caption, training split, test split) of each captioned dataset of a text task that
    holds out tiles: the classes of text adherence and of the downstream task."""
    classes = []
    for train, test in zip(
        split_datasets(task, config, size, "train"),
        split_datasets(task, config, size, "test"),
        strict=True,
    ):
        caption = getattr(train, "caption", None)
        if caption and len(train) and len(test):
            classes.append((caption, train, test))
    return classes


def text_adherence(
    generate: _Generator,
    task: TaskConfig,
    config: TrainConfig,
    *,
    guidance: Sequence[float],
    max_real: int,
    seed: int,
) -> list[dict]:
    """Rows of text adherence (see the module docstring); [] with fewer than 2 classes."""
    classes = captioned_classes(task, config, generate.pipe.config.resolution)
    if len(classes) < 2:
        generate.log(f"adherence: {task.name}: fewer than 2 captioned classes hold out tiles")
        return []
    generate.log(f"adherence: {task.name}: {len(classes)} classes")
    real, labels, held, held_labels = [], [], [], []
    for k, (_, train, test) in enumerate(classes):
        real.append(histology_features(_images(train, spread(len(train), max_real))))
        labels.append(np.full(len(real[-1]), k))
        held.append(histology_features(_images(test, spread(len(test), max_real))))
        held_labels.append(np.full(len(held[-1]), k))
    return _label_rows(
        f"text: {task.name}",
        generate,
        [{"text": caption} for caption, _, _ in classes],
        np.arange(len(classes)),
        np.concatenate(real),
        np.concatenate(labels),
        (np.concatenate(held), np.concatenate(held_labels)),
        guidance,
        "logistic",
        seed,
    )


def expression_clusters(expression: pd.DataFrame, k: int = 4, seed: int = 0) -> pd.Series:
    """k-means clusters (labels "0".."k-1") of spots by expression: log1p of counts per
    10,000, the first 10 principal components, Lloyd's iterations from a k-means++ start."""
    x = np.clip(np.nan_to_num(expression.to_numpy(float)), 0, None)
    x = np.log1p(x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12) * 1e4)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    pcs = u[:, :10] * s[:10]
    k = max(1, min(k, len(pcs)))
    rng = np.random.default_rng(seed)
    centres = [pcs[rng.integers(len(pcs))]]
    for _ in range(1, k):  # k-means++: far from the centres so far, with likelihood d^2
        d = np.min([((pcs - c) ** 2).sum(axis=1) for c in centres], axis=0)
        p = d / d.sum() if d.sum() > 0 else np.full(len(d), 1 / len(d))
        centres.append(pcs[rng.choice(len(pcs), p=p)])
    c = np.stack(centres)
    labels = np.zeros(len(pcs), dtype=int)
    for _ in range(50):
        labels = ((pcs[:, None] - c[None]) ** 2).sum(axis=-1).argmin(axis=1)
        new = np.stack([pcs[labels == j].mean(axis=0) if (labels == j).any() else c[j]
                        for j in range(k)])  # fmt: skip
        if np.allclose(new, c):
            break
        c = new
    return pd.Series(labels.astype(str), index=expression.index, name="kmeans")


def spot_clusters(spec: dict[str, Any], config: TrainConfig, expression: pd.DataFrame) -> pd.Series:
    """Cluster label per spot (by obs name) of one Visium dataset entry of a config."""
    ((kind, args),) = spec.items()
    obs = None
    if kind == "h5ad_spots":
        import anndata

        obs = anndata.read_h5ad(config.path(args["h5ad"]), backed="r").obs
    elif kind == "spaceranger":
        from napari_mupd.io.visium import read_spaceranger

        obs = read_spaceranger(config.path(args["folder"])).obs
    column = next((c for c in CLUSTER_COLUMNS if obs is not None and c in obs), None)
    if obs is not None and column is not None:
        return obs[column].astype(str).rename(column)
    return expression_clusters(expression)


def rna_adherence(
    generate: _Generator,
    task: TaskConfig,
    config: TrainConfig,
    *,
    guidance: Sequence[float],
    max_conditions: int,
    seed: int,
) -> list[dict]:
    """Rows of RNA cluster adherence, one condition set per Visium dataset."""
    size = generate.pipe.config.resolution
    held_out = [s for s in task.data if (next(iter(s.values())) or {}).get("holdout", 0) > 0]
    rows: list[dict] = []
    for spec, train, test in zip(
        held_out,
        split_datasets(task, config, size, "train"),
        split_datasets(task, config, size, "test"),
        strict=True,
    ):
        if not (isinstance(train, SpatialSpots) and isinstance(test, SpatialSpots)):
            continue
        name = train.name
        expression = pd.concat([train.expression, test.expression])
        train_samples = [train[i] for i in range(len(train))]
        all_test = [test[i] for i in range(len(test))]
        for clusters in (spot_clusters(spec, config, expression), expression_clusters(expression)):
            cluster_of = {str(s): str(c) for s, c in clusters.items()}
            names = sorted({cluster_of[s.meta["spot"]] for s in train_samples})
            index = {c: j for j, c in enumerate(names)}
            test_samples = [s for s in all_test if cluster_of.get(s.meta["spot"]) in index]
            test_samples = [test_samples[i] for i in spread(len(test_samples), max_conditions)]
            wanted = np.array([index[cluster_of[s.meta["spot"]]] for s in test_samples])
            if len(np.unique(wanted)) >= 2:
                break
            generate.log(
                f"adherence: {name}: fewer than 2 {clusters.name} clusters among the held-out spots"
            )
        else:
            continue
        generate.log(
            f"adherence: {name}: {len(test_samples)} held-out spots in {len(np.unique(wanted))} "
            f"clusters ({clusters.name}), {len(train_samples)} real training tiles"
        )
        real = histology_features([s.image for s in train_samples])
        real_labels = np.array([index[cluster_of[s.meta["spot"]]] for s in train_samples])
        rows += _label_rows(
            f"RNA: {name} ({clusters.name})",
            generate,
            [{"rna": s.rna} for s in test_samples],
            wanted,
            real,
            real_labels,
            (histology_features([s.image for s in test_samples]), wanted),
            guidance,
            "centroid",
            seed,
        )
    return rows


def image_adherence(
    generate: _Generator,
    task: TaskConfig,
    config: TrainConfig,
    *,
    guidance: Sequence[float],
    max_conditions: int,
    seed: int,
) -> list[dict]:
    """Rows of reference-image adherence: held-out tiles as references."""
    size = generate.pipe.config.resolution
    tests = split_datasets(task, config, size, "test")
    if not tests:
        return []
    per = -(-max_conditions // len(tests))  # each dataset alike
    refs = [im for d in tests for im in _images(d, spread(len(d), per))][:max_conditions]
    if len(refs) < 2:
        return []
    train = [d[i] for d in split_datasets(task, config, size, "train") for i in range(len(d))]
    generate.log(f"adherence: {task.name}: {len(refs)} held-out reference tiles")
    references = histology_features(refs)
    index = np.repeat(np.arange(len(refs)), generate.tiles)
    condition = f"reference: {task.name}"

    def row(method: str, feats: np.ndarray) -> dict:
        scores = reference_adherence(feats, index, references)
        stain = reference_adherence(feats[:, STAIN], index, references[:, STAIN])
        return {"condition": condition, "method": method, "adherence": scores.pop("adherence"),
                "stain_only": stain["adherence"], "chance": 0.5, "tiles": len(index),
                **scores}  # fmt: skip

    rows = [row(FLOOR, np.concatenate([generate.floor()] * len(refs)))]
    for g in guidance:
        rows.append(row(guided(g), np.concatenate([generate(g, image=r) for r in refs])))
        generate.log(f"adherence: {condition}, {guided(g)}: {rows[-1]['adherence']:.3f}")
    picks = np.random.default_rng(seed).integers(len(train), size=len(index))
    rows.append(row(BASELINE, histology_features([train[i].image for i in picks])))
    return rows


def adherence_experiment(
    pipe: Any,
    config: TrainConfig,
    *,
    guidance: Sequence[float] = GUIDANCE,
    tiles: int = 4,
    max_real: int = 64,
    max_conditions: int = 24,
    steps: int | None = None,
    seed: int = 0,
    log: Log = print,
) -> pd.DataFrame:
    """Adherence of every held-out condition type of ``config`` (one row per condition set
    and method; see the module docstring). ``tiles`` are generated per condition (per
    class, spot or reference) and method; at most ``max_real`` real tiles per class train
    the text classifier; at most ``max_conditions`` spots and references are used.
    No rows when no such task holds out a test split.
    """
    generate = _Generator(pipe, tiles, steps, seed, log)
    rows: list[dict] = []
    for task in config.tasks:
        if task.kind == "text":
            rows += text_adherence(
                generate, task, config, guidance=guidance, max_real=max_real, seed=seed
            )
        elif task.kind == "rna":
            rows += rna_adherence(
                generate, task, config, guidance=guidance, max_conditions=max_conditions,
                seed=seed,
            )  # fmt: skip
        elif task.kind == "image":
            rows += image_adherence(
                generate, task, config, guidance=guidance, max_conditions=max_conditions,
                seed=seed,
            )  # fmt: skip
    if not rows:
        log("adherence: no text, RNA or reference task of the config holds out conditions")
    return pd.DataFrame(rows, columns=None if rows else ["condition", "method", "adherence"])


def adherence_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of `adherence_experiment` as one table: a row per condition set (and one
    more on the stain features alone), a column per method (floor, each guidance,
    baseline, ceiling) and chance."""
    methods = list(dict.fromkeys(rows["method"]))
    order = [FLOOR, *(m for m in methods if m.startswith("guidance")), BASELINE, CEILING]
    conditions = list(dict.fromkeys(rows["condition"]))
    parts = []
    for column, suffix in (("adherence", ""), ("stain_only", " [stain features]")):
        wide = rows.pivot(index="condition", columns="method", values=column)
        wide = wide.reindex(index=conditions, columns=[m for m in order if m in methods])
        wide["chance"] = rows.groupby("condition", sort=False)["chance"].first()
        wide.index = [f"{c}{suffix}" for c in wide.index]
        parts.append(wide)
    table = pd.concat(parts)
    table = table.loc[[f"{c}{s}" for c in conditions for s in ("", " [stain features]")]]
    table.index.name = "condition"
    table.columns.name = None
    return table
