"""A real stain against a virtual one on the same pixel grid: the numbers behind the
"Compare stains" dock (Qt-free, numpy in).

IHC pairs are (h, w, 3) uint8 RGB images: the marker is the DAB density from colour
deconvolution (`imaging.stains.dab_density`), SSIM and PSNR are on RGB, and Dice compares the
DAB-positive masks (`imaging.stains.dab_positive_mask`, one fixed threshold for both). mIF pairs
are (h, w) or (h, w, k) marker intensities used as they are; SSIM and PSNR use the span
of both images' values as their data range, and Dice is NaN (there is no positive mask
every panel agrees on), as in `report.evaluate_pairs`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.metrics import structural_similarity

from napari_mupd.errors import EvalError
from napari_mupd.eval._checks import same_shape
from napari_mupd.eval.metrics import Kind, dice, marker_intensity, pearson_r, psnr, ssim
from napari_mupd.imaging.stains import dab_positive_mask


@dataclass(frozen=True)
class Comparison:
    """Agreement of a real and a virtual stain over the compared pixels.

    ``pearson`` holds one pixel-wise r per marker; ``real_values`` and
    ``virtual_values`` are the (n, markers) marker intensities of the n compared pixels,
    for a scatter plot or a 2-D histogram.
    """

    kind: Kind
    markers: tuple[str, ...]
    pearson: tuple[float, ...]
    ssim: float
    psnr: float
    dice: float
    real_values: np.ndarray
    virtual_values: np.ndarray

    @property
    def n_pixels(self) -> int:
        """Number of compared pixels."""
        return len(self.real_values)

    def rows(self) -> list[tuple[str, float]]:
        """(metric, value) pairs in display order: r per marker, SSIM, PSNR, Dice, pixels."""
        rows = [(f"Pearson r ({m})", r) for m, r in zip(self.markers, self.pearson, strict=True)]
        rows += [("SSIM", self.ssim), ("PSNR (dB)", self.psnr)]
        if self.kind == "IHC":
            rows.append(("DAB Dice", self.dice))
        return [*rows, ("pixels", float(self.n_pixels))]

    def histogram(self, marker: int = 0, bins: int = 64) -> tuple[np.ndarray, ...]:
        """2-D histogram (counts[real bin, virtual bin], real edges, virtual edges)."""
        real, virtual = self.real_values[:, marker], self.virtual_values[:, marker]
        finite = np.isfinite(real) & np.isfinite(virtual)
        return np.histogram2d(real[finite], virtual[finite], bins=bins)


def compare_stains(
    real: np.ndarray,
    virtual: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    markers: tuple[str, ...] | None = None,
) -> Comparison:
    """Compare a real and a virtual image on the same grid, over ``mask`` if given.

    Both (h, w, 3) uint8 makes an IHC comparison; anything else is mIF (marker
    intensities). ``mask`` (h, w) says which pixels count (e.g. where a registered real
    section has data). ``markers`` names the mIF channels ("DAB" for IHC).
    """
    real, virtual = np.asarray(real), np.asarray(virtual)
    same_shape(real, virtual, "compare_stains")
    rgb = real.ndim == 3 and real.shape[2] == 3 and real.dtype == virtual.dtype == np.uint8
    kind: Kind = "IHC" if rgb else "mIF"
    valid = _valid(mask, real.shape[:2])
    real_values = marker_intensity(real, kind)[valid]
    virtual_values = marker_intensity(virtual, kind)[valid]
    k = real_values.shape[1]
    names = ("DAB",) if kind == "IHC" else tuple(markers or (f"marker {i}" for i in range(k)))
    if len(names) != k:
        raise EvalError(f"{len(names)} marker names for {k} channels")
    pearson = tuple(pearson_r(real_values[:, i], virtual_values[:, i]) for i in range(k))
    if kind == "IHC":
        data_range = None
        overlap = dice(dab_positive_mask(real)[valid], dab_positive_mask(virtual)[valid])
    else:
        real, virtual = real.astype(np.float64), virtual.astype(np.float64)
        both = np.concatenate([real[valid].ravel(), virtual[valid].ravel()])
        data_range, overlap = float(np.ptp(both)) or 1.0, math.nan
    return Comparison(
        kind=kind,
        markers=names,
        pearson=pearson,
        ssim=_masked_ssim(real, virtual, valid, data_range),
        psnr=psnr(real[valid], virtual[valid], data_range),
        dice=overlap,
        real_values=real_values,
        virtual_values=virtual_values,
    )


def _valid(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` as a boolean (h, w) array (all True if None); at least one pixel set."""
    if mask is None:
        return np.ones(shape[:2], bool)
    mask = np.asarray(mask, bool)
    if mask.shape != tuple(shape[:2]):
        raise EvalError(f"the mask is {mask.shape}, the images {tuple(shape[:2])}")
    if not mask.any():
        raise EvalError("the mask leaves no pixel to compare")
    return mask


def _masked_ssim(
    real: np.ndarray, virtual: np.ndarray, valid: np.ndarray, data_range: float | None
) -> float:
    """`metrics.ssim`, or with a partial mask the SSIM map averaged over the mask."""
    if valid.all():
        return ssim(real, virtual, data_range)
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    real, virtual, valid = real[box], virtual[box], valid[box]
    win = min(7, *real.shape[:2])
    win -= 1 - win % 2
    if win < 3:
        raise EvalError(f"ssim: the masked region {real.shape[:2]} is under a 3 px window")
    _, full = structural_similarity(
        real.astype(np.float64),
        virtual.astype(np.float64),
        data_range=255.0 if data_range is None else data_range,
        channel_axis=-1 if real.ndim == 3 else None,
        win_size=win,
        full=True,
    )
    per_pixel = full.mean(axis=-1) if full.ndim == 3 else full
    return float(per_pixel[valid].mean())
