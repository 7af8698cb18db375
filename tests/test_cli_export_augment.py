"""``mupd export-tiles`` augmentation flags: parsed, checked before the model loads, applied."""

from __future__ import annotations

import json

import pytest

from helpers import CMU1
from napari_mupd.cli import EXIT_ERROR, build_parser, main
from napari_mupd.cli.export import augmentation
from napari_mupd.imaging.augment import Augmentation


def parse(*flags: str):
    return build_parser().parse_args(["export-tiles", "slide.svs", "--out", "out", *flags])


def test_flags_parse_into_an_augmentation():
    assert augmentation(parse()) == (None, 1)  # all off by default: no copies
    args = parse("--flips", "--stain-jitter", "0.05", "--brightness", "0.1", "--contrast",
                 "0.2", "--blur", "1.5", "--zoom", "0.25", "--copies", "3")  # fmt: skip
    augment, copies = augmentation(args)
    assert augment == Augmentation(
        flips=True, stain_jitter=0.05, brightness=0.1, contrast=0.2, blur=1.5, zoom=0.25
    )
    assert copies == 3
    assert augmentation(parse("--blur", "1"))[1] == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stain-jitter", "2"], "augmentation stain-jitter must be between 0 and 0.5, got 2.0"),
        (["--brightness", "-0.1"], "augmentation brightness must be between 0 and 0.5"),
        (["--contrast", "1"], "augmentation contrast must be between 0 and 0.9"),
        (["--blur", "nan"], "augmentation blur must be between 0 and 5"),
        (["--zoom", "3"], "augmentation zoom must be between 0 and 1"),
        (["--flips", "--copies", "0"], "--copies must be at least 1, got 0"),
        (["--copies", "2"], "--copies makes augmented copies: add an augmentation"),
    ],
)
def test_bad_values_are_one_clear_line_before_the_model_loads(flags, message, tmp_path, capsys):
    model = tmp_path / "no-model-here"  # never read: the flags fail first
    args = ["export-tiles", str(CMU1), "--out", str(tmp_path / "out"), "--model", str(model)]
    assert main([*args, *flags]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mupd: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_augmented_export_from_the_command_line(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "tiles"
    args = ["export-tiles", str(CMU1), "--out", str(out), "--model", str(tiny_model_dir)]
    args += ["--roi", "900,1200,200,200", "--n", "5", "--target", "IHC:Ki67", "--seed", "2"]
    args += ["--flips", "--zoom", "0.1", "--stain-jitter", "0.05", "--copies", "2"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["augment"]["copies"] == 2
    assert manifest["settings"]["augment"]["zoom"] == 0.1
    tiles = manifest["tiles"]
    assert [r["copy"] for r in tiles if r["kind"] == "real"] == [0, 1, 2]
    augmented = json.loads(tiles[3]["augment"])  # the virtual stain's copy 1: geometric only
    assert tiles[3]["kind"] == "virtual" and set(augmented) == {"rot90", "flip", "zoom"}
    # fewer tiles than asked: counted without their copies
    assert "warning: only 1 of the 5 tiles asked for fit" in capsys.readouterr().err
