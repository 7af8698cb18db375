"""Colour deconvolution: DAB where the real IHC is brown, haematoxylin where it is blue."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mupd.errors import EvalError
from napari_mupd.imaging.stains import (
    compose_stains,
    dab_density,
    dab_positive_mask,
    hematoxylin_density,
    stain_densities,
)


@pytest.fixture(scope="module")
def ihc(ihc_image):
    """The real colon IHC and its brown and blue pixels, picked by colour alone (brown:
    red well above blue; blue nuclei: the reverse)."""
    rgb = ihc_image
    r, b = rgb[..., 0].astype(int), rgb[..., 2].astype(int)
    return rgb, r - b > 40, (b - r > 30) & (rgb.sum(axis=-1) < 500)


def test_dab_is_high_on_brown_and_low_on_blue_nuclei(ihc):
    rgb, brown, blue = ihc
    assert brown.mean() > 0.2 and blue.mean() > 0.005  # ~2,000 blue-nucleus pixels
    dab, h = dab_density(rgb), hematoxylin_density(rgb)
    assert dab.dtype == np.float32 and dab.shape == rgb.shape[:2]
    assert dab[brown].mean() > 4 * dab[blue].mean()
    assert h[blue].mean() > 2 * h[brown].mean()


def test_positive_mask_follows_the_brown_stain(ihc):
    rgb, brown, blue = ihc
    mask = dab_positive_mask(rgb)
    assert mask[brown].mean() > 0.85 and mask[blue].mean() < 0.05
    otsu = dab_positive_mask(rgb, "otsu")
    assert otsu[brown].mean() > 0.8 and otsu[blue].mean() < 0.05
    assert not dab_positive_mask(rgb, threshold=10.0).any()
    white = np.full((16, 16, 3), 255, np.uint8)
    assert not dab_positive_mask(white, "otsu").any()
    with pytest.raises(EvalError, match="otsu"):
        dab_positive_mask(rgb, "Otsu")


def test_compose_inverts_deconvolution():
    densities = np.zeros((4, 5, 3), np.float32)
    densities[..., 0] = np.linspace(0, 0.6, 5)
    densities[..., 2] = np.linspace(0, 0.8, 4)[:, None]
    rgb = compose_stains(densities)
    np.testing.assert_allclose(stain_densities(rgb), densities, atol=0.02)
    assert dab_density(compose_stains(densities * [1, 0, 0])).max() < 0.02


def test_rejects_non_rgb():
    with pytest.raises(EvalError, match="uint8 RGB"):
        dab_density(np.zeros((8, 8), np.uint8))
    with pytest.raises(EvalError, match="uint8 RGB"):
        dab_density(np.zeros((8, 8, 3), np.float32))
