"""Show a slide in napari through the napari-mupd reader.

python examples/view_slide.py [SLIDE]
"""

from __future__ import annotations

import sys

import napari

from napari_mupd.resources import sample_slide_path

path = sys.argv[1] if len(sys.argv) > 1 else str(sample_slide_path())
viewer = napari.Viewer()
viewer.open(path, plugin="napari-mupd")
viewer.scale_bar.visible = True
napari.run()
