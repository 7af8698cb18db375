"""QuPath GeoJSON in a real napari viewer: shapes over the slide, napari's own save."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import CMU1
from napari_mupd.errors import GeoJSONError
from napari_mupd.io.geojson import read_geojson
from napari_mupd.plugin._geojson import napari_get_reader

pytestmark = pytest.mark.gui

# QuPath corner coordinates: a 200 x 60 px rectangle and a triangle, as QuPath 0.5 exports
RECTANGLE = [[100, 200], [300, 200], [300, 260], [100, 260], [100, 200]]
TRIANGLE = [[1000.5, 1500.25], [1200, 1700], [900, 1800], [1000.5, 1500.25]]


def qupath_export(path: Path) -> Path:
    """A GeoJSON file written exactly the way QuPath 0.5 exports a FeatureCollection."""
    features = []
    for i, (ring, cls, colour) in enumerate(
        [(RECTANGLE, "Tumor", [200, 0, 0]), (TRIANGLE, "Stroma", [150, 200, 150])]
    ):
        features.append(
            {
                "type": "Feature",
                "id": f"0f6b3c5e-1d2a-4b7c-9e8f-00000000000{i}",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": cls, "color": colour},
                },
            }
        )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def world_to_slide_data(shapes, slide_layer, vertex) -> np.ndarray:
    return np.asarray(slide_layer.world_to_data(shapes.data_to_world(vertex)))


def test_qupath_export_lies_over_the_slide(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    (slide,) = viewer.open(str(CMU1), plugin="napari-mupd")
    (shapes,) = viewer.open(str(qupath_export(tmp_path / "qp.geojson")), plugin="napari-mupd")
    assert shapes._type_string == "shapes"
    assert shapes.shape_type == ["rectangle", "polygon"]
    np.testing.assert_allclose(shapes.scale, slide.scale)
    assert [str(u) for u in shapes.units] == ["micrometer", "micrometer"]
    assert list(shapes.features["classification"]) == ["Tumor", "Stroma"]
    np.testing.assert_allclose(shapes.edge_color[0], [200 / 255, 0, 0, 1])
    np.testing.assert_allclose(shapes.edge_color[1], [150 / 255, 200 / 255, 150 / 255, 1])
    assert shapes.face_color[0][3] < 0.5  # see-through
    # QuPath corner (x=100, y=200) is the top-left corner of slide pixel (row 200, col 100),
    # which napari puts at data (199.5, 99.5) of the slide layer
    np.testing.assert_allclose(world_to_slide_data(shapes, slide, shapes.data[0][0]), [199.5, 99.5])
    np.testing.assert_allclose(
        world_to_slide_data(shapes, slide, shapes.data[1][0]), [1500.25 - 0.5, 1000.5 - 0.5]
    )
    corners = np.array([world_to_slide_data(shapes, slide, v) for v in shapes.data[0]])
    first, last = np.round(corners.min(axis=0) + 0.5), np.round(corners.max(axis=0) - 0.5)
    assert (*first, *last) == (200, 100, 259, 299)  # the pixels (rows, cols) of the 200 x 60


def test_save_with_napari_round_trips_to_qupath_coordinates(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(CMU1), plugin="napari-mupd")
    (shapes,) = viewer.open(str(qupath_export(tmp_path / "qp.geojson")), plugin="napari-mupd")
    out = tmp_path / "saved.geojson"
    viewer.layers.selection = {shapes}
    written = viewer.layers.save(str(out), selected=True, plugin="napari-mupd")
    assert [Path(p) for p in written] == [out]
    features = json.loads(out.read_text())["features"]
    assert features[0]["geometry"] == {"type": "Polygon", "coordinates": [RECTANGLE]}
    assert features[1]["geometry"]["coordinates"] == [TRIANGLE]
    assert features[0]["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    assert features[1]["properties"]["classification"]["color"] == [150, 200, 150]
    (again,) = viewer.open(str(out), plugin="napari-mupd")
    for a, b in zip(shapes.data, again.data, strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.shape_type == shapes.shape_type


def test_drawn_shapes_in_micrometres_are_saved_in_slide_pixels(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    (slide,) = viewer.open(str(CMU1), plugin="napari-mupd")
    mpp = float(slide.scale[0])
    # a layer drawn over the slide at scale 1: its data coordinates are micrometres
    drawn = viewer.add_shapes(
        [np.array([[10 * mpp, 20 * mpp], [10 * mpp, 40 * mpp], [30 * mpp, 40 * mpp]])],
        shape_type="polygon",
        name="drawn",
    )
    out = Path(drawn.save(str(tmp_path / "drawn.geojson"), plugin="napari-mupd")[0])
    (a,) = read_geojson(out)
    np.testing.assert_allclose(a.xy, [[20.5, 10.5], [40.5, 10.5], [40.5, 30.5]])


def test_every_shape_type_without_a_slide(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = [
        np.array([[0, 0], [0, 10], [4, 10], [4, 0]], float),
        np.array([[20, 20], [20, 40], [30, 40], [30, 20]], float),
        np.array([[1, 1], [8, 9]], float),
        np.array([[1, 1], [8, 9], [3, 12]], float),
        np.array([[5, 5], [9, 6], [7, 11]], float),
    ]
    kinds = ["rectangle", "ellipse", "line", "path", "polygon"]
    layer = viewer.add_shapes(
        data,
        shape_type=kinds,
        features={"name": ["r", "e", "l", "p", "g"], "classification": ["A", "", "", "", "B"]},
    )
    out = tmp_path / "all.geojson"
    layer.save(str(out), plugin="napari-mupd")
    features = json.loads(out.read_text())["features"]
    assert [f["geometry"]["type"] for f in features] == ["Polygon", "Polygon"] + 2 * [
        "LineString"
    ] + ["Polygon"]
    assert [f["properties"].get("name") for f in features] == ["r", "e", "l", "p", "g"]
    assert "classification" not in features[1]["properties"]
    ellipse = np.asarray(features[1]["geometry"]["coordinates"][0])
    np.testing.assert_allclose(ellipse.min(axis=0), [20.5, 20.5], atol=0.05)  # x, y
    np.testing.assert_allclose(ellipse.max(axis=0), [40.5, 30.5], atol=0.05)
    (back,) = viewer.open(str(out), plugin="napari-mupd")
    assert back.shape_type == ["rectangle", "polygon", "line", "path", "polygon"]
    for i in (0, 2, 3, 4):
        np.testing.assert_allclose(back.data[i], data[i])
    assert list(back.features["classification"]) == ["A", "", "", "", "B"]
    np.testing.assert_allclose(back.scale, (1, 1))


def test_empty_collection_gives_an_empty_layer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    path = tmp_path / "none.geojson"
    path.write_text('{"type": "FeatureCollection", "features": []}')
    (layer,) = viewer.open(str(path), plugin="napari-mupd")
    assert layer.nshapes == 0


def test_bad_geojson_names_the_file(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    bad = tmp_path / "broken.geojson"
    bad.write_text('{"type": "Topology", "objects": {}}')
    with pytest.raises(Exception) as info:  # napari wraps plugin errors
        viewer.open(str(bad), plugin="napari-mupd")
    chain, error = [], info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    assert any(isinstance(e, GeoJSONError) and "broken.geojson" in str(e) for e in chain)


def test_get_reader_claims_only_geojson():
    assert napari_get_reader("annotations.geojson") is not None
    assert napari_get_reader(["A.GEOJSON"]) is not None
    assert napari_get_reader("annotations.json") is None
    assert napari_get_reader(["a.geojson", "b.geojson"]) is None
