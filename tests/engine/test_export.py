"""Exporting training tiles: files, manifest, pixels, training datasets, resume, cancel."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import CMU1
from napari_mupd import ConditionError, open_slide
from napari_mupd.engine.export import (
    export_tiles,
    plan_export,
    plan_tiles,
    read_tile,
    target_folder,
    tile_regions,
)
from napari_mupd.engine.virtual_stain import Grid
from napari_mupd.errors import Cancelled, ExportError
from napari_mupd.imaging.augment import Augmentation, Transform
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
        ({"copies": 0, "augment": Augmentation(flips=True)}, ExportError, "copies must be"),
        ({"seed": -1}, ExportError, "seed must be 0 or more"),
    ],
)
def test_bad_inputs_raise_clear_errors(slide, pipe, tmp_path, kwargs, error, match):
    region = kwargs.pop("region", TISSUE)
    with pytest.raises(error, match=match):
        export_tiles(slide, region, pipe, tmp_path / "tiles", **kwargs)
    assert not (tmp_path / "tiles").exists()


# -- augmented copies ---------------------------------------------------------------------
AUGMENT = Augmentation(
    flips=True, stain_jitter=0.05, brightness=0.1, contrast=0.1, blur=1.0, zoom=0.2
)
AUGMENTED = {
    "count": 2,
    "targets": ["IHC:Ki67", "H&E", "mIF:CD3,CD8"],
    "seed": 3,
    "augment": AUGMENT,
    "copies": 2,
}
FOLDERS = ("real_he", "virtual_ki67", "synthetic_he", "virtual_cd3-cd8")


@pytest.fixture(scope="module")
def augmented(slide, pipe, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("augmented") / "tiles"
    return export_tiles(slide, TISSUE, pipe, out, **AUGMENTED).parent


def kind_of(row: dict) -> str:
    return "he" if row["target"] == "H&E" else "intensity"


def test_augmented_copies_beside_each_tile(augmented):
    rows, manifest = manifest_rows(augmented)
    assert manifest["complete"] is True
    assert manifest["settings"]["augment"] == {**AUGMENT.__dict__, "copies": 2}
    assert len(rows) == 2 * 4 * 3 and {r["path"] for r in rows} == tile_files(augmented)
    originals = [r for r in rows if r["copy"] == "0"]
    assert len(originals) == 8 and all(r["augment"] == "" for r in originals)
    for r in originals:
        for j in (1, 2):
            folder, name = r["path"].split("/")
            stem, suffix = name.rsplit(".", 1)
            (copy,) = [c for c in rows if c["path"] == f"{folder}/{stem}_aug{j}.{suffix}"]
            assert (copy["id"], copy["copy"]) == (f"{r['id']}_aug{j}", str(j))
            same = ("kind", "target", "x", "y", "size", "seed", "channels", "model_hash")
            assert all(copy[k] == r[k] for k in same)
            if r["kind"] == "real":  # a copy of the real tile points at its original
                assert copy["source"] == r["path"]
            else:  # a copy of a stain pairs with the copy of the real tile
                assert copy["source"] == f"real_he/{r['id']}_aug{j}.png"
    # the training datasets read the copies as pairs like any other
    pairs = PairedTileFolder(augmented / "real_he", augmented / "virtual_ki67", "IHC:Ki67", 64)
    assert len(pairs) == 6


def test_manifest_replays_each_copy_exactly(augmented):
    """Each copy is its original under the recorded transform: the geometric part alike for
    the real tile and its targets, the photometric part on H&E only."""
    rows, _ = manifest_rows(augmented)
    by_path = {r["path"]: r for r in rows}
    for copy in (r for r in rows if r["copy"] != "0"):
        recorded = json.loads(copy["augment"])
        original = by_path[copy["path"].replace(f"_aug{copy['copy']}", "")]
        transform = Transform.from_dict(recorded)
        np.testing.assert_array_equal(
            read_tile(augmented / copy["path"]),
            transform.apply(read_tile(augmented / original["path"]), kind_of(copy)),
        )
        real = json.loads(by_path[f"real_he/{copy['id']}.png"]["augment"])
        geometric = {k: real[k] for k in ("rot90", "flip", "zoom")}
        if kind_of(copy) == "he":
            assert recorded == real  # one draw for every H&E tile of the copy
            assert {"stain_scale", "brightness", "contrast", "blur"} <= set(recorded)
        else:  # virtual IHC and marker planes: moved like the tile, values untouched
            assert recorded == geometric
    assert len({r["augment"] for r in rows if r["kind"] == "real" and r["copy"] != "0"}) == 4


def test_a_virtual_stain_follows_its_tile(augmented):
    """A stain that is a function of the tile stays that function of the augmented tile:
    the augmented real tile's channels, reversed, are the augmented reversed original."""
    rows, _ = manifest_rows(augmented)
    real = next(r for r in rows if r["kind"] == "real" and r["copy"] == "1")
    original = read_tile(augmented / real["source"])
    transform = Transform.from_dict(json.loads(real["augment"]))
    geometric_only = transform.apply(original, "intensity")
    derived = transform.apply(np.ascontiguousarray(original[..., ::-1]), "intensity")
    np.testing.assert_array_equal(derived, geometric_only[..., ::-1])
    marker = next(r for r in rows if r["target"] == "mIF:CD3,CD8" and r["id"] == real["id"])
    assert read_tile(augmented / marker["path"]).shape == (64, 64, 2)


def test_mif_tiles_are_named_ome_tiffs_that_train_as_pairs(augmented):
    """Virtual mIF tiles are OME-TIFFs whose channels carry the marker names, and read back
    as an mIF training set (markers by name, in the asked order, 0-255 -> [0, 1])."""
    rows, _ = manifest_rows(augmented)
    marker = next(r for r in rows if r["target"] == "mIF:CD3,CD8")
    with open_slide(augmented / marker["path"]) as tile:
        assert tile.channel_names == ["CD3", "CD8"]
    pairs = PairedTileFolder(
        augmented / "real_he", augmented / "virtual_cd3-cd8", "mIF:CD8,CD3", 64
    )
    assert len(pairs) == 6  # 2 tiles, each with 2 augmented copies
    for i in range(len(pairs)):
        sample = pairs[i]
        planes = read_tile(augmented / "virtual_cd3-cd8" / f"{sample.meta['pair']}.tif")
        np.testing.assert_allclose(sample.image, planes[..., ::-1] / 255, atol=1e-6)
        expected = read_rgb(augmented / "real_he" / f"{sample.meta['pair']}.png")
        np.testing.assert_array_equal(sample.source, expected)


def test_same_seed_same_bytes_other_seed_other_copies(augmented, slide, pipe, tmp_path):
    again = export_tiles(slide, TISSUE, pipe, tmp_path / "again", **AUGMENTED).parent
    assert tile_files(again) == tile_files(augmented)
    for name in [*sorted(tile_files(augmented)), "manifest.csv"]:
        assert (again / name).read_bytes() == (augmented / name).read_bytes(), name
    other = export_tiles(slide, TISSUE, pipe, tmp_path / "other", **{**AUGMENTED, "seed": 4})
    transforms = {r["augment"] for r in manifest_rows(other.parent)[0] if r["copy"] != "0"}
    assert not transforms & {r["augment"] for r in manifest_rows(augmented)[0]}


def test_augmented_rerun_remakes_lost_copies(augmented, slide, pipe):
    files = sorted(tile_files(augmented))
    lost = [augmented / f for f in files if f.endswith("_aug2.png")][:3]
    lost += [augmented / next(f for f in files if f.startswith("virtual_ki67/"))]
    before = [p.read_bytes() for p in lost]
    for path in lost:
        path.unlink()
    export_tiles(slide, TISSUE, pipe, augmented, **AUGMENTED)
    assert [p.read_bytes() for p in lost] == before
    with pytest.raises(ExportError, match=r"another export.*augment"):
        export_tiles(slide, TISSUE, pipe, augmented, **{**AUGMENTED, "copies": 3})


def test_augmentation_off_writes_no_copies(export, slide, pipe):
    """An all-off augmentation is no augmentation: the plain export, resumed as it was."""
    out = export.parent
    files = tile_files(out)
    export_tiles(slide, TISSUE, pipe, out, **SETTINGS, augment=Augmentation(), copies=5)
    assert tile_files(out) == files
    assert json.loads((out / "manifest.json").read_text())["settings"]["augment"] is None


def test_plan_export_is_what_the_export_cuts(augmented, slide):
    rows, _ = manifest_rows(augmented)
    grid, spots = plan_export(slide, TISSUE, tile_size=64, mpp=1.0, count=2, seed=3)
    cut = [(int(r["x"]), int(r["y"]), int(r["size"])) for r in rows if r["kind"] == "real"]
    regions = tile_regions(grid, spots, 64)
    assert sorted(set(cut)) == sorted((r.x, r.y, r.width) for r in regions)
    assert all(r.height == r.width == 128 for r in regions)
