"""Files shipped inside the package, found without the network or any data outside it."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from napari_mupd.errors import CheckpointError

SAMPLE_SLIDE = "CMU-1-Small-Region.svs"


def sample_slide_path() -> Path:
    """Path of the bundled H&E sample slide (CC0; see ``data/ATTRIBUTION.md``)."""
    return Path(str(files("napari_mupd") / "data" / SAMPLE_SLIDE))


BUNDLED_MODEL = "mupd-demo"


def bundled_model_path() -> Path:
    """Folder of the bundled demo checkpoint (see ``docs/model_card.md``)."""
    return Path(str(files("napari_mupd") / "data" / BUNDLED_MODEL))


def resolve_model(model: str | None) -> Path:
    """A model folder: ``model`` when given, else the bundled checkpoint.

    Raises :class:`~napari_mupd.errors.CheckpointError` when the folder has no ``config.json``.
    """
    path = Path(model).expanduser() if model else bundled_model_path()
    if not (path / "config.json").is_file():
        where = "the bundled checkpoint" if model is None else str(path)
        raise CheckpointError(
            f"no MuPD checkpoint at {where} (expected config.json and .safetensors)"
        )
    return path
