"""Visium .h5ad spots without a viewer: where the H&E comes from, spot size, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import anndata
import numpy as np
import pytest
from PIL import Image

from helpers import BRAIN, DATA
from napari_mupd.errors import MuPDError, SpotsError
from napari_mupd.io.visium import read_h5ad_spots, spots_expression

LIBRARY = "V1_Adult_Mouse_Brain"
LOWRES = 0.051033426
DIAMETER = 89.44476048022638


@pytest.fixture
def brain() -> anndata.AnnData:
    return anndata.read_h5ad(BRAIN / "test_data.h5ad")


def save(adata: anndata.AnnData, folder: Path, name: str = "sample.h5ad") -> Path:
    folder.mkdir(exist_ok=True)
    adata.write_h5ad(folder / name)
    return folder / name


def test_image_beside_with_the_same_stem_wins(brain, tmp_path):
    path = save(brain, tmp_path)
    shutil.copy(BRAIN / "test_img.jpg", tmp_path / "sample.jpg")
    Image.new("RGB", (5000, 5000)).save(tmp_path / "other.png")
    spots = read_h5ad_spots(path)
    assert spots.image_source == str(tmp_path / "sample.jpg")
    assert spots.image.shape == (1717, 950, 3)
    np.testing.assert_array_equal(spots.coords, brain.obsm["spatial"])
    assert spots.spot_diameter == pytest.approx(DIAMETER)
    assert list(spots.expression.index) == list(brain.obs_names)
    assert "leiden" in spots.obs and "total_counts" not in spots.obs  # X is log-normalised


def test_embedded_lowres_when_no_full_resolution_image(brain, tmp_path):
    # squidpy's embedded hires is a 100 x 100 placeholder the spots do not fit: skipped
    for folder, extra in ((tmp_path / "alone", []), (tmp_path / "two", ["a.png", "b.png"])):
        path = save(brain, folder)
        for name in extra:  # two unrelated images: ambiguous, neither is used
            Image.new("RGB", (2000, 2000)).save(folder / name)
        spots = read_h5ad_spots(path)
        assert spots.image_source == "uns['spatial'] lowres image"
        assert spots.image.shape == (88, 49, 3) and spots.image.dtype == np.uint8
        np.testing.assert_allclose(spots.coords, brain.obsm["spatial"] * LOWRES)
        assert spots.spot_diameter == pytest.approx(DIAMETER * LOWRES)


def test_explicit_image_and_counts(brain, tmp_path):
    counts = brain.copy()
    counts.X = np.rint(np.expm1(brain.X.toarray()))  # integers: taken as counts
    path = save(counts, tmp_path)
    spots = read_h5ad_spots(path, image=BRAIN / "test_img.jpg")
    assert spots.image.shape == (1717, 950, 3)
    np.testing.assert_allclose(spots.obs["total_counts"], counts.X.sum(axis=1))
    Image.new("RGB", (100, 100)).save(tmp_path / "small.png")
    with pytest.raises(SpotsError, match="do not lie on"):
        read_h5ad_spots(path, image=tmp_path / "small.png")


def test_spot_size_from_spacing_without_scalefactors(brain, tmp_path):
    del brain.uns["spatial"]
    path = save(brain, tmp_path)
    shutil.copy(BRAIN / "test_img.jpg", tmp_path / "sample.jpg")
    spots = read_h5ad_spots(path)
    assert spots.spot_diameter == pytest.approx(
        DIAMETER, rel=0.1
    )  # 65 um (Space Ranger), 100 um apart


def test_no_image_is_a_clear_error(brain, tmp_path):
    del brain.uns["spatial"][LIBRARY]["images"]
    path = save(brain, tmp_path)
    with pytest.raises(SpotsError, match="no H&E image") as info:
        read_h5ad_spots(path)
    assert str(path) in str(info.value) and "sample.png" in str(info.value)


def test_bad_files(brain, tmp_path):
    garbage = tmp_path / "garbage.h5ad"
    garbage.write_text("not hdf5")
    with pytest.raises(SpotsError, match="not a readable AnnData") as info:
        read_h5ad_spots(garbage)
    assert isinstance(info.value, MuPDError) and "garbage.h5ad" in str(info.value)
    del brain.obsm["spatial"]
    with pytest.raises(SpotsError, match=r"no obsm\['spatial'\]"):
        read_h5ad_spots(save(brain, tmp_path, "flat.h5ad"))


def test_spots_expression_errors(tmp_path):
    path = BRAIN / "test_data.h5ad"
    with pytest.raises(SpotsError, match="no spot selected"):
        spots_expression(path, [])
    with pytest.raises(SpotsError, match="1 unknown barcode"):
        spots_expression(path, ["AAATTGCGGCGGTTCT-1", "NOT-A-BARCODE"])
    with pytest.raises(SpotsError, match="Space Ranger"):
        spots_expression(tmp_path, ["AAATTGCGGCGGTTCT-1"])
    heart = DATA / "spatial" / "scanpy_visium_heart"
    with pytest.raises(SpotsError, match="unknown barcode"):
        spots_expression(heart, ["NOT-A-BARCODE"])


def test_duplicated_barcodes_count_once():
    path = BRAIN / "test_data.h5ad"
    once = spots_expression(path, ["AAATTGCGGCGGTTCT-1", "AACGCGAACGGCAACA-1"])
    twice = spots_expression(path, ["AAATTGCGGCGGTTCT-1"] * 2 + ["AACGCGAACGGCAACA-1"])
    np.testing.assert_array_equal(once, twice)
