"""Pixel conversions: float images to uint8, anything brightfield to RGB uint8."""

from __future__ import annotations

import numpy as np

from napari_mupd.errors import EvalError, MuPDError, SlideError


def to_uint8(image: np.ndarray, *, nan: float = 0.0) -> np.ndarray:
    """A float image in [0, 1] as uint8, rounded; values outside are clipped.

    NaN (e.g. pixels no tile covered) becomes ``nan`` first. This is the one float ->
    uint8 conversion of the package.
    """
    image = np.nan_to_num(np.asarray(image), nan=nan)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Return a (h, w, 3) uint8 RGB view or copy of a (h, w[, c]) image.

    Grey is repeated into three channels, RGBA is composited over white and
    16-bit data is scaled to 8 bit. Raises :class:`~napari_mupd.errors.SlideError` for
    other layouts (pixels that are not brightfield).
    """
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise SlideError(f"expected a (h, w, 1-4) image, got shape {array.shape}")
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        raise SlideError(f"expected 8- or 16-bit brightfield pixels, got {array.dtype}")
    channels = array.shape[2]
    if channels == 3:
        return array
    if channels in (2, 4):
        return composite_over_white(array[..., :-1], array[..., -1])
    return np.repeat(array, 3, axis=2)


def composite_over_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite straight (non-premultiplied) uint8 colour over white; returns RGB."""
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    a = alpha.astype(np.uint16)[..., None]
    out = (color.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def as_rgb(
    image: np.ndarray, name: str = "image", error: type[MuPDError] = EvalError
) -> np.ndarray:
    """``image`` as an (h, w, 3) uint8 array, or ``error`` saying what it is instead."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise error(
            f"{name}: expected an (h, w, 3) uint8 RGB image, got {image.dtype} {image.shape}"
        )
    return image
