"""Spatial transcriptomics spots (10x Visium): Space Ranger folders and AnnData files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from napari_mupd.errors import SpotsError
from napari_mupd.imaging.pixels import to_uint8


@dataclass
class Spots:
    """Spots over their H&E: expression (spots x genes) and centres in ``image`` pixels."""

    image: np.ndarray
    expression: pd.DataFrame
    coords: np.ndarray  # (N, 2) x, y in image pixels
    spot_diameter: float  # in image pixels
    obs: pd.DataFrame | None = None  # per-spot annotations (clusters, total_counts) by barcode
    palettes: dict[str, list[str]] = field(default_factory=dict)  # obs column -> colours
    image_source: str = ""  # where ``image`` came from


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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_h5ad_spots(path: str | os.PathLike, image: str | os.PathLike | None = None) -> Spots:
    """Read an AnnData ``.h5ad`` with spot centres in ``obsm["spatial"]`` and find its H&E.

    ``obsm["spatial"]`` holds (x, y) in full-resolution pixels (scanpy's convention). The
    image is, in this order, the first whose bounds hold every spot: ``image``; a file
    beside the .h5ad with its stem (``sample.h5ad`` -> ``sample.png``/``.jpg``/``.tif``);
    the only image file in its folder (both taken as full resolution); the embedded
    ``uns["spatial"][library]["images"]`` "hires" then "lowres", scaled by their
    ``tissue_*_scalef``. Full resolution comes first because embedded images are small
    and, in some files, placeholders. The spot diameter is ``spot_diameter_fullres``, or
    0.65 x the median distance between neighbouring spots when the file has no scale
    factors (Space Ranger's diameter is that of a 65 um spot; centres are 100 um apart).
    Images are loaded whole (Pillow).
    """
    p = Path(path)
    adata = _open_h5ad(p)
    if "spatial" not in adata.obsm:
        raise SpotsError(f"{p}: no obsm['spatial'] spot coordinates")
    coords = np.asarray(adata.obsm["spatial"], float)[:, :2]
    library = _library(adata.uns)
    scalefactors = library.get("scalefactors", {})
    pixels, scale, source = _h5ad_image(p, coords, library, image)
    diameter = scalefactors.get("spot_diameter_fullres") or 0.65 * _spot_spacing(p, coords)
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    obs = adata.obs.copy()
    totals = None if "total_counts" in obs else _total_counts(adata)
    if totals is not None:
        obs["total_counts"] = totals
    palettes = {
        column: list(adata.uns[f"{column}_colors"])
        for column in obs.columns
        if isinstance(obs[column].dtype, pd.CategoricalDtype) and f"{column}_colors" in adata.uns
    }
    return Spots(
        image=pixels,
        expression=pd.DataFrame(x, index=adata.obs_names, columns=adata.var_names),
        coords=coords * scale,
        spot_diameter=float(diameter) * scale,
        obs=obs,
        palettes=palettes,
        image_source=source,
    )


def spots_expression(path: str | os.PathLike, barcodes: Iterable[str] | None = None) -> pd.Series:
    """Mean expression of the spots ``barcodes`` (default: every spot), genes as index.

    ``path`` is an ``.h5ad`` (its ``X``, read backed: only those rows are loaded) or a
    Space Ranger folder (raw counts of ``filtered_feature_bc_matrix.h5``, duplicated gene
    symbols added as in :func:`read_10x_h5`). The RNA encoder takes the result as is.
    """
    p = Path(path)
    chosen = None if barcodes is None else list(dict.fromkeys(barcodes))
    if chosen is not None and not chosen:
        raise SpotsError(f"{p}: no spot selected")
    if p.suffix.lower() == ".h5ad":
        return _h5ad_mean(p, chosen)
    return _spaceranger_mean(p, chosen)


def _library(uns: Any) -> dict:
    """The first library of ``uns["spatial"]`` (images, scalefactors), or {}."""
    spatial = uns.get("spatial") if hasattr(uns, "get") else None
    if not isinstance(spatial, dict) or not spatial:
        return {}
    library = next(iter(spatial.values()))
    return library if isinstance(library, dict) else {}


def _h5ad_image(
    path: Path, coords: np.ndarray, library: dict, image: str | os.PathLike | None
) -> tuple[np.ndarray, float, str]:
    """(RGB uint8 pixels, scale from full resolution, description) of the H&E."""
    tried = []
    files = [Path(image)] if image is not None else _sibling_images(path)
    for file in files:
        try:
            with Image.open(file) as im:
                pixels = np.asarray(im.convert("RGB"))
        except (OSError, Image.DecompressionBombError) as exc:
            if image is not None:
                raise SpotsError(f"{path}: cannot read the image {file} ({exc})") from exc
            tried.append(f"{file.name} (unreadable: {exc})")
            continue
        if _holds(pixels, coords):
            return pixels, 1.0, str(file)
        tried.append(f"{file.name} (spots fall outside it)")
    if image is not None:
        raise SpotsError(f"{path}: the spots do not lie on {image}")
    scalefactors = library.get("scalefactors", {})
    for name, pixels in library.get("images", {}).items():
        scale = scalefactors.get(f"tissue_{name}_scalef")
        if name in ("hires", "lowres") and scale and _holds(pixels, coords * scale):
            return _rgb_uint8(pixels), float(scale), f"uns['spatial'] {name} image"
        tried.append(f"the embedded {name} image (spots fall outside it)")
    raise SpotsError(
        f"{path}: no H&E image for the spots; tried {', '.join(tried) or 'nothing'}. "
        f"Put the full-resolution image beside it as {path.stem}.png, .jpg or .tif"
    )


def _sibling_images(path: Path) -> list[Path]:
    """``<stem>.<image suffix>`` beside ``path``, else the folder's only image file."""
    same_stem = [path.with_suffix(s) for s in IMAGE_SUFFIXES if path.with_suffix(s).exists()]
    if same_stem:
        return same_stem[:1]
    images = [f for f in sorted(path.parent.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    return images if len(images) == 1 else []


def _holds(pixels: np.ndarray, coords: np.ndarray) -> bool:
    h, w = pixels.shape[:2]
    x, y = coords[:, 0], coords[:, 1]
    return bool(
        len(coords) and (x >= 0).all() and (x < w).all() and (y >= 0).all() and (y < h).all()
    )


def _rgb_uint8(pixels: np.ndarray) -> np.ndarray:
    """Embedded images are float in [0, 1] (scanpy) or uint8; RGB(A) -> RGB uint8."""
    pixels = np.asarray(pixels)[..., :3]
    return pixels if pixels.dtype == np.uint8 else to_uint8(pixels)


def _open_h5ad(path: Path, backed: str | None = None) -> Any:
    import anndata

    try:
        return anndata.read_h5ad(path, backed=backed)
    except Exception as exc:  # h5py and anndata raise many types for bad files
        raise SpotsError(f"{path}: not a readable AnnData file ({exc})") from exc


def _spot_spacing(path: Path, coords: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    if len(coords) < 2:
        raise SpotsError(f"{path}: one spot and no scale factors: the spot size is unknown")
    distances, _ = cKDTree(coords).query(coords, k=2)
    return float(np.median(distances[:, 1]))


def _total_counts(adata: Any) -> np.ndarray | None:
    """Counts per spot from ``layers["counts"]``, ``raw`` or an integer ``X``, else None."""
    for matrix in (adata.layers.get("counts"), adata.raw.X if adata.raw is not None else None):
        if matrix is not None:
            return np.asarray(matrix.sum(axis=1)).ravel()
    values = adata.X.data if hasattr(adata.X, "data") else np.asarray(adata.X)
    if np.all(values == np.round(values)):
        return np.asarray(adata.X.sum(axis=1)).ravel()
    return None


def _h5ad_mean(path: Path, barcodes: list[str] | None) -> pd.Series:
    adata = _open_h5ad(path, backed="r")
    try:
        rows = _positions_of(path, adata.obs_names, barcodes)
        block = adata.X[np.sort(rows)]
        mean = np.asarray(block.mean(axis=0)).ravel()
        return pd.Series(mean, index=adata.var_names.copy(), name=f"mean of {len(rows)} spots")
    finally:
        adata.file.close()


def _spaceranger_mean(folder: Path, barcodes: list[str] | None) -> pd.Series:
    import h5py
    from scipy.sparse import csc_matrix

    matrix = folder / "filtered_feature_bc_matrix.h5"
    if not matrix.exists():
        raise SpotsError(
            f"{folder}: neither an .h5ad nor a Space Ranger folder ({matrix.name} missing)"
        )
    with h5py.File(matrix, "r") as f:
        if "matrix" not in f:
            raise SpotsError(f"{matrix}: not a 10x v3 feature-barcode matrix")
        m = f["matrix"]
        counts = csc_matrix(
            (m["data"][:], m["indices"][:], m["indptr"][:]), shape=tuple(m["shape"][:])
        )
        genes = [g.decode() for g in m["features"]["name"][:]]
        known = pd.Index([b.decode() for b in m["barcodes"][:]])
    columns = _positions_of(folder, known, barcodes)
    mean = np.asarray(counts[:, columns].mean(axis=1)).ravel()
    series = pd.Series(mean, index=genes).groupby(level=0).sum()
    series.name = f"mean of {len(columns)} spots"
    return series


def _positions_of(path: Path, index: pd.Index, barcodes: list[str] | None) -> np.ndarray:
    """Rows of ``barcodes`` in ``index`` (all rows for None); an error names unknown ones."""
    if barcodes is None:
        return np.arange(len(index))
    positions = index.get_indexer(barcodes)
    missing = [b for b, i in zip(barcodes, positions, strict=True) if i < 0]
    if missing:
        raise SpotsError(f"{path}: {len(missing)} unknown barcode(s), e.g. {missing[:3]}")
    return positions
