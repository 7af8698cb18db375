"""Adherence: does a generated tile answer to the condition it was generated from?

Tiles in, numbers out, on the handcrafted histology features of
:mod:`napari_mupd.eval.features` (standardised on the real tiles). Three scores, each 1
for a generator that gives back real tiles of what it was asked for, and chance for one
whose tiles do not depend on the condition:

- :func:`label_adherence` (text prompts, RNA expression clusters): a classifier fitted on
  real tiles labelled by class (the caption of their slide, or the expression cluster of
  their spot) assigns each generated tile to a class; the score is the share assigned to
  the class it was generated for, averaged over classes (a balanced accuracy), so that a
  condition-blind generator scores ``1 / classes`` (:func:`chance`), however many tiles
  each class has.
- :func:`reference_adherence` (reference images): for a tile generated from reference
  ``i``, the share of the other references that are farther from it than reference ``i``
  (ties count half); 1 when each tile is nearest its own reference, 0.5 for a tile that
  does not depend on the reference.

Classifiers: :func:`logistic_regression` (multinomial, L-BFGS) and :func:`nearest_centroid`
(each class's mean; for classes of one or two tiles), both on standardised features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from napari_mupd.errors import EvalError
from napari_mupd.eval.features import standardise

Predict = Callable[[np.ndarray], np.ndarray]
Classifier = Literal["logistic", "centroid"]


def logistic_regression(
    x: np.ndarray, y: np.ndarray, classes: int, *, steps: int = 500, weight_decay: float = 1e-3
) -> Predict:
    """A multinomial logistic regression (L-BFGS) on standardised features; returns predict.

    ``y`` holds class indices in ``range(classes)``; predict gives (N,) class indices.
    """
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    xt = torch.as_tensor((x - mean) / std, dtype=torch.float64)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    torch.manual_seed(0)  # the initial weights: one fit per data set
    linear = torch.nn.Linear(x.shape[1], classes, dtype=torch.float64)
    optimiser = torch.optim.LBFGS(linear.parameters(), max_iter=steps)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(xt), yt)
        loss = loss + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)

    def predict(z: np.ndarray) -> np.ndarray:
        zt = torch.as_tensor((np.asarray(z, dtype=np.float64) - mean) / std)
        with torch.no_grad():
            return linear(zt).argmax(dim=1).numpy()

    return predict


def nearest_centroid(x: np.ndarray, y: np.ndarray, classes: int) -> Predict:
    """Each tile to the class whose mean (on standardised features) is nearest; classes
    without a tile are never predicted."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    xs = (x - mean) / std
    centroids = np.full((classes, x.shape[1]), np.inf)
    for k in np.unique(y):
        centroids[k] = xs[y == k].mean(axis=0)

    def predict(z: np.ndarray) -> np.ndarray:
        zs = (np.asarray(z, dtype=np.float64) - mean) / std
        d = ((zs[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
        return np.nan_to_num(d, nan=np.inf).argmin(axis=1)

    return predict


def fit_classifier(x: np.ndarray, y: np.ndarray, classes: int, kind: Classifier) -> Predict:
    """``logistic_regression`` or ``nearest_centroid`` by name."""
    if kind == "logistic":
        return logistic_regression(x, y, classes)
    if kind == "centroid":
        return nearest_centroid(x, y, classes)
    raise EvalError(f"unknown classifier {kind!r}: 'logistic' or 'centroid'")


def balanced_share(predicted: np.ndarray, wanted: np.ndarray) -> float:
    """Mean over the wanted classes of the share of their tiles predicted as them."""
    predicted, wanted = np.asarray(predicted), np.asarray(wanted)
    if predicted.shape != wanted.shape or not len(wanted):
        raise EvalError(f"need one prediction per tile, got {predicted.shape} for {wanted.shape}")
    return float(np.mean([(predicted[wanted == k] == k).mean() for k in np.unique(wanted)]))


def chance(wanted: Sequence[int] | np.ndarray) -> float:
    """What a condition-blind generator scores in `label_adherence`: 1 / the number of
    classes asked for."""
    return 1.0 / len(np.unique(np.asarray(wanted)))


def label_adherence(
    generated: np.ndarray,
    wanted: Sequence[int] | np.ndarray,
    real: np.ndarray,
    real_labels: Sequence[int] | np.ndarray,
    *,
    classifier: Classifier = "logistic",
) -> float:
    """Share of generated tiles that a classifier of the real tiles assigns to the class
    each was generated for, averaged over classes (see the module docstring).

    ``generated`` (N, F) and ``real`` (M, F) are feature rows; ``wanted`` (N,) and
    ``real_labels`` (M,) class indices. Every wanted class must have real tiles; real tiles
    of classes not wanted are left out, so the classifier chooses among the classes asked
    for and a condition-blind generator scores exactly `chance`.
    """
    wanted, real_labels = np.asarray(wanted), np.asarray(real_labels)
    generated, real = np.asarray(generated, float), np.asarray(real, float)
    if len(real) != len(real_labels) or len(generated) != len(wanted):
        raise EvalError("one label per feature row, for the generated and the real tiles")
    missing = sorted(set(wanted.tolist()) - set(real_labels.tolist()))
    if missing:
        raise EvalError(f"classes {missing} have no real tiles to learn them from")
    asked = np.isin(real_labels, wanted)  # a class nobody asked for cannot be chosen
    real, real_labels = real[asked], real_labels[asked]
    classes = int(max(wanted.max(), real_labels.max())) + 1
    predict = fit_classifier(standardise(real, real), real_labels, classes, classifier)
    return balanced_share(predict(standardise(generated, real)), wanted)


def reference_adherence(
    generated: np.ndarray, reference_index: Sequence[int] | np.ndarray, references: np.ndarray
) -> dict[str, float]:
    """How much nearer each generated tile is to its own reference than to the others.

    ``generated`` (N, F) features, ``reference_index`` (N,) the row of ``references``
    (R, F, R >= 2) each was generated from. Distances are Euclidean on features
    standardised against the references. Returns ``adherence`` (the mean share of other
    references farther than its own, ties half: 1 perfect, 0.5 chance), ``top1`` (the
    share whose nearest reference is its own; chance 1 / R), and the mean distances
    ``d_reference`` and ``d_others``.
    """
    generated, references = np.asarray(generated, float), np.asarray(references, float)
    index = np.asarray(reference_index, dtype=int)
    if len(references) < 2 or len(generated) != len(index) or not len(index):
        raise EvalError("need at least 2 references and one reference index per tile")
    if index.min() < 0 or index.max() >= len(references):
        raise EvalError(f"reference index out of range 0..{len(references) - 1}")
    g, r = standardise(generated, references), standardise(references, references)
    d = np.sqrt(((g[:, None, :] - r[None]) ** 2).sum(axis=-1))  # (N, R)
    own = d[np.arange(len(index)), index]
    others = np.ones_like(d, dtype=bool)
    others[np.arange(len(index)), index] = False
    farther = ((d > own[:, None]) & others).sum(axis=1)
    ties = ((d == own[:, None]) & others).sum(axis=1)
    share = (farther + 0.5 * ties) / (len(references) - 1)
    return {
        "adherence": float(share.mean()),
        "top1": float((farther == len(references) - 1).mean()),
        "d_reference": float(own.mean()),
        "d_others": float(d[others].mean()),
    }


__all__ = [
    "balanced_share",
    "chance",
    "fit_classifier",
    "label_adherence",
    "logistic_regression",
    "nearest_centroid",
    "reference_adherence",
]
