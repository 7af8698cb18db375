"""Visium spots over their H&E in a real napari viewer (squidpy .h5ad, Space Ranger folder)."""

from __future__ import annotations

import anndata
import numpy as np
import pytest
from PIL import Image

from helpers import BRAIN, DATA
from napari_mupd.io.visium import read_10x_h5, spots_expression
from napari_mupd.plugin._visium_reader import napari_get_reader

pytestmark = pytest.mark.gui

HEART = DATA / "spatial" / "scanpy_visium_heart"


def pinkness(image: np.ndarray, yx: np.ndarray, radius: int) -> np.ndarray:
    """Mean (R + B) / 2 - G around each point: H&E tissue > 0, grey glass ~ -2."""
    out = []
    for y, x in np.round(yx).astype(int):
        patch = image[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
        rgb = patch.reshape(-1, 3).astype(float)
        out.append((rgb[:, [0, 2]].mean(axis=1) - rgb[:, 1]).mean())
    return np.asarray(out)


def test_h5ad_opens_as_he_and_spots(make_napari_viewer):
    path = BRAIN / "test_data.h5ad"
    viewer = make_napari_viewer()
    image, points = viewer.open(str(path), plugin="napari-mupd")
    assert (image._type_string, points._type_string) == ("image", "points")
    assert image.rgb
    np.testing.assert_array_equal(image.data, np.asarray(Image.open(BRAIN / "test_img.jpg")))
    adata = anndata.read_h5ad(path)
    np.testing.assert_array_equal(points.data, adata.obsm["spatial"][:, ::-1])
    np.testing.assert_allclose(points.size, 89.44476048022638)
    assert list(points.features["barcode"]) == list(adata.obs_names)
    assert list(points.features["leiden"]) == list(adata.obs["leiden"].astype(str))
    for layer in (image, points):
        assert layer.metadata["visium"] == {"path": str(path), "kind": "h5ad"}
    # one outline colour per cluster, and the H&E seen through the spots
    assert (points.face_color[:, 3] == 0).all()
    leiden = points.features.leiden
    colours = {c: {tuple(points.border_color[i]) for i in np.flatnonzero(leiden == c)}
               for c in set(leiden)}  # fmt: skip
    assert all(len(v) == 1 for v in colours.values())
    assert len({next(iter(v)) for v in colours.values()}) == len(colours)
    # every spot of this crop lies on tissue
    assert (pinkness(image.data, points.data, 20) > 5).all()


def test_spaceranger_folder_opens_as_he_and_spots(make_napari_viewer):
    folder = HEART
    assert napari_get_reader(str(folder)) is not None
    viewer = make_napari_viewer()
    image, points = viewer.open(str(folder), plugin="napari-mupd")
    assert image.data.shape == (600, 600, 3)
    assert len(points.data) == 100
    scalef = 0.045004502
    np.testing.assert_allclose(points.size, 89.42751063343188 * scalef)
    first = points.features["barcode"].iloc[0]
    assert first == "AAACAAGTATCTCCCA-1"  # tissue_positions_list.csv: row 8513, col 9811
    np.testing.assert_allclose(points.data[0], np.array([8513, 9811]) * scalef)
    counts = read_10x_h5(folder / "filtered_feature_bc_matrix.h5")
    np.testing.assert_allclose(
        points.features["total_counts"], counts.loc[list(points.features["barcode"])].sum(axis=1)
    )
    assert points.metadata["visium"] == {"path": str(folder), "kind": "spaceranger"}
    assert (pinkness(image.data, points.data, 1) > 5).mean() >= 0.85


@pytest.mark.parametrize("source", ["h5ad", "spaceranger"])
def test_expression_of_selected_spots(make_napari_viewer, source):
    path = BRAIN / "test_data.h5ad" if source == "h5ad" else HEART
    viewer = make_napari_viewer()
    _, points = viewer.open(str(path), plugin="napari-mupd")
    points.selected_data = {1, 4, 7}
    barcodes = points.features["barcode"].iloc[sorted(points.selected_data)]
    visium = points.metadata["visium"]
    mean = spots_expression(visium["path"], barcodes)
    if source == "h5ad":
        adata = anndata.read_h5ad(path)
        rows = adata[list(barcodes)].X.toarray()
        expected, genes = rows.mean(axis=0), list(adata.var_names)
    else:
        counts = read_10x_h5(path / "filtered_feature_bc_matrix.h5")
        expected, genes = counts.loc[list(barcodes)].to_numpy().mean(axis=0), list(counts.columns)
    assert list(mean.index) == genes
    np.testing.assert_allclose(mean.to_numpy(), expected, rtol=1e-5)
    assert np.count_nonzero(expected) > 10  # a real profile, not zeros


def test_get_reader_claims_only_spatial_data(tmp_path):
    assert napari_get_reader(str(BRAIN / "test_data.h5ad")) is not None
    plain = tmp_path / "plain.h5ad"
    anndata.AnnData(np.ones((3, 2), np.float32)).write_h5ad(plain)
    assert napari_get_reader(str(plain)) is None  # no obsm["spatial"]: another plugin's
    assert napari_get_reader(str(tmp_path)) is None
    assert napari_get_reader("slide.svs") is None
