"""Tissue detection on real slides and synthetic glass."""

from __future__ import annotations

import numpy as np
from PIL import Image

from helpers import CMU1, DATA
from napari_mupd import open_slide
from napari_mupd.engine.tissue import slide_tissue
from napari_mupd.imaging.regions import Region
from napari_mupd.imaging.tissue import TissueMap, tissue_mask


def test_blank_glass_has_no_tissue():
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(242, 3, (200, 300, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(glass).any()


def test_finds_a_stained_disc_on_glass():
    image = np.full((200, 200, 3), 240, np.uint8)
    yy, xx = np.mgrid[:200, :200]
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 < 50**2
    image[disc] = (180, 90, 160)  # eosin pink / haematoxylin purple
    mask = tissue_mask(image)
    assert (mask == disc).mean() > 0.98


def test_real_slide_and_he_tile():
    with open_slide(CMU1) as slide:
        tissue = slide_tissue(slide, max_size=512)
        assert slide_tissue(slide, max_size=512) is tissue  # computed once per slide
    mask = tissue.mask
    assert 0.2 < mask.mean() < 0.9  # CMU-1-Small-Region: skin with some glass
    assert tissue.fraction(Region(0, 0, 2220, 2967)) == mask.mean()
    assert tissue.has_tissue(Region(0, 0, 2220, 2967), mask.mean())
    assert not tissue.has_tissue(Region(0, 0, 2220, 2967), mask.mean() + 0.01)
    tile = np.asarray(Image.open(DATA / "tiles" / "wsidicom_test_tile.png").convert("RGB"))
    assert tissue_mask(tile).mean() > 0.5


def test_tissue_map_reads_level0_regions_off_a_coarser_mask():
    mask = np.zeros((10, 20), bool)
    mask[:, 10:] = True  # the right half, at 4 level-0 pixels per mask pixel
    tissue = TissueMap(mask, 4.0)
    assert tissue.fraction(Region(40, 0, 40, 40)) == 1.0
    assert tissue.fraction(Region(20, 0, 40, 40)) == 0.5
    assert tissue.fraction(Region(0, 0, 3, 3)) == 0.0  # at least one mask pixel
    assert tissue.fraction(Region(500, 500, 10, 10)) == 0.0  # off the mask


def test_pale_tissue_beside_dense_tissue_is_tissue():
    """Lung parenchyma (thin alveolar walls) around a dense lesion is tissue to stain:
    the dense lesion does not set the saturation threshold above it, and the alveoli are
    closed into the tissue around them (only the lesion was found before)."""
    with open_slide(DATA / "serial_sections/mouse_lung_lesion3/29-041-Izd2-w35-He-les3.jpg") as s:
        rgb = np.asarray(s.read_region((0, 0), 0, s.dimensions))[..., :3]
    mask = tissue_mask(rgb)
    assert mask.mean() > 0.75  # the section fills the image
    parenchyma = mask[:128, 600:892]  # alveoli only, upper right, away from the lesion
    assert parenchyma.mean() > 0.6
    assert not tissue_mask(np.full((256, 256, 3), 245, np.uint8)).any()
