"""The offline histology features and the Fréchet and kernel distances on them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers import DATA
from napari_mupd.errors import EvalError
from napari_mupd.eval.features import (
    FEATURE_NAMES,
    frechet_distance,
    histology_features,
    kernel_inception_distance,
    standardise,
)


def test_frechet_is_zero_for_identical_sets_and_grows_with_a_mean_shift():
    feats = np.random.default_rng(0).normal(size=(40, 6))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    # Equal covariances: the distance is exactly the squared mean shift, 6 * delta^2.
    distances = [frechet_distance(feats, feats + delta) for delta in (0.5, 1.0, 2.0)]
    np.testing.assert_allclose(distances, [1.5, 6.0, 24.0], rtol=1e-4)
    few = feats[:3]  # N < F: singular covariances, kept stable by the ridge
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-5)
    assert frechet_distance(few, few + 1) == pytest.approx(6.0, rel=1e-3)


def test_frechet_sees_a_change_of_spread():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2000, 2)), 3 * rng.normal(size=(2000, 2))
    # tr(I + 9I - 2 * 3I) = 8 for N(0, I) vs N(0, 9I)
    assert frechet_distance(a, b) == pytest.approx(8.0, rel=0.1)


def test_kid_is_near_zero_for_one_distribution():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same, spread = kernel_inception_distance(a, b, subset_size=100)
    shifted, _ = kernel_inception_distance(a, b + 1, subset_size=100)
    assert abs(same) < 0.05 and spread > 0
    assert shifted > 20 * max(abs(same), 0.01)
    assert kernel_inception_distance(a[:5], b[:5])[1] == 0.0  # one subset: all samples
    with pytest.raises(EvalError, match="at least 2"):
        kernel_inception_distance(a[:1], b)


def test_features_tell_ihc_from_he(ihc_image):
    he_image = np.asarray(Image.open(DATA / "tiles" / "wsidicom_test_tile.png"))
    he = [he_image[y : y + 64, x : x + 64, :3] for y in (0, 80, 160) for x in (0, 80, 160)]
    ihc = [ihc_image[y : y + 64, x : x + 64] for y in (0, 224, 448) for x in (0, 224, 448)]
    f_he, f_ihc = histology_features(he), histology_features(ihc)
    assert f_he.shape == (9, len(FEATURE_NAMES)) and np.isfinite(f_he).all()
    half_a, half_b = f_ihc[::2], f_ihc[1::2]
    ihc_vs_ihc = frechet_distance(standardise(half_a, f_ihc), standardise(half_b, f_ihc))
    ihc_vs_he = frechet_distance(standardise(f_he, f_ihc), standardise(f_ihc, f_ihc))
    assert ihc_vs_he > 3 * ihc_vs_ihc
    eosin = FEATURE_NAMES.index("e_mean")
    assert f_he[:, eosin].mean() > 0.05 > 10 * f_ihc[:, eosin].mean()
