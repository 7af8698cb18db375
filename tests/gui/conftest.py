"""GUI test defaults: no modal dialog may block a test."""

from __future__ import annotations

import pytest

from napari_mupd.plugin.widgets import _runner


@pytest.fixture(autouse=True)
def questions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The "go on?" questions the docks asked (each answered yes) in this test."""
    asked: list[str] = []

    def yes(question: str) -> bool:
        asked.append(question)
        return True

    monkeypatch.setattr(_runner, "_ask", yes)
    return asked
