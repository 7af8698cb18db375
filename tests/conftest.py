"""Session fixtures shared by the test folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import pattern, write_ome_subifds, write_svs_like


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small slides written once per session, with the arrays they hold."""
    root = tmp_path_factory.mktemp("slides")
    files = {"svs": root / "generated.svs", "ome": root / "pyramid.ome.tif"}
    write_svs_like(files["svs"], pattern(1500, 2100))
    write_ome_subifds(files["ome"], pattern(1200, 1000))
    return files


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny MuPD checkpoint (64 px tiles at 1 um/px, 4 steps).

    Targets: H&E, IHC:Ki67, mIF:CD3,CD8. Fast enough for GUI tests on CPU.
    """
    from napari_mupd.model import MuPDConfig, MuPDPipeline

    folder = tmp_path_factory.mktemp("tiny-model")
    config = MuPDConfig.from_dict({**MuPDConfig.tiny().to_dict(), "mpp": 1.0})
    MuPDPipeline.from_config(config).save_pretrained(folder)
    return folder
