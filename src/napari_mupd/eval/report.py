"""One evaluation run: every metric for one or more methods, as a table and plots.

`evaluate_pairs` scores predicted tiles against real ones (one DataFrame row per
method), `format_table` writes it as Markdown for the model card, and `plot_report`
draws it as PNG files.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from napari_mupd.errors import EvalError
from napari_mupd.eval.features import (
    frechet_distance,
    histology_features,
    kernel_inception_distance,
    standardise,
)
from napari_mupd.eval.metrics import (
    Kind,
    marker_intensity,
    patch_and_slide_pearson,
    psnr,
    ssim,
)
from napari_mupd.eval.metrics import dice as dice_score
from napari_mupd.eval.nuclei import composition_distance, nuclei_stats
from napari_mupd.eval.structure import structure_score
from napari_mupd.imaging.stains import dab_positive_mask

#: The metric columns of `evaluate_pairs`, with the labels `format_table` and the plots use.
COLUMNS: dict[str, str] = {
    "patch_r": "patch Pearson r",
    "block_r": "patch r, 8-px blocks",
    "structure_r": "structure r",
    "slide_r": "slide Pearson r",
    "pixel_r": "pixel Pearson r (per slide)",
    "ssim": "SSIM",
    "psnr": "PSNR (dB)",
    "dab_dice": "DAB Dice",
    "fid": "feature FID",
    "kid": "feature KID",
    "nuclei_distance": "nuclei composition distance",
}


def _pearson(
    pred: list[np.ndarray], real: list[np.ndarray], slide_ids: Sequence[Hashable] | None
) -> tuple[dict[str, float], tuple[str, ...]]:
    """patch_r, slide_r and pixel_r of (h, w, k) marker stacks, averaged over markers."""
    markers = real[0].shape[-1]
    summaries = [
        patch_and_slide_pearson([p[..., k] for p in pred], [r[..., k] for r in real], slide_ids)
        for k in range(markers)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN markers
        row = {
            name: float(np.nanmean([getattr(s, name) for s in summaries]))
            for name in ("patch_r", "slide_r", "pixel_r")
        }
    notes = tuple(
        f"marker {k}: {n}" if markers > 1 else n for k, s in enumerate(summaries) for n in s.notes
    )
    return row, notes


#: Side (px) of the blocks of `block_r`: about the registration error of serial sections,
#: where no pixel-level agreement can be expected (different cells in each section).
BLOCK = 8


def _block_means(marker: np.ndarray) -> np.ndarray:
    """(h, w, k) -> (h / BLOCK, w / BLOCK, k) block means."""
    h, w = marker.shape[0] // BLOCK * BLOCK, marker.shape[1] // BLOCK * BLOCK
    blocks = marker[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, -1)
    return blocks.mean(axis=(1, 3))


def _structure(pred: list[np.ndarray], sources: list[np.ndarray], kind: Kind) -> float:
    """Mean structure score of virtual IHC tiles against their source H&E (NaN for mIF,
    whose channels carry no names here)."""
    if kind != "IHC":
        return math.nan
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for p, s in zip(pred, sources, strict=True):
            try:
                scores.append(structure_score(p, s))
            except EvalError:  # a tile without tissue or contrast has no structure score
                continue
        return float(np.nanmean(scores)) if scores else math.nan


def _distances(
    real: list[np.ndarray], methods: dict[str, list[np.ndarray]], mpp: float | None
) -> dict[str, tuple[float, float]]:
    """{method: (FID, KID)} on histology features standardised on all tiles of the run."""
    real_feats = histology_features(real, mpp)
    feats = {name: histology_features(tiles, mpp) for name, tiles in methods.items()}
    pool = np.concatenate([real_feats, *feats.values()])
    reference = standardise(real_feats, pool)
    out = {}
    for name, f in feats.items():
        f = standardise(f, pool)
        out[name] = (frechet_distance(f, reference), kernel_inception_distance(f, reference)[0])
    return out


def evaluate_pairs(
    pred_tiles: Sequence[np.ndarray] | Mapping[str, Sequence[np.ndarray]],
    real_tiles: Sequence[np.ndarray],
    kind: Kind = "IHC",
    slide_ids: Sequence[Hashable] | None = None,
    mpp: float | None = None,
    sources: Sequence[np.ndarray] | None = None,
) -> pd.DataFrame:
    """Score predicted tiles against the matching real ones: one row per method.

    ``pred_tiles``: a list of tiles (the method is called "prediction") or a dict
    {method name: tiles}, each list in the order of ``real_tiles``. IHC tiles are
    uint8 RGB; mIF tiles are (h, w, markers) float stacks in [0, 1]. ``slide_ids``
    gives each tile's slide (slide-level r; one slide if None); ``mpp`` scales the
    nuclei statistics.

    Columns (`COLUMNS`): n_tiles; patch_r, slide_r, pixel_r (see
    `metrics.PearsonSummary`; marker intensity is DAB OD for IHC, each channel for
    mIF, averaged over markers); block_r, the patch r of 8 x 8 px block means (for
    serial sections, whose cells differ); structure_r, the mean
    `structure.structure_score` of each tile against its source H&E in ``sources`` (IHC
    with sources only); ssim and psnr (means over tiles, on RGB for IHC and on the
    marker stack for mIF); and, for IHC only (NaN for mIF): dab_dice (mean Dice of
    `imaging.stains.dab_positive_mask`), fid and kid (handcrafted features, not
    Inception: see `features`; NaN with fewer than 2 tiles) and nuclei_distance
    (`nuclei.composition_distance` of the pooled tiles).

    FID and KID are computed on features standardised with the mean and std of all
    tiles of the run (real and every method's), so they compare the methods of one run
    with each other, not across runs. They are small-sample estimates: FID is biased
    upwards and KID (unbiased) can be negative for sets that look alike.

    ``df.attrs["patch_intensity"]`` holds {method: (pred, real)} lists of the mean marker
    intensity per patch (for `plot_report`); ``df.attrs["notes"]`` {method: reasons for
    NaNs}; ``df.attrs["kind"]`` the kind. (Lists and tuples, not arrays, so pandas can
    compare attrs.)
    """
    if kind not in ("IHC", "mIF"):
        raise EvalError(f"kind must be 'IHC' or 'mIF', not {kind!r}")
    if not isinstance(pred_tiles, Mapping):
        pred_tiles = {"prediction": pred_tiles}
    methods = {name: list(tiles) for name, tiles in pred_tiles.items()}
    real = list(real_tiles)
    if not real:
        raise EvalError("no real tiles given")
    for name, tiles in methods.items():
        if len(tiles) != len(real):
            raise EvalError(f"{name}: {len(tiles)} predicted tiles for {len(real)} real tiles")
    if sources is not None and len(sources) != len(real):
        raise EvalError(f"{len(sources)} source tiles for {len(real)} real tiles")
    real_marker = [marker_intensity(t, kind) for t in real]
    real_means = [float(r.mean()) for r in real_marker]
    ihc = kind == "IHC"
    distances = _distances(real, methods, mpp) if ihc and len(real) >= 2 else {}
    real_nuclei = nuclei_stats(real, mpp) if ihc else None
    rows, intensity, notes = {}, {}, {}
    for name, pred in methods.items():
        pred_marker = [marker_intensity(t, kind) for t in pred]
        for p, r in zip(pred_marker, real_marker, strict=True):
            if p.shape != r.shape:
                raise EvalError(f"{name}: a predicted tile is {p.shape}, its real tile {r.shape}")
        row, notes[name] = _pearson(pred_marker, real_marker, slide_ids)
        blocks, _ = _pearson(
            [_block_means(p) for p in pred_marker],
            [_block_means(r) for r in real_marker],
            slide_ids,
        )
        row["block_r"] = blocks["patch_r"]
        row["structure_r"] = math.nan if sources is None else _structure(pred, list(sources), kind)
        pairs = list(zip(pred, real, strict=True))
        row["ssim"] = float(np.mean([ssim(p, r) for p, r in pairs]))
        row["psnr"] = float(np.mean([psnr(p, r) for p, r in pairs]))
        row["dab_dice"] = row["fid"] = row["kid"] = row["nuclei_distance"] = math.nan
        if ihc:
            masks = [(dab_positive_mask(p), dab_positive_mask(r)) for p, r in pairs]
            row["dab_dice"] = float(np.mean([dice_score(p, r) for p, r in masks]))
            row["fid"], row["kid"] = distances.get(name, (math.nan, math.nan))
            assert real_nuclei is not None  # computed for IHC
            row["nuclei_distance"] = composition_distance(nuclei_stats(pred, mpp), real_nuclei)
            if not distances:
                notes[name] += ("fid and kid need at least 2 tiles",)
        rows[name] = {"n_tiles": len(real), **row}
        intensity[name] = ([float(p.mean()) for p in pred_marker], real_means)
    df = pd.DataFrame.from_dict(rows, orient="index")[["n_tiles", *COLUMNS]]
    df.index.name = "method"
    df.attrs["patch_intensity"] = intensity
    df.attrs["notes"] = notes
    df.attrs["kind"] = kind
    return df


def _cell(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "n/a"
        return "inf" if math.isinf(value) else f"{value:.3f}"
    return str(value)


def format_table(df: pd.DataFrame) -> str:
    """The `evaluate_pairs` table as Markdown, then the reasons for any n/a as a list."""
    header = ["method", "tiles", *(COLUMNS[c] for c in df.columns if c in COLUMNS)]
    columns = ["n_tiles", *(c for c in df.columns if c in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, method in enumerate(df.index):
        cells = [str(method), *(_cell(df[c].iloc[i]) for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    for method, method_notes in df.attrs.get("notes", {}).items():
        lines += [f"- {method}: {note}" for note in method_notes]
    return "\n".join(lines) + "\n"


def plot_report(df: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``metrics.png`` (a bar chart per metric, one bar per method) and, when
    per-patch intensities are attached, ``marker_scatter.png`` (predicted vs real mean
    marker intensity per patch); returns the paths. Rendered with Agg (no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = [c for c in COLUMNS if c in df.columns]
    methods = [str(m) for m in df.index]
    cols = 3
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(4 * cols, 3 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    colours = [f"C{i}" for i in range(len(methods))]
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        values = df[metric].to_numpy(dtype=float)
        finite = np.where(np.isfinite(values), values, 0.0)
        ax.bar(range(len(methods)), finite, color=colours)
        for x, v in enumerate(values):
            if not np.isfinite(v):
                ax.annotate("n/a" if np.isnan(v) else "inf", (x, 0), ha="center", va="bottom")
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(COLUMNS[metric], fontsize=9)
    paths = [out / "metrics.png"]
    fig.savefig(paths[0], dpi=100)
    intensity = df.attrs.get("patch_intensity")
    if intensity:
        fig = Figure(figsize=(5, 5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        low, high = np.inf, -np.inf
        for colour, (method, (pred, real)) in zip(colours, intensity.items(), strict=False):
            ax.scatter(real, pred, s=12, alpha=0.7, color=colour, label=method)
            low = min(low, *pred, *real)
            high = max(high, *pred, *real)
        ax.plot([low, high], [low, high], color="grey", lw=1, ls="--", label="y = x")
        quantity = "DAB OD" if df.attrs.get("kind") == "IHC" else "marker intensity"
        ax.set_xlabel(f"real mean {quantity} per patch")
        ax.set_ylabel(f"predicted mean {quantity} per patch")
        ax.legend(fontsize=8)
        paths.append(out / "marker_scatter.png")
        fig.savefig(paths[1], dpi=100)
    return paths
