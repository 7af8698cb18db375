"""``mupd demo --view`` and the stained OME-Zarr in a real viewer (ours and napari-ome-zarr)."""

from __future__ import annotations

import napari
import numpy as np
import pytest
import zarr

from napari_mupd.cli import main

pytestmark = pytest.mark.gui


@pytest.fixture
def demo_out(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(napari, "run", lambda: None)  # do not block in the event loop
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_model_dir), "--size", "256", "--out", str(out),
                 "--view"]) == 0  # fmt: skip
    viewer = napari.current_viewer()
    yield out, viewer
    viewer.close()


def test_view_lays_the_stain_over_its_region(demo_out):
    out, viewer = demo_out
    slide_layer, stain = viewer.layers
    assert stain.name == "virtual IHC:Ki67" and stain.opacity == pytest.approx(0.8)
    attrs = zarr.open_group(str(out / "IHC-Ki67.ome.zarr"), mode="r").attrs["napari_mupd"]
    x, y, d = attrs["region"]["x"], attrs["region"]["y"], attrs["output_downsample"]
    # output pixel (0, 0) covers level-0 pixels [y, y + d): its centre is y + (d - 1) / 2
    np.testing.assert_allclose(
        stain.data_to_world((0, 0)), slide_layer.data_to_world((y + (d - 1) / 2, x + (d - 1) / 2))
    )
    np.testing.assert_allclose(stain.scale, np.asarray(slide_layer.scale) * d)


def test_napari_ome_zarr_opens_the_output(tmp_path, tiny_model_dir, make_napari_viewer):
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_model_dir), "--size", "256", "--out", str(out)]) == 0
    viewer = make_napari_viewer()
    layers = viewer.open(str(out / "IHC-Ki67.ome.zarr"), plugin="napari-ome-zarr")
    assert [layer.name.rsplit(": ", 1)[-1] for layer in layers] == ["R", "G", "B"]
    group = zarr.open_group(str(out / "IHC-Ki67.ome.zarr"), mode="r")
    rgb = np.asarray(group["0"])
    for c, layer in enumerate(layers):
        level0 = layer.data[0] if layer.multiscale else layer.data
        np.testing.assert_array_equal(np.asarray(level0), rgb[c])
        np.testing.assert_allclose(
            layer.scale, [group.attrs["napari_mupd"]["output_downsample"] * 0.499] * 2
        )
