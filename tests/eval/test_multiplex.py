"""A virtual mIF stain scored against a real multichannel slide, marker by marker."""

from __future__ import annotations

import numpy as np
import pytest

from multichannel_files import write_ome_tiff
from napari_mupd.errors import EvalError
from napari_mupd.eval.multiplex import compare_multiplex, compare_with_slide, match_markers
from napari_mupd.imaging.regions import Region
from napari_mupd.io import open_slide


def cells_slide(seed: int = 0, shape: tuple[int, int] = (256, 256)) -> tuple[np.ndarray, ...]:
    """(DAPI, CD8, Ki67) uint16 planes: 60 round nuclei, a third CD8+, a quarter Ki67+,
    and the (h, w, 2) [0, 1] truth of the two markers."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    dapi, cd8, ki67 = (np.full(shape, 200.0) for _ in range(3))
    truth = np.zeros((h, w, 2))
    for _ in range(60):
        cy, cx = rng.integers(8, h - 8), rng.integers(8, w - 8)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= 25
        dapi[disk] = 20000
        if rng.random() < 0.33:
            cd8[disk], truth[disk, 0] = 15000, 1.0
        if rng.random() < 0.25:
            ki67[disk], truth[disk, 1] = 12000, 1.0
    planes = np.stack([dapi, cd8, ki67]) + rng.normal(0, 100, (3, h, w))
    return np.clip(planes, 0, 65535).astype(np.uint16), truth


def test_markers_match_channels_by_name_and_alias():
    names = ["DAPI", "CD8 (Opal 520)", "Ki67", "pan-cytokeratin"]
    assert match_markers(["ki-67", "CD8", "PanCK", "CD3"], names) == {"ki-67": 2, "CD8": 1,
                                                                      "PanCK": 3}  # fmt: skip
    with pytest.raises(EvalError, match=r"CD3.*DAPI"):
        match_markers(["CD3"], names)


def test_virtual_mif_scored_against_a_real_multichannel_file(tmp_path):
    planes, truth = cells_slide()
    path = write_ome_tiff(tmp_path / "real.ome.tif", planes, ["DAPI", "CD8", "Ki-67"], None,
                          levels=2)  # fmt: skip
    rng = np.random.default_rng(1)
    good = np.clip(truth * 0.8 + rng.normal(0, 0.05, truth.shape), 0, 1)
    shuffled = good[::-1, ::-1]
    with open_slide(path) as slide:
        region = Region(0, 0, 256, 256)
        rows = compare_with_slide(slide, region, good, ["CD8", "Ki67"])
        bad = compare_with_slide(slide, region, shuffled, ["CD8", "Ki67"])
    assert [(r.marker, r.channel) for r in rows] == [("CD8", "CD8"), ("Ki67", "Ki-67")]
    for row, other in zip(rows, bad, strict=True):
        assert row.pearson > 0.9 and row.ssim > 0.5
        assert row.cells >= 40 and row.positive_agreement > 0.95
        assert other.pearson < 0.3 and other.positive_agreement < row.positive_agreement
    assert rows[0].row()[0:2] == ("CD8", "CD8")


def test_compare_multiplex_without_nuclei_has_no_cell_agreement():
    real = np.random.default_rng(0).random((2, 32, 32))
    rows = compare_multiplex(real, ["DAPI", "CD8"], real[1][..., None], ["cd8"])
    assert rows[0].pearson == pytest.approx(1.0) and np.isnan(rows[0].positive_agreement)
    with pytest.raises(EvalError, match="do not fit"):
        compare_multiplex(real, ["DAPI", "CD8"], real[1, :16][..., None], ["cd8"])
