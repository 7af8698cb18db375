"""``mupd export-tiles`` with the tiny checkpoint on the real CMU-1 slide."""

from __future__ import annotations

import json

from helpers import CMU1
from napari_mupd.cli import main


def test_export_tiles_writes_resumes_and_refuses(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "tiles"
    args = ["export-tiles", str(CMU1), "--out", str(out), "--model", str(tiny_model_dir)]
    args += ["--roi", "700,1100,1000,1200", "--n", "2", "--target", "IHC:Ki67", "--target", "H&E"]
    args += ["--text", "tumor", "--device", "cpu"]
    assert main(args) == 0
    assert str(out / "manifest.csv") in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["tiles"]) == 6
    assert manifest["settings"]["targets"] == ["IHC:Ki67", "H&E"]
    assert main(args) == 0  # a rerun finds everything written
    assert main([*args, "--seed", "3"]) == 2
    assert "holds another export (different seed)" in capsys.readouterr().err


def test_export_tiles_warns_when_fewer_tiles_fit(tiny_model_dir, tmp_path, capsys):
    args = ["export-tiles", str(CMU1), "--out", str(tmp_path / "few"), "--model"]
    args += [str(tiny_model_dir), "--roi", "900,1200,200,200", "--n", "5", "--target", "IHC:Ki67"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "warning: only" in err and "of the 5 tiles asked for fit" in err
