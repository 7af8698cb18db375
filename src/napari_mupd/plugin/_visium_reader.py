"""npe2 reader: Visium spots (.h5ad or Space Ranger folder) as Points over their H&E.

Two layers, both with ``metadata["visium"] = {"path", "kind"}`` so that the Generate
tissue widget can ask :func:`~napari_mupd.io.visium.spots_expression` for the mean
expression of the spots selected on the Points layer (``features["barcode"]``).
Spot centres are (y, x) in pixels of the H&E (napari's data coordinate k is the centre
of pixel k); a spot's size is its diameter in those pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_mupd._version import __version__
from napari_mupd.io.visium import Spots, read_h5ad_spots, read_spaceranger
from napari_mupd.plugin import LayerData
from napari_mupd.plugin._reader import single_path

CLUSTER_COLUMNS = ("leiden", "louvain", "clusters", "cluster")
#: Colours of clusters when the file has none (matplotlib's tab10).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip


def napari_get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Return :func:`read_visium` for an .h5ad with spot coordinates or a Space Ranger folder."""
    p = single_path(path)
    if p is None:
        return None
    if p.suffix.lower() == ".h5ad":
        return read_visium if _has_spatial(p) else None
    return read_visium if p.is_dir() and spaceranger_root(p) is not None else None


def read_visium(path: str | list[str]) -> list[LayerData]:
    """[the H&E as an RGB image layer, the spots as a Points layer]."""
    p = single_path(path) or Path(path[0])
    if p.suffix.lower() == ".h5ad":
        root, kind, spots = p, "h5ad", read_h5ad_spots(p)
    else:
        root = spaceranger_root(p) or p
        kind, spots = "spaceranger", read_spaceranger(root)
    name = p.stem if kind == "h5ad" else p.name
    provenance = {
        "visium": {"path": str(root), "kind": kind},
        "image_source": spots.image_source or "Space Ranger tissue_lowres_image.png",
        "reader": f"napari-mupd {__version__}",
    }
    image = (spots.image, {"name": f"{name} H&E", "rgb": True, "metadata": provenance}, "image")
    features = spot_features(spots, kind)
    colours, legend = _cluster_colours(spots, features)
    points_kwargs: dict[str, Any] = {
        "name": f"{name} spots",
        "size": spots.spot_diameter,
        "features": features,
        # outlines in the cluster colours: the H&E under each spot stays visible
        "face_color": "transparent",
        "border_color": colours,
        "border_width": 0.12,
        "metadata": {**provenance, "clusters": legend},
    }
    return [image, (spots.coords[:, ::-1].copy(), points_kwargs, "points")]


def spaceranger_root(folder: Path) -> Path | None:
    """The folder holding ``filtered_feature_bc_matrix.h5`` and ``spatial/`` (or its ``outs``)."""
    for root in (folder, folder / "outs"):
        if (root / "filtered_feature_bc_matrix.h5").is_file() and (
            root / "spatial" / "scalefactors_json.json"
        ).is_file():
            return root
    return None


def spot_features(spots: Spots, kind: str) -> pd.DataFrame:
    """``barcode``, the categorical (cluster) columns of ``obs`` and ``total_counts``."""
    barcodes = spots.expression.index
    features = pd.DataFrame({"barcode": np.asarray(barcodes, dtype=object)})
    obs = spots.obs if spots.obs is not None else pd.DataFrame(index=barcodes)
    for column in obs.columns:
        if isinstance(obs[column].dtype, pd.CategoricalDtype):
            features[column] = obs[column].astype(str).to_numpy()
    if "total_counts" in obs:
        features["total_counts"] = obs["total_counts"].to_numpy(float)
    elif kind == "spaceranger":  # Space Ranger's matrix holds raw counts
        features["total_counts"] = spots.expression.sum(axis=1).to_numpy(float)
    return features


def _cluster_colours(spots: Spots, features: pd.DataFrame) -> tuple[Any, dict[str, Any]]:
    """Spot colours from the first cluster column (the file's palette if it has one), else
    one colour; and the legend: ``{"column": name, "colours": {cluster: colour}}``."""
    column = next((c for c in CLUSTER_COLUMNS if c in features), None)
    if column is None:
        column = next((c for c in features.columns if c not in ("barcode", "total_counts")), None)
    if column is None:
        return "#ffd700", {}
    obs = spots.obs
    assert obs is not None  # the categorical columns came from it
    categories = [str(c) for c in obs[column].cat.categories]
    palette = spots.palettes.get(column) or PALETTE
    lookup = {c: palette[i % len(palette)] for i, c in enumerate(categories)}
    legend = {"column": column, "colours": lookup}
    return [lookup[value] for value in features[column]], legend


def _has_spatial(path: Path) -> bool:
    """Whether an .h5ad holds ``obsm/spatial`` (True when h5py cannot tell: let it fail clearly)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "obsm" in f and "spatial" in f["obsm"]
    except OSError:
        return path.exists()


__all__ = ["napari_get_reader", "read_visium", "spaceranger_root", "spot_features"]
