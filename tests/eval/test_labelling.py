"""Ki67 labelling index: generated nuclei with an exact answer, and a real Ki67 tile
counted by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_mupd.errors import EvalError
from napari_mupd.eval.labelling import KI67_THRESHOLD, LabellingIndex, labelling_index
from napari_mupd.imaging.stains import compose_stains

#: tests/data/ki67_os2_patch.png: 160 x 160 px at 0.5 um/px of a Ki67 IHC (OpenSlide's
#: freely distributable OS-2 test slide, see tests/data/README.md).
KI67_PATCH = Path(__file__).resolve().parents[1] / "data" / "ki67_os2_patch.png"

BROWN = (0.2, 0.0, 0.5)  # haematoxylin, eosin, DAB optical densities
WEAK = (0.5, 0.0, 0.1)  # a blue nucleus with a little DAB: below the threshold
BLUE = (0.6, 0.0, 0.0)


def _discs(kinds: list[tuple[float, float, float]], radius: int = 7) -> np.ndarray:
    """Nuclei as discs on glass, in a row every 24 px, rendered from stain densities."""
    densities = np.zeros((32, 24 * len(kinds), 3), np.float32)
    yy, xx = np.mgrid[:32, : densities.shape[1]]
    for i, kind in enumerate(kinds):
        densities[(yy - 16) ** 2 + (xx - 12 - 24 * i) ** 2 <= radius**2] = kind
    return compose_stains(densities)


def test_generated_nuclei_give_the_exact_index():
    image = _discs([BROWN, BLUE, BROWN, WEAK, BLUE, BROWN, BLUE, BLUE, BROWN, BLUE])
    result = labelling_index(image, mpp=0.5)
    assert (result.positive, result.total, result.negative) == (4, 10, 6)
    assert result.index == 40.0
    assert str(result) == "40 % (4 of 10 nuclei)"
    # a mask over the first five discs (and half of nothing else): 2 of 5
    mask = np.zeros(image.shape[:2], bool)
    mask[:, : 24 * 5] = True
    assert labelling_index(image, mpp=0.5, mask=mask) == LabellingIndex(2, 5)
    # the threshold decides: at 0.05 the weak nucleus is positive too
    assert labelling_index(image, mpp=0.5, threshold=0.05).positive == 5


def test_no_nuclei_and_bad_inputs():
    empty = labelling_index(np.full((40, 40, 3), 245, np.uint8))
    assert empty.total == 0 and math.isnan(empty.index) and str(empty) == "no nuclei"
    assert empty.threshold == KI67_THRESHOLD
    with pytest.raises(EvalError):
        labelling_index(np.zeros((40, 40), np.float32))
    with pytest.raises(EvalError, match="mask is"):
        labelling_index(_discs([BLUE]), mask=np.ones((3, 3), bool))


def test_real_ki67_tile_against_a_hand_count():
    """Counted by eye on the tile enlarged 5x and 8x with a 20 px grid (each nucleus by
    where its centre lies; nuclei cut by the edge counted when about half is inside):

    - positive, brown: 6, at (x, y) ~ (24, 15), (28, 66), (97, 44), (147, 100),
      (69, 146) and (103, 148) (the last dark violet-brown); two brown slivers at the
      left edge, (0, 128) and (5, 157), are mostly outside and not counted;
    - negative, clearly blue: 18;
    - negative, pale out-of-focus blue "ghosts": 9.

    Index: 6 / 33 = 18 % of all nuclei (6 / 24 = 25 % of the clear ones). The
    segmentation finds 32 nuclei, 7 positive (22 %): the merged or split ones roughly
    cancel (a brown nucleus and its blue neighbours counted as one, a blue one split).
    """
    tile = np.asarray(Image.open(KI67_PATCH).convert("RGB"))
    assert tile.shape == (160, 160, 3)
    positive, nuclei = 6, 6 + 18 + 9
    result = labelling_index(tile, mpp=0.5)
    assert abs(result.index - 100 * positive / nuclei) <= 10  # percentage points
    assert abs(result.total - nuclei) <= 0.25 * nuclei
    assert abs(result.positive - positive) <= 2
