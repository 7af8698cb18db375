"""npe2 writer: an image layer as an OME-Zarr (NGFF 0.4, zarr v2) pyramid.

Level 0 is copied block by block (a multiscale layer's level 0 may be a lazy dask array
larger than memory), then :func:`~napari_mupd.io.ome_zarr.build_pyramid` computes
the lower levels from it. The layer's scale, translate and units become the NGFF
coordinate transformations (rotate, shear and affine are not written); its contrast
limits the OMERO display window; its JSON-serialisable metadata the provenance in the
``napari_mupd`` attributes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_mupd._version import __version__
from napari_mupd.errors import LayerWriteError
from napari_mupd.io.ome_zarr import build_pyramid, create_ome_zarr

BLOCK = 2048  # pixels per side copied at once: a multiple of the 512 px chunks
RGB_COLOURS = ("FF0000", "00FF00", "0000FF", "FFFFFF")


def write_ome_zarr_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer (RGB, or 2-D single channel) as OME-Zarr; returns ``[path]``."""
    p = Path(path)
    name = str(meta.get("name") or p.name)
    level0 = data[0] if meta.get("multiscale") else data
    channels = _channels(p, level0, name, bool(meta.get("rgb")))
    dtype = _dtype(p, np.dtype(level0.dtype))
    _check_overwritable(p)
    units = [str(u) for u in meta.get("units", ("pixel", "pixel"))][-2:]
    sy, sx = (float(s) for s in meta.get("scale", (1, 1))[-2:])
    ty, tx = (float(t) for t in meta.get("translate", (0, 0))[-2:])
    group = create_ome_zarr(
        p,
        (int(level0.shape[0]), int(level0.shape[1])),
        channels,
        dtype=dtype.str.lstrip("<>|="),
        scale=(sy, sx),
        translate=(ty, tx),
        units=units[0],
        attrs={
            "writer": f"napari-mupd {__version__}",
            "layer": name,
            "metadata": json_safe(meta.get("metadata", {})),
        },
    )
    _set_window(group, channels, dtype, meta.get("contrast_limits"), bool(meta.get("rgb")))
    copy_level0(level0, group["0"], dtype)
    build_pyramid(group)
    return [str(p)]


def copy_level0(image: Any, array: Any, dtype: np.dtype, block: int = BLOCK) -> None:
    """Copy a (h, w[, c]) array-like (numpy, dask, zarr) into a (c, h, w) zarr array."""
    h, w = image.shape[:2]
    for y in range(0, h, block):
        for x in range(0, w, block):
            tile = np.asarray(image[y : y + block, x : x + block]).astype(dtype, copy=False)
            tile = tile[None] if tile.ndim == 2 else np.moveaxis(tile, -1, 0)
            array[:, y : y + tile.shape[1], x : x + tile.shape[2]] = tile


def json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot hold left out (objects such as an open slide)."""
    if isinstance(value, dict):
        items = ((str(k), json_safe(v)) for k, v in value.items())
        return {k: v for k, v in items if v is not _DROP}
    if isinstance(value, list | tuple):
        return [v for v in map(json_safe, value) if v is not _DROP]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.size <= 10_000:
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _DROP


_DROP = object()


def _channels(path: Path, level0: Any, name: str, rgb: bool) -> list[str]:
    shape = tuple(level0.shape)
    if rgb and len(shape) == 3 and shape[2] in (3, 4):
        return ["R", "G", "B", "A"][: shape[2]]
    if not rgb and len(shape) == 2:
        return [name]
    raise LayerWriteError(
        f"{path}: OME-Zarr export takes RGB(A) or 2-D single-channel layers; "
        f"{name!r} has shape {shape}"
    )


def _dtype(path: Path, dtype: np.dtype) -> np.dtype:
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind not in "uif":
        raise LayerWriteError(f"{path}: cannot write {dtype} pixels (integers or floats only)")
    return dtype


def _check_overwritable(path: Path) -> None:
    """Refuse to replace anything but an OME-Zarr that napari-mupd wrote."""
    if not path.exists():
        return
    try:
        attrs = json.loads((path / ".zattrs").read_text())
    except (OSError, ValueError):
        attrs = {}
    if not ("multiscales" in attrs and "napari_mupd" in attrs):
        raise LayerWriteError(
            f"{path}: already exists and is not an OME-Zarr written by napari-mupd; "
            "refusing to overwrite it (choose another name or delete it first)"
        )


def _set_window(group: Any, channels: list[str], dtype: np.dtype, limits: Any, rgb: bool) -> None:
    """The OMERO display window from the layer's contrast limits (and RGB colours)."""
    if limits is None:
        return
    start, end = (float(v) for v in limits)
    if dtype.kind in "ui":
        lowest, highest = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    else:
        lowest, highest = start, end
    omero = group.attrs["omero"]
    for i, channel in enumerate(omero["channels"]):
        channel["window"] = {"start": start, "end": end, "min": lowest, "max": highest}
        if rgb:
            channel["color"] = RGB_COLOURS[i]
            channel["active"] = channels[i] != "A"
    group.attrs["omero"] = omero


__all__ = ["copy_level0", "json_safe", "write_ome_zarr_layer"]
