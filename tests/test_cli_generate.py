"""``mupd generate`` with a tiny checkpoint: tiles, manifest, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import DATA
from napari_mupd.cli import main
from napari_mupd.model import MuPDConfig, MuPDPipeline


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    MuPDPipeline.from_config(MuPDConfig.tiny()).save_pretrained(folder)
    return folder


def test_generate_from_text_writes_tiles_and_manifest(tiny_model, tmp_path, capsys):
    args = [
        "generate",
        "--model",
        str(tiny_model),
        "--text",
        "tumor",
        "--n",
        "2",
        "--steps",
        "2",
        "--seed",
        "7",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["files"] == ["tile_0000.png", "tile_0001.png"]
    assert manifest["seed"] == 7 and manifest["num_inference_steps"] == 2
    assert manifest["inputs"]["text"] == "tumor" and len(manifest["model_hash"]) >= 16
    assert Image.open(tmp_path / "tile_0000.png").size == (64, 64)


def test_generate_names_the_words_it_does_not_read(tiny_model, tmp_path, capsys):
    # the tiny model knows 6 words and reads 16 tokens: Ki67 (4) and hotspot (7) are spelled
    # out, invasive and colon come after the 16th token
    args = ["generate", "--model", str(tiny_model), "--n", "1", "--steps", "1"]
    prompt = "Ki67 hotspot tumor invasive colon"
    assert main([*args, "--text", prompt, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mupd: note: ")
    assert "does not know, spelled out letter by letter" in err[0]
    assert "Ki67, hotspot" in err[0] and "16-token limit, ignored: invasive, colon" in err[0]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["text_words"] == {"unknown": ["Ki67", "hotspot"], "cut": ["invasive", "colon"]}
    assert main([*args, "--text", "tumor, colon", "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().err == ""  # known words: nothing to say


def test_generate_same_seed_same_tiles(tiny_model, tmp_path):
    for run in ("a", "b"):
        main(
            [
                "generate",
                "--model",
                str(tiny_model),
                "--text",
                "colon",
                "--n",
                "1",
                "--steps",
                "2",
                "--seed",
                "3",
                "--out",
                str(tmp_path / run),
            ]
        )
    a = (tmp_path / "a" / "tile_0000.png").read_bytes()
    assert a == (tmp_path / "b" / "tile_0000.png").read_bytes()


def test_generate_virtual_stain_from_an_image(tiny_model, tmp_path):
    tile = DATA / "tiles" / "wsidicom_test_tile.png"
    assert (
        main(
            [
                "generate",
                "--model",
                str(tiny_model),
                "--image",
                str(tile),
                "--target",
                "IHC:Ki67",
                "--n",
                "1",
                "--steps",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "manifest.json").read_text())["target"] == "IHC:Ki67"


def test_generate_from_an_h5ad_spot_needs_a_spot(tiny_model, tmp_path, capsys):
    h5ad = DATA / "spatial" / "squidpy_mouse_brain" / "test_data.h5ad"
    base = [
        "generate",
        "--model",
        str(tiny_model),
        "--rna",
        str(h5ad),
        "--n",
        "1",
        "--steps",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(base) == 2
    assert "--spot" in capsys.readouterr().err
    assert main([*base, "--spot", "nope"]) == 2
    assert "no spot 'nope'" in capsys.readouterr().err


def test_generate_errors(tiny_model, tmp_path, capsys):
    assert main(["generate", "--model", str(tiny_model), "--out", str(tmp_path)]) == 2
    assert "at least one condition" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path), "--text", "x", "--out", str(tmp_path)]) == 2
    assert "no MuPD checkpoint" in capsys.readouterr().err
    assert (
        main(
            [
                "generate",
                "--model",
                str(tiny_model),
                "--text",
                "x",
                "--target",
                "IHC:HER2",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "known IHC markers: Ki67" in capsys.readouterr().err


def test_generate_offline_with_the_bundled_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (
        main(
            [
                "generate",
                "--text",
                "H&E, human skin",
                "--n",
                "2",
                "--steps",
                "4",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["model"] == "mupd-demo"
    tile = np.asarray(Image.open(tmp_path / "tile_0000.png"))
    assert tile.shape == (128, 128, 3) and tile.std() > 5  # an image, not a flat colour
