"""A whole evaluation run: the table and the PNG plots."""

from __future__ import annotations

import math

import numpy as np
import pytest
from eval_tiles import he_ihc_pair
from PIL import Image

from napari_mupd.errors import EvalError
from napari_mupd.eval.baselines import ColourDeconvolutionBaseline
from napari_mupd.eval.report import COLUMNS, evaluate_pairs, format_table, plot_report


@pytest.fixture(scope="module")
def run():
    """Four 48 px IHC tiles from two slides, scored for a perfect copy, a fitted colour
    deconvolution baseline and a blank prediction."""
    tiles = [he_ihc_pair(48, seed) for seed in range(6)]
    he, ihc = [t[0] for t in tiles[2:]], [t[1] for t in tiles[2:]]
    baseline = ColourDeconvolutionBaseline().fit([t[0] for t in tiles[:2]],
                                                 [t[1] for t in tiles[:2]])  # fmt: skip
    blank = [np.full_like(t, 250) for t in ihc]
    methods = {"copy": ihc, "colour deconvolution": baseline.predict(he), "blank": blank}
    with pytest.warns(Warning):  # blank tiles: no nuclei, no DAB correlation
        return evaluate_pairs(methods, ihc, slide_ids=["a", "a", "b", "b"], mpp=0.5)


def test_rows_and_known_values(run):
    assert list(run.index) == ["copy", "colour deconvolution", "blank"]
    assert list(run.columns) == ["n_tiles", *COLUMNS]
    copy = run.loc["copy"]
    assert copy.patch_r == pytest.approx(1) and copy.pixel_r == pytest.approx(1)
    assert copy.ssim == pytest.approx(1) and copy.psnr == math.inf and copy.dab_dice == 1
    assert copy.fid == pytest.approx(0, abs=1e-4) and copy.nuclei_distance == 0
    assert math.isnan(copy.slide_r)  # two slides are too few for a slide-level r
    deconv, blank = run.loc["colour deconvolution"], run.loc["blank"]
    assert 0.3 < deconv.patch_r < 1 and deconv.ssim > blank.ssim
    assert math.isnan(blank.patch_r) and blank.dab_dice == 0 and math.isnan(blank.nuclei_distance)
    assert copy.fid < 1e-6 < min(deconv.fid, blank.fid)
    pred, real = run.attrs["patch_intensity"]["copy"]
    np.testing.assert_allclose(pred, real)


def test_structure_r_needs_sources_and_follows_the_nuclei():
    """The structure column scores each method against the source H&E: a copy of the
    source's own nuclei in IHC colours beats a blurred one; without sources it is n/a."""
    from scipy.ndimage import gaussian_filter

    from napari_mupd.imaging.stains import compose_stains, stain_densities

    he = [he_ihc_pair(48, seed)[0] for seed in range(3)]
    faithful = [compose_stains(stain_densities(t) * [1, 0, 0.5]) for t in he]
    blurred = [compose_stains(gaussian_filter(stain_densities(t), (3, 3, 0)) * [1, 0, 0.5])
               for t in he]  # fmt: skip
    methods = {"faithful": faithful, "blurred": blurred}
    df = evaluate_pairs(methods, faithful, sources=he)
    assert df.loc["faithful"].structure_r > 0.95 > df.loc["blurred"].structure_r
    assert math.isnan(evaluate_pairs(methods, faithful).loc["faithful"].structure_r)
    with pytest.raises(EvalError, match="2 source tiles for 3"):
        evaluate_pairs(methods, faithful, sources=he[:2])


def test_table_is_markdown_with_reasons(run):
    table = format_table(run)
    lines = table.splitlines()
    assert lines[0].startswith("| method | tiles | patch Pearson r")
    assert lines[2].startswith("| copy | 4 | 1.000")
    assert "| inf |" in lines[2] and "n/a" in lines[4]
    assert "- blank: 4 of 4 patches have a constant prediction" in table
    assert "- copy: slide_r needs at least 3 slides, got 2" in table


def test_plots_are_written(run, tmp_path):
    paths = plot_report(run, tmp_path / "plots")
    assert [p.name for p in paths] == ["metrics.png", "marker_scatter.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 200


def test_mif_stacks():
    rng = np.random.default_rng(0)
    real = [rng.random((16, 16, 2)).astype(np.float32) for _ in range(3)]
    pred = [np.stack([r[..., 0], 1 - r[..., 1]], axis=-1) for r in real]
    df = evaluate_pairs(pred, real, kind="mIF", slide_ids=["a", "b", "c"])
    row = df.loc["prediction"]
    assert row.patch_r == pytest.approx(0.0, abs=1e-6)  # mean of r = 1 and r = -1
    assert math.isnan(row.dab_dice) and math.isnan(row.fid)
    with pytest.raises(EvalError, match="kind"):
        evaluate_pairs(pred, real, kind="IF")
    with pytest.raises(EvalError, match="2 predicted tiles for 3"):
        evaluate_pairs({"m": pred[:2]}, real, kind="mIF")
