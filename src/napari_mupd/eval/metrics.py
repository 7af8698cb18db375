"""Paired image metrics: Pearson r of marker intensity, SSIM, PSNR and Dice.

Undefined values (a constant image has no correlation) come back as NaN with a
`MetricWarning` naming the reason, never as an exception; inputs that do not fit
together (different shapes, not RGB where RGB is needed) raise `EvalError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from skimage.metrics import structural_similarity

from napari_mupd.errors import EvalError, MetricWarning
from napari_mupd.eval._checks import same_shape
from napari_mupd.imaging.pixels import as_rgb
from napari_mupd.imaging.stains import dab_density

Kind = Literal["IHC", "mIF"]


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally shaped arrays, flattened.

    Positions where either value is NaN or infinite are left out. NaN with a
    `MetricWarning` when r is undefined: fewer than two finite pairs, or either side
    constant (zero variance).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    same_shape(a, b, "pearson_r")
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    reason = None
    if a.size < 2:
        reason = f"only {a.size} finite value pairs"
    elif np.ptp(a) == 0 or np.ptp(b) == 0:
        side = "both inputs are" if np.ptp(a) == np.ptp(b) == 0 else "an input is"
        reason = f"{side} constant (zero variance)"
    if reason is not None:
        warnings.warn(f"Pearson r is undefined: {reason}", MetricWarning, stacklevel=2)
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    r = float(np.dot(da, db) / np.sqrt(np.dot(da, da) * np.dot(db, db)))
    return min(1.0, max(-1.0, r))


def _data_range(image: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return float(info.max - info.min)
    return 1.0


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Structural similarity of two (h, w) or (h, w, c) images (channels last, averaged).

    ``data_range`` defaults to the integer dtype's range (255 for uint8) and to 1.0 for
    floats (images in [0, 1]). The window is 7 px, or the largest odd size that fits.
    """
    a, b = np.asarray(a), np.asarray(b)
    same_shape(a, b, "ssim")
    if a.ndim not in (2, 3):
        raise EvalError(f"ssim: expected an (h, w) or (h, w, c) image, got shape {a.shape}")
    win = min(7, *a.shape[:2])
    win -= 1 - win % 2
    if win < 3:
        raise EvalError(f"ssim: images of shape {a.shape} are smaller than a 3 px window")
    value = structural_similarity(
        a.astype(np.float64),
        b.astype(np.float64),
        data_range=_data_range(a, data_range),
        channel_axis=-1 if a.ndim == 3 else None,
        win_size=win,
    )
    return float(value)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for identical images); range as in `ssim`."""
    a, b = np.asarray(a), np.asarray(b)
    same_shape(a, b, "psnr")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(_data_range(a, data_range) ** 2 / mse))


def dice(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Dice overlap ``2|A∩B| / (|A| + |B|)`` of two boolean masks; 1.0 when both are empty."""
    a, b = np.asarray(mask_a, dtype=bool), np.asarray(mask_b, dtype=bool)
    same_shape(a, b, "dice")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int(np.logical_and(a, b).sum()) / total


def marker_intensity(tile: np.ndarray, kind: Kind) -> np.ndarray:
    """(h, w, k) float32 marker intensities of one tile.

    IHC: an (h, w, 3) uint8 RGB tile, k = 1, the DAB optical density from colour
    deconvolution (`imaging.stains.dab_density`). mIF: an (h, w, k) stack of k marker channels
    (or one (h, w) channel), used as they are.
    """
    if kind == "IHC":
        return dab_density(as_rgb(tile, "IHC tile"))[..., None]
    if kind == "mIF":
        tile = np.asarray(tile, dtype=np.float32)
        if tile.ndim == 2:
            return tile[..., None]
        if tile.ndim == 3:
            return tile
        raise EvalError(f"an mIF tile must be (h, w) or (h, w, markers), got {tile.shape}")
    raise EvalError(f"kind must be 'IHC' or 'mIF', not {kind!r}")


def marker_correlation(pred: np.ndarray, real: np.ndarray, kind: Kind) -> np.ndarray:
    """Pixel-wise Pearson r of marker intensity, one per marker: shape (1,) for IHC
    (DAB OD), (k,) for an mIF stack. NaN (with a warning) where a marker is constant."""
    p, r = marker_intensity(pred, kind), marker_intensity(real, kind)
    same_shape(p, r, "marker_correlation")
    return np.array([pearson_r(p[..., k], r[..., k]) for k in range(p.shape[-1])])


@dataclass(frozen=True)
class PearsonSummary:
    """Patch- and slide-level Pearson r of one marker, as the MuPD paper reports them.

    patch_r: mean over patches of each patch's pixel-wise r (patches where r is
    undefined are left out and counted in ``n_undefined``). slide_r: r across slides
    of each slide's mean intensity (pixel-weighted), defined from 3 slides on.
    pixel_r: pixel-wise r over all pixels of a slide's tiles, averaged over slides
    (with one slide, the whole-slide pixel r). ``notes`` says why a value is NaN.
    """

    patch_r: float
    slide_r: float
    pixel_r: float
    n_patches: int
    n_undefined: int
    n_slides: int
    notes: tuple[str, ...] = ()


def patch_and_slide_pearson(
    pred_tiles: Sequence[np.ndarray],
    real_tiles: Sequence[np.ndarray],
    slide_ids: Sequence[Hashable] | None = None,
) -> PearsonSummary:
    """Patch-level and slide-level r between predicted and real marker intensity maps.

    ``pred_tiles`` and ``real_tiles`` are matching (h, w) intensity maps (e.g. DAB OD
    from `marker_intensity`); ``slide_ids`` gives each pair's slide (one slide if None).
    """
    if len(pred_tiles) != len(real_tiles) or len(pred_tiles) == 0:
        raise EvalError(
            f"need equally many predicted and real tiles, got "
            f"{len(pred_tiles)} and {len(real_tiles)}"
        )
    ids = list(slide_ids) if slide_ids is not None else [0] * len(pred_tiles)
    if len(ids) != len(pred_tiles):
        raise EvalError(f"{len(ids)} slide ids for {len(pred_tiles)} tiles")
    preds = [np.asarray(t, dtype=np.float64) for t in pred_tiles]
    reals = [np.asarray(t, dtype=np.float64) for t in real_tiles]
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        patch = np.array([pearson_r(p, r) for p, r in zip(preds, reals, strict=True)])
        slides = list(dict.fromkeys(ids))
        pixel = []
        pred_means, real_means = [], []
        for slide in slides:
            members = [i for i, s in enumerate(ids) if s == slide]
            p = np.concatenate([preds[i].ravel() for i in members])
            r = np.concatenate([reals[i].ravel() for i in members])
            pixel.append(pearson_r(p, r))
            pred_means.append(np.nanmean(p))
            real_means.append(np.nanmean(r))
    undefined = int(np.isnan(patch).sum())
    if undefined:
        notes.append(
            f"{undefined} of {len(patch)} patches have a constant prediction or "
            "target: left out of patch_r"
        )
    patch_r = float(np.nanmean(patch)) if undefined < len(patch) else float("nan")
    slide_r = float("nan")
    if len(slides) < 3:
        notes.append(f"slide_r needs at least 3 slides, got {len(slides)}")
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MetricWarning)
            slide_r = pearson_r(np.array(pred_means), np.array(real_means))
        notes.extend(f"slide_r: {w.message}" for w in caught)
    pixel_r = float(np.nanmean(pixel)) if not np.isnan(pixel).all() else float("nan")
    if np.isnan(pixel).any():
        notes.append(f"pixel_r is undefined on {int(np.isnan(pixel).sum())} slide(s)")
    return PearsonSummary(
        patch_r, slide_r, pixel_r, len(patch), undefined, len(slides), tuple(notes)
    )
