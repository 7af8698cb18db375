"""A virtual multiplex IF stain against a real multichannel slide, one row per marker.

Virtual markers find their real channels by name (`io.channels.match_channel`: case,
punctuation and aliases such as Ki-67 / Ki67, PanCK / pan-cytokeratin do not matter).
Real channels are scaled to [0, 1] by their contrast limits (the file's window, else
the slide's low-resolution percentiles), the virtual ones are in [0, 1] already. Per
marker: pixel-wise Pearson r, SSIM (data range 1) and, when the real slide has a nuclear
channel (DAPI, Hoechst), the agreement of positive cells: nuclei are found on the real
nuclear channel, each is positive on a side when its mean marker intensity is above
that side's Otsu threshold of the cells' means, and the agreement is the share of cells
called the same on both sides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import gaussian, threshold_otsu

from napari_mupd.errors import EvalError
from napari_mupd.eval.metrics import pearson_r, ssim
from napari_mupd.imaging.regions import Region
from napari_mupd.io.channels import match_channel
from napari_mupd.io.slide import Slide

#: Nuclei smaller than this many um^2 are noise.
MIN_NUCLEUS_AREA_UM2 = 10.0
_DEFAULT_MPP = 0.5


@dataclass(frozen=True)
class MarkerAgreement:
    """One marker of a virtual mIF stain against its real channel."""

    marker: str
    channel: str  # the real channel it was matched to
    pearson: float
    ssim: float
    positive_agreement: float  # share of cells positive or negative on both sides (NaN: no cells)
    real_positive: float  # share of cells positive on the real side
    virtual_positive: float
    cells: int

    def row(self) -> tuple[str, str, str, str, str, str]:
        """(marker, channel, r, SSIM, agreement, cells) written for people."""

        def f(v: float) -> str:
            return "n/a" if not math.isfinite(v) else f"{v:.2f}"

        return (self.marker, self.channel, f(self.pearson), f(self.ssim),
                f(self.positive_agreement), str(self.cells))  # fmt: skip


def match_markers(markers: Sequence[str], channel_names: Sequence[str]) -> dict[str, int]:
    """Virtual marker -> index of its real channel, for the markers that have one.

    Raises `EvalError` naming both lists when no marker has a channel.
    """
    matched = {}
    for marker in markers:
        index = match_channel(marker, channel_names)
        if index is not None:
            matched[marker] = index
    if not matched:
        raise EvalError(
            f"no virtual marker ({', '.join(markers)}) matches a channel of the real slide "
            f"({', '.join(channel_names)})"
        )
    return matched


def segment_fluorescent_nuclei(nuclear: np.ndarray, mpp: float | None = None) -> np.ndarray:
    """(h, w) int32 labels of nuclei on a nuclear channel scaled to [0, 1] (0 = none)."""
    mpp = mpp or _DEFAULT_MPP
    smooth = gaussian(np.asarray(nuclear, np.float32), sigma=max(0.5, 0.5 / mpp))
    if np.ptp(smooth) <= 1e-6:
        return np.zeros(smooth.shape, np.int32)
    labels, n = ndimage.label(smooth > threshold_otsu(smooth))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes * mpp * mpp >= MIN_NUCLEUS_AREA_UM2
    keep[0] = False
    labels, _ = ndimage.label(keep[labels])
    return labels.astype(np.int32)


def compare_multiplex(
    real: np.ndarray,
    channel_names: Sequence[str],
    virtual: np.ndarray,
    markers: Sequence[str],
    *,
    nuclei: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> list[MarkerAgreement]:
    """Rows for each virtual marker with a real channel.

    ``real``: (k, h, w) real channels scaled to [0, 1]; ``virtual``: (h, w, m) virtual
    markers in [0, 1] on the same grid; ``nuclei``: labels for the positive-cell
    agreement (None: NaN agreement); ``mask``: the pixels that count.
    """
    real, virtual = np.asarray(real, np.float64), np.asarray(virtual, np.float64)
    if virtual.ndim == 2:
        virtual = virtual[..., None]
    if real.ndim != 3 or real.shape[0] != len(channel_names):
        raise EvalError(f"real channels of shape {real.shape} for {len(channel_names)} names")
    if virtual.shape[:2] != real.shape[1:] or virtual.shape[2] != len(markers):
        raise EvalError(
            f"virtual markers of shape {virtual.shape} do not fit real channels "
            f"{real.shape} and {len(markers)} marker names"
        )
    valid = np.ones(real.shape[1:], bool) if mask is None else np.asarray(mask, bool)
    if not valid.any():
        raise EvalError("no pixels to compare")
    rows = []
    for marker, index in match_markers(markers, channel_names).items():
        r, v = real[index], virtual[..., list(markers).index(marker)]
        pearson = pearson_r(r[valid], v[valid])
        similarity = ssim(np.where(valid, r, 0), np.where(valid, v, 0), data_range=1.0)
        agreement, real_pos, virtual_pos, cells = positive_cell_agreement(r, v, nuclei, valid)
        rows.append(
            MarkerAgreement(
                marker,
                channel_names[index],
                pearson,
                similarity,
                agreement,
                real_pos,
                virtual_pos,
                cells,
            )
        )
    return rows


def compare_with_slide(
    slide: Slide,
    region: Region,
    virtual: np.ndarray,
    markers: Sequence[str],
    *,
    level: int = 0,
) -> list[MarkerAgreement]:
    """Score a virtual mIF stain of ``region`` (level-0 pixels; ``virtual`` (h, w, m) in
    [0, 1] at ``level``'s pixel grid) against the real multichannel ``slide``'s
    channels of the same markers, matched by name, over the region's rectangle (a
    polygon's outline is not used)."""
    if not slide.multichannel:
        raise EvalError(f"{slide.path.name}: a brightfield slide has no marker channels")
    matched = match_markers(markers, slide.channel_names)
    nuclear = slide.nuclear_channel
    wanted = sorted({*matched.values(), *([nuclear] if nuclear is not None else [])})
    ds = slide.downsamples[level]
    size = (math.ceil(region.width / ds), math.ceil(region.height / ds))
    planes = slide.read_region((region.x, region.y), level, size, channels=wanted)
    scaled = np.zeros((len(slide.channels), size[1], size[0]), np.float32)
    for plane, index in zip(planes, wanted, strict=True):
        lo, hi = slide.contrast_limits(index)
        scaled[index] = np.clip((plane.astype(np.float32) - lo) / (hi - lo), 0, 1)
    virtual = np.asarray(virtual)
    if virtual.ndim == 2:
        virtual = virtual[..., None]
    if virtual.shape[:2] != scaled.shape[1:]:
        raise EvalError(
            f"the virtual stain is {virtual.shape[1]}x{virtual.shape[0]} px but the region "
            f"is {size[0]}x{size[1]} px at level {level}"
        )
    mpp = slide.mpp[0] * ds if slide.mpp else None
    nuclei = None if nuclear is None else segment_fluorescent_nuclei(scaled[nuclear], mpp)
    return compare_multiplex(scaled, slide.channel_names, virtual, markers, nuclei=nuclei)


def positive_cell_agreement(
    real: np.ndarray, virtual: np.ndarray, nuclei: np.ndarray | None, valid: np.ndarray
) -> tuple[float, float, float, int]:
    """(share of cells called the same, share positive on the real side, on the virtual
    side, cells) of two (h, w) marker images over ``nuclei`` labels within ``valid``; a
    cell is positive above its side's Otsu threshold of the cells' mean intensities."""
    if nuclei is None:
        return math.nan, math.nan, math.nan, 0
    labels = np.where(valid, nuclei, 0)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if len(ids) < 2:
        return math.nan, math.nan, math.nan, len(ids)
    real_means = np.asarray(ndimage.mean(real, labels, ids))
    virtual_means = np.asarray(ndimage.mean(virtual, labels, ids))
    real_pos, virtual_pos = _positive(real_means), _positive(virtual_means)
    return (float(np.mean(real_pos == virtual_pos)), float(real_pos.mean()),
            float(virtual_pos.mean()), len(ids))  # fmt: skip


def _positive(means: np.ndarray) -> np.ndarray:
    if np.ptp(means) <= 1e-6:
        return np.zeros(means.shape, bool)
    return means > threshold_otsu(means)
