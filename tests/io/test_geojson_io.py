"""QuPath GeoJSON annotations: reading the three layouts, geometries, errors, round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_mupd.errors import GeoJSONError, MuPDError
from napari_mupd.io.geojson import Annotation, read_geojson, write_geojson

SQUARE = [[10.0, 20.0], [110.0, 20.0], [110.0, 70.0], [10.0, 70.0], [10.0, 20.0]]
HOLE = [[30.0, 30.0], [40.0, 30.0], [40.0, 40.0], [30.0, 30.0]]


def feature(geometry: dict, **props) -> dict:
    """A Feature the way QuPath 0.5 exports it."""
    return {
        "type": "Feature",
        "id": "5b2f2b4e-0b7a-4f27-9d1a-3a4c5e6f7a8b",
        "geometry": geometry,
        "properties": {"objectType": "annotation", **props},
    }


def dump(path: Path, content) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_feature_collection_polygon_with_classification_and_hole(tmp_path):
    tumour = {"name": "Tumor", "color": [200, 0, 0]}
    geometry = {"type": "Polygon", "coordinates": [SQUARE, HOLE]}
    path = dump(
        tmp_path / "a.geojson",
        {"type": "FeatureCollection", "features": [feature(geometry, classification=tumour,
                                                            name="roi 1", isLocked=True)]},
    )  # fmt: skip
    (a,) = read_geojson(path)
    assert a.kind == "polygon"
    np.testing.assert_array_equal(a.xy, SQUARE[:-1])  # closing vertex dropped
    assert len(a.holes) == 1
    np.testing.assert_array_equal(a.holes[0], HOLE[:-1])
    assert (a.name, a.classification, a.color) == ("roi 1", "Tumor", (200, 0, 0))
    assert a.locked and a.object_type == "annotation"


def test_bare_list_single_feature_multipolygon_and_lines(tmp_path):
    multi = {"type": "MultiPolygon", "coordinates": [[SQUARE], [HOLE]]}
    line = {"type": "LineString", "coordinates": [[0, 0], [5, 5], [9, 1]]}
    listed = dump(tmp_path / "list.geojson", [feature(multi), feature(line)])
    annotations = read_geojson(listed)
    assert [a.kind for a in annotations] == ["polygon", "polygon", "path"]
    np.testing.assert_array_equal(annotations[1].xy, HOLE[:-1])
    np.testing.assert_array_equal(annotations[2].xy, [[0, 0], [5, 5], [9, 1]])
    single = dump(tmp_path / "one.geojson", feature(line, objectType="detection"))
    (a,) = read_geojson(single)
    assert a.object_type == "detection" and a.classification is None and a.color is None


def test_old_packed_colour_and_object_colour(tmp_path):
    old = {"name": "Stroma", "colorRGB": -16711936}  # QuPath 0.2: ARGB packed, green
    own = feature({"type": "Polygon", "coordinates": [SQUARE]}, color=[1, 2, 3])
    path = dump(tmp_path / "c.geojson", [feature({"type": "Polygon", "coordinates": [SQUARE]},
                                                 classification=old), own])  # fmt: skip
    first, second = read_geojson(path)
    assert (first.classification, first.color) == ("Stroma", (0, 255, 0))
    assert (second.classification, second.color) == (None, (1, 2, 3))


def test_points_are_skipped_with_a_warning(tmp_path):
    point = feature({"type": "Point", "coordinates": [1, 2]})
    path = dump(
        tmp_path / "p.geojson", [point, feature({"type": "Polygon", "coordinates": [SQUARE]})]
    )
    with pytest.warns(UserWarning, match="skipped 1 point geometry"):
        annotations = read_geojson(path)
    assert len(annotations) == 1


def test_round_trip(tmp_path):
    original = [
        Annotation("polygon", np.array(SQUARE[:-1]), name="a", classification="Tumor",
                   color=(200, 0, 0), holes=[np.array(HOLE[:-1])]),
        Annotation("path", np.array([[0.5, 0.25], [3.75, 9.125]]), object_type="detection"),
        Annotation("polygon", np.array([[1.0, 1.0], [2.0, 5.0], [7.0, 3.0]]), color=(4, 5, 6),
                   locked=True),
    ]  # fmt: skip
    path = write_geojson(tmp_path / "out.geojson", original)
    written = json.loads(path.read_text())
    assert written["type"] == "FeatureCollection"
    ring = written["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] == SQUARE[0]
    assert written["features"][0]["properties"]["classification"] == {
        "name": "Tumor",
        "color": [200, 0, 0],
    }
    back = read_geojson(path)
    for a, b in zip(original, back, strict=True):
        np.testing.assert_array_equal(a.xy, b.xy)
        assert (a.kind, a.name, a.classification, a.color, a.object_type, a.locked) == (
            b.kind, b.name, b.classification, b.color, b.object_type, b.locked
        )  # fmt: skip
    np.testing.assert_array_equal(back[0].holes[0], HOLE[:-1])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("  \n", "the file is empty"),
        ("{not json", "not valid JSON"),
        ('{"type": "Topology"}', "not GeoJSON"),
        ("[1, 2]", "not GeoJSON"),
        ('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}', "without a geometry"),
        (json.dumps([feature({"type": "Circle", "coordinates": [0, 0]})]), "unsupported geometry"),
        (json.dumps([feature({"type": "Polygon", "coordinates": []})]), "without coordinates"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(GeoJSONError, match=message) as info:
        read_geojson(path)
    assert isinstance(info.value, MuPDError)
    assert "bad.geojson" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(GeoJSONError, match=r"missing\.geojson"):
        read_geojson(tmp_path / "missing.geojson")
