"""Writing stained images as pyramidal OME-TIFF and as flat PNG or TIFF files.

They are read back by the TIFF and image backends of :func:`~napari_mupd.io.open_slide`
(``_tiff.py``, ``_image.py``); OME-Zarr is read and written in :mod:`napari_mupd.io.ome_zarr`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_mupd.errors import OutputError
from napari_mupd.imaging.pixels import to_uint8


def write_ome_tiff(
    path: str | os.PathLike,
    levels: Sequence[np.ndarray] | Iterator[np.ndarray],
    channels: Sequence[str],
    *,
    mpp: tuple[float, float] | None = None,
    description: dict[str, Any] | None = None,
) -> Path:
    """A pyramidal OME-TIFF (tiled, SubIFDs) from (h, w, c) uint8 levels, finest first.

    RGB channels are stored interleaved (what QuPath and OpenSlide read as brightfield);
    markers as separate channel planes.
    """
    import tifffile

    levels = list(levels)
    if not levels:
        raise OutputError(f"{path}: no image levels to write")
    rgb = tuple(channels) == ("R", "G", "B")
    metadata: dict[str, Any] = {"axes": "YXS" if rgb else "CYX"}
    if not rgb:
        metadata["Channel"] = {"Name": list(channels)}
    if mpp is not None:
        metadata.update(
            PhysicalSizeY=mpp[0],
            PhysicalSizeX=mpp[1],
            PhysicalSizeYUnit="µm",
            PhysicalSizeXUnit="µm",
        )
    if description:
        metadata["Description"] = json.dumps(description, default=str)

    def arrange(level: np.ndarray) -> np.ndarray:
        return level if rgb else np.moveaxis(level, -1, 0)

    options: dict[str, Any] = {
        "tile": (256, 256),
        "compression": "zlib",
        "photometric": "rgb" if rgb else "minisblack",
    }
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(arrange(levels[0]), subifds=len(levels) - 1, metadata=metadata, **options)
        for level in levels[1:]:
            tif.write(arrange(level), subfiletype=1, **options)
    return Path(path)


def write_flat(path: str | os.PathLike, image: np.ndarray, channels: Sequence[str]) -> Path:
    """One flat PNG (RGB or one marker) or TIFF (any channels) of a float image.

    Markers go to a TIFF as (C, H, W) uint8 planes with OME-XML naming each channel, so
    :func:`~napari_mupd.io.open_slide` (and an mIF training set) finds them by name.
    """
    p = Path(path)
    pixels = to_uint8(image)
    if p.suffix.lower() == ".png":
        from PIL import Image

        if pixels.shape[-1] not in (1, 3):
            raise OutputError(
                f"{p}: a PNG holds RGB or one channel; {len(channels)} markers need .tif"
            )
        Image.fromarray(pixels if pixels.shape[-1] == 3 else pixels[..., 0]).save(p)
    else:
        import tifffile

        rgb = tuple(channels) == ("R", "G", "B")
        if rgb:
            tifffile.imwrite(p, pixels, photometric="rgb")
        else:
            tifffile.imwrite(
                p,
                np.moveaxis(pixels, -1, 0),
                photometric="minisblack",
                ome=True,
                metadata={"axes": "CYX", "Channel": {"Name": list(channels)}},
            )
    return p
