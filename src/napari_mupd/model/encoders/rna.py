"""RNA stream: expression profiles -> checkpoint features (genes or gene-set scores) -> tokens."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from napari_mupd.errors import ConditionError

Normalization = Literal["auto", "counts", "log", "none"]

#: Profiles scaled as raw (counts/TPM) by "auto" have a total above this when integer-valued.
COUNTS_MIN_TOTAL = 1_000.0
#: ... or a value above this, which no log-scale expression reaches.
RAW_MIN_MAX = 100.0


@dataclass(frozen=True)
class RNAReport:
    """What an expression input matched: panel genes found/missing, normalisation applied."""

    n_samples: int
    n_input_genes: int
    found: tuple[str, ...]
    missing: tuple[str, ...]
    normalization: tuple[str, ...]
    missing_sets: tuple[str, ...] = ()

    def __str__(self) -> str:
        total = len(self.found) + len(self.missing)
        head = ", ".join(self.missing[:10]) + (" ..." if len(self.missing) > 10 else "")
        text = f"RNA: {len(self.found)}/{total} panel genes found"
        if self.missing:
            text += f"; missing: {head}"
        if self.missing_sets:
            text += f"; {len(self.missing_sets)} gene sets without any member"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Short JSON-able summary for provenance."""
        return {
            "n_samples": self.n_samples,
            "genes_found": len(self.found),
            "genes_missing": len(self.missing),
            "normalization": list(self.normalization),
            "sets_without_members": len(self.missing_sets),
        }


def _is_anndata(obj: object) -> bool:
    return type(obj).__module__.split(".")[0] == "anndata"


def read_expression(rna: object) -> pd.DataFrame:
    """Any supported input as a table: one row per sample, one column per gene symbol.

    Accepts an AnnData (rows = samples; `var_names` are the symbols), a pandas Series or
    a dict gene -> value (one sample), a DataFrame (rows = samples), or a CSV path: two
    columns gene,value, or one row per sample with genes as columns (first column = id).
    """
    if _is_anndata(rna):
        x: Any = rna.X  # type: ignore[attr-defined]
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
        frame = pd.DataFrame(x, columns=[str(g) for g in rna.var_names])  # type: ignore[attr-defined]
    elif isinstance(rna, pd.DataFrame):
        frame = rna
    elif isinstance(rna, pd.Series):
        frame = rna.to_frame().T
    elif isinstance(rna, Mapping):
        frame = pd.Series(dict(rna)).to_frame().T
    elif isinstance(rna, (str, os.PathLike)):
        frame = _read_csv(Path(rna))
    else:
        raise ConditionError(
            f"rna: expected an AnnData, a pandas Series/DataFrame, a dict gene -> value or a "
            f"CSV path, got {type(rna).__name__}"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ConditionError("rna: the expression table is empty")
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConditionError(f"rna: expression values must be numbers ({e})") from e
    if np.isinf(values).any():
        raise ConditionError("rna: expression contains infinite values")
    return pd.DataFrame(values, columns=[str(c) for c in frame.columns])


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ConditionError(f"rna: no such file {str(path)!r}")
    frame = pd.read_csv(path, index_col=0)
    if frame.shape[1] == 1 and not pd.api.types.is_numeric_dtype(frame.index):
        return frame.iloc[:, 0].to_frame().T  # gene,value
    return frame


def normalize_expression(values: np.ndarray, mode: Normalization) -> tuple[np.ndarray, list[str]]:
    """Per row: log1p of counts per 10k for raw profiles, else unchanged; names what was done."""
    out = values.copy()
    done: list[str] = []
    for i, row in enumerate(values):
        finite = row[~np.isnan(row)]
        raw = mode == "counts"
        if mode == "auto" and finite.size and (finite >= 0).all():
            total = finite.sum()
            integer = bool(np.all(finite == np.round(finite)))
            raw = (integer and total > COUNTS_MIN_TOTAL) or finite.max() > RAW_MIN_MAX
        if raw:
            if (finite < 0).any():
                raise ConditionError(f"rna: sample {i} has negative values, not counts")
            total = finite.sum()
            if total <= 0:
                raise ConditionError(f"rna: sample {i} has a total of zero counts")
            out[i] = np.log1p(row / total * 1e4)
        done.append("log1p_cp10k" if raw else "none")
    return out, done


@dataclass(frozen=True)
class RNAFeatures:
    """Checkpoint features for a batch: values (B, F), observed (B, F) bool, and a report."""

    values: np.ndarray
    observed: np.ndarray
    report: RNAReport

    def tensor(self) -> Tensor:
        """The encoder input (B, 2F): values (0 where unobserved) then the observed mask."""
        v = np.where(self.observed, self.values, 0.0)
        return torch.from_numpy(np.concatenate([v, self.observed], axis=1).astype(np.float32))


def expression_features(
    rna: object,
    genes: Sequence[str],
    gene_sets: Mapping[str, Sequence[str]] | None = None,
    normalize: Normalization = "auto",
) -> RNAFeatures:
    """Map an expression input onto a checkpoint's features (case-insensitive symbols).

    Without gene sets the features are the panel `genes` (log-normalised values). With
    gene sets each feature is the mean z-score (within the sample, over all its genes)
    of the set's members found. NaN counts as not measured. ConditionError when no
    panel gene is found or when a sample is all NaN.
    """
    frame = read_expression(rna)
    values = frame.to_numpy()
    for i, row in enumerate(values):
        if np.isnan(row).all():
            raise ConditionError(f"rna: sample {i} is all NaN (no measured gene)")
    values, done = normalize_expression(values, normalize)
    columns: dict[str, list[int]] = {}
    for j, g in enumerate(frame.columns):
        columns.setdefault(g.strip().lower(), []).append(j)

    if gene_sets:
        panel = list(dict.fromkeys(g for members in gene_sets.values() for g in members))
    else:
        panel = list(genes)
    matched = np.full((values.shape[0], len(panel)), np.nan)
    for k, g in enumerate(panel):
        idx = columns.get(g.lower())
        if idx:
            matched[:, k] = _mean_observed(values[:, idx])
    observed_any = ~np.isnan(matched).all(axis=0)
    found = tuple(g for g, ok in zip(panel, observed_any, strict=True) if ok)
    missing = tuple(g for g, ok in zip(panel, observed_any, strict=True) if not ok)
    if not found:
        shown = ", ".join(list(frame.columns[:5]))
        raise ConditionError(
            f"rna: none of the {len(panel)} genes of this checkpoint were found among the "
            f"{frame.shape[1]} input genes (e.g. {shown}); expected symbols like "
            f"{', '.join(panel[:5])} (case-insensitive)"
        )
    missing_sets: tuple[str, ...] = ()
    if gene_sets:
        mean = np.nanmean(values, axis=1, keepdims=True)
        std = np.nanstd(values, axis=1, keepdims=True)
        z = (matched - mean) / np.where(std > 0, std, 1.0)
        pos = {g.lower(): k for k, g in enumerate(panel)}
        scores = np.full((values.shape[0], len(gene_sets)), np.nan)
        for s, members in enumerate(gene_sets.values()):
            scores[:, s] = _mean_observed(z[:, [pos[m.lower()] for m in members]])
        missing_sets = tuple(
            n for n, col in zip(gene_sets, scores.T, strict=True) if np.isnan(col).all()
        )
        matched = scores
    report = RNAReport(values.shape[0], frame.shape[1], found, missing, tuple(done), missing_sets)
    observed = ~np.isnan(matched)
    return RNAFeatures(np.nan_to_num(matched), observed, report)


def _mean_observed(cols: np.ndarray) -> np.ndarray:
    """Row means over non-NaN entries of (B, k); NaN where a row has none."""
    ok = ~np.isnan(cols)
    mean = np.where(ok, cols, 0.0).sum(1) / np.maximum(ok.sum(1), 1)
    return np.where(ok.any(1), mean, np.nan)


class RNAEncoder(nn.Module):
    """Features (values + observed mask) -> `num_tokens` tokens through a two-layer MLP."""

    def __init__(self, num_features: int, hidden: int, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.num_tokens, self.dim = num_tokens, dim
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_features, hidden), nn.GELU(), nn.Linear(hidden, num_tokens * dim)
        )
        self.pos = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Tensor) -> Tensor:
        """(B, 2F) -> (B, num_tokens, dim)."""
        x = self.mlp(features).view(-1, self.num_tokens, self.dim)
        return self.norm(x + self.pos)
