"""npe2 reader and writer: QuPath GeoJSON annotations <-> a napari Shapes layer.

QuPath's coordinates are level-0 pixel corners (pixel (0, 0) spans [0, 1)); napari's
data coordinate k is the centre of pixel k, so data = QuPath - 0.5. The Shapes layer
takes the scale, translate and units of the viewer's first slide layer (an image layer
with ``metadata["slide"]``), so the shapes lie over it; and on writing, shapes go
through world coordinates into that slide's pixels (the layer's own data coordinates
when the viewer shows no slide). Polygon holes are not shown: napari shapes have none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_mupd._version import __version__
from napari_mupd.io.geojson import Annotation, read_geojson, write_geojson
from napari_mupd.plugin import LayerData
from napari_mupd.plugin._reader import single_path

DEFAULT_RGB = (255, 0, 0)  # QuPath's default annotation colour
FACE_ALPHA = 0.15
ELLIPSE_VERTICES = 72


def napari_get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Return :func:`read_shapes` for one ``.geojson`` file."""
    p = single_path(path)
    return read_shapes if p is not None and p.name.lower().endswith(".geojson") else None


def read_shapes(path: str | list[str]) -> list[LayerData]:
    """The file's polygons and paths as one Shapes layer over the viewer's slide."""
    file = single_path(path) or Path(path[0])
    annotations = read_geojson(file)
    colours = np.array([(*np.divide(a.color or DEFAULT_RGB, 255), 1.0) for a in annotations])
    kwargs: dict[str, Any] = {
        "name": file.name.removesuffix(".geojson"),
        "shape_type": [_shape_type(a) for a in annotations],
        "features": pd.DataFrame(
            {
                "name": [a.name or "" for a in annotations],
                "classification": [a.classification or "" for a in annotations],
                "object_type": [a.object_type for a in annotations],
            }
        ),
        "edge_width": 2,
        "metadata": {"source": str(file), "reader": f"napari-mupd {__version__}"},
        **_slide_placement(),
    }
    if annotations:
        faces = colours.copy()
        faces[:, 3] = FACE_ALPHA
        kwargs.update(edge_color=colours, face_color=faces)
    data = [np.asarray(a.xy, float)[:, ::-1] - 0.5 for a in annotations]
    return [(data, kwargs, "shapes")]


def write_shapes(path: str, data: list[np.ndarray], meta: dict[str, Any]) -> list[str]:
    """Write a Shapes layer as GeoJSON that QuPath imports (npe2 single-layer writer).

    Rectangles, ellipses and polygons become Polygons; lines and paths LineStrings.
    """
    slide = _slide_layer()
    scale = np.asarray(meta.get("scale", (1, 1)), float)[-2:]
    translate = np.asarray(meta.get("translate", (0, 0)), float)[-2:]
    features = meta.get("features")
    features = features if isinstance(features, pd.DataFrame) else pd.DataFrame()
    edges = np.asarray(meta.get("edge_color", np.zeros((0, 4))), float)
    annotations = []
    for i, (vertices, kind) in enumerate(zip(data, meta["shape_type"], strict=True)):
        yx = np.asarray(vertices, float)[:, -2:]
        if kind == "ellipse":
            yx = _ellipse_outline(yx)
        if slide is not None:
            yx = _world_to_slide(slide, yx * scale + translate)
        row = features.iloc[i] if i < len(features) else pd.Series(dtype=object)
        annotations.append(
            Annotation(
                kind="path" if kind in ("line", "path") else "polygon",
                xy=yx[:, ::-1] + 0.5,
                name=_text(row.get("name")),
                classification=_text(row.get("classification")),
                color=tuple(round(c * 255) for c in edges[i][:3]) if i < len(edges) else None,
                object_type=_text(row.get("object_type")) or "annotation",
            )
        )
    return [str(write_geojson(path, annotations))]


def _shape_type(a: Annotation) -> str:
    if a.kind == "path":
        return "line" if len(a.xy) == 2 else "path"
    xy = np.asarray(a.xy, float)
    if len(xy) == 4:
        x0, y0 = xy.min(axis=0)
        x1, y1 = xy.max(axis=0)
        corners = {(x0, y0), (x1, y0), (x1, y1), (x0, y1)}
        if x1 > x0 and y1 > y0 and {tuple(p) for p in xy} == corners:
            return "rectangle"
    return "polygon"


def _ellipse_outline(corners: np.ndarray) -> np.ndarray:
    """A polygon of the ellipse inscribed in napari's four bounding-box vertices."""
    centre = corners.mean(axis=0)
    a, b = (corners[1] - corners[0]) / 2, (corners[3] - corners[0]) / 2
    t = np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES, endpoint=False)[:, None]
    return centre + np.cos(t) * a + np.sin(t) * b


def _text(value: Any) -> str | None:
    return None if value is None or pd.isna(value) or value == "" else str(value)


def _slide_layer() -> Any:
    """The current viewer's first image layer that shows a slide, or None."""
    import napari

    viewer = napari.current_viewer()
    if viewer is None:
        return None
    return next(
        (layer for layer in viewer.layers
         if isinstance(layer, napari.layers.Image) and layer.metadata.get("slide") is not None),
        None,
    )  # fmt: skip


def _slide_placement() -> dict[str, Any]:
    layer = _slide_layer()
    if layer is None:
        return {}
    return {
        "scale": tuple(layer.scale[-2:]),
        "translate": tuple(layer.translate[-2:]),
        "units": tuple(str(u) for u in layer.units[-2:]),
    }


def _world_to_slide(layer: Any, world_yx: np.ndarray) -> np.ndarray:
    """World (y, x) -> data (y, x) of a 2-D slide layer (its scale and translate)."""
    scale = np.asarray(layer.scale[-2:], float)
    translate = np.asarray(layer.translate[-2:], float)
    return (world_yx - translate) / scale


__all__ = ["napari_get_reader", "read_shapes", "write_shapes"]
