"""Files shipped inside the package (found without ``../shared`` or the network)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

SAMPLE_SLIDE = "CMU-1-Small-Region.svs"


def sample_slide_path() -> Path:
    """Path of the bundled H&E sample slide (CC0; see ``data/ATTRIBUTION.md``)."""
    return Path(str(files("napari_mupd") / "data" / SAMPLE_SLIDE))
