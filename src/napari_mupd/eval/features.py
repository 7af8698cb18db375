"""An offline histology feature encoder and distribution distances (Fréchet, KID).

NOT Inception-FID: no network weights are available offline, so tiles are described by
handcrafted, interpretable histology features. Distances computed on them are only
comparable with each other (same encoder, same `standardise` reference), never with
FID or KID values published on Inception or pathology-foundation-model features.

Features per RGB tile (`FEATURE_NAMES`, in this order):

* stains: haematoxylin, eosin and DAB optical density (`imaging.stains.stain_densities`):
  mean, std and 10th/50th/90th percentiles (15), and the tissue fraction (mean RGB
  OD above `TISSUE_OD`);
* texture: uniform local-binary-pattern histograms (8 neighbours, radii 1 and 3, 10
  bins each) of the haematoxylin channel, which sees chromatin and nuclear borders;
* co-occurrence: GLCM contrast (divided by (levels-1)^2), homogeneity, energy and
  correlation of the haematoxylin channel quantised to `GLCM_LEVELS`, at distances 1
  and 3 px, averaged over 4 directions;
* nuclei (`nuclei.segment_nuclei`): nuclei per 10^4 px, mean nuclear area / 100 px,
  nuclear area fraction.

All are on roughly unit scales (OD, fractions, normalised GLCM properties); still,
call `standardise` against the real tiles before a distance, so no feature dominates
by its units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.linalg import eigh
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

from napari_mupd.errors import EvalError
from napari_mupd.eval._checks import as_tiles
from napari_mupd.eval.nuclei import segment_nuclei
from napari_mupd.imaging.stains import optical_density, stain_densities

#: Mean RGB optical density above which a pixel counts as tissue (transmission < 80 %).
TISSUE_OD = 0.1
#: Haematoxylin OD mapped to the top grey level before LBP and GLCM.
H_OD_MAX = 1.5
GLCM_LEVELS = 32
LBP_POINTS = 8
LBP_RADII = (1, 3)
GLCM_DISTANCES = (1, 3)
GLCM_PROPERTIES = ("contrast", "homogeneity", "energy", "correlation")
_PERCENTILES = (10, 50, 90)

FEATURE_NAMES: tuple[str, ...] = (
    *(
        f"{stain}_{stat}"
        for stain in ("h", "e", "dab")
        for stat in ("mean", "std", *(f"p{q}" for q in _PERCENTILES))
    ),
    "tissue_fraction",
    *(f"lbp_r{r}_{b}" for r in LBP_RADII for b in range(LBP_POINTS + 2)),
    *(f"glcm_{p}_d{d}" for d in GLCM_DISTANCES for p in GLCM_PROPERTIES),
    "nuclei_per_10k_px",
    "nuclei_mean_area_100px",
    "nuclei_area_fraction",
)


def tile_features(rgb: np.ndarray, mpp: float | None = None) -> np.ndarray:
    """The `FEATURE_NAMES` features (F,) float64 of one uint8 RGB tile."""
    stains = stain_densities(rgb).reshape(-1, 3)
    out = []
    for k in range(3):
        s = stains[:, k]
        out += [s.mean(), s.std(), *np.percentile(s, _PERCENTILES)]
    out.append(float((optical_density(rgb).mean(axis=-1) > TISSUE_OD).mean()))
    grey = np.round(np.clip(stains[:, 0] / H_OD_MAX, 0, 1) * 255).astype(np.uint8)
    grey = grey.reshape(rgb.shape[:2])
    for radius in LBP_RADII:
        codes = local_binary_pattern(grey, LBP_POINTS, radius, method="uniform")
        hist = np.bincount(codes.astype(np.int64).ravel(), minlength=LBP_POINTS + 2)
        out += list(hist / codes.size)
    quantised = (grey.astype(np.uint16) * GLCM_LEVELS // 256).astype(np.uint8)
    angles = (0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
    glcm = graycomatrix(quantised, GLCM_DISTANCES, angles, GLCM_LEVELS, symmetric=True, normed=True)
    for d in range(len(GLCM_DISTANCES)):
        for prop in GLCM_PROPERTIES:
            value = graycoprops(glcm, prop)[d].mean()
            out.append(value / (GLCM_LEVELS - 1) ** 2 if prop == "contrast" else value)
    labels = segment_nuclei(rgb, mpp)
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    out += [
        1e4 * len(areas) / labels.size,
        areas.mean() / 100 if len(areas) else 0.0,
        areas.sum() / labels.size,
    ]
    return np.nan_to_num(np.asarray(out, dtype=np.float64))


def histology_features(
    tiles: np.ndarray | Sequence[np.ndarray], mpp: float | None = None
) -> np.ndarray:
    """(N, F) float64 features of N uint8 RGB tiles (see the module docstring)."""
    return np.stack([tile_features(t, mpp) for t in as_tiles(tiles)])


def standardise(feats: np.ndarray, reference: np.ndarray, min_std: float = 0.01) -> np.ndarray:
    """``feats`` z-scored with the mean and std of ``reference`` (e.g. the real tiles).

    The std is floored at ``min_std``: a feature that barely varies among the reference
    tiles (eosin in IHC, say) is measured in units of ``min_std`` rather than of its own
    tiny spread, which would turn a small difference into a huge distance.
    """
    reference = np.asarray(reference, dtype=np.float64)
    scale = np.maximum(reference.std(axis=0), min_std)
    return (np.asarray(feats, dtype=np.float64) - reference.mean(axis=0)) / scale


def _check_pair(a: np.ndarray, b: np.ndarray, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise EvalError(f"expected (N, F) feature arrays with equal F, got {a.shape}, {b.shape}")
    if min(len(a), len(b)) < min_rows:
        raise EvalError(f"need at least {min_rows} samples per set, got {len(a)} and {len(b)}")
    return a, b


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, ridge: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two (N, F) feature sets (FID's formula).

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. ``ridge`` is added to both
    covariance diagonals so that sets with N <= F (singular covariances) stay stable; the
    trace of the matrix root is taken as that of the symmetric ``S_a^(1/2) S_b S_a^(1/2)``
    (same eigenvalues, no complex round-off). Few samples bias it upwards: compare values
    at equal N. Not comparable with Inception-FID (see the module docstring).
    """
    a, b = _check_pair(feats_a, feats_b, 2)
    ridge_eye = ridge * np.eye(a.shape[1])
    cov_a = np.atleast_2d(np.cov(a, rowvar=False)) + ridge_eye
    cov_b = np.atleast_2d(np.cov(b, rowvar=False)) + ridge_eye
    values, vectors = eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.sqrt(np.clip(eigh(root_a @ cov_b @ root_a, eigvals_only=True), 0, None)).sum()
    diff = a.mean(axis=0) - b.mean(axis=0)
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * cross, 0.0))


def kernel_inception_distance(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID on these features: mean and std over subsets of the unbiased MMD^2.

    Kernel ``k(x, y) = (x.y / F + 1)^3`` (Bińkowski et al. 2018). Each subset draws
    ``min(subset_size, N_a, N_b)`` samples per set without replacement; with both sets
    that small there is a single subset (std 0). Unbiased, so it can be slightly
    negative, ~0 for two samples of one distribution. Not comparable with Inception-KID.
    """
    a, b = _check_pair(feats_a, feats_b, 2)
    m = min(subset_size, len(a), len(b))
    if m == len(a) == len(b):
        subsets = 1
    rng = np.random.default_rng(seed)
    dim = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((u @ v.T / dim + 1) ** 3 for u, v in ((x, x), (y, y), (x, y)))
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))
