"""Exporting training tiles: files, manifest, pixels, training datasets, resume, cancel."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import CMU1
from napari_mupd import ConditionError, open_slide
from napari_mupd.engine.export import export_tiles, plan_tiles, target_folder
from napari_mupd.engine.virtual_stain import Grid
from napari_mupd.errors import Cancelled, ExportError
from napari_mupd.imaging.regions import Region
from napari_mupd.model import MuPDPipeline
from napari_mupd.train.datasets import CaptionedTiles, PairedTileFolder, read_rgb

TISSUE = Region(700, 1100, 1000, 1200)  # level-0 pixels of CMU-1 over tissue
SETTINGS = {"count": 3, "targets": ["IHC:Ki67", "H&E"], "text": "tumor", "seed": 7}


@pytest.fixture(scope="module")
def slide():
    with open_slide(CMU1) as s:
        yield s


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return MuPDPipeline.from_pretrained(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def export(slide, pipe, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiles"
    return export_tiles(slide, TISSUE, pipe, out, **SETTINGS)


def manifest_rows(out: Path) -> tuple[list[dict], dict]:
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out / "manifest.json").read_text())


def tile_files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.glob("*/*") if p.is_file()}


def test_target_folders():
    assert [target_folder(t) for t in ("IHC:Ki67", "H&E", "mIF:CD3,CD8")] == [
        "virtual_ki67",
        "synthetic_he",
        "virtual_cd3-cd8",
    ]


def test_export_writes_tiles_and_manifest(export, slide, pipe):
    out = export.parent
    assert export.name == "manifest.csv"
    rows, manifest = manifest_rows(out)
    assert manifest["complete"] is True
    assert len(rows) == 3 * 3
    assert rows == [
        {k: "" if v is None else str(v) for k, v in r.items()} for r in manifest["tiles"]
    ]
    assert {r["path"] for r in rows} == tile_files(out)
    assert sorted(r["kind"] for r in rows) == ["real"] * 3 + ["synthetic"] * 3 + ["virtual"] * 3
    for row in rows:
        assert row["slide"] == str(CMU1.resolve())
        assert (row["model"], row["model_hash"]) == ("mupd-tiny", pipe.model_hash)
        assert float(row["mpp"]) == pytest.approx(1.0, abs=1e-3)
        assert (row["tile_size"], row["size"]) == ("64", "128")
        assert row["napari_mupd_version"]
        if row["kind"] == "real":
            assert row["seed"] == row["text"] == ""
        else:
            assert row["source"] == f"real_he/{row['id']}.png"
            assert (row["steps"], row["text"]) == ("4", "tumor")
            assert read_rgb(out / row["path"]).shape == (64, 64, 3)
    # the real tiles are the slide's pixels at the recorded place, on the model's grid
    for row in (r for r in rows if r["kind"] == "real"):
        x, y, size = int(row["x"]), int(row["y"]), int(row["size"])
        assert TISSUE.x <= x and x + size <= TISSUE.x + TISSUE.width
        assert row["id"] == f"CMU-1-Small-Region_x{x}_y{y}"
        grid = Grid.for_region(slide, Region(x, y, size, size), 1.0)
        np.testing.assert_array_equal(
            read_rgb(out / row["path"]), grid.read(slide, Region(0, 0, 64, 64))
        )


def test_training_datasets_read_the_export(export):
    out = export.parent
    pairs = PairedTileFolder(out / "real_he", out / target_folder("IHC:Ki67"), "IHC:Ki67", 64)
    assert len(pairs) == 3
    sample = pairs[0]
    np.testing.assert_array_equal(
        sample.source, read_rgb(out / "real_he" / f"{sample.meta['pair']}.png")
    )
    np.testing.assert_array_equal(
        sample.image, read_rgb(out / "virtual_ki67" / f"{sample.meta['pair']}.png")
    )
    captioned = CaptionedTiles(out / "captions.csv", 64)
    assert len(captioned) == 3
    assert captioned[0].text == "tumor" and captioned[0].image.shape == (64, 64, 3)


def test_rerun_skips_written_tiles_and_resumes(export, slide, pipe):
    out = export.parent
    files = sorted(tile_files(out))
    stamps = {f: (out / f).stat().st_mtime_ns for f in files}
    rows, _ = manifest_rows(out)
    export_tiles(slide, TISSUE, pipe, out, **SETTINGS)
    assert {f: (out / f).stat().st_mtime_ns for f in files} == stamps
    assert manifest_rows(out)[0] == rows
    # a lost tile is made again, identically
    lost = out / next(f for f in files if f.startswith("virtual_ki67/"))
    before = lost.read_bytes()
    lost.unlink()
    export_tiles(slide, TISSUE, pipe, out, **SETTINGS)
    assert lost.read_bytes() == before
    assert manifest_rows(out)[0] == rows


def test_refuses_a_folder_of_another_export(export, slide, pipe, tmp_path):
    with pytest.raises(ExportError, match=r"another export.*seed"):
        export_tiles(slide, TISSUE, pipe, export.parent, **{**SETTINGS, "seed": 8})
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_tiles(slide, TISSUE, pipe, tmp_path, **SETTINGS)


def test_cancel_leaves_a_consistent_manifest(slide, pipe, tmp_path):
    out = tmp_path / "tiles"
    done = []
    with pytest.raises(Cancelled):
        export_tiles(
            slide,
            TISSUE,
            pipe,
            out,
            **SETTINGS,
            progress=lambda n, total: done.append((n, total)),
            cancel=lambda: len(done) >= 4,
        )
    assert done[-1] == (4, 9)
    rows, manifest = manifest_rows(out)
    assert manifest["complete"] is False
    assert len(rows) == 4 and {r["path"] for r in rows} == tile_files(out)
    assert not list(out.rglob("*.tmp"))
    export_tiles(slide, TISSUE, pipe, out, **SETTINGS)
    rows, manifest = manifest_rows(out)
    assert manifest["complete"] is True and len(rows) == 9


def test_level0_tiles_and_mif_rna(slide, pipe, tmp_path):
    rna = {"CD3E": 5.0, "MKI67": 2.0, "NOTAGENE": 1.0}
    path = export_tiles(
        slide,
        None,
        pipe,
        tmp_path / "tiles",
        count=2,
        targets=["mIF:CD8,CD3"],
        rna=rna,
        mpp=slide.mpp[0],
    )
    rows, manifest = manifest_rows(path.parent)
    assert manifest["rna"]["genes_found"] == 2
    assert (path.parent / "rna.csv").read_text().splitlines() == [
        "gene,value",
        "CD3E,5.0",
        "MKI67,2.0",
        "NOTAGENE,1.0",
    ]
    import tifffile

    for row in rows:
        x, y = int(row["x"]), int(row["y"])
        if row["kind"] == "real":
            expected = slide.read_region((x, y), 0, (64, 64))
            np.testing.assert_array_equal(read_rgb(path.parent / row["path"]), expected)
        else:
            assert (row["target"], row["channels"]) == ("mIF:CD3,CD8", "CD8,CD3")
            assert (row["rna"], row["rna_genes"]) == ("rna.csv", "2/8")
            assert tifffile.imread(path.parent / row["path"]).shape == (2, 64, 64)


def test_polygon_regions_keep_tiles_inside(slide):
    triangle = Region.from_polygon([(700, 1100), (1700, 1100), (700, 2300)])
    grid = Grid.for_region(slide, triangle, 1.0)
    spots = plan_tiles(slide, grid, 64, min_tissue=0.1)
    assert spots
    for spot in spots:
        cx, cy = spot.x + 64 - 700, spot.y + 64 - 1100  # tile centre, relative
        assert cx / 1000 + cy / 1200 <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"text": "  "}, ConditionError, "prompt is empty"),
        ({"targets": ["IHC:HER2"]}, ConditionError, "unknown IHC marker"),
        ({"targets": []}, ExportError, "at least one target"),
        ({"rna": {"FOO": 1.0, "BAR": 2.0}}, ConditionError, "none of the 8 genes"),
        ({"region": Region(0, 0, 400, 400)}, ExportError, "no 64 px tile"),
        ({"region": Region(800, 1200, 100, 100)}, ExportError, "smaller than one"),
        ({"tile_size": 60}, ExportError, "multiple of 16"),
        ({"count": 0}, ExportError, "count must be at least 1"),
    ],
)
def test_bad_inputs_raise_clear_errors(slide, pipe, tmp_path, kwargs, error, match):
    region = kwargs.pop("region", TISSUE)
    with pytest.raises(error, match=match):
        export_tiles(slide, region, pipe, tmp_path / "tiles", **kwargs)
    assert not (tmp_path / "tiles").exists()
