"""Slide.level_arrays: napari's layer data, read through the slide's tile decoder."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile

from helpers import halve, pattern, pyramid
from napari_mupd import open_slide
from napari_mupd.io import LevelArray, Slide, _level_array

KEYS = [
    (slice(10, 74), slice(5, 300)),
    (slice(None), slice(None)),
    (...,),
    (7,),
    (-1, -1),
    (100, 200, 1),
    (slice(None, None, 7), slice(3, None, 5)),
    (slice(None, None, -3), slice(400, 10, -9), slice(None, None, -1)),
    (slice(500, 10), slice(0, 40)),  # empty
    (..., 2),
    (None, slice(3, 9), None, 4),
    (np.array([0, 5, 5, 299, -1]), slice(2, 30)),
    (np.array([3, 1, 2]), np.array([7, 8, 0])),
    (slice(0, 50), [4, 2, 9], 0),
    lambda shape: (np.arange(shape[0]) % 3 == 0, slice(None, 60)),
    lambda shape: (np.indices(shape[:2]).sum(0) % 5 == 1,),
    (slice(20, 30), slice(40, 50), [2, 0]),
    (np.int64(12), slice(np.int64(3), np.int64(90))),
]


@pytest.fixture(scope="module")
def ome_truth(generated) -> list[np.ndarray]:
    return pyramid(pattern(1200, 1000), 3)


@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
def test_indexing_matches_numpy(generated, ome_truth, key):
    with open_slide(generated["ome"]) as slide:
        arrays = slide.level_arrays
        assert [type(a) for a in arrays] == [LevelArray] * 3
        for array, truth in zip(arrays, ome_truth, strict=True):
            index = key(truth.shape) if callable(key) else key
            got = array[index]
            np.testing.assert_array_equal(got, truth[index])
            assert np.shape(got) == truth[index].shape and np.asarray(got).dtype == np.uint8


def test_array_attributes_and_whole_level(generated, ome_truth):
    with open_slide(generated["ome"]) as slide:
        level = slide.level_arrays[1]
        assert level.shape == (600, 500, 3) and level.ndim == 3 and level.dtype == np.uint8
        assert level.size == level.nbytes == 600 * 500 * 3 and len(level) == 600
        assert level.tile == (128, 128)
        np.testing.assert_array_equal(np.asarray(level), ome_truth[1])
        assert np.asarray(level, dtype=np.float32).dtype == np.float32
        assert "level 1" in repr(level)
        np.testing.assert_array_equal(
            level[37:137, 81:131], slide.read_region((162, 74), 1, (50, 100))
        )


def test_bad_indices_raise_index_error(generated):
    with open_slide(generated["ome"]) as slide:
        level = slide.level_arrays[0]
        bad = [(1200, 0), (0, -1001), (0, 0, 0, 0), (..., ...), 1.5, (np.array([1, 1300]),)]
        for key in [*bad, (np.ones(5, bool),), (np.array([0.5]),)]:
            with pytest.raises(IndexError):
                level[key]


def test_reads_go_through_the_slide_once_per_index(generated):
    with open_slide(generated["ome"]) as slide:
        calls = []
        read = slide._read_level
        slide._read_level = lambda *a: calls.append(a) or read(*a)  # type: ignore[method-assign]
        slide.level_arrays[0][100:612, 200:712]
        assert calls == [(0, 100, 200, 512, 512)]


def test_strided_reads_of_large_boxes_are_bounded(generated, ome_truth, monkeypatch):
    monkeypatch.setattr(_level_array, "MAX_BOX_BYTES", 60_000)
    with open_slide(generated["ome"]) as slide:
        boxes = []
        read = slide._read_level

        def recording(level, y, x, h, w):
            boxes.append(h * w * 3)
            return read(level, y, x, h, w)

        slide._read_level = recording  # type: ignore[method-assign]
        level, truth = slide.level_arrays[0], ome_truth[0]
        for key in [
            (slice(None, None, 7), slice(None, None, 5)),
            (slice(None, None, -3), slice(10, 500, 4)),
            (slice(5, None, 9), 3),
            (slice(1, 1100, 3), slice(None), 0),
        ]:
            boxes.clear()
            np.testing.assert_array_equal(level[key], truth[key])
            assert max(boxes) <= 60_000


def test_level_arrays_pickle_by_path(generated, ome_truth):
    with open_slide(generated["ome"]) as slide:
        clone = pickle.loads(pickle.dumps(slide.level_arrays[2]))
        assert clone.slide is not slide and clone.level == 2
        np.testing.assert_array_equal(clone[10:40, 20:90], ome_truth[2][10:40, 20:90])
    memory = Slide.from_arrays([pattern(50, 60)])
    np.testing.assert_array_equal(memory.level_arrays[0][5:9], pattern(50, 60)[5:9])
    with pytest.raises(TypeError, match="in-memory"):
        pickle.dumps(memory.level_arrays[0])


def test_closed_slide_refuses_reads(generated):
    from napari_mupd import SlideError

    slide = open_slide(generated["ome"])
    level = slide.level_arrays[0]
    slide.close()
    with pytest.raises(SlideError, match="closed"):
        level[:10, :10]


def test_derived_level_tiles_are_computed_once(tmp_path):
    image = pattern(4500, 3000)
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb")
    with open_slide(path) as slide:
        derived = slide.level_arrays[1]
        assert not slide.level_info[1].native
        np.testing.assert_array_equal(derived[...], halve(image))
        np.testing.assert_array_equal(derived[700:1300, 333:1100], halve(image)[700:1300, 333:1100])
        calls = []
        read = slide._backend.read
        slide._backend.read = lambda *a: calls.append(a) or read(*a)  # type: ignore[method-assign]
        np.testing.assert_array_equal(derived[100:900, 50:1450], halve(image)[100:900, 50:1450])
        assert calls == []  # level 1 comes from the cache now
        quarter = (image.reshape(1125, 4, 750, 4, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(slide.level_arrays[2][:], quarter)
        assert calls and all(c[0] == 0 for c in calls)  # from the native level
        calls.clear()
        np.testing.assert_array_equal(slide.level_arrays[2][::3, 7], quarter[::3, 7])
        assert calls == []


def _zarr_pyramid(path, image: np.ndarray, zarr_format: int, chunk: int = 128) -> list:
    """(c, y, x) NGFF levels of ``image`` (2x means); returns the levels as (y, x, c)."""
    import zarr

    levels = pyramid(image, 3)
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    for i, level in enumerate(levels):
        data = np.moveaxis(level, -1, 0)
        arr = root.create_array(str(i), shape=data.shape, dtype="uint8", chunks=(3, chunk, chunk))
        arr[:] = data
    ms = {
        "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
                 {"name": "x", "type": "space"}],
        "datasets": [{"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 2.0**i, 2.0**i]}]} for i in range(3)],
    }  # fmt: skip
    if zarr_format == 2:
        root.attrs["multiscales"] = [{"version": "0.4", **ms}]
    else:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    return levels


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_levels_read_through_cached_chunks(tmp_path, zarr_format):
    """zarr v2 chunks are decoded here, v3 through zarr; both once, then from the cache."""
    truth = _zarr_pyramid(tmp_path / "a.ome.zarr", pattern(700, 500), zarr_format)
    with open_slide(tmp_path / "a.ome.zarr") as slide:
        backend = slide._backend
        assert [d is not None for d in backend._direct] == [zarr_format == 2] * 3
        loads = []
        read_box = backend._read_box
        backend._read_box = lambda *a: loads.append(a) or read_box(*a)  # type: ignore
        for direct in filter(None, backend._direct):
            tile = direct.tile
            direct.tile = lambda *rc, tile=tile: loads.append(rc) or tile(*rc)  # type: ignore
        for level, expected in zip(slide.level_arrays, truth, strict=True):
            for key in [(slice(100, 300), slice(50, 420)), (...,), (slice(None, None, -3), 7)]:
                np.testing.assert_array_equal(level[key], expected[key])
        count = len(loads)
        assert count == (32 if zarr_format == 2 else 4)  # chunks (6x4 + 3x2 + 2x1), or boxes
        np.testing.assert_array_equal(
            slide.level_arrays[0][130:260, 3:400], truth[0][130:260, 3:400]
        )
        np.testing.assert_array_equal(
            slide.read_region((20, 40), 1, (100, 90)), truth[1][20:110, 10:110]
        )
        assert len(loads) == count  # every chunk came from the cache


@pytest.mark.parametrize(
    "axes, shape, chunks, dtype",
    [
        ("cyx", (3, 300, 260), (1, 64, 100), "<u2"),  # channels chunked apart, 16-bit
        ("yx", (300, 260), (128, 128), "|u1"),  # grey, no channel axis
        ("tczyx", (2, 4, 3, 300, 260), (1, 3, 1, 100, 64), "|u1"),  # RGBA, other axes
        ("cyx", (3, 300, 260), (3, 64, 64), ">u2"),  # big-endian
    ],
)
def test_direct_zarr_v2_chunks_equal_zarrs_reads(tmp_path, axes, shape, chunks, dtype):
    import zarr

    rng = np.random.default_rng(0)
    top = 255 if dtype.endswith("u1") else 65535
    data = rng.integers(0, top + 1, shape).astype(dtype)
    root = zarr.open_group(str(tmp_path / "b.zarr"), mode="w", zarr_format=2)
    arr = root.create_array("0", shape=shape, dtype=dtype, chunks=chunks, fill_value=7)
    arr[:] = data
    index = tuple(slice(0, 50) if a in "tz" else slice(0, 150) for a in axes)
    arr[index] = 7  # some chunks hold only the fill value and are never written
    (tmp_path / "b.zarr" / "0" / ".".join("0" * len(axes))).unlink(missing_ok=True)
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a} for a in axes],
                                  "datasets": [{"path": "0"}]}]  # fmt: skip
    with open_slide(tmp_path / "b.zarr") as slide:
        assert slide._backend._direct[0] is not None
        expected = slide._backend._read_box(0, 0, 0, 300, 260)  # through zarr
        np.testing.assert_array_equal(slide.level_arrays[0][...], expected)
        np.testing.assert_array_equal(slide.read_region((33, 101), 0, (150, 120)),
                                      expected[101:221, 33:183])  # fmt: skip
