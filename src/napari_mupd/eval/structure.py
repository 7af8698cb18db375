"""Structure fidelity: does a virtual stain show the source's own cells?

The structure score is Pearson's r, over 4 x 4 px blocks of tissue, between the nuclear
density of a virtual stain and the haematoxylin density of the H&E it was made from. A
stain that keeps the source's nuclei scores near 1 whatever colours it gives them; one
that blurs them, moves them or invents others scores low. It needs no real stain, so it
can be computed for every slide a user stains.

Nuclear density: for IHC, haematoxylin + DAB optical density by colour deconvolution
(`napari_mupd.imaging.stains.nuclear_density`); for mIF, the nuclear channel (DAPI,
Hoechst, ...). Tissue: blocks whose pixels are at least half tissue by
`napari_mupd.imaging.tissue.tissue_mask` of the source.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_mupd.errors import EvalError
from napari_mupd.imaging.pixels import as_rgb
from napari_mupd.imaging.stains import hematoxylin_density, nuclear_density
from napari_mupd.imaging.tissue import tissue_mask

#: Side (px) of the blocks the score averages over: above JPEG and resampling noise,
#: below a nucleus at 20x (~16 px across at 0.5 um/px).
BLOCK = 4
#: Names of nuclear channels in an mIF panel (case-insensitive).
NUCLEAR_CHANNELS = ("DAPI", "Hoechst", "Hoechst33342", "DNA", "DNA1", "Nuclear", "SYTO13")


def nuclear_channel(channels: Sequence[str]) -> int:
    """Index of the nuclear channel (DAPI, Hoechst, ...) in an mIF panel."""
    lower = [c.lower() for c in channels]
    for name in NUCLEAR_CHANNELS:
        if name.lower() in lower:
            return lower.index(name.lower())
    raise EvalError(
        f"no nuclear channel among {', '.join(channels)}: a structure score for mIF needs "
        f"one of {', '.join(NUCLEAR_CHANNELS)}"
    )


def _blocks(image: np.ndarray, block: int) -> np.ndarray:
    h, w = image.shape[0] // block * block, image.shape[1] // block * block
    return image[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))


def structure_score(
    virtual: np.ndarray,
    source: np.ndarray,
    channels: Sequence[str] | None = None,
    block: int = BLOCK,
) -> float:
    """Pearson r over tissue blocks between a virtual stain's nuclear density and its
    source H&E's haematoxylin density.

    ``virtual``: an (h, w, 3) uint8 IHC image, or an (h, w, k) mIF stack whose
    ``channels`` name its markers (one of them nuclear). ``source``: the (h, w, 3) uint8
    H&E on the same pixel grid. Raises `EvalError` for mismatched shapes, a source
    without tissue or without contrast (a blank tile), and returns NaN when the virtual
    stain is constant over the tissue (nothing to correlate).
    """
    source = as_rgb(source, "source H&E")
    virtual = np.asarray(virtual)
    if virtual.shape[:2] != source.shape[:2]:
        raise EvalError(
            f"structure score: the virtual stain is {virtual.shape[:2]} px and its source "
            f"{source.shape[:2]}: put them on one grid first"
        )
    if channels is None:
        nuclei = nuclear_density(as_rgb(virtual, "virtual IHC"))
    else:
        if virtual.ndim != 3 or virtual.shape[2] != len(channels):
            raise EvalError(f"{len(channels)} channel names for an image of shape {virtual.shape}")
        nuclei = virtual[..., nuclear_channel(channels)].astype(np.float32)
    tissue = _blocks(tissue_mask(source).astype(np.float32), block) >= 0.5
    if tissue.sum() < 3:
        raise EvalError("structure score: the source shows no tissue (a blank or glass tile)")
    ref = _blocks(hematoxylin_density(source), block)[tissue]
    out = _blocks(nuclei, block)[tissue]
    if np.ptp(ref) == 0:
        raise EvalError("structure score: the source has no contrast over its tissue")
    if np.ptp(out) == 0:
        return float("nan")
    return float(np.corrcoef(ref, out)[0, 1])


def structure_or_none(
    virtual: np.ndarray, source: np.ndarray, channels: Sequence[str] | None = None
) -> float | None:
    """`structure_score` for provenance: None where it is undefined (no tissue in the
    source, a constant stain, an mIF panel without a nuclear channel)."""
    try:
        score = structure_score(virtual, source, channels)
    except EvalError:
        return None
    return None if np.isnan(score) else score
