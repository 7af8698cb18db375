"""Cached checkpoints, devices, and jobs taking turns on one pipeline."""

from __future__ import annotations

import threading

import pytest

from napari_mupd.errors import MuPDError
from napari_mupd.model.loading import available_devices, check_device, load_pipeline, using_pipeline


def test_cached_per_folder_and_device(tiny_model_dir):
    assert load_pipeline(tiny_model_dir, "cpu") is load_pipeline(str(tiny_model_dir), "cpu")
    assert load_pipeline(tiny_model_dir, "cpu") is not load_pipeline(tiny_model_dir, "auto")


def test_devices_and_clear_errors(tmp_path):
    assert available_devices()[:2] == ["auto", "cpu"]
    assert check_device("auto") is None and check_device("cpu") == "cpu"
    with pytest.raises(MuPDError, match="unknown device"):
        check_device("tpu")
    if "cuda" not in available_devices():
        with pytest.raises(MuPDError, match="no CUDA device"):
            check_device("cuda")
    with pytest.raises(MuPDError, match="no MuPD checkpoint"):
        load_pipeline(tmp_path)


def test_jobs_on_one_pipeline_take_turns(tiny_model_dir):
    order: list[str] = []
    inside = threading.Event()

    def second() -> None:
        inside.wait()
        with using_pipeline(tiny_model_dir, "cpu"):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with using_pipeline(tiny_model_dir, "cpu"):
        inside.set()
        thread.join(timeout=0.3)  # it must still be waiting for us
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]
