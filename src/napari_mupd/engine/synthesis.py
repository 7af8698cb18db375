"""Synthetic tissue from conditions (text, RNA, a reference tile), with progress and cancel."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_mupd.engine.sampling import Cancel, Progress, sample
from napari_mupd.engine.virtual_stain import Grid
from napari_mupd.errors import ConditionError
from napari_mupd.imaging.regions import Region
from napari_mupd.imaging.resize import fit_tile
from napari_mupd.io import Slide


def reference_tile(slide: Slide, region: Region, size: int, mpp: float | None) -> np.ndarray:
    """The region at the model's pixel size, centre-cropped and resized to ``size``."""
    grid = Grid.for_region(slide, region, mpp)
    pixels = grid.read(slide, Region(0, 0, grid.shape[1], grid.shape[0]))
    return fit_tile(pixels, size)


def synthesize(
    pipe: Any,
    *,
    text: str | None = None,
    rna: Any = None,
    reference: np.ndarray | None = None,
    num_images: int = 4,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | dict[str, float] = 1.0,
    progress: Progress | None = None,
    cancel: Cancel = lambda: False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``num_images`` H&E tiles (N, H, W, 3) in [0, 1] and their provenance.

    Raises :class:`~napari_mupd.errors.ConditionError` when no condition is given (an
    empty prompt counts as none) and :class:`~napari_mupd.errors.Cancelled` when
    ``cancel`` turns true (checked every step).
    """
    text = text.strip() if isinstance(text, str) else text
    if not text and rna is None and reference is None:
        raise ConditionError("give a prompt, an RNA profile or a reference tile")
    if isinstance(guidance, dict):  # scales for the conditions given only
        given = {"text": bool(text), "rna": rna is not None, "image": reference is not None}
        guidance = {m: g for m, g in guidance.items() if given[m]}
    out = sample(
        pipe,
        cancel,
        progress,
        steps or pipe.config.default_steps["H&E"],
        text=text or None,
        rna=rna,
        image=reference,
        target="H&E",
        num_images=num_images,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=seed,
    )
    meta = {**out.provenance(), "text": text or None}
    return np.asarray(out.images, np.float32), meta


def mosaic(images: np.ndarray, columns: int | None = None, gap: int = 4) -> np.ndarray:
    """Tiles (N, H, W, C) in a grid with white gaps, row by row."""
    n, h, w, c = images.shape
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.ones((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, c), images.dtype)
    if images.dtype == np.uint8:
        out *= 255
    for i, tile in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = tile
    return out
