"""The ``mupd`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from helpers import CMU1, shared
from napari_mupd.cli import main


def test_info_table(capsys):
    assert main(["info", str(shared(CMU1))]) == 0
    out = capsys.readouterr().out
    assert "aperio" in out and "0.499" in out and "2967 x 2220" in out


def test_info_json(capsys):
    assert main(["info", str(shared(CMU1)), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dimensions"] == [2220, 2967]
    assert summary["levels"][0]["tile"] == [240, 240]
    assert summary["associated_images"] == ["label", "macro", "thumbnail"]


def test_info_bad_file_exits_nonzero_with_message(tmp_path, capsys):
    (tmp_path / "x.svs").write_text("hello")
    assert main(["info", str(tmp_path / "x.svs")]) == 1
    assert "x.svs" in capsys.readouterr().err


def test_demo_writes_preview(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--size", "256"]) == 0
    preview = Image.open(tmp_path / "preview.png")
    assert max(preview.size) == 256
    assert "aperio" in capsys.readouterr().out


@pytest.mark.slow
def test_console_script_installed():
    result = subprocess.run(
        [sys.executable, "-m", "napari_mupd.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "napari-mupd" in result.stdout
