"""Model work off the GUI thread: a napari progress bar, Cancel, and notifications."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from magicgui.widgets import PushButton
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from napari_mupd.engine.models import Cancelled
from napari_mupd.errors import MuPDError

log = logging.getLogger(__name__)

Report = Callable[[int, int], None]
Cancel = Callable[[], bool]


class TaskRunner(QObject):
    """Runs ``job(report, cancel)`` in a thread; the GUI thread only draws progress.

    ``run`` is disabled and ``cancel`` enabled while a job runs. The job calls
    ``report(done, total)`` from its thread (queued to the GUI thread as a signal) and
    polls ``cancel()``; raising :class:`~napari_mupd.engine.models.Cancelled` ends it
    quietly. Other errors become notifications: the viewer stays alive.
    """

    progressed = Signal(int, int)

    def __init__(self, run: PushButton, cancel: PushButton) -> None:
        super().__init__()
        self.run_button, self.cancel_button = run, cancel
        self.cancel_button.enabled = False
        self.cancel_button.changed.connect(self.cancel)
        self.worker: FunctionWorker | None = None
        self._event = threading.Event()
        self._bar: progress | None = None
        self.progressed.connect(self._draw)

    @property
    def running(self) -> bool:
        """True while a job runs."""
        return self.worker is not None

    def start(
        self, description: str, job: Callable[[Report, Cancel], Any], done: Callable[[Any], None]
    ) -> FunctionWorker:
        """Start ``job`` in a worker thread; ``done(result)`` runs on the GUI thread."""
        if self.worker is not None:
            raise MuPDError("a task is already running; cancel it or wait")
        self._event = threading.Event()
        self._description = description
        self._bar = progress(total=0, desc=description)
        worker = create_worker(
            job,
            self.progressed.emit,
            self._event.is_set,
            _start_thread=False,
            _connect={"returned": done, "errored": self._failed, "finished": self._finished},
        )
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop (it does so within one tile)."""
        self._event.set()

    def _draw(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            show_info(f"{self._description}: cancelled")
        elif isinstance(exc, (MuPDError, ValueError, FileNotFoundError)):
            show_error(f"{self._description}: {exc}")
        else:
            log.error("%s failed", self._description, exc_info=exc)
            show_error(f"{self._description} failed: {type(exc).__name__}: {exc}")

    def _finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
