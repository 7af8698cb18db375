"""Saving image layers as OME-Zarr from a real viewer, read back by three readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from helpers import CMU1
from napari_mupd.io import open_slide

pytestmark = pytest.mark.gui


def ome_zarr_py(path: Path):
    """The image node ome-zarr-py reads: level arrays and metadata."""
    node = next(iter(Reader(parse_url(str(path)))()))
    transforms = node.metadata["coordinateTransformations"][0]
    scale = next(t["scale"] for t in transforms if t["type"] == "scale")
    translation = next(t["translation"] for t in transforms if t["type"] == "translation")
    return node, scale, translation


def test_slide_layer_round_trip(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    (slide,) = viewer.open(str(CMU1), plugin="napari-mupd")
    out = tmp_path / "cmu1.ome.zarr"
    viewer.layers.selection = {slide}
    written = viewer.layers.save(str(out), selected=True, plugin="napari-mupd")
    assert [Path(p) for p in written] == [out]
    pixels = np.asarray(slide.data[0])  # (2967, 2220, 3)

    node, scale, translation = ome_zarr_py(out)
    np.testing.assert_array_equal(np.asarray(node.data[0]), np.moveaxis(pixels, -1, 0))
    assert len(node.data) == 5  # level 0 and the pyramid down to <= 256 px
    np.testing.assert_allclose(scale, [1, 0.499, 0.499])
    np.testing.assert_allclose(translation, [0, 0, 0])
    assert node.metadata["channel_names"] == ["R", "G", "B"]
    provenance = node.zarr.root_attrs["napari_mupd"]
    assert provenance["metadata"]["source"] == str(CMU1.resolve())
    assert provenance["metadata"]["mpp"] == [0.499, 0.499]
    assert "slide" not in provenance["metadata"]

    with open_slide(out) as ours:
        assert ours.dimensions == (2220, 2967)
        np.testing.assert_allclose(ours.mpp, (0.499, 0.499))
        np.testing.assert_array_equal(ours.read_region((0, 0), 0, (2220, 2967)), pixels)

    channels = viewer.open(str(out), plugin="napari-ome-zarr")
    assert [layer.name for layer in channels] == [f"cmu1.ome.zarr: {c}" for c in "RGB"]
    for i, layer in enumerate(channels):
        np.testing.assert_array_equal(np.asarray(layer.data[0]), pixels[..., i])
        np.testing.assert_allclose(layer.scale, slide.scale)
        np.testing.assert_allclose(layer.translate, slide.translate)


def float_layer(viewer):
    rng = np.random.default_rng(3)
    image = (rng.random((700, 900)) * 4 - 1).astype(np.float32)
    return viewer.add_image(
        image, name="probability", scale=(0.5, 0.25), translate=(10.0, 20.0),
        units="micrometer", contrast_limits=(-1, 3), metadata={"model": "unet", "epoch": 4},
    )  # fmt: skip


def test_float_layer_round_trip(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = float_layer(viewer)
    out = Path(layer.save(str(tmp_path / "prob.zarr"), plugin="napari-mupd")[0])
    node, scale, translation = ome_zarr_py(out)
    np.testing.assert_array_equal(np.asarray(node.data[0])[0], layer.data)
    np.testing.assert_allclose(scale, [1, 0.5, 0.25])
    np.testing.assert_allclose(translation, [0, 10, 20])
    assert node.metadata["channel_names"] == ["probability"]
    assert node.metadata["contrast_limits"] == [[-1, 3]]
    assert node.zarr.root_attrs["napari_mupd"]["metadata"] == {"model": "unet", "epoch": 4}

    (back,) = viewer.open(str(out), plugin="napari-ome-zarr")
    np.testing.assert_array_equal(np.asarray(back.data[0]), layer.data)
    np.testing.assert_allclose(back.scale, layer.scale)
    np.testing.assert_allclose(back.contrast_limits, (-1, 3))
    assert [str(u) for u in back.units] == ["micrometer", "micrometer"]


@pytest.mark.xfail(
    reason="napari-ome-zarr 0.10 reads only the first transform of datasets[0] (the scale) "
    "and drops the NGFF 0.4 translation; ome-zarr-py and our reader keep it",
    strict=True,  # an unexpected pass fails: napari-ome-zarr then keeps the translation
)
def test_translate_through_napari_ome_zarr(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = float_layer(viewer)
    out = layer.save(str(tmp_path / "prob.zarr"), plugin="napari-mupd")[0]
    (back,) = viewer.open(out, plugin="napari-ome-zarr")
    np.testing.assert_allclose(back.translate, layer.translate)


def test_refusal_reaches_the_user(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((20, 20), np.uint8), name="z")
    taken = tmp_path / "taken.zarr"
    taken.mkdir()
    (taken / "data.bin").write_bytes(b"1234")
    with pytest.raises(Exception, match="refusing to overwrite"):
        layer.save(str(taken), plugin="napari-mupd")
    assert (taken / "data.bin").read_bytes() == b"1234"
