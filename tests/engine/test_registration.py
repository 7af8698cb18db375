"""Landmark registration: exact on synthetic transforms, useful on the real serial sections."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage.transform import AffineTransform

from helpers import DATA
from napari_mupd.engine.registration import (
    RegistrationError,
    read_landmarks,
    register_landmarks,
)

SECTIONS = DATA / "serial_sections" / "mouse_lung_lesion3"
LANDMARKS = SECTIONS / "landmarks_50pc" / "user-PS_scale-50pc"


def test_recovers_a_known_affine_map():
    rng = np.random.default_rng(1)
    truth = AffineTransform(scale=(1.1, 0.95), rotation=0.2, shear=0.05, translation=(30, -12))
    moving = rng.uniform(0, 500, (20, 2))
    fit = register_landmarks(moving, truth(moving))
    np.testing.assert_allclose(fit.matrix, truth.params, atol=1e-9)
    assert fit.residuals.max() < 1e-6


def test_warp_puts_moving_pixels_where_the_map_says():
    image = np.zeros((100, 120, 3), np.uint8)
    image[40:50, 30:45] = 200
    fit = register_landmarks(np.array([[0, 0], [100, 0], [0, 100]]),
                             np.array([[10, 5], [110, 5], [10, 105]]))  # fmt: skip
    warped = fit.warp(image, (100, 120), cval=0)
    np.testing.assert_array_equal(warped[45:55, 40:55], image[40:50, 30:45])
    valid = fit.valid_mask((100, 120), (100, 120))
    assert not valid[:5].any() and valid[5:, 10:].all()


@pytest.mark.parametrize("marker", ["CD31-3", "Cc10-5", "Ki67-7", "proSPC-4"])
def test_serial_sections_register_from_landmarks(marker):
    fixed = read_landmarks(LANDMARKS / "29-041-Izd2-w35-He-les3.csv", scale=0.1)
    moving = read_landmarks(LANDMARKS / f"29-041-Izd2-w35-{marker}-les3.csv", scale=0.1)
    before = np.median(np.linalg.norm(moving - fixed, axis=1))
    fit = register_landmarks(moving, fixed)
    after = np.median(fit.residuals)
    # Sections deform non-rigidly: an affine map leaves ~7-10 px (about 1 % of the
    # 892 px image, i.e. 70-100 um at 5 % scale) of the 20-73 px misalignment.
    assert after < 11
    assert after < before / 1.8
    he = np.asarray(Image.open(SECTIONS / "29-041-Izd2-w35-He-les3.jpg"))
    ihc = np.asarray(Image.open(SECTIONS / f"29-041-Izd2-w35-{marker}-les3.jpg"))
    warped = fit.warp(ihc, he.shape[:2])
    assert warped.shape == he.shape and warped.dtype == np.uint8


def test_bad_landmarks(tmp_path):
    with pytest.raises(RegistrationError, match="at least 3"):
        register_landmarks(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(RegistrationError, match="equal length"):
        register_landmarks(np.zeros((4, 2)), np.zeros((5, 2)))
    with pytest.raises(RegistrationError, match="degenerate"):
        register_landmarks(np.ones((4, 2)), np.ones((4, 2)))
    (tmp_path / "l.csv").write_text("a,b\n1,2\n")
    with pytest.raises(RegistrationError, match="X and Y"):
        read_landmarks(tmp_path / "l.csv")
