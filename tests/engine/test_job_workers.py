"""How whole-slide jobs share a host's cores and GPUs among dask workers (no cluster)."""

from __future__ import annotations

import pytest
import torch

from napari_mupd.engine import jobs


@pytest.fixture(autouse=True)
def fresh_worker_state():
    saved = dict(jobs._WORKER)
    jobs._WORKER.clear()
    yield
    jobs._WORKER.clear()
    jobs._WORKER.update(saved)


def fake_gpus(monkeypatch, n: int) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)


def test_one_worker_per_gpu_by_default(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert jobs.default_workers(None) == 1
    fake_gpus(monkeypatch, 4)
    assert jobs.default_workers(None) == jobs.default_workers("cuda") == 4
    assert jobs.default_workers("cpu") == 1


@pytest.mark.parametrize(("rank", "gpu"), [(0, "cuda:0"), (1, "cuda:1"), (2, "cuda:0")])
def test_each_worker_takes_its_own_gpu(monkeypatch, rank, gpu):
    fake_gpus(monkeypatch, 2)
    jobs._prepare_worker(None, workers_on_host=3, rank=rank, device=None)
    assert jobs._WORKER["device"] == gpu
    assert jobs._WORKER["threads"] == max(1, (jobs.os.cpu_count() or 1) // 3)


def test_cpu_device_or_no_gpu_means_no_gpu(monkeypatch):
    fake_gpus(monkeypatch, 2)
    jobs._prepare_worker(1, workers_on_host=1, rank=0, device="cpu")
    assert "device" not in jobs._WORKER and jobs._WORKER["threads"] == 1
    fake_gpus(monkeypatch, 0)
    jobs._prepare_worker(None, workers_on_host=2, rank=1, device=None)
    assert "device" not in jobs._WORKER
