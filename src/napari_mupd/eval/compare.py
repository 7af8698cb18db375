"""A real stain against a virtual one on the same pixel grid: the numbers behind the
"Compare stains" dock (Qt-free, numpy in).

IHC pairs are (h, w, 3) uint8 RGB images: the marker is the DAB density from colour
deconvolution (`imaging.stains.dab_density`), SSIM and PSNR are on RGB, and Dice compares the
DAB-positive masks (`imaging.stains.dab_positive_mask`, one fixed threshold for both). mIF pairs
are (h, w) or (h, w, k) marker intensities used as they are; SSIM and PSNR use the span
of both images' values as their data range, and Dice is NaN (there is no positive mask
every panel agrees on), as in `report.evaluate_pairs`.

With ``tissue_only``, an IHC pair is compared where the real image has tissue
(`imaging.tissue.tissue_mask`): glass agrees with glass, and counting it would raise every
score with the share of background in the region. `Comparison.formatted_rows` and
`Comparison.summary` write the numbers for people ("r 0.07", "5.7 M"), and
`READING_GUIDE` says in one line what good values are.
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
from napari_mupd.imaging.tissue import tissue_mask

#: What the numbers mean, in one line (shown under the metrics).
READING_GUIDE = (
    "r near 1: the same pattern of stain, 0: unrelated (SSIM, Dice: 1 is identical). "
    "A serial section holds other cells, so r stays low even for a good stain: compare "
    "pairs of the same kind (user guide, Compare stains)."
)


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
    tissue_only: bool = False

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

    def formatted_rows(self) -> list[tuple[str, str]]:
        """`rows` written for people: "0.07", "14.2 dB", "5.7 M" (tissue pixels with
        ``tissue_only``)."""
        out = []
        for name, value in self.rows():
            if name == "pixels":
                out.append(("tissue pixels" if self.tissue_only else name, format_count(value)))
            elif name.startswith("PSNR"):
                out.append(("PSNR", format_db(value)))
            else:
                out.append((name, format_score(value)))
        return out

    def summary(self) -> str:
        """One line: "r 0.07 · SSIM 0.18 · PSNR 14.2 dB · Dice 0.31 · 5.7 M tissue pixels"."""
        rs = [
            f"r{'' if len(self.markers) == 1 else f' ({m})'} {format_score(r)}"
            for m, r in zip(self.markers, self.pearson, strict=True)
        ]
        parts = [*rs, f"SSIM {format_score(self.ssim)}", f"PSNR {format_db(self.psnr)}"]
        if self.kind == "IHC":
            parts.append(f"Dice {format_score(self.dice)}")
        where = "tissue pixels" if self.tissue_only else "pixels"
        return " · ".join([*parts, f"{format_count(self.n_pixels)} {where}"])

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
    tissue_only: bool = False,
) -> Comparison:
    """Compare a real and a virtual image on the same grid, over ``mask`` if given.

    Both (h, w, 3) uint8 makes an IHC comparison; anything else is mIF (marker
    intensities). ``mask`` (h, w) says which pixels count (e.g. where a registered real
    section has data). ``markers`` names the mIF channels ("DAB" for IHC). With
    ``tissue_only``, an IHC pair counts only the pixels where the real image has tissue
    (mIF intensities have no glass to find, and are compared as they are).
    """
    real, virtual = np.asarray(real), np.asarray(virtual)
    same_shape(real, virtual, "compare_stains")
    rgb = real.ndim == 3 and real.shape[2] == 3 and real.dtype == virtual.dtype == np.uint8
    kind: Kind = "IHC" if rgb else "mIF"
    valid = _valid(mask, real.shape[:2])
    tissue_only = tissue_only and kind == "IHC"
    if tissue_only:
        valid = valid & tissue_mask(real)
        if not valid.any():
            raise EvalError("the compared region holds no tissue")
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
        tissue_only=tissue_only,
    )


def format_score(value: float) -> str:
    """A score in [-1, 1] (r, SSIM, Dice) with two decimals; "n/a" when undefined."""
    return "n/a" if not math.isfinite(value) else f"{value:.2f}"


def format_db(value: float) -> str:
    """A PSNR: "14.2 dB", "identical" for equal images, "n/a" when undefined."""
    if math.isnan(value):
        return "n/a"
    return "identical" if math.isinf(value) else f"{value:.1f} dB"


def format_count(value: float) -> str:
    """A count for people: 950, 12.3 k, 5.7 M."""
    n = int(value)
    if n < 1000:
        return str(n)
    if n < 999_950:  # not "1000.0 k"
        return f"{n / 1000:.1f} k"
    return f"{n / 1_000_000:.1f} M"


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
