"""Small generated multichannel slides: OME-TIFF (SubIFD pyramid), QPTIFF-like, ImageJ,
OME-Zarr (tifffile and napari-mupd's own writers only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

NAMES = ["DAPI", "CD8", "CD3", "PanCK", "Ki67"]
#: OME colours as signed RGBA int32: blue, green, red, white, yellow
OME_COLOURS = [0x0000FFFF, 0x00FF00FF, -16776961, -1, -65281]


def planes(count: int, shape: tuple[int, int] = (256, 320), seed: int = 0) -> np.ndarray:
    """(count, h, w) uint16 channels, each a distinct ramp plus noise (channel i ~ i)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    out = np.empty((count, h, w), np.uint16)
    for i in range(count):
        out[i] = (1000 * i + 3 * yy + 2 * xx + rng.integers(0, 50, (h, w))).astype(np.uint16)
    return out


def _pyramid(data: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [data]
    for _ in range(levels - 1):
        prev = out[-1]
        out.append(prev[:, ::2, ::2].copy())
    return out


def write_ome_tiff(
    path: Path,
    data: np.ndarray,
    names: Sequence[str] | None = NAMES,
    colours: Sequence[int] | None = OME_COLOURS,
    *,
    levels: int = 3,
    tile: int = 64,
    mpp: float = 0.5,
) -> Path:
    """A pyramidal OME-TIFF: (C, Y, X) level 0 with SubIFDs for the reduced levels."""
    channel: dict = {}
    if names is not None:
        channel["Name"] = list(names)
    if colours is not None:
        channel["Color"] = list(colours)
    meta = {
        "axes": "CYX",
        "PhysicalSizeX": mpp,
        "PhysicalSizeY": mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeYUnit": "µm",
    }
    if channel:
        meta["Channel"] = channel
    pyramid = _pyramid(data, levels)
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(pyramid[0], subifds=levels - 1, tile=(tile, tile), metadata=meta)
        for level in pyramid[1:]:
            tif.write(level, subfiletype=1, tile=(tile, tile), metadata=None)
    return path


def qpi_xml(name: str | None, color: str | None, image_type: str = "FullResolution") -> str:
    parts = [f"<ImageType>{image_type}</ImageType>"]
    if name is not None:
        parts.append(f"<Name>{name}</Name>")
        parts.append("<ExposureTime>1200</ExposureTime>")
    if color is not None:
        parts.append(f"<Color>{color}</Color>")
    body = "".join(parts)
    return (
        '<?xml version="1.0" encoding="utf-16"?><PerkinElmer-QPI-ImageDescription>'
        f"<DescriptionVersion>2</DescriptionVersion>{body}</PerkinElmer-QPI-ImageDescription>"
    )


QPI_COLOURS = ["0,0,255", "0,255,0", "255,0,0", "255,255,255", "255,255,0"]


def write_qptiff(
    path: Path,
    data: np.ndarray,
    names: Sequence[str | None] = NAMES,
    colours: Sequence[str | None] = QPI_COLOURS,
    *,
    levels: int = 2,
    reduced_counts: Sequence[int] | None = None,
    tile: int = 64,
) -> Path:
    """A PerkinElmer/Akoya QPTIFF-like file: a tiled page per channel with QPI XML, a
    thumbnail, then the reduced-resolution pages of each channel (``reduced_counts``:
    how many channel pages each reduced level has, default all)."""
    pyramid = _pyramid(data, levels)
    kw = {"software": "PerkinElmer-QPI", "photometric": "minisblack", "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        for i, plane in enumerate(pyramid[0]):
            xml = qpi_xml(
                names[i] if i < len(names) else None, colours[i] if i < len(colours) else None
            )
            tif.write(
                plane,
                tile=(tile, tile),
                description=xml,
                resolution=(20000, 20000),
                resolutionunit=3,
                **kw,
            )
        thumb = (pyramid[-1][0] // 256).astype(np.uint8)
        tif.write(
            np.stack([thumb] * 3, -1),
            description=qpi_xml(None, None, "Thumbnail"),
            **kw | {"photometric": "rgb"},
        )
        for k, level in enumerate(pyramid[1:]):
            count = len(level) if reduced_counts is None else reduced_counts[k]
            for i, plane in enumerate(level[:count]):
                xml = qpi_xml(names[i] if i < len(names) else None, None, "ReducedResolution")
                tif.write(plane, tile=(tile, tile), description=xml, subfiletype=1, **kw)
    return path


def write_ome_zarr_channels(
    path: Path, data: np.ndarray, names: Sequence[str], mpp: float = 0.5
) -> Path:
    """A multichannel (c, y, x) uint16 NGFF 0.4 OME-Zarr with an ``omero`` block."""
    from napari_mupd.io.ome_zarr import build_pyramid, create_ome_zarr

    group = create_ome_zarr(
        path, data.shape[1:], list(names), dtype="uint16", chunk=64, scale=(mpp, mpp)
    )
    group["0"][:] = data
    build_pyramid(group)
    return path
