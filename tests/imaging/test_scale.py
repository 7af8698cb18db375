"""Pixel size from nuclear size, on real tiles of known pixel size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage.transform import rescale

from helpers import CMU1, DATA
from napari_mupd.errors import SlideError
from napari_mupd.imaging.scale import estimate_mpp
from napari_mupd.io.slide import open_slide


def test_pixel_size_is_estimated_from_nuclear_size():
    """Within 30 % of the truth on real tiles of known pixel size, and a 2x smaller copy
    reads about 2x coarser (the estimate follows the scale, whatever the tissue)."""
    with open_slide(CMU1) as slide:
        cmu = np.asarray(slide.read_region((600, 600), 0, (1000, 1000)))[..., :3]
    crc = Image.open(DATA / "tiles/labeled/CRC-VAL-HE-7K-NORM-TCGA-YLVCMEHK.tif")
    for rgb, mpp in ((cmu, 0.499), (np.asarray(crc.convert("RGB")), 0.5)):
        estimate = estimate_mpp(rgb)
        assert mpp / 1.3 < estimate < mpp * 1.3
        half = (rescale(rgb, 0.5, channel_axis=2, anti_aliasing=True) * 255).astype(np.uint8)
        assert estimate_mpp(half) / estimate == pytest.approx(2.0, rel=0.25)


def test_pixel_size_needs_nuclei():
    with pytest.raises(SlideError, match="no nuclei"):
        estimate_mpp(np.full((64, 64, 3), 240, np.uint8))
