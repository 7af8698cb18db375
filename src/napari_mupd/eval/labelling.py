"""Labelling index of a nuclear IHC marker (Ki67): the percentage of DAB-positive nuclei.

Nuclei are found by colour deconvolution and a watershed (`eval.nuclei.segment_nuclei`)
on the nuclear optical density, haematoxylin + DAB (`imaging.stains.nuclear_density`), so
a brown nucleus whose haematoxylin the DAB hides is still a nucleus. That density is capped
at `NUCLEAR_OD_CAP` first: without the cap the darkest brown nuclei pull Otsu's threshold
above the blue ones and only the positive nuclei are found (on the Ki67 tile of the tests,
8 nuclei instead of 32). A nucleus is positive when its mean DAB OD exceeds `KI67_THRESHOLD`.

Choice of threshold: per nucleus, the mean DAB OD of a Ki67 slide (OpenSlide's OS-2,
resampled to 0.5 um/px, 1,026 nuclei) is bimodal: blue nuclei sit at 0.03-0.08 (the
haematoxylin that the fixed stain vectors leak into DAB, median 0.05), brown ones at
0.3-0.5, and the histogram is flat between 0.15 and 0.3. 0.2 lies in that valley and is
also QuPath's default for "positive cell detection" on the nucleus DAB OD mean; at 0.15
or 0.25 the index of that slide moves by about 4 points (20 % and 13 % against 17 %).

Limits: an H&E has no DAB, but its darkest haematoxylin leaks up to ~0.3 OD into the DAB
channel, so the index of an H&E is not 0: measure IHC only. The segmentation assumes
nuclei of `eval.nuclei.NUCLEUS_RADIUS_UM` at the given pixel size; touching nuclei may
merge, and a merged brown and blue pair counts once, by its mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_mupd.errors import EvalError
from napari_mupd.eval.nuclei import segment_nuclei
from napari_mupd.imaging.pixels import as_rgb
from napari_mupd.imaging.stains import compose_stains, stain_densities

#: Mean DAB OD above which a nucleus is positive (see the module docstring).
KI67_THRESHOLD = 0.2
#: Nuclear OD (haematoxylin + DAB) is capped here before segmentation, about the darkness
#: of a dark blue nucleus (90 % of the haematoxylin OD in the nuclei of the test tile is
#: below 0.47).
NUCLEAR_OD_CAP = 0.4


@dataclass(frozen=True)
class LabellingIndex:
    """Positive and total nuclei of a region; ``index`` is their ratio in percent."""

    positive: int
    total: int
    threshold: float = KI67_THRESHOLD

    @property
    def negative(self) -> int:
        """Nuclei at or below the threshold."""
        return self.total - self.positive

    @property
    def index(self) -> float:
        """Percentage of positive nuclei; NaN without nuclei."""
        return 100.0 * self.positive / self.total if self.total else math.nan

    def __str__(self) -> str:
        if not self.total:
            return "no nuclei"
        return f"{self.index:.0f} % ({self.positive} of {self.total} nuclei)"


def nuclei_labels(rgb: np.ndarray, mpp: float | None = None) -> np.ndarray:
    """(h, w) int32 nuclei of an IHC tile, blue and brown alike (0 = background).

    `segment_nuclei` on the capped nuclear density (haematoxylin + DAB), rendered as a
    haematoxylin-only image so that its own colour deconvolution reads it back.
    """
    densities = stain_densities(as_rgb(rgb, "rgb"))
    nuclear = np.minimum(densities[..., 0] + densities[..., 2], NUCLEAR_OD_CAP)
    zeros = np.zeros_like(nuclear)
    return segment_nuclei(compose_stains(np.stack([nuclear, zeros, zeros], axis=-1)), mpp)


def labelling_index(
    rgb: np.ndarray,
    mpp: float | None = None,
    *,
    mask: np.ndarray | None = None,
    threshold: float = KI67_THRESHOLD,
) -> LabellingIndex:
    """Percentage of nuclei whose mean DAB OD exceeds ``threshold`` in an IHC tile.

    ``mpp`` is the tile's pixel size (micrometres; `eval.nuclei.DEFAULT_MPP` when None).
    With ``mask`` (h, w), a nucleus counts when most of its pixels lie in the mask (the
    compared region: a real and a virtual tile are counted over the same pixels).
    """
    rgb = as_rgb(rgb, "rgb")
    labels = nuclei_labels(rgb, mpp)
    n = int(labels.max())
    if n == 0:
        return LabellingIndex(0, 0, threshold)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones(labels.shape), labels, index)
    keep = sizes > 0
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != labels.shape:
            raise EvalError(f"the mask is {mask.shape}, the image {labels.shape}")
        keep &= ndimage.sum_labels(mask, labels, index) > sizes / 2
    dab = ndimage.mean(stain_densities(rgb)[..., 2], labels, index)
    positive = int(np.count_nonzero(keep & (dab > threshold)))
    return LabellingIndex(positive, int(np.count_nonzero(keep)), threshold)
