"""One latent noise field over a whole slide grid, the same whoever draws a piece of it."""

from __future__ import annotations

import numpy as np

from napari_mupd.imaging.regions import Region

#: The field is drawn in square blocks of this many latent pixels, each from its own seed.
BLOCK = 32


def noise_window(seed: int, channels: int, window: Region) -> np.ndarray:
    """The (channels, h, w) ``window`` (in latent pixels) of the field of ``seed``.

    Each block is drawn from ``default_rng([seed, by, bx])``, so overlapping tiles,
    neighbouring chunks of a job and a rerun after a crash all see the same noise.
    """
    y, x, h, w = window.y, window.x, window.height, window.width
    out = np.empty((channels, h, w), np.float32)
    for by in range(y // BLOCK, (y + h - 1) // BLOCK + 1):
        for bx in range(x // BLOCK, (x + w - 1) // BLOCK + 1):
            block = np.random.default_rng([seed, by, bx]).standard_normal(
                (channels, BLOCK, BLOCK), dtype=np.float32
            )
            y0, x0 = max(y, by * BLOCK), max(x, bx * BLOCK)
            y1, x1 = min(y + h, (by + 1) * BLOCK), min(x + w, (bx + 1) * BLOCK)
            out[:, y0 - y : y1 - y, x0 - x : x1 - x] = block[
                :, y0 - by * BLOCK : y1 - by * BLOCK, x0 - bx * BLOCK : x1 - bx * BLOCK
            ]
    return out
