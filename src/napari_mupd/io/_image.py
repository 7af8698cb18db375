"""Flat images (PNG, JPEG, BMP, ...): decoded once on first use, pyramid computed lazily."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from napari_mupd.errors import SlideError
from napari_mupd.imaging.pixels import to_rgb_uint8
from napari_mupd.io._backend import BackendInfo, Level

_TILE = (512, 512)


class ImageBackend:
    """One-level slide from an image file that has no random access."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with Image.open(path) as image:
                width, height = image.size
                dpi = image.info.get("dpi")
        except (OSError, Image.DecompressionBombError) as exc:
            raise SlideError(f"not a readable image: {exc}") from exc
        self._pixels: np.ndarray | None = None
        self._lock = threading.Lock()
        mpp = None
        if dpi and dpi[0] > 1000:  # only scanner-grade resolutions are meaningful
            mpp = (25400.0 / dpi[1], 25400.0 / dpi[0])
        self.info = BackendInfo(
            vendor="image",
            levels=[Level((height, width), 1.0, _TILE)],
            mpp=mpp,
            extra={"format": Image.registered_extensions().get(path.suffix.lower(), "")},
        )

    def _load(self) -> np.ndarray:
        with self._lock:
            if self._pixels is None:
                Image.MAX_IMAGE_PIXELS = None  # the user asked for this file
                try:
                    with Image.open(self.path) as image:
                        mode = "RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB"
                        self._pixels = to_rgb_uint8(np.asarray(image.convert(mode)))
                except OSError as exc:
                    raise SlideError(f"{self.path}: image data cannot be decoded: {exc}") from exc
            return self._pixels

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Pixels [y:y+h, x:x+w] of the image."""
        return self._load()[y : y + h, x : x + w]

    def close(self) -> None:
        """Drop the decoded pixels."""
        self._pixels = None
