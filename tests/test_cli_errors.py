"""Every command ends a user's mistake the same way: one line on stderr, exit status 2."""

from __future__ import annotations

import pytest
import torch

from helpers import CMU1
from napari_mupd.cli import EXIT_ERROR, main


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's only stderr line, which must be mupd's error message."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mupd: error: "), err
    return err[0]


@pytest.mark.parametrize(
    "command",
    [
        ["stain", str(CMU1), "--target", "IHC:Ki67", "--roi", "0,0,64,64", "--out", "{out}.png"],
        ["generate", "--text", "tumor", "--out", "{out}"],
        ["export-tiles", str(CMU1), "--out", "{out}"],
        ["demo", "--out", "{out}"],
    ],
    ids=lambda c: c[0],
)
def test_a_missing_gpu_is_one_clear_line(command, tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine
    args = [a.replace("{out}", str(tmp_path / "out")) for a in command]
    assert main([*args, "--model", str(tiny_model_dir), "--device", "cuda"]) == EXIT_ERROR == 2
    assert "no CUDA device is available here" in one_error_line(capsys)


def test_a_checkpoint_with_an_unknown_field_is_one_clear_line(tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "model"
    broken.mkdir()
    for file in tiny_model_dir.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    config = broken / "config.json"
    config.write_text(config.read_text().replace('"name"', '"colour": "blue", "name"'))
    args = ["generate", "--text", "tumor", "--model", str(broken), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "unknown MuPDConfig field(s): colour" in one_error_line(capsys)


def test_a_missing_slide_is_one_clear_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing.svs")]) == 2
    assert "no such file" in one_error_line(capsys)
