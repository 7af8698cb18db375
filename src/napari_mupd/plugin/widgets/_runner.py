"""The widgets' one runner: model work off the GUI thread with a progress bar and Cancel,
and the one place where errors become notifications.

A :class:`~napari_mupd.errors.MuPDError` (whoever raised it: the inputs checked on the GUI
thread, or the job in its thread) is shown as a notification with its message and in the
dock's status line; :class:`~napari_mupd.errors.Cancelled` as a short note; anything else
is a bug, logged with its traceback and shown with its type. The viewer stays alive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from magicgui.widgets import Label, PushButton
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from napari_mupd.errors import Cancelled, MuPDError

log = logging.getLogger(__name__)

Report = Callable[[int, int], None]
Cancel = Callable[[], bool]


class TaskRunner(QObject):
    """Runs ``job(report, cancel)`` in a thread; the GUI thread only draws progress.

    ``run`` is disabled and ``cancel`` enabled while a job runs. The job calls
    ``report(done, total)`` from its thread (queued to the GUI thread as a signal) and
    polls ``cancel()``; raising :class:`~napari_mupd.errors.Cancelled` ends it quietly.
    ``name`` (e.g. "Virtual stain") prefixes notifications; ``status`` is the dock's
    status line, where failures are written too.
    """

    progressed = Signal(int, int)

    def __init__(
        self, name: str, run: PushButton, cancel: PushButton, status: Label | None = None
    ) -> None:
        super().__init__()
        self.name = name
        self.run_button, self.cancel_button, self.status = run, cancel, status
        self.cancel_button.enabled = False
        self.cancel_button.changed.connect(self.cancel)
        self.worker: FunctionWorker | None = None
        self._event = threading.Event()
        self._bar: progress | None = None
        self._description = name
        self._started = time.monotonic()
        self.progressed.connect(self._draw)

    @property
    def running(self) -> bool:
        """True while a job runs."""
        return self.worker is not None

    def start(
        self, description: str, job: Callable[[Report, Cancel], Any], done: Callable[[Any], None]
    ) -> FunctionWorker:
        """Start ``job`` in a worker thread; ``done(result)`` runs on the GUI thread.

        ``description`` labels the progress bar and the job's notifications.
        """
        if self.worker is not None:
            raise MuPDError("a task is already running; cancel it or wait")
        self._event = threading.Event()
        self._description = description
        self._bar = progress(total=0, desc=description)
        self._started = time.monotonic()
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

    def fail(self, exc: BaseException, description: str | None = None) -> None:
        """Tell the user that ``exc`` stopped the work (see the module's docstring)."""
        what = description or self.name
        if isinstance(exc, Cancelled):
            show_info(f"{what}: cancelled")
            self._say("cancelled")
        elif isinstance(exc, MuPDError):
            show_error(f"{what}: {exc}")
            self._say(f"<font color='red'>{exc}</font>")
        else:
            log.error("%s failed", what, exc_info=exc)
            show_error(f"{what} failed: {type(exc).__name__}: {exc}")
            self._say(f"<font color='red'>failed: {type(exc).__name__}: {exc}</font>")

    def _say(self, text: str) -> None:
        if self.status is not None:
            self.status.value = text

    def _draw(self, done: int, total: int) -> None:
        """Move the activity bar (``update`` is what napari's activity dock listens to) and
        write ``done/total`` and the time left, from the rate so far, in the status line."""
        if self._bar is None:
            return
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)
        elapsed = time.monotonic() - self._started
        left = ""
        if 0 < done < total and elapsed > 1:
            left = f", about {_duration(elapsed / done * (total - done))} left"
        self._say(f"{self._description}: {done}/{total}{left}")

    def _failed(self, exc: BaseException) -> None:
        self.fail(exc, self._description)

    def _finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False


def _duration(seconds: float) -> str:
    """``seconds`` for people: "40 s", "3 min", "1 h 5 min"."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
