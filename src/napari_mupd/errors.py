"""The package's exception types: every error a user can cause is one of these."""

from __future__ import annotations


class MuPDError(Exception):
    """Base class of every error napari-mupd raises on purpose."""


class SlideError(MuPDError):
    """A slide cannot be opened or read (missing, corrupt, unsupported, closed)."""


class RegionError(SlideError, ValueError):
    """A requested region or level does not lie on the slide."""


class MissingDependencyError(MuPDError, ImportError):
    """An optional dependency (an extra) is needed for this and is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package {package!r}: pip install 'napari-mupd[{extra}]'"
        )
        self.package = package
        self.extra = extra


class ConditionError(MuPDError, ValueError):
    """A conditioning input (text, RNA, image, target) is invalid."""
