"""The structure score: does a virtual stain keep the source's own nuclei?"""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import CMU1
from napari_mupd import open_slide
from napari_mupd.errors import EvalError
from napari_mupd.eval.structure import nuclear_channel, structure_score
from napari_mupd.imaging.stains import compose_stains, stain_densities


@pytest.fixture(scope="module")
def he() -> np.ndarray:
    with open_slide(CMU1) as slide:
        return slide.read_region((700, 1300), 0, (256, 256))


def ihc_of(he: np.ndarray, shift: int = 0) -> np.ndarray:
    """An IHC made of the H&E's own haematoxylin (half of it turned DAB), optionally moved."""
    h = np.roll(stain_densities(he)[..., 0], shift, axis=(0, 1))
    return compose_stains(np.stack([0.6 * h, np.zeros_like(h), 0.4 * h], -1))


def test_identity_scores_one_and_a_shift_scores_lower(he):
    same = structure_score(ihc_of(he), he)
    assert same > 0.99
    moved = [structure_score(ihc_of(he, s), he) for s in (4, 12)]
    assert same > moved[0] > moved[1]
    assert moved[1] < 0.5


def test_mif_uses_the_nuclear_channel(he):
    h = stain_densities(he)[..., 0]
    stack = np.stack([np.random.default_rng(0).random(h.shape), h], -1).astype(np.float32)
    assert structure_score(stack, he, channels=["CD8", "dapi"]) > 0.99
    assert abs(structure_score(stack, he, channels=["DAPI", "CD8"])) < 0.2
    assert nuclear_channel(["CD3", "Hoechst"]) == 1
    with pytest.raises(EvalError, match="no nuclear channel"):
        structure_score(stack, he, channels=["CD8", "CD3"])


def test_blank_and_mismatched_inputs_are_refused(he):
    glass = np.full_like(he, 245)
    with pytest.raises(EvalError, match="no tissue"):
        structure_score(ihc_of(he), glass)
    with pytest.raises(EvalError, match="one grid"):
        structure_score(ihc_of(he)[:128], he)
    assert math.isnan(structure_score(np.full_like(he, 200), he))  # nothing to correlate
