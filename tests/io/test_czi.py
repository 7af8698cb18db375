"""Zeiss CZI through pylibCZIrw (the ``czi`` extra): files written by pylibCZIrw itself."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

from multichannel_files import planes
from napari_mupd import SlideError
from napari_mupd.io import open_slide

pyczi = pytest.importorskip("pylibCZIrw.czi")


def write_czi(path: Path, data: np.ndarray, names: list[str], mpp: float = 0.5) -> Path:
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for c, plane in enumerate(data):
            czi.write(data=plane, plane={"C": c}, location=(0, 0))
        czi.write_metadata(
            document_name=path.stem,
            channel_names=dict(enumerate(names)),
            scale_x=mpp * 1e-6,
            scale_y=mpp * 1e-6,
        )
    return path


def test_fluorescence_czi_is_multichannel(tmp_path):
    data = planes(3, (300, 1500))
    path = write_czi(tmp_path / "panel.czi", data, ["DAPI", "CD8", "Ki67"])
    with open_slide(path) as slide:
        assert slide.vendor == "zeiss" and slide.multichannel
        assert slide.channel_names == ["DAPI", "CD8", "Ki67"]
        assert slide.channels[0].dtype == np.uint16
        assert slide.mpp == pytest.approx((0.5, 0.5))
        assert slide.level_info[1].shape == (150, 750)
        np.testing.assert_array_equal(
            slide.read_region((10, 20), 0, (300, 200), ["Ki67", "DAPI"]),
            data[[2, 0], 20:220, 10:310],
        )
        low = slide.read_region((0, 0), 1, (750, 150), ["CD8"])[0]
        assert low.shape == (150, 750)
        assert np.abs(low.astype(float) - data[1, ::2, ::2]).mean() < 60


def test_brightfield_czi_is_rgb(tmp_path):
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = tmp_path / "he.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        czi.write(data=rgb[..., ::-1].copy(), plane={"C": 0}, location=(0, 0))  # CZI is BGR
    with open_slide(path) as slide:
        assert not slide.multichannel
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (96, 64)), rgb)


def test_czi_without_the_extra_names_it(tmp_path, monkeypatch):
    path = write_czi(tmp_path / "panel.czi", planes(2, (32, 32)), ["A1", "A2"])
    real_import = builtins.__import__

    def no_pyczi(name, *args, **kwargs):
        if name.startswith("pylibCZIrw"):
            raise ImportError("no pylibCZIrw")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyczi)
    with pytest.raises(SlideError, match=r"panel\.czi.*napari-mupd\[czi\]"):
        open_slide(path)
