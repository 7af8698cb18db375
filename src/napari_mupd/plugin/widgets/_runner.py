"""The widgets' one runner: model work off the GUI thread with a progress bar and Cancel,
and the one place where errors become notifications.

A :class:`~napari_mupd.errors.MuPDError` (whoever raised it: the inputs checked on the GUI
thread, or the job in its thread) is shown as a notification with its message and in the
dock's status line; :class:`~napari_mupd.errors.Cancelled` as a short note; anything else
is a bug, logged with its traceback and shown with its type. The viewer stays alive.

Long jobs ask first: a job reports ``(0, total)`` once it knows its work (e.g. the tissue
tiles of a region); when the time per unit measured on this job (or remembered from the
last run under the same key) puts the rest above :data:`ASK_AFTER_S`, the job waits at its
next ``cancel()`` poll while the dock asks "go on?" with the count and the estimate.

A dock that shows its result as several layers hands it over in turns: its ``done`` may be
a generator that yields after each layer, and the runner runs one step per turn of the
event loop (napari builds each layer on the GUI thread in one stretch of ~0.1 s on two
cores: three layers in one turn stall the viewer three times as long). The job counts as
running until the last step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from magicgui.widgets import Label, PushButton
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QMessageBox

from napari_mupd.errors import Cancelled, MuPDError

log = logging.getLogger(__name__)

Report = Callable[[int, int], None]
Cancel = Callable[[], bool]
#: What a job's result goes to on the GUI thread: a function, or a generator function
#: whose steps run one per turn of the event loop.
Done = Callable[[Any], Iterator[None] | None]
#: No result yet (a job may return None).
_NOTHING = object()
#: Jobs estimated to take longer than this (seconds) ask before going on.
ASK_AFTER_S = 30.0
#: Progress reports closer together than this (seconds) are not drawn (but the first,
#: the last and the tile count are): the GUI thread draws, it does not keep count.
DRAW_EVERY_S = 0.1
#: Milliseconds between the steps of a hand-over: a zero timer would run before the paint
#: and input events that the last step posted (napari draws a new layer in a paint event).
HAND_OVER_MS = 20


_WARMING: list[threading.Thread] = []


def warm_up_model_libraries() -> None:
    """Import the model's libraries (diffusers and what it pulls in: ~3 s on 2 cores) and
    build and hash the bundled checkpoint (cached by `model.loading`) in a background thread as
    soon as a dock opens, once per session, so that no job pays for them later: imports
    and building torch modules hold the interpreter in stretches of 0.2-0.3 s that would
    stall the event loop in the middle of a job."""
    if _WARMING:
        return

    def warm() -> None:
        from diffusers.models.autoencoders import autoencoder_kl  # noqa: F401  (the VAE)

        from napari_mupd.model.loading import load_pipeline

        with contextlib.suppress(MuPDError):  # a job will say what is wrong
            load_pipeline(None, "auto").model_hash  # noqa: B018  (hashed once, then cached)

    thread = threading.Thread(target=warm, name="mupd-warm-up", daemon=True)
    _WARMING.append(thread)
    thread.start()


def leave_a_core() -> None:
    """Torch computes on one core fewer than the machine has while a dock runs a job, so
    that napari's event loop always has a core to answer the user (on 2 cores: 1 thread)."""
    torch = sys.modules.get("torch")
    cores = os.cpu_count() or 1
    if torch is not None and cores > 1 and torch.get_num_threads() > cores - 1:
        torch.set_num_threads(cores - 1)


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
        self._go = threading.Event()  # cleared while the user is asked whether to go on
        self._bar: progress | None = None
        self._description = name
        self._key = name
        self._unit = "tile"
        self._started = time.monotonic()
        self._counted: float | None = None  # when the job reported (0, total)
        self._asked = False
        self._ended = False
        self._done: Done = lambda result: None
        self._result: Any = _NOTHING
        self.rates: dict[str, float] = {}  # seconds per unit of work, by key, last run
        #: ``ask(question) -> bool``: the confirmation dialog (replaceable in tests).
        self.ask: Callable[[str], bool] = _ask
        self.progressed.connect(self._draw)

    @property
    def running(self) -> bool:
        """True while a job runs or its result is being handed over."""
        return self.worker is not None

    def start(
        self,
        description: str,
        job: Callable[[Report, Cancel], Any],
        done: Done,
        key: str | None = None,
        unit: str = "tile",
    ) -> FunctionWorker:
        """Start ``job`` in a worker thread; ``done(result)`` runs on the GUI thread (a
        generator: one step per turn of the event loop).

        ``description`` labels the progress bar and the job's notifications; ``key``
        (default: the description) names the work whose measured rate is remembered;
        ``unit`` is what the job counts in its reports ("tile", "step").
        """
        if self.worker is not None:
            raise MuPDError("a task is already running; cancel it or wait")
        self._event = threading.Event()
        self._go = threading.Event()
        self._go.set()
        self._description = description
        self._key = key or description
        self._unit = unit
        self._bar = progress(total=0, desc=description)
        self._started = time.monotonic()
        self._counted, self._asked, self._ended = None, False, False
        self._done, self._result = done, _NOTHING
        leave_a_core()

        def keep(report: Report, cancel: Cancel) -> Any:
            self._result = job(report, cancel)  # handed to ``done`` when the worker ends
            return self._result

        worker = create_worker(
            keep,
            self._throttled(),
            self._poll,
            _start_thread=False,
            _connect={"errored": self._failed, "finished": self._finished},
        )
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop (it does so within one tile)."""
        self._event.set()
        self._go.set()

    def _throttled(self) -> Report:
        """``report`` for the job's thread: at most one signal per `DRAW_EVERY_S`, except
        the tile count ``(0, total)`` and the last report, which always reach the GUI."""
        last = [0.0]

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done in (0, total) or now - last[0] >= DRAW_EVERY_S:
                last[0] = now
                self.progressed.emit(done, total)

        return report

    def _poll(self) -> bool:
        """The job's ``cancel()``: waits while the user is asked, then says whether to stop."""
        self._go.wait()
        return self._event.is_set()

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
        if self._bar is None or self._ended:
            return
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)
        now = time.monotonic()
        if done == 0 and self._counted is None:
            self._counted = now
        rate = self._rate(done, now)
        left = ""
        if rate is not None and done < total:
            left = f", about {_duration(rate * (total - done))} left"
        self._say(f"{self._description}: {done}/{total}{left}")
        if rate is not None and not self._asked and rate * (total - done) > ASK_AFTER_S:
            self._asked = True
            self._confirm(done, total, rate)

    def _rate(self, done: int, now: float) -> float | None:
        """Seconds per unit: measured on this job (from its ``(0, total)`` report when it
        made one, else from the start), else the last run's under the same key."""
        if done > 0:
            since = self._counted if self._counted is not None else self._started
            if now - since > 0:
                self.rates[self._key] = (now - since) / done
                return self.rates[self._key]
        return self.rates.get(self._key)

    def _confirm(self, done: int, total: int, rate: float) -> None:
        """Hold the job at its next poll and ask whether to go on; cancel on "no"."""
        self._go.clear()
        left = _duration(rate * (total - done))
        question = (
            f"{self._description}: {total - done} of {total} {self._unit}s to go, about "
            f"{left} at {rate:.2g} s per {self._unit} on this machine. Go on?"
        )
        go = False
        try:
            go = self.ask(question)
        finally:
            if not go:
                self._event.set()
            self._go.set()

    def _failed(self, exc: BaseException) -> None:
        self._ended = True
        self.fail(exc, self._description)

    def _finished(self) -> None:
        """The worker's last signal: ``done(result)`` runs here when the job returned, so
        that it always follows the job's progress reports (Qt may deliver the worker's
        ``returned`` after its ``finished``), and nothing drawn later writes over it."""
        self._ended = True
        result, self._result = self._result, _NOTHING
        if result is not _NOTHING:
            try:
                steps = self._done(result)
            except Exception as exc:  # a bug in a dock: shown, and the dock stays usable
                self.fail(exc, self._description)
            else:
                if steps is not None:
                    self._hand_over(steps)
                    return
        self._close()

    def _hand_over(self, steps: Iterator[None]) -> None:
        """Run the next step of a generator ``done``; the rest on the next turn."""
        try:
            next(steps)
        except StopIteration:
            self._close()
        except Exception as exc:
            self.fail(exc, self._description)
            self._close()
        else:
            QTimer.singleShot(HAND_OVER_MS, lambda: self._hand_over(steps))

    def _close(self) -> None:
        """The job and its hand-over are over: the bar goes, Run comes back."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False


def _ask(question: str) -> bool:
    """A Yes/No dialog over the viewer."""
    answer = QMessageBox.question(None, "napari-mupd", question)
    return bool(answer == QMessageBox.StandardButton.Yes)


def _duration(seconds: float) -> str:
    """``seconds`` for people: "40 s", "3 min", "1 h 5 min"."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
