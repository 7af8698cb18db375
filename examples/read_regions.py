"""Open a slide, print its pyramid and save a region and a thumbnail.

    python examples/read_regions.py [SLIDE]

Without an argument it uses the sample slide shipped with napari-mupd.
"""

from __future__ import annotations

import sys

from PIL import Image

from napari_mupd import open_slide
from napari_mupd.resources import sample_slide_path

path = sys.argv[1] if len(sys.argv) > 1 else sample_slide_path()
with open_slide(path) as slide:
    print(slide)
    for i, level in enumerate(slide.level_info):
        print(f"  level {i}: {level.shape} downsample {level.downsample:.2f} tile {level.tile}")
    w, h = slide.dimensions
    region = slide.read_region((w // 2 - 256, h // 2 - 256), 0, (512, 512))
    Image.fromarray(region).save("region.png")
    Image.fromarray(slide.thumbnail(512)).save("thumbnail.png")
    print("wrote region.png and thumbnail.png")
