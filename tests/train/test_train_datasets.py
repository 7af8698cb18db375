"""Each training dataset reads the real files in data/."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import CMU1, DATA, pattern
from napari_mupd.train.augment import dihedral, stain_jitter
from napari_mupd.train.datasets import (
    CaptionedTiles,
    DatasetError,
    PairedTileFolder,
    SerialSectionPairs,
    SlideTiles,
    SpatialSpots,
    build_caption,
    build_dataset,
)

SECTIONS = DATA / "serial_sections" / "mouse_lung_lesion3"
PS = SECTIONS / "landmarks_50pc" / "user-PS_scale-50pc"
SPATIAL = DATA / "spatial"


def test_serial_sections_give_registered_pairs():
    pairs = SerialSectionPairs(
        SECTIONS / "29-041-Izd2-w35-He-les3.jpg",
        SECTIONS / "29-041-Izd2-w35-Ki67-7-les3.jpg",
        PS / "29-041-Izd2-w35-He-les3.csv",
        PS / "29-041-Izd2-w35-Ki67-7-les3.csv",
        target="IHC:Ki67",
        tile_size=64,
        landmark_scale=0.1,
    )
    assert len(pairs) > 10
    sample = pairs[0]
    assert sample.image.shape == sample.source.shape == (64, 64, 3)
    assert sample.target == "IHC:Ki67"
    # registration made the sections overlap: tissue correlates better than unregistered
    fixed = pairs.fixed.mean(axis=2)
    warped = pairs.warped.mean(axis=2)
    raw = np.asarray(Image.open(SECTIONS / "29-041-Izd2-w35-Ki67-7-les3.jpg").convert("L"), float)
    h, w = min(raw.shape[0], fixed.shape[0]), min(raw.shape[1], fixed.shape[1])
    before = np.corrcoef(fixed[:h, :w].ravel(), raw[:h, :w].ravel())[0, 1]
    after = np.corrcoef(fixed.ravel(), warped.ravel())[0, 1]
    assert after > before + 0.05


def test_captioned_tiles_from_labels(tmp_path):
    tiles = DATA / "tiles" / "labeled"
    rows = [
        {"path": str(p), "organ": "bile duct", "stain": "H&E", "diagnosis": "cholangiocarcinoma"}
        for p in sorted((tiles / "TCGA-3X-AAVA-01Z-00-DX1").glob("*.jpg"))
    ]
    rows.append(
        {
            "path": str(tiles / "CRC-VAL-HE-7K-NORM-TCGA-YLVCMEHK.tif"),
            "caption": "normal colon mucosa",
        }
    )
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    data = CaptionedTiles(tmp_path / "labels.csv", tile_size=128)
    assert len(data) == 7
    assert data[0].text == "H&E, bile duct, cholangiocarcinoma"
    assert data[6].text == "normal colon mucosa"
    assert data[6].image.shape == (128, 128, 3)


def test_build_caption_needs_something():
    assert build_caption({"magnification": "20x", "organ": "colon"}) == "20x, colon"
    with pytest.raises(DatasetError, match="no caption"):
        build_caption({"path": "x.png"})


def test_h5ad_spots_pair_tiles_with_expression():
    folder = SPATIAL / "squidpy_mouse_brain"
    spots = SpatialSpots.from_h5ad(folder / "test_data.h5ad", folder / "test_img.jpg", tile_size=64)
    assert 0 < len(spots) <= 49
    sample = spots[0]
    assert sample.image.shape == (64, 64, 3)
    assert isinstance(sample.rna, pd.Series) and len(sample.rna) == 1999
    assert tissue_like(sample.image)


def test_spaceranger_folder():
    spots = SpatialSpots.from_spaceranger(
        SPATIAL / "scanpy_visium_heart", tile_size=32, context=6.0
    )
    assert len(spots) > 50
    assert spots[0].rna.sum() > 0 and spots[0].image.shape == (32, 32, 3)


def test_slide_tiles_skip_background():
    tiles = SlideTiles(CMU1, tile_size=128, mpp=2.0, caption="20x H&E, skin")
    assert tiles.level == 1  # the 2x derived level, then resized
    width, height = tiles.slide.dimensions
    total = (width // tiles.step) * (height // tiles.step)
    assert 0 < len(tiles) < total  # background tiles dropped
    sample = tiles[0]
    assert sample.image.shape == (128, 128, 3) and sample.text == "20x H&E, skin"
    assert tissue_like(sample.image)


def test_paired_folders(tmp_path):
    for sub in ("he", "ihc"):
        (tmp_path / sub).mkdir()
    Image.fromarray(pattern(80, 80)).save(tmp_path / "he" / "a.png")
    Image.fromarray(255 - pattern(80, 80)).save(tmp_path / "ihc" / "a.png")
    Image.fromarray(pattern(80, 80)).save(tmp_path / "he" / "unpaired.png")
    data = build_dataset(
        {
            "paired_folders": {
                "source_dir": tmp_path / "he",
                "target_dir": tmp_path / "ihc",
                "target": "IHC:Ki67",
            }
        },
        tile_size=64,
    )
    assert isinstance(data, PairedTileFolder) and len(data) == 1
    assert data[0].source.shape == (64, 64, 3)
    (tmp_path / "other").mkdir()
    Image.fromarray(pattern(80, 80)).save(tmp_path / "other" / "b.png")
    with pytest.raises(DatasetError, match="no file names in common"):
        PairedTileFolder(tmp_path / "he", tmp_path / "other", "IHC:Ki67", 64)
    with pytest.raises(DatasetError, match="not a folder"):
        PairedTileFolder(tmp_path / "he", tmp_path / "missing", "IHC:Ki67", 64)


def test_unknown_dataset_type():
    with pytest.raises(DatasetError, match="unknown dataset type"):
        build_dataset({"cloud_bucket": {}}, 64)


def test_augmentations_keep_pairs_aligned():
    rng = np.random.default_rng(0)
    a = pattern(32, 32)
    b, c = dihedral([a, a.copy()], rng)
    np.testing.assert_array_equal(b, c)
    tile = np.asarray(Image.open(DATA / "tiles" / "wsidicom_test_tile.png").convert("RGB"))
    jittered = stain_jitter(tile, np.random.default_rng(1))
    change = np.abs(jittered.astype(int) - tile).mean()
    assert jittered.shape == tile.shape and 0.5 < change < 15  # mild, but not nothing


def tissue_like(tile: np.ndarray) -> bool:
    """Not blank glass: some stained, darker pixels."""
    return bool((tile.mean(axis=2) < 200).mean() > 0.2)
