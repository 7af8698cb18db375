"""The package's exception and warning types, all in one place.

Every error a user can cause (a bad file, input, setting or request) is a
:class:`MuPDError`: the ``mupd`` command prints its message and exits with status 2, the
napari widgets show it as a notification. Anything else is a bug and keeps its
traceback. Some errors are also ``ValueError`` (or ``ImportError``) where that is what
they are; the napari writer's errors are not, because napari takes a ``ValueError``
from a writer for "this writer does not apply" and hides it.

:class:`Cancelled` is not an error: it is how a job that the user stopped ends.
"""

from __future__ import annotations


class MuPDError(Exception):
    """Base class of every error napari-mupd raises on purpose."""


# -- inputs --------------------------------------------------------------------------------
class SlideError(MuPDError):
    """A slide cannot be opened or read (missing, corrupt, unsupported, closed)."""


class RegionError(SlideError, ValueError):
    """A requested region or level does not lie on the slide."""


class ConditionError(MuPDError, ValueError):
    """A conditioning input (text, RNA, image, target) or a sampling setting is invalid."""


class SpotsError(MuPDError, ValueError):
    """A spatial transcriptomics folder or file is incomplete or inconsistent."""


class GeoJSONError(MuPDError):
    """A GeoJSON file cannot be read or written as annotations.

    Not a ``ValueError``: napari takes those from a writer for "does not apply" and hides them.
    """


class DatasetError(MuPDError, ValueError):
    """A training data source is missing, empty or inconsistent."""


class RegistrationError(MuPDError, ValueError):
    """Two sections could not be registered."""


class EvalError(MuPDError, ValueError):
    """Inputs to an evaluation or measurement (metrics, colour deconvolution) do not fit
    (shapes, types, counts, kinds)."""


# -- models and settings ---------------------------------------------------------------------
class ConfigError(MuPDError, ValueError):
    """A model or training configuration is invalid (a bad value or an unknown field)."""


class CheckpointError(MuPDError):
    """A model checkpoint cannot be found or loaded (missing, incomplete or corrupt files)."""


class DeviceError(MuPDError):
    """The requested device (cpu, cuda, mps) is unknown or not available here."""


class MissingDependencyError(MuPDError, ImportError):
    """An optional dependency (an extra) is needed for this and is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package {package!r}: pip install 'napari-mupd[{extra}]'"
        )
        self.package = package
        self.extra = extra


# -- outputs and jobs ------------------------------------------------------------------------
class OutputError(MuPDError):
    """An output cannot be written where or how it was asked."""


class LayerWriteError(OutputError):
    """A napari layer cannot be written where or how it was asked.

    Not a ``ValueError``: napari takes those for "this writer does not apply" and hides them.
    """


class ExportError(MuPDError, ValueError):
    """A tile export cannot start: no tissue, bad sizes, or a folder holding another export."""


class JobError(MuPDError):
    """A staining job cannot start or continue."""


# -- not errors --------------------------------------------------------------------------------
class Cancelled(Exception):
    """The user cancelled a running job (not an error: nothing went wrong)."""


class MetricWarning(UserWarning):
    """A metric is undefined for these inputs (e.g. a constant image) and came back NaN."""


__all__ = [
    "Cancelled",
    "CheckpointError",
    "ConditionError",
    "ConfigError",
    "DatasetError",
    "DeviceError",
    "EvalError",
    "ExportError",
    "GeoJSONError",
    "JobError",
    "LayerWriteError",
    "MetricWarning",
    "MissingDependencyError",
    "MuPDError",
    "OutputError",
    "RegionError",
    "RegistrationError",
    "SlideError",
    "SpotsError",
]
