"""Pickling for dask workers, thread safety and the tile cache."""

from __future__ import annotations

import pickle

import dask
import numpy as np

from helpers import CMU1
from napari_mupd import open_slide
from napari_mupd.io._cache import TileCache


def test_slide_pickles_by_path():
    with open_slide(CMU1) as slide:
        clone = pickle.loads(pickle.dumps(slide))
        try:
            assert clone is not slide and clone.path == slide.path
            np.testing.assert_array_equal(
                clone.read_region((100, 200), 0, (64, 64)),
                slide.read_region((100, 200), 0, (64, 64)),
            )
        finally:
            clone.close()


def test_levels_compute_in_worker_processes():
    """The process scheduler pickles every task: workers must reopen the file by path."""
    with open_slide(CMU1) as slide:
        window = slide.levels[0][:600, :500]
        (in_processes,) = dask.compute(window, scheduler="processes", num_workers=2)
        np.testing.assert_array_equal(in_processes, slide.read_region((0, 0), 0, (500, 600)))


def test_threaded_reads_agree():
    with open_slide(CMU1) as slide:
        whole = slide.levels[0].compute(scheduler="threads")
        np.testing.assert_array_equal(
            whole[::7, ::5], slide.read_region((0, 0), 0, slide.dimensions)[::7, ::5]
        )


def test_tile_cache_is_bounded_and_lru():
    cache = TileCache(max_bytes=3 * 100)
    for key in "abc":
        cache.put(key, np.zeros(100, np.uint8))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", np.zeros(100, np.uint8))
    assert cache.get("b") is None and cache.get("a") is not None
    assert cache.nbytes == 300
    cache.put("huge", np.zeros(1000, np.uint8))
    assert cache.get("huge") is None and cache.nbytes == 300
