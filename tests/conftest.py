"""Session fixtures shared by the test folders, and the skip limit of CI."""

from __future__ import annotations

import os
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


# -- the skip limit ------------------------------------------------------------------------
# Tests read only data kept in the repository, so a skip means something is missing that
# should not be (only a GPU may be absent). With MUPD_MAX_SKIPS set (scripts/test.sh does),
# a run with more skipped tests than that fails.
_SKIPPED: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.add(report.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    limit = os.environ.get("MUPD_MAX_SKIPS")
    if limit is not None and len(_SKIPPED) > int(limit):
        terminalreporter.write_line(
            f"FAILED: {len(_SKIPPED)} tests skipped, more than MUPD_MAX_SKIPS={limit}",
            red=True,
            bold=True,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    limit = os.environ.get("MUPD_MAX_SKIPS")
    if limit is not None and len(_SKIPPED) > int(limit) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
