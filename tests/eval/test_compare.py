"""Real against virtual stain metrics: identities, hand-computed values, masks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from skimage import data

from napari_mupd.errors import EvalError, MetricWarning
from napari_mupd.eval.compare import (
    READING_GUIDE,
    compare_stains,
    format_count,
    format_db,
    format_score,
)
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


def test_tissue_only_leaves_the_glass_out(ihc):
    """The same tissue on both sides and glass beside it that differs: over tissue only
    the pair agrees; with the glass the scores drop."""
    real = np.full((160, 320, 3), 242, np.uint8)  # glass on the right
    real[:, :200] = ihc
    rng = np.random.default_rng(2)
    virtual = rng.integers(0, 256, real.shape, dtype=np.uint8)  # brown and blue on glass
    virtual[:, :200] = ihc
    tissue = compare_stains(real, virtual, tissue_only=True)
    whole = compare_stains(real, virtual)
    assert tissue.tissue_only and not whole.tissue_only
    assert tissue.pearson[0] > 0.99 and tissue.dice > 0.99
    assert whole.pearson[0] < 0.8 and whole.ssim < tissue.ssim - 0.2
    assert 0.3 * 160 * 200 < tissue.n_pixels <= 160 * 200 < whole.n_pixels
    names = [name for name, _ in tissue.formatted_rows()]
    assert names[-1] == "tissue pixels" and names[-2] == "DAB Dice"
    with pytest.raises(EvalError, match="no tissue"):
        compare_stains(real[:, 220:], virtual[:, 220:], tissue_only=True)
    # mIF intensities have no glass to find: compared as they are
    mif = compare_stains(real[..., 0].astype(np.float32), real[..., 1], tissue_only=True)
    assert not mif.tissue_only and mif.n_pixels == 160 * 320


def test_numbers_are_written_for_people():
    assert [format_score(v) for v in (0.0652, -0.1234, 1.0, math.nan)] == [
        "0.07", "-0.12", "1.00", "n/a"
    ]  # fmt: skip
    assert [format_db(v) for v in (14.234, math.inf, math.nan)] == [
        "14.2 dB", "identical", "n/a"
    ]  # fmt: skip
    assert [format_count(v) for v in (950, 12_345, 999_999, 5_700_000.0)] == [
        "950", "12.3 k", "1.0 M", "5.7 M"
    ]  # fmt: skip
    real = compose_stains(np.array([[[0.5, 0.0, 0.0]]], np.float32).repeat(40, 0).repeat(40, 1))
    virtual, brown = real.copy(), compose_stains(np.array([[[0.1, 0.0, 0.8]]], np.float32))[0, 0]
    real[5:15, 5:15], virtual[10:30, 10:30] = brown, brown  # 25 px overlap
    result = compare_stains(real, virtual)
    summary = result.summary()
    assert summary.startswith("r ") and summary.endswith(" pixels")
    assert "e-0" not in summary and "e+0" not in summary
    rows = dict(result.formatted_rows())
    assert rows["pixels"] == "1.6 k" and rows["PSNR"].endswith(" dB")
    assert rows["DAB Dice"] == "0.10" and rows["Pearson r (DAB)"] == format_score(result.pearson[0])
    assert "r near 1" in READING_GUIDE and "serial section" in READING_GUIDE
