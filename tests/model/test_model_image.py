from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from napari_mupd.errors import ConditionError
from napari_mupd.model import image_to_tensor


def test_uint8_float_pil_and_torch_agree() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    ref = image_to_tensor(arr)
    assert ref.shape == (1, 3, 16, 16) and ref.dtype == torch.float32
    assert float(ref.max()) <= 1.0
    torch.testing.assert_close(image_to_tensor(arr / 255.0), ref)
    torch.testing.assert_close(image_to_tensor(Image.fromarray(arr)), ref)
    torch.testing.assert_close(image_to_tensor(torch.from_numpy(arr)), ref)
    assert image_to_tensor([arr, arr]).shape == (2, 3, 16, 16)


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.zeros((32, 32, 3), np.uint8), {"size": 64}, "expected 64x64 px tiles, got 32x32"),
        (np.zeros((64, 64, 3), np.int16), {}, "dtype int16 not supported"),
        (np.full((64, 64, 3), 2.0), {}, r"must lie in \[0, 1\]"),
        (np.zeros((64, 64, 4), np.uint8), {}, "drop the alpha channel"),
        (np.zeros((64, 64), np.uint8), {}, r"got shape \(64, 64\)"),
        (np.zeros((60, 64, 3), np.uint8), {"multiple_of": 16}, "multiples of 16 px, got 60x64"),
        (np.full((8, 8, 3), np.nan), {}, "NaN"),
        ("tile.png", {}, "got str"),
    ],
)
def test_bad_images_are_condition_errors(image: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        image_to_tensor(image, **kwargs)
