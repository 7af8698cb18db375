"""Writing stained images: OME-Zarr (NGFF 0.4) pyramids, pyramidal OME-TIFF, flat images.

The OME-Zarr is written chunk by chunk (level 0), then its lower levels are computed
from it block by block, so a whole-slide output never has to fit in memory.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_mupd.io.slide import area_downsample

#: Display colours (RGB hex) of common markers; others cycle through COLOURS.
MARKER_COLOURS = {
    "dapi": "0000FF",
    "hoechst": "0000FF",
    "panck": "FFFFFF",
    "cd3": "FF0000",
    "cd8": "00FF00",
    "cd4": "FF00FF",
    "cd20": "FFFF00",
    "cd68": "00FFFF",
}
COLOURS = ("FF0000", "00FF00", "00FFFF", "FF00FF", "FFFF00", "FF8000", "8000FF")


def channel_colours(channels: Sequence[str]) -> list[str]:
    """RGB channels get red, green, blue; markers their usual or a cycled colour."""
    if tuple(channels) == ("R", "G", "B"):
        return ["FF0000", "00FF00", "0000FF"]
    return [
        MARKER_COLOURS.get(c.lower(), COLOURS[i % len(COLOURS)]) for i, c in enumerate(channels)
    ]


def pyramid_shapes(shape: tuple[int, int], smallest: int = 256) -> list[tuple[int, int]]:
    """(h, w) of each 2x level until the longer side is at most ``smallest``."""
    shapes = [shape]
    while max(shapes[-1]) > smallest:
        h, w = shapes[-1]
        shapes.append((max(1, h // 2), max(1, w // 2)))
    return shapes


def create_ome_zarr(
    path: str | os.PathLike,
    shape: tuple[int, int],
    channels: Sequence[str],
    *,
    dtype: str = "uint8",
    chunk: int = 512,
    scale: tuple[float, float] = (1, 1),
    translate: tuple[float, float] = (0, 0),
    units: str = "micrometer",
    attrs: dict[str, Any] | None = None,
) -> Any:
    """Create an empty (c, y, x) NGFF 0.4 multiscale; returns the zarr group."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    shapes = pyramid_shapes(shape)
    datasets = []
    for i, (h, w) in enumerate(shapes):
        group.create_array(
            str(i),
            shape=(len(channels), h, w),
            dtype=dtype,
            chunks=(len(channels), chunk, chunk),
            fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        f = 2**i
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, scale[0] * f, scale[1] * f]},
                    {
                        "type": "translation",
                        "translation": [
                            0.0,
                            translate[0] + (f - 1) / 2 * scale[0],
                            translate[1] + (f - 1) / 2 * scale[1],
                        ],
                    },
                ],
            }
        )
    space = {"type": "space"} if units == "pixel" else {"type": "space", "unit": units}
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": Path(path).name,
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "y", **space},
                {"name": "x", **space},
            ],
            "datasets": datasets,
        }
    ]
    top = 255 if dtype == "uint8" else 1.0
    group.attrs["omero"] = {
        "channels": [
            {
                "label": c,
                "color": colour,
                "active": True,
                "window": {"start": 0, "end": top, "min": 0, "max": top},
            }
            for c, colour in zip(channels, channel_colours(channels), strict=True)
        ],
        "rdefs": {"model": "color"},
    }
    group.attrs["napari_mupd"] = json.loads(json.dumps(attrs or {}, default=str))
    return group


def build_pyramid(group: Any, block: int = 2048) -> None:
    """Fill levels 1.. of an NGFF group from level 0, block by block (2x area mean)."""
    levels = sorted(group.array_keys(), key=int)
    for prev, cur in itertools.pairwise(levels):
        src, dst = group[prev], group[cur]
        _, h, w = dst.shape
        for y in range(0, h, block // 2):
            for x in range(0, w, block // 2):
                hh, ww = min(block // 2, h - y), min(block // 2, w - x)
                data = np.asarray(src[:, 2 * y : 2 * (y + hh), 2 * x : 2 * (x + ww)])
                chw = np.moveaxis(data, 0, -1)
                if dst.dtype == np.uint8:
                    small = area_downsample(chw, 2)
                else:
                    small = chw.reshape(hh, 2, ww, 2, -1).mean(axis=(1, 3)).astype(dst.dtype)
                dst[:, y : y + hh, x : x + ww] = np.moveaxis(small, -1, 0)


def to_dtype(image: np.ndarray, dtype: str) -> np.ndarray:
    """Float [0, 1] -> uint8 (rounded) or float32; NaN (uncovered) becomes 0."""
    image = np.nan_to_num(image, nan=0.0)
    if dtype == "uint8":
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return image.astype(np.float32)


def write_ome_zarr(
    path: str | os.PathLike, image: np.ndarray, channels: Sequence[str], **kwargs: Any
) -> Path:
    """A whole (h, w, c) float image in [0, 1] as an OME-Zarr pyramid."""
    dtype = kwargs.pop("dtype", "uint8")
    group = create_ome_zarr(path, image.shape[:2], channels, dtype=dtype, **kwargs)
    group["0"][:] = np.moveaxis(to_dtype(image, dtype), -1, 0)
    build_pyramid(group)
    return Path(path)


def _levels_from_zarr(group: Any) -> Iterator[np.ndarray]:
    for key in sorted(group.array_keys(), key=int):
        yield np.moveaxis(np.asarray(group[key][:]), 0, -1)


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

    options = {
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
    """One flat PNG (RGB or one marker) or TIFF (any channels) of a float image."""
    p = Path(path)
    pixels = to_dtype(image, "uint8")
    if p.suffix.lower() == ".png":
        from PIL import Image

        if pixels.shape[-1] not in (1, 3):
            raise ValueError(f"PNG holds RGB or one channel; {len(channels)} markers need .tif")
        Image.fromarray(pixels if pixels.shape[-1] == 3 else pixels[..., 0]).save(p)
    else:
        import tifffile

        rgb = tuple(channels) == ("R", "G", "B")
        tifffile.imwrite(
            p,
            pixels if rgb else np.moveaxis(pixels, -1, 0),
            photometric="rgb" if rgb else "minisblack",
        )
    return p
