"""Real against virtual stain metrics: identities, hand-computed values, masks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from skimage import data

from napari_mupd.errors import EvalError, MetricWarning
from napari_mupd.eval.compare import compare_stains
from napari_mupd.imaging.resize import resample
from napari_mupd.imaging.stains import compose_stains, stain_densities


@pytest.fixture(scope="module")
def ihc() -> np.ndarray:
    """A real 160 x 200 crop of scikit-image's colon IHC (DAB and haematoxylin)."""
    return np.ascontiguousarray(data.immunohistochemistry()[100:260, 150:350])


def test_identical_images_agree_perfectly(ihc):
    result = compare_stains(ihc, ihc.copy())
    assert result.kind == "IHC" and result.markers == ("DAB",)
    assert result.pearson == pytest.approx((1.0,))
    assert result.dice == 1.0 and result.ssim == pytest.approx(1.0)
    assert math.isinf(result.psnr)
    assert result.n_pixels == 160 * 200
    assert result.real_values.shape == result.virtual_values.shape == (160 * 200, 1)
    counts, real_edges, virtual_edges = result.histogram(bins=16)
    np.testing.assert_array_equal(real_edges, virtual_edges)
    assert counts.sum() == 160 * 200 and np.trace(counts) == counts.sum()
    assert [name for name, _ in result.rows()] == [
        "Pearson r (DAB)", "SSIM", "PSNR (dB)", "DAB Dice", "pixels"
    ]  # fmt: skip


def test_dab_rescaled_keeps_r_and_inverted_flips_it(ihc):
    densities = stain_densities(ihc)
    real = compose_stains(densities)
    halved, inverted = densities.copy(), densities.copy()
    halved[..., 2] = 0.5 * densities[..., 2] + 0.05
    inverted[..., 2] = densities[..., 2].max() - densities[..., 2]
    # uint8 rounding of the rendered images keeps r just short of +-1
    assert compare_stains(real, compose_stains(halved)).pearson[0] > 0.99
    assert compare_stains(real, compose_stains(inverted)).pearson[0] < -0.99


def test_mif_values_by_hand():
    rng = np.random.default_rng(0)
    real = rng.uniform(0, 1, (40, 50)).astype(np.float32)
    assert compare_stains(real, 2 * real + 0.1).pearson == pytest.approx((1.0,))
    assert compare_stains(real, 1 - real).pearson == pytest.approx((-1.0,))
    stack = np.stack([real, real**2], axis=-1)
    result = compare_stains(stack, np.stack([real, real], axis=-1), markers=("CD3", "CD8"))
    assert result.kind == "mIF" and result.markers == ("CD3", "CD8")
    expected = np.corrcoef(real.ravel() ** 2, real.ravel())[0, 1]
    assert result.pearson == pytest.approx((1.0, expected))
    assert math.isnan(result.dice)
    assert [name for name, _ in result.rows()][-1] == "pixels"


def test_psnr_and_dice_by_hand():
    real = np.full((32, 40, 3), 100, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)  # constant images: r is NaN
        result = compare_stains(real, real + np.uint8(10))
    assert result.psnr == pytest.approx(10 * np.log10(255**2 / 100))
    assert math.isnan(result.pearson[0])
    # DAB-positive: the left half of the real image, the left quarter of the virtual one
    brown = compose_stains(np.array([[[0.1, 0.0, 0.8]]], np.float32))[0, 0]
    blue = compose_stains(np.array([[[0.5, 0.0, 0.0]]], np.float32))[0, 0]
    real, virtual = np.empty((32, 40, 3), np.uint8), np.empty((32, 40, 3), np.uint8)
    real[:], virtual[:] = blue, blue
    real[:, :20], virtual[:, :10] = brown, brown
    assert compare_stains(real, virtual).dice == pytest.approx(2 * 10 / (20 + 10))


def test_pixels_outside_the_mask_do_not_count(ihc):
    rng = np.random.default_rng(1)
    virtual = rng.integers(0, 256, ihc.shape, dtype=np.uint8)
    mask = np.zeros(ihc.shape[:2], bool)
    mask[30:130, 40:160] = True
    virtual[mask] = ihc[mask]
    masked = compare_stains(ihc, virtual, mask)
    assert masked.pearson == pytest.approx((1.0,)) and masked.dice == 1.0
    assert math.isinf(masked.psnr) and masked.n_pixels == mask.sum()
    assert masked.ssim == pytest.approx(1.0)  # a rectangle: SSIM of the box it covers
    whole = compare_stains(ihc, virtual)
    assert whole.ssim < 0.7 and whole.pearson[0] < 0.9
    yy, xx = np.mgrid[:160, :200]
    disc = (yy - 80) ** 2 + (xx - 100) ** 2 < 45**2
    virtual = rng.integers(0, 256, ihc.shape, dtype=np.uint8)
    virtual[disc] = ihc[disc]
    masked = compare_stains(ihc, virtual, disc)
    assert masked.pearson == pytest.approx((1.0,)) and math.isinf(masked.psnr)
    # SSIM windows (7 px) at the disc's edge still see the noise outside it
    assert 0.85 < masked.ssim < 1.0


def test_bad_inputs(ihc):
    with pytest.raises(EvalError, match="shapes differ"):
        compare_stains(ihc, ihc[:-1])
    with pytest.raises(EvalError, match="no pixel"):
        compare_stains(ihc, ihc, np.zeros(ihc.shape[:2], bool))
    with pytest.raises(EvalError, match="mask is"):
        compare_stains(ihc, ihc, np.ones((3, 3), bool))
    with pytest.raises(EvalError, match="marker names"):
        compare_stains(np.zeros((8, 8, 2)), np.zeros((8, 8, 2)), markers=("CD3",))


def test_resample_shifts_and_marks_missing_pixels(ihc):
    shift = np.array([[1, 0, 2], [0, 1, 3], [0, 0, 1.0]])  # grid (r, c) -> image (r + 2, c + 3)
    out, valid = resample(ihc, shift, (100, 120), cval=255)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, ihc[2:102, 3:123])
    assert valid.all()
    out, valid = resample(ihc[..., 0].astype(np.float32), shift, (200, 220))
    assert out.dtype == np.float32 and out.shape == (200, 220)
    assert valid[:158, :197].all() and not valid[158:].any() and not valid[:, 197:].any()
