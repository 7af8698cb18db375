"""Paired metrics on cases with known answers: identical, inverted, shifted, constant."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eval_tiles import smooth_field

from napari_mupd.errors import EvalError, MetricWarning
from napari_mupd.eval.metrics import (
    dice,
    marker_correlation,
    patch_and_slide_pearson,
    pearson_r,
    psnr,
    ssim,
)
from napari_mupd.imaging.stains import dab_positive_mask


def test_identical_images_score_perfectly(ihc_image):
    tile = ihc_image[:128, :128]
    assert pearson_r(tile, tile.copy()) == pytest.approx(1.0)
    assert ssim(tile, tile.copy()) == pytest.approx(1.0)
    assert psnr(tile, tile.copy()) == math.inf
    mask = dab_positive_mask(tile)
    assert mask.any() and dice(mask, mask.copy()) == 1.0
    assert marker_correlation(tile, tile.copy(), "IHC") == pytest.approx([1.0])


def test_inverted_intensity_correlates_at_minus_one(ihc_image):
    grey = ihc_image[..., 1]
    assert pearson_r(grey, 255 - grey) == pytest.approx(-1.0)
    stack = np.stack([grey, 255 - grey], axis=-1).astype(np.float32) / 255
    pred = np.stack([grey / 255, grey / 255], axis=-1)
    np.testing.assert_allclose(marker_correlation(pred, stack, "mIF"), [1.0, -1.0])
    assert ssim(grey, 255 - grey) < 0


@pytest.mark.parametrize("shift", [1, 2, 4, 8])
def test_shift_lowers_r_ssim_and_psnr_as_predicted(shift):
    # A periodic smooth field with Gaussian autocorrelation exp(-d^2 / (4 sigma^2)); a
    # circular shift keeps mean and variance, so MSE = 2 var (1 - r) exactly.
    sigma = 4.0
    field = smooth_field(256, sigma)
    moved = np.roll(field, shift, axis=1)
    r = pearson_r(field, moved)
    assert r == pytest.approx(np.exp(-(shift**2) / (4 * sigma**2)), abs=0.05)
    assert psnr(field, moved) == pytest.approx(10 * np.log10(1 / (2 * field.var() * (1 - r))))
    s = ssim(field, moved)
    assert s < r  # SSIM also penalises local mean and contrast, not only structure
    assert s < ssim(field, np.roll(field, shift // 2, axis=1))


def test_constant_input_gives_nan_with_a_reason():
    flat, ramp = np.full((8, 8), 3.0), np.arange(64.0).reshape(8, 8)
    with pytest.warns(MetricWarning, match="constant"):
        assert math.isnan(pearson_r(flat, ramp))
    with pytest.warns(MetricWarning, match="both inputs are constant"):
        assert math.isnan(pearson_r(flat, flat))
    with pytest.warns(MetricWarning, match="1 finite"):
        assert math.isnan(pearson_r([1.0, np.nan], [2.0, 3.0]))
    assert ssim(flat, flat, data_range=10) == pytest.approx(1.0)


def test_nan_pixels_are_left_out():
    a = np.array([1.0, 2.0, 3.0, np.nan, 5.0])
    assert pearson_r(a, [2.0, 4.0, 6.0, 0.0, 10.0]) == pytest.approx(1.0)


def test_dice_cases():
    empty = np.zeros((4, 4), bool)
    assert dice(empty, empty) == 1.0
    left, top = empty.copy(), empty.copy()
    left[:, :2], top[:2] = True, True
    assert dice(left, ~left) == 0.0
    assert dice(left, top) == pytest.approx(0.5)  # 2 * 4 / (8 + 8)


def test_ssim_data_ranges_and_channels():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (32, 32)).astype(np.uint8)
    noisy = np.clip(grey + rng.normal(0, 20, grey.shape), 0, 255).astype(np.uint8)
    as_float = ssim(grey / 255, noisy / 255)
    assert ssim(grey, noisy) == pytest.approx(as_float, abs=1e-6)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    assert ssim(rgb, np.repeat(noisy[..., None], 3, axis=-1)) == pytest.approx(as_float)
    assert 0 < ssim(grey[:5, :5], noisy[:5, :5]) < 1  # a 5 px window where 7 does not fit
    with pytest.raises(EvalError, match="smaller"):
        ssim(grey[:2, :2], noisy[:2, :2])
    with pytest.raises(EvalError, match="shapes differ"):
        psnr(grey, rgb)


def test_patch_and_slide_levels_measure_different_things():
    base = np.random.default_rng(1).random((2, 8, 8))
    real = [base[i] + level for level in (0.0, 1.0, 2.0) for i in range(2)]
    ids = ["a", "a", "b", "b", "c", "c"]
    # Every patch is right up to its slide's brightness, which is reversed: perfect
    # patch-level r, slide-level r of -1.
    pred = [2 * t - 4 * level for t, level in zip(real, [0, 0, 1, 1, 2, 2], strict=True)]
    out = patch_and_slide_pearson(pred, real, ids)
    assert out.patch_r == pytest.approx(1.0)
    assert out.slide_r == pytest.approx(-1.0)
    assert out.pixel_r == pytest.approx(1.0)
    assert (out.n_patches, out.n_undefined, out.n_slides, out.notes) == (6, 0, 3, ())
    same = patch_and_slide_pearson(real, real, ids)
    assert same.patch_r == same.slide_r == pytest.approx(1.0)


def test_patch_and_slide_notes_explain_nans():
    real = [np.arange(16.0).reshape(4, 4), np.eye(4)]
    pred = [real[0] * 2, np.zeros((4, 4))]
    out = patch_and_slide_pearson(pred, real)
    assert out.patch_r == pytest.approx(1.0) and out.n_undefined == 1
    assert math.isnan(out.slide_r) and out.n_slides == 1
    assert any("1 of 2 patches" in n for n in out.notes)
    assert any("at least 3 slides" in n for n in out.notes)
    with pytest.raises(EvalError, match="slide ids"):
        patch_and_slide_pearson(pred, real, ["a"])
