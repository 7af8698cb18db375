"""Fixtures of the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data


@pytest.fixture(scope="session")
def ihc_image() -> np.ndarray:
    """scikit-image's real 512 x 512 colon IHC (DAB + haematoxylin)."""
    return data.immunohistochemistry()
