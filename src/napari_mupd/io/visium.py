"""Spatial transcriptomics spots (10x Visium): Space Ranger folders and AnnData files."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from napari_mupd.errors import MuPDError


class SpotsError(MuPDError, ValueError):
    """A spatial transcriptomics folder or file is incomplete or inconsistent."""


@dataclass
class Spots:
    """Spots over their H&E: expression (spots x genes) and centres in ``image`` pixels."""

    image: np.ndarray
    expression: pd.DataFrame
    coords: np.ndarray  # (N, 2) x, y in image pixels
    spot_diameter: float  # in image pixels


def read_spaceranger(folder: str | os.PathLike, image: str = "lowres") -> Spots:
    """Read a Space Ranger output folder: ``filtered_feature_bc_matrix.h5`` and ``spatial/``.

    ``image`` is "lowres" or "hires"; coordinates and the spot size are scaled to it
    with ``scalefactors_json.json``. Only spots under tissue that have expression are kept.
    """
    root = Path(folder)
    spatial = root / "spatial"
    matrix = root / "filtered_feature_bc_matrix.h5"
    for needed in (matrix, spatial / "scalefactors_json.json"):
        if not needed.exists():
            raise SpotsError(f"{root}: not a Space Ranger folder ({needed.name} missing)")
    scalefactors = json.loads((spatial / "scalefactors_json.json").read_text())
    scale = float(scalefactors[f"tissue_{image}_scalef"])
    with Image.open(spatial / f"tissue_{image}_image.png") as im:
        pixels = np.asarray(im.convert("RGB"))
    expression = read_10x_h5(matrix)
    positions = _positions(spatial)
    positions = positions[positions["in_tissue"] == 1]
    barcodes = expression.index.intersection(positions.index)
    if barcodes.empty:
        raise SpotsError(f"{root}: no barcode in both the matrix and the tissue positions")
    coords = positions.loc[barcodes, ["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    return Spots(
        image=pixels,
        expression=expression.loc[barcodes],
        coords=coords * scale,
        spot_diameter=float(scalefactors["spot_diameter_fullres"]) * scale,
    )


def read_10x_h5(path: str | os.PathLike) -> pd.DataFrame:
    """A 10x feature-barcode matrix (HDF5, v3 layout) as a spots x genes DataFrame."""
    import h5py
    from scipy.sparse import csc_matrix

    with h5py.File(path, "r") as f:
        if "matrix" not in f:
            raise SpotsError(f"{path}: not a 10x v3 feature-barcode matrix")
        m = f["matrix"]
        shape = tuple(m["shape"][:])
        counts = csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=shape)
        genes = [g.decode() for g in m["features"]["name"][:]]
        barcodes = [b.decode() for b in m["barcodes"][:]]
    frame = pd.DataFrame(counts.T.toarray(), index=barcodes, columns=genes)
    return frame.T.groupby(level=0).sum().T  # duplicated symbols: add their counts


def _positions(spatial: Path) -> pd.DataFrame:
    columns = [
        "barcode",
        "in_tissue",
        "array_row",
        "array_col",
        "pxl_row_in_fullres",
        "pxl_col_in_fullres",
    ]
    new, old = spatial / "tissue_positions.csv", spatial / "tissue_positions_list.csv"
    if new.exists():
        table = pd.read_csv(new)
    elif old.exists():
        table = pd.read_csv(old, header=None, names=columns)
    else:
        raise SpotsError(f"{spatial}: no tissue_positions(.csv|_list.csv)")
    return table.set_index("barcode")
