"""GeoJSON annotations as QuPath exports and imports them (no napari, no Qt).

QuPath writes a FeatureCollection, a single Feature, or a bare JSON list of Features.
Coordinates are level-0 pixel coordinates with QuPath's corner convention: pixel
(0, 0) spans [0, 1) x [0, 1), so its centre is (0.5, 0.5).

Geometries: a Polygon gives one annotation (its outer ring in ``xy``, its holes in
``holes``); a MultiPolygon one annotation per polygon; a LineString (or each line of a
MultiLineString) a path; a GeometryCollection its members. Point and MultiPoint
geometries (QuPath's point annotations and cell centroids) are skipped with a warning.
Properties read: ``objectType``, ``name``, ``classification`` ({name, color [r, g, b]},
or QuPath < 0.4's packed ``colorRGB``), the object's own ``color`` and ``isLocked``.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_mupd.errors import GeoJSONError

Kind = Literal["polygon", "path"]
SKIPPED = ("Point", "MultiPoint")


@dataclass
class Annotation:
    """One QuPath object: a closed polygon or an open path, in corner-convention pixels.

    ``xy`` is (N, 2) x, y without the closing vertex (likewise each of ``holes``);
    ``color`` is the classification's RGB (0-255), else the object's own, else None.
    """

    kind: Kind
    xy: np.ndarray
    name: str | None = None
    classification: str | None = None
    color: tuple[int, int, int] | None = None
    object_type: str = "annotation"
    locked: bool = False
    holes: list[np.ndarray] = field(default_factory=list)


def read_geojson(path: str | os.PathLike) -> list[Annotation]:
    """The polygons and paths of a QuPath GeoJSON export, in file order."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise GeoJSONError(f"{p}: cannot be read ({exc.strerror or exc})") from exc
    if not text.strip():
        raise GeoJSONError(f"{p}: the file is empty")
    try:
        content = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GeoJSONError(f"{p}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    skipped: list[str] = []
    annotations = [a for f in _features(content, p) for a in _annotations(f, p, skipped)]
    if skipped:
        warnings.warn(
            f"{p}: skipped {len(skipped)} point geometr{'y' if len(skipped) == 1 else 'ies'} "
            "(napari-mupd reads polygons and lines)",
            stacklevel=2,
        )
    return annotations


def write_geojson(path: str | os.PathLike, annotations: list[Annotation]) -> Path:
    """Write ``annotations`` as a FeatureCollection that QuPath (0.4+) imports."""
    p = Path(path)
    features = [_feature(a) for a in annotations]
    try:
        p.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1))
    except OSError as exc:
        raise GeoJSONError(f"{p}: cannot be written ({exc.strerror or exc})") from exc
    return p


def _features(content: Any, path: Path) -> list[dict]:
    features: Any
    if isinstance(content, list):
        features = content
    elif isinstance(content, dict) and content.get("type") == "FeatureCollection":
        features = content.get("features")
    elif isinstance(content, dict) and content.get("type") == "Feature":
        features = [content]
    else:
        raise GeoJSONError(
            f"{path}: not GeoJSON (expected a FeatureCollection, a Feature or a list of Features)"
        )
    if not isinstance(features, list) or not all(
        isinstance(f, dict) and f.get("type") == "Feature" for f in features
    ):
        raise GeoJSONError(f"{path}: not GeoJSON (the features are not all Feature objects)")
    return features


def _annotations(feature: dict, path: Path, skipped: list[str]) -> list[Annotation]:
    props = feature.get("properties") or {}
    name, colour = _classification(props.get("classification"))
    colour = colour or _rgb(props.get("color"))
    out = []
    for kind, rings in _geometry(feature.get("geometry"), path, skipped):
        if not rings or not rings[0]:
            raise GeoJSONError(f"{path}: a {kind} geometry without coordinates")
        try:
            arrays = [np.asarray(r, float)[:, :2] for r in rings]
        except (ValueError, IndexError) as exc:
            raise GeoJSONError(f"{path}: malformed coordinates ({exc})") from exc
        if kind == "polygon":
            arrays = [a[:-1] if len(a) > 1 and np.array_equal(a[0], a[-1]) else a for a in arrays]
        annotation = Annotation(
            kind,
            arrays[0],
            name=props.get("name"),
            classification=name,
            color=colour,
            object_type=str(props.get("objectType", "annotation")),
            locked=bool(props.get("isLocked", False)),
            holes=arrays[1:],
        )
        out.append(annotation)
    return out


def _geometry(geometry: Any, path: Path, skipped: list[str]) -> list[tuple[Kind, list]]:
    if not isinstance(geometry, dict) or "type" not in geometry:
        raise GeoJSONError(f"{path}: a Feature without a geometry")
    kind, coords = geometry["type"], geometry.get("coordinates") or []
    if kind == "Polygon":
        return [("polygon", coords)]
    if kind == "MultiPolygon":
        return [("polygon", polygon) for polygon in coords]
    if kind == "LineString":
        return [("path", [coords])]
    if kind == "MultiLineString":
        return [("path", [line]) for line in coords]
    if kind == "GeometryCollection":
        return [
            g for member in geometry.get("geometries", []) for g in _geometry(member, path, skipped)
        ]
    if kind in SKIPPED:
        skipped.append(kind)
        return []
    raise GeoJSONError(f"{path}: unsupported geometry type {kind!r}")


def _classification(value: Any) -> tuple[str | None, tuple[int, int, int] | None]:
    if isinstance(value, str):
        return value, None
    if not isinstance(value, dict):
        return None, None
    packed = value.get("colorRGB")
    if isinstance(packed, int):
        return value.get("name"), ((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)
    return value.get("name"), _rgb(value.get("color"))


def _rgb(value: Any) -> tuple[int, int, int] | None:
    if isinstance(value, list) and len(value) >= 3:
        return int(value[0]), int(value[1]), int(value[2])
    return None


def _feature(a: Annotation) -> dict[str, Any]:
    if a.kind == "polygon":
        rings = [_closed(a.xy), *(_closed(h) for h in a.holes)]
        geometry = {"type": "Polygon", "coordinates": rings}
    else:
        geometry = {"type": "LineString", "coordinates": np.asarray(a.xy, float).tolist()}
    props: dict[str, Any] = {"objectType": a.object_type}
    if a.name:
        props["name"] = a.name
    if a.classification:
        props["classification"] = {"name": a.classification, "color": list(a.color or (255, 0, 0))}
    elif a.color is not None:
        props["color"] = list(a.color)
    if a.locked:
        props["isLocked"] = True
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geometry, "properties": props}


def _closed(ring: np.ndarray) -> list[list[float]]:
    ring = np.asarray(ring, float)
    return np.vstack([ring, ring[:1]]).tolist()


__all__ = ["Annotation", "read_geojson", "write_geojson"]
