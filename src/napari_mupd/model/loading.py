"""The one way entry points load checkpoints: a device that exists, loaded once per process.

The CLI commands, the dask workers of whole-slide jobs, the napari widgets and the
trainer's fine-tuning all load through :func:`load_pipeline` (or :func:`using_pipeline`),
so that a missing checkpoint or an absent GPU is the same clear
:class:`~napari_mupd.errors.MuPDError` everywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_mupd.errors import DeviceError
from napari_mupd.model.pipeline import MuPDPipeline
from napari_mupd.resources import resolve_model

_PIPELINES: dict[tuple[str, float, str], MuPDPipeline] = {}
_LOCK = threading.Lock()
_IN_USE: dict[int, threading.Lock] = {}


def available_devices() -> list[str]:
    """'auto', 'cpu' and the accelerators torch can use here ('cuda', 'mps')."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str | None) -> str | None:
    """``device`` as the pipeline takes it (None for auto); a clear error if it is absent."""
    if device in (None, "", "auto"):
        return None
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device {device!r}; choose auto, cpu, cuda or mps")
    if kind != "cpu" and kind not in available_devices():
        raise DeviceError(f"no {kind.upper()} device is available here; choose cpu or auto")
    return device


def load_pipeline(
    model: str | Path | None = None, device: str | None = None, *, cache: bool = True
) -> MuPDPipeline:
    """The checkpoint at ``model`` (default: the bundled one) on ``device``.

    Cached per process (reloaded when its ``config.json`` changes on disk) unless
    ``cache`` is False, which gives a private copy to change (e.g. to fine-tune).
    Raises :class:`~napari_mupd.errors.CheckpointError` when there is no checkpoint and
    :class:`~napari_mupd.errors.DeviceError` when the device is not here.
    """
    path = resolve_model(str(model) if model else None).resolve()
    dev = check_device(device)
    if not cache:
        return MuPDPipeline.from_pretrained(path, device=dev)
    key = (str(path), (path / "config.json").stat().st_mtime, dev or "auto")
    with _LOCK:
        if key not in _PIPELINES:
            _PIPELINES[key] = MuPDPipeline.from_pretrained(path, device=dev)
        return _PIPELINES[key]


@contextmanager
def using_pipeline(
    model: str | Path | None = None, device: str | None = None
) -> Iterator[MuPDPipeline]:
    """:func:`load_pipeline`, held by one caller at a time.

    Jobs that share the cached pipeline take turns: its ``interrupt`` flag (how a job
    is cancelled mid-sampling) would otherwise stop every job running on it.
    """
    pipe = load_pipeline(model, device)
    with _LOCK:
        lock = _IN_USE.setdefault(id(pipe), threading.Lock())
    with lock:
        yield pipe
