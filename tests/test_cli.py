"""The ``mupd`` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from helpers import CMU1
from napari_mupd.cli import main


def test_info_table(capsys):
    assert main(["info", str(CMU1)]) == 0
    out = capsys.readouterr().out
    assert "aperio" in out and "0.499" in out and "2967 x 2220" in out


def test_info_json(capsys):
    assert main(["info", str(CMU1), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dimensions"] == [2220, 2967]
    assert summary["levels"][0]["tile"] == [240, 240]
    assert summary["associated_images"] == ["label", "macro", "thumbnail"]


def test_info_bad_file_exits_nonzero_with_message(tmp_path, capsys):
    (tmp_path / "x.svs").write_text("hello")
    assert main(["info", str(tmp_path / "x.svs")]) == 2
    assert "x.svs" in capsys.readouterr().err


def test_demo_stains_the_sample_and_writes_a_preview(tmp_path, capsys):
    from napari_mupd.model import MuPDConfig, MuPDPipeline

    model = tmp_path / "tiny"
    MuPDPipeline.from_config(MuPDConfig.tiny()).save_pretrained(model)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--size", "256", "--steps", "2", "--model", str(model)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "aperio" in printed and "preview.png" in printed
    width, height = Image.open(out / "preview.png").size
    assert width == 2 * height and abs(height - 256) <= 1  # H&E | virtual Ki67 at ~0.5 um/px
    assert (out / "IHC-Ki67.ome.zarr" / ".zattrs").exists()


@pytest.mark.slow
def test_console_script_installed():
    result = subprocess.run(
        [sys.executable, "-m", "napari_mupd.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "napari-mupd" in result.stdout


def test_info_without_a_slide_says_what_it_needs(capsys):
    assert main(["info"]) == 2
    err = capsys.readouterr().err
    assert "mupd info needs a slide" in err and "CMU-1-Small-Region.svs" in err
    assert "Traceback" not in err
