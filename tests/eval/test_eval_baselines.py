"""The baselines fit and predict on tiny generated H&E -> IHC pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_tiles import he_ihc_pair

from napari_mupd.errors import EvalError
from napari_mupd.eval.baselines import (
    ColourDeconvolutionBaseline,
    DarknessBaseline,
    LinearColourMapBaseline,
    NearestNeighbourBaseline,
    RegressionBaseline,
    width_for_params,
)
from napari_mupd.eval.metrics import pearson_r
from napari_mupd.imaging.stains import dab_density


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks: one thread is faster, and far faster when other jobs share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pairs():
    """Six 32 px training pairs and two held-out ones."""
    tiles = [he_ihc_pair(32, seed) for seed in range(8)]
    he, ihc = [t[0] for t in tiles], [t[1] for t in tiles]
    return he[:6], ihc[:6], he[6:], ihc[6:]


def _check_outputs(model, he):
    one = model.predict(he[0])
    assert isinstance(one, np.ndarray) and one.dtype == np.uint8 and one.shape == he[0].shape
    many = model.predict(he)
    assert isinstance(many, list) and len(many) == len(he)
    return many


def test_colour_deconvolution_learns_where_dab_goes(pairs):
    he, ihc, he_test, ihc_test = pairs
    model = ColourDeconvolutionBaseline().fit(he, ihc)
    assert model.coef.shape == (5, 2)
    pred = _check_outputs(model, he_test)
    # DAB sits on the nuclei, which the H&E shows: a linear map recovers much of it.
    for p, real in zip(pred, ihc_test, strict=True):
        assert pearson_r(dab_density(p), dab_density(real)) > 0.5
    with pytest.raises(EvalError, match="fit"):
        ColourDeconvolutionBaseline().predict(he[0])


def test_linear_colour_map_recovers_an_affine_colour_change(pairs):
    he, _, he_test, _ = pairs
    matrix = np.array([[0.8, 0.1, 0.0], [0.0, 0.6, 0.2], [0.1, 0.0, 0.7]])

    def recolour(t: np.ndarray) -> np.ndarray:
        return np.clip(t.astype(np.float64) @ matrix + 20, 0, 255).round().astype(np.uint8)

    model = LinearColourMapBaseline().fit(he, [recolour(t) for t in he])
    for p, t in zip(_check_outputs(model, he_test), he_test, strict=True):
        assert np.abs(p.astype(int) - recolour(t)).max() <= 2


def test_darkness_predicts_dab_from_the_he_alone(pairs):
    he, ihc, he_test, ihc_test = pairs
    model = DarknessBaseline().fit(he, ihc)
    assert model.coef.shape == (2, 2)
    pred = _check_outputs(model, he_test)
    for p, real in zip(pred, ihc_test, strict=True):
        assert pearson_r(dab_density(p), dab_density(real)) > 0.3
    with pytest.raises(EvalError, match="fit"):
        DarknessBaseline().predict(he[0])


@pytest.mark.parametrize("features", ["histology", "pixels"])
def test_nearest_neighbour_returns_the_training_target(pairs, features):
    he, ihc, he_test, _ = pairs
    model = NearestNeighbourBaseline(features=features).fit(he, ihc)
    for source, target in zip(he, ihc, strict=True):
        np.testing.assert_array_equal(model.predict(source), target)
    pred = _check_outputs(model, he_test)
    assert all(any(np.array_equal(p, t) for t in ihc) for p in pred)


def test_regression_loss_goes_down_and_round_trips(pairs, tmp_path):
    he, ihc, he_test, _ = pairs
    model = RegressionBaseline(width=8, crop=32, lr=1e-2)
    history = model.fit(he, ihc, steps=40, batch_size=4, seed=0)
    assert len(history) == 40
    assert np.mean(history[-10:]) < 0.5 * np.mean(history[:10])
    pred = _check_outputs(model, he_test)
    odd = model.predict(he[0][:30, :27])  # not a multiple of 4: padded, then cropped
    assert odd.shape == (30, 27, 3)
    loaded = RegressionBaseline.load(model.save(tmp_path / "regression.safetensors"))
    assert loaded.width == 8
    np.testing.assert_array_equal(loaded.predict(he_test), pred)
    with pytest.raises(EvalError, match="width"):
        from safetensors.numpy import save_file

        save_file({"x": np.zeros(1, np.float32)}, tmp_path / "other.safetensors")
        RegressionBaseline.load(tmp_path / "other.safetensors")


def test_regression_matches_a_parameter_budget():
    for budget in (50_000, 2_000_000):
        model = RegressionBaseline(params=budget)
        assert model.num_parameters == pytest.approx(budget, rel=0.1)
    assert width_for_params(1) == 1


def test_pairs_must_match(pairs):
    he, ihc, _, _ = pairs
    with pytest.raises(EvalError, match="5 target"):
        NearestNeighbourBaseline().fit(he, ihc[:5])
    with pytest.raises(EvalError, match="differ in size"):
        ColourDeconvolutionBaseline().fit(he[:1], [ihc[0][:16]])
