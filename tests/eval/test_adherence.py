"""Adherence scores on hand-made cases: a perfect generator scores 1, a constant one chance."""

from __future__ import annotations

import numpy as np
import pytest
from eval_tiles import PURPLE, discs

from napari_mupd.errors import EvalError
from napari_mupd.eval.adherence import (
    balanced_share,
    chance,
    label_adherence,
    logistic_regression,
    nearest_centroid,
    reference_adherence,
)
from napari_mupd.eval.features import histology_features

BROWN = (150, 100, 60)
#: Three hand-made "tissues": sparse small nuclei, dense large nuclei, brown nuclei.
KINDS = [(6, 3, PURPLE), (40, 6, PURPLE), (20, 4, BROWN)]


def tissue(kind: int, seed: int, size: int = 64) -> np.ndarray:
    count, radius, colour = KINDS[kind]
    centres = np.random.default_rng(seed).integers(6, size - 6, size=(count, 2))
    return discs((size, size), centres, radius, colour)


@pytest.fixture(scope="module")
def real():
    """Six real tiles per kind (features) and their labels."""
    labels = np.repeat(np.arange(3), 6)
    feats = histology_features([tissue(k, 100 + i) for i, k in enumerate(labels)])
    return feats, labels


@pytest.mark.parametrize("classifier", ["logistic", "centroid"])
def test_label_adherence_perfect_is_one_constant_is_chance(real, classifier):
    feats, labels = real
    wanted = np.repeat(np.arange(3), 4)  # four tiles asked of each class
    perfect = histology_features([tissue(k, 500 + i) for i, k in enumerate(wanted)])
    assert label_adherence(perfect, wanted, feats, labels, classifier=classifier) == 1.0
    constant = np.repeat(histology_features([tissue(1, 7)]), len(wanted), axis=0)
    score = label_adherence(constant, wanted, feats, labels, classifier=classifier)
    assert score == pytest.approx(1 / 3) == pytest.approx(chance(wanted))
    # balanced: a class asked for more often does not move a constant generator off chance
    lopsided = np.array([0] * 9 + [1, 2])
    constant = np.repeat(histology_features([tissue(0, 7)]), len(lopsided), axis=0)
    assert label_adherence(constant, lopsided, feats, labels, classifier=classifier) == (
        pytest.approx(1 / 3)
    )


def test_label_adherence_needs_real_tiles_of_every_wanted_class(real):
    feats, labels = real
    with pytest.raises(EvalError, match=r"classes \[3\] have no real tiles"):
        label_adherence(feats[:2], [0, 3], feats, labels)
    with pytest.raises(EvalError, match="one label per feature row"):
        label_adherence(feats[:2], [0], feats, labels)


def test_reference_adherence_perfect_is_one_constant_is_half():
    refs = [tissue(k, 200 + i) for i, k in enumerate([0, 0, 1, 1, 2, 2])]
    references = histology_features(refs)
    index = np.repeat(np.arange(len(refs)), 2)  # two tiles per reference
    flipped = histology_features([refs[i][:, ::-1] for i in index])  # the reference, mirrored
    perfect = reference_adherence(flipped, index, references)
    assert perfect["adherence"] == 1.0 and perfect["top1"] == 1.0
    assert perfect["d_reference"] < 1e-6 < perfect["d_others"]
    constant = np.repeat(histology_features([tissue(1, 9)]), len(index), axis=0)
    blind = reference_adherence(constant, index, references)
    assert blind["adherence"] == pytest.approx(0.5)
    assert blind["top1"] == pytest.approx(1 / len(refs))  # each reference is nearest once
    with pytest.raises(EvalError, match="at least 2 references"):
        reference_adherence(constant[:1], [0], references[:1])
    with pytest.raises(EvalError, match="out of range"):
        reference_adherence(constant[:1], [6], references)


def test_classifiers_and_balanced_share_on_plain_features():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 1, (20, 3)) for m in (0, 5)])
    y = np.repeat([0, 1], 20)
    assert (logistic_regression(x, y, 2)(x) == y).mean() > 0.95
    assert (nearest_centroid(x, y, 3)(x) == y).mean() > 0.95  # class 2 empty: never chosen
    assert balanced_share(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0])) == 0.75
    assert balanced_share(np.array([0, 1, 1, 1]), np.array([0, 1, 1, 0])) == 0.75
    with pytest.raises(EvalError):
        balanced_share(np.array([0]), np.array([0, 1]))


@pytest.mark.slow
def test_adherence_experiment_on_a_tiny_model(tmp_path):
    from helpers import BRAIN, CMU1, brain_spots
    from napari_mupd.eval.experiments.adherence import (
        BASELINE,
        CEILING,
        FLOOR,
        adherence_experiment,
        adherence_summary,
    )
    from napari_mupd.model import MuPDConfig, MuPDPipeline
    from napari_mupd.train.config import TrainConfig

    anndata = pytest.importorskip("anndata")
    genes = list(anndata.read_h5ad(BRAIN / "test_data.h5ad").var_names[:8])
    brain = {"slide": str(BRAIN / "test_img.jpg"), "holdout": 0.3}
    skin = {"slide": str(CMU1), "mpp": 2.0, "holdout": 0.3}
    config = TrainConfig.from_dict(
        {
            "out_dir": str(tmp_path),
            "model": {"preset": "tiny", "genes": genes},
            "tasks": [
                {
                    "name": "captions",
                    "kind": "text",
                    "data": [
                        {"slide_tiles": {**brain, "caption": "brain"}},
                        {"slide_tiles": {**skin, "caption": "skin"}},
                    ],
                },
                {"name": "spots", "kind": "rna", "data": [brain_spots(holdout=0.4)]},
                {"name": "refs", "kind": "image", "data": [{"slide_tiles": skin}]},
            ],
        },
        base_dir=tmp_path,
    )
    pipe = MuPDPipeline.from_config(
        MuPDConfig.from_dict({**MuPDConfig.tiny().to_dict(), "genes": genes})
    )
    rows = adherence_experiment(
        pipe, config, guidance=(1, 2), tiles=2, max_real=6, max_conditions=4, steps=1,
        log=lambda _: None,
    )  # fmt: skip
    table = adherence_summary(rows)
    text, rna, ref = "text: captions", "RNA: test_data (leiden)", "reference: refs"
    stain = " [stain features]"
    assert list(table.index) == [text, text + stain, rna, rna + stain, ref, ref + stain]
    assert list(table.columns) == [FLOOR, "guidance 1", "guidance 2", BASELINE, CEILING, "chance"]
    assert table.loc[text, "chance"] == 0.5 and table.loc[ref + stain, "chance"] == 0.5
    # the unconditional model gives the same tiles whatever was asked: chance exactly
    for name in (text, text + stain, ref, ref + stain, rna, rna + stain):
        assert table.loc[name, FLOOR] == pytest.approx(table.loc[name, "chance"])
    values = table.drop(columns="chance").to_numpy()
    finite = values[np.isfinite(values)]
    assert ((finite >= 0) & (finite <= 1)).all()
    assert np.isnan(table.loc[ref, CEILING])  # no ceiling for references
    refs = rows[rows["condition"] == ref]
    assert {"top1", "d_reference", "d_others"} <= set(refs.columns)


def test_classes_nobody_asked_for_are_not_chosen(real):
    feats, labels = real
    wanted = np.array([0, 0, 2, 2])  # class 1 is in the real tiles but not asked for
    constant = np.repeat(histology_features([tissue(1, 7)]), len(wanted), axis=0)
    assert label_adherence(constant, wanted, feats, labels, classifier="centroid") == 0.5
