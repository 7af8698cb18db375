"""The napari plugin: npe2 hooks (readers, writers, sample data), the glue between layers
and the core (`layers`), and the dock widgets (`widgets`). The manifest is the package's
``napari.yaml``. Only this package and :mod:`napari_mupd.cli` may import napari or Qt.
"""

from __future__ import annotations

from typing import Any

#: What npe2 readers and widgets hand napari: (data, layer keyword arguments, layer type).
LayerData = tuple[Any, dict[str, Any], str]
