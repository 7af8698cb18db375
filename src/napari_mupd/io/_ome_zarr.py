"""OME-Zarr (NGFF 0.4 and 0.5) multiscale images, read straight from zarr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_mupd.errors import SlideError
from napari_mupd.io._backend import BackendInfo, Level, level_downsample
from napari_mupd.io._pixels import to_rgb_uint8

_UM_PER = {"nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "centimeter": 1e4, "meter": 1e6}
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zattrs", ".zarray")


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a folder holding zarr (v2 or v3) metadata."""
    return path.is_dir() and any((path / m).exists() for m in ZARR_MARKERS)


class OmeZarrBackend:
    """The first multiscale image of an OME-Zarr group."""

    def __init__(self, path: Path) -> None:
        import zarr  # ~200 ms to import: only when a zarr is opened

        try:
            group = zarr.open_group(str(path), mode="r")
        except Exception as exc:  # zarr raises many types for bad metadata
            raise SlideError(f"not a readable zarr group: {exc}") from exc
        attrs = dict(group.attrs)
        multiscales = attrs.get("ome", attrs).get("multiscales")
        if not multiscales:
            raise SlideError("a zarr group without OME-NGFF 'multiscales' metadata")
        ms = multiscales[0]
        axes = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
        self._arrays = [group[d["path"]] for d in ms["datasets"]]
        ndim = self._arrays[0].ndim
        if not axes:
            axes = ["t", "c", "z", "y", "x"][-ndim:]
        if "y" not in axes or "x" not in axes or len(axes) != ndim:
            raise SlideError(f"unsupported OME-Zarr axes {axes}")
        self._axes = axes
        shapes = [
            (int(a.shape[axes.index("y")]), int(a.shape[axes.index("x")])) for a in self._arrays
        ]
        tiles = [
            (int(a.chunks[axes.index("y")]), int(a.chunks[axes.index("x")])) for a in self._arrays
        ]
        self.info = BackendInfo(
            vendor="ome-zarr",
            levels=[
                Level(s, level_downsample(shapes[0], s), t)
                for s, t in zip(shapes, tiles, strict=True)
            ],
            mpp=_mpp(ms, axes),
            extra={
                "ngff_version": ms.get("version") or attrs.get("ome", {}).get("version"),
                "origin": _origin(ms, axes),
            },
        )

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Level pixels [y:y+h, x:x+w] as (h, w, 3) uint8."""
        index: list[Any] = []
        for name in self._axes:
            if name == "y":
                index.append(slice(y, y + h))
            elif name == "x":
                index.append(slice(x, x + w))
            elif name == "c":
                index.append(slice(None))
            else:
                index.append(0)
        array = np.asarray(self._arrays[level][tuple(index)])
        kept = [a for a in self._axes if a in ("y", "x", "c")]
        order = [kept.index("y"), kept.index("x")] + ([kept.index("c")] if "c" in kept else [])
        return to_rgb_uint8(np.transpose(array, order))

    def close(self) -> None:
        """Nothing to release: zarr opens files per read."""


def _mpp(ms: dict, axes: list[str]) -> tuple[float, float] | None:
    axis_meta = {a["name"]: a for a in ms.get("axes", []) if isinstance(a, dict)}
    transforms = ms["datasets"][0].get("coordinateTransformations", [])
    scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
    if scale is None:
        return None
    out = []
    for name in ("y", "x"):
        factor = _UM_PER.get(axis_meta.get(name, {}).get("unit", ""))
        if factor is None:
            return None
        out.append(float(scale[axes.index(name)]) * factor)
    return out[0], out[1]


def _origin(ms: dict, axes: list[str]) -> tuple[float, float]:
    """World (y, x) of level 0's first pixel centre: dataset and multiscale translations."""
    transforms = ms["datasets"][0].get("coordinateTransformations", [])
    top = ms.get("coordinateTransformations", [])
    origin = [0.0, 0.0]
    for t in [*transforms, *top]:
        if t.get("type") == "translation":
            shift = [float(t["translation"][axes.index(n)]) for n in "yx"]
            origin = [origin[0] + shift[0], origin[1] + shift[1]]
    return origin[0], origin[1]
