"""Automatic registration: real serial sections, a known synthetic map, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage.transform import AffineTransform, warp

from helpers import CMU1, LANDMARKS, SECTIONS
from napari_mupd import open_slide
from napari_mupd.engine.registration import (
    RegistrationError,
    read_landmarks,
    register_auto,
    register_landmarks,
)

NAME = "29-041-Izd2-w35-{}-les3"


def _section(stain: str) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(SECTIONS / f"{NAME.format(stain)}.jpg"))
    return image, read_landmarks(LANDMARKS / f"{NAME.format(stain)}.csv", scale=0.1)


def _warp_uint8(image: np.ndarray, transform: AffineTransform, shape) -> np.ndarray:
    """``image`` moved by ``transform`` onto a (h, w) grid, white outside."""
    out = warp(image, transform.inverse, output_shape=shape, cval=1.0)
    return (out * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def he() -> tuple[np.ndarray, np.ndarray]:
    return _section("He")


@pytest.mark.parametrize("marker", ["CD31-3", "Cc10-5", "Ki67-7", "proSPC-4"])
def test_serial_sections_register_as_well_as_landmarks(he, marker):
    fixed, fixed_xy = he
    moving, moving_xy = _section(marker)
    fit = register_auto(fixed, moving)
    auto = np.median(np.linalg.norm(fit.apply(moving_xy) - fixed_xy, axis=1))
    landmark = np.median(register_landmarks(moving_xy, fixed_xy).residuals)
    before = np.median(np.linalg.norm(moving_xy - fixed_xy, axis=1))
    # Measured (px at 5 %): auto 7.0 / 9.1 / 10.6 / 9.8 against the landmark affine's
    # 7.0 / 9.7 / 10.4 / 9.7 and 72 / 20 / 35 / 47 unregistered: an affine map cannot do
    # better on these non-rigidly deformed sections, so allow 25 % over the landmark fit.
    assert auto < 1.25 * landmark
    assert auto < 0.6 * before
    assert fit.score > 0.5
    assert fit.residuals.size == 0


def test_a_rotated_pale_section_registers(he):
    # Cc10 is the palest stain; rotating it adds white corners the H&E does not have.
    fixed, fixed_xy = he
    moving, moving_xy = _section("Cc10-5")
    h, w = moving.shape[:2]
    turn = AffineTransform(translation=(-w / 2, -h / 2)) + AffineTransform(
        rotation=np.radians(-37), translation=(600, 550)
    )
    rotated = _warp_uint8(moving, turn, (1100, 1200))
    fit = register_auto(fixed, rotated)
    error = np.median(np.linalg.norm(fit.apply(turn(moving_xy)) - fixed_xy, axis=1))
    assert error < 12


def test_recovers_a_known_affine_map_to_a_pixel():
    with open_slide(CMU1) as slide:
        fixed = slide.read_region((600, 900), 0, (512, 512))
    truth = AffineTransform(
        scale=(1.04, 0.97), rotation=np.radians(-25), shear=0.03, translation=(120, 60)
    )
    moving = _warp_uint8(fixed, AffineTransform(matrix=np.linalg.inv(truth.params)), (512, 512))
    fit = register_auto(fixed, moving)
    grid = np.stack(np.meshgrid(np.linspace(0, 511, 9), np.linspace(0, 511, 9)), -1).reshape(-1, 2)
    points = truth.inverse(grid)
    inside = ((points >= 0) & (points <= 511)).all(axis=1)
    assert inside.sum() > 20
    assert np.abs(fit.apply(points[inside]) - grid[inside]).max() < 1.0
    assert fit.score > 0.95


def test_unrelated_images_are_refused(he):
    fixed, _ = he
    rng = np.random.default_rng(0)
    with pytest.raises(RegistrationError, match="no reliable match"):
        register_auto(fixed, rng.integers(0, 256, fixed.shape, dtype=np.uint8))
    with pytest.raises(RegistrationError, match="no haematoxylin contrast"):
        register_auto(fixed, np.full_like(fixed, 240))
    with open_slide(CMU1) as slide:
        skin = slide.thumbnail(892)
    with pytest.raises(RegistrationError, match="no reliable match"):
        register_auto(fixed, skin)


def test_bad_inputs():
    with pytest.raises(RegistrationError, match="uint8 RGB"):
        register_auto(np.zeros((64, 64)), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(RegistrationError, match="too small"):
        register_auto(np.zeros((8, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8))
