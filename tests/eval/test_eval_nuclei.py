"""Nuclei counts and sizes on images with a known number of dark discs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eval_tiles import PURPLE, discs

from napari_mupd.errors import EvalError, MetricWarning
from napari_mupd.eval.nuclei import (
    composition_distance,
    nuclei_stats,
    segment_nuclei,
)

GRID = [(20 + 40 * i, 20 + 40 * j) for i in range(5) for j in range(5)]


@pytest.fixture(scope="module")
def nuclei_tile():
    """25 purple discs of radius 7 px on pink, with mild noise."""
    image = discs((200, 200), GRID, 7, PURPLE)
    noise = np.random.default_rng(0).normal(0, 4, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_counts_separate_discs(nuclei_tile):
    labels = segment_nuclei(nuclei_tile)
    assert labels.max() == 25
    assert len(np.unique(labels[tuple(np.array(GRID).T)])) == 25  # one label per disc


def test_watershed_splits_touching_nuclei():
    pair = discs((80, 120), [(40, 45), (40, 58)], 8, PURPLE)
    assert segment_nuclei(pair).max() == 2
    assert segment_nuclei(np.full((40, 40, 3), 250, np.uint8)).max() == 0


def test_stats_in_pixels_and_microns(nuclei_tile):
    px = nuclei_stats(nuclei_tile)
    assert px["count"] == 25 and px["area_unit"] == "px" and math.isnan(px["density_per_mm2"])
    assert px["median_area"] == pytest.approx(np.pi * 7**2, rel=0.15)
    um = nuclei_stats(nuclei_tile, mpp=0.5)
    assert um["area_unit"] == "um^2"
    assert um["mean_area"] == pytest.approx(px["mean_area"] * 0.25, rel=0.15)
    # 25 nuclei on (200 px * 0.5 um)^2 = 0.01 mm^2
    assert um["density_per_mm2"] == pytest.approx(2500)
    pooled = nuclei_stats([nuclei_tile, nuclei_tile])
    assert pooled["count"] == 50 and pooled["area_px"] == 2 * px["area_px"]


def test_composition_distance(nuclei_tile):
    same = nuclei_stats(nuclei_tile)
    assert composition_distance(same, same) == 0.0
    fewer = nuclei_stats(discs((200, 200), GRID[:10], 7, PURPLE))
    bigger = nuclei_stats(discs((200, 200), GRID, 10, PURPLE))
    assert composition_distance(fewer, same) == pytest.approx(15 / 25, abs=0.05)
    assert composition_distance(bigger, same) > 0.5  # areas about twice as large
    empty = nuclei_stats(np.full((200, 200, 3), 250, np.uint8))
    assert composition_distance(empty, empty) == 0.0
    with pytest.warns(MetricWarning, match="no nuclei"):
        assert math.isnan(composition_distance(empty, same))
    with pytest.raises(EvalError, match="same mpp"):
        composition_distance(same, nuclei_stats(nuclei_tile, mpp=0.5))
