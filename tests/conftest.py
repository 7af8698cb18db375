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
