"""GUI benchmark: how long napari's event loop stalls while each dock's job runs.

    xvfb-run -a -s "-screen 0 1680x1050x24" python benchmarks/bench_gui.py

A real viewer (under Xvfb here), the plugin's docks driven as a user would with the
bundled model on the bundled sample slide. After the peer, the first row is a one-off
cost of opening the first dock: the model's libraries imported in a background thread
(so that no job imports them).
A 5 ms ``QTimer`` ticks while each job runs; a gap between ticks is time the event loop
could not answer the user (panning, a click on Cancel). The table gives, per job: its
wall time, the ticks counted, the longest gap and the 99th percentile. Goal: no gap over
100 ms while a job runs. The peers in the same run are the bare event loop (the viewer
open, nothing running), which shows what Xvfb and the machine cost by themselves, and
napari adding one RGB layer of the size Generate adds with nothing else running, the floor
of any dock that adds a layer.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import numpy as np
import torch
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_mupd import __version__
from napari_mupd.plugin.widgets._runner import _WARMING
from napari_mupd.resources import sample_slide_path

DATA = Path(__file__).resolve().parents[1] / "data"


class GapMeter:
    """Ticks of a 5 ms timer while something runs; the gaps between them."""

    def __init__(self, interval_ms: int = 5) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def __enter__(self) -> GapMeter:
        self.ticks.clear()
        self.timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.timer.stop()

    def row(self, name: str, seconds: float) -> dict[str, Any]:
        gaps = np.diff(self.ticks) * 1000 if len(self.ticks) > 1 else np.array([np.nan])
        return {
            "job": name,
            "seconds": seconds,
            "ticks": len(self.ticks),
            "longest gap (ms)": float(np.max(gaps)),
            "p99 gap (ms)": float(np.percentile(gaps, 99)),
            "gaps > 100 ms": int(np.sum(gaps > 100)),
        }


def run_until(done: Callable[[], bool], timeout: float = 900) -> float:
    """Process events until ``done()``; the seconds it took."""
    start = time.perf_counter()
    while not done():
        QApplication.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the job did not finish")
    return time.perf_counter() - start


def dock(viewer: napari.Viewer, name: str) -> Any:
    _, widget = viewer.window.add_plugin_dock_widget("napari-mupd", name)
    if hasattr(widget, "runner"):
        widget.runner.ask = lambda question: True  # measured jobs do not stop to ask
    return widget


def measure(meter: GapMeter, name: str, widget: Any, start: Callable[[], None]) -> dict:
    """Run one dock job under the meter."""
    with meter:
        begun = time.perf_counter()
        start()
        run_until(lambda: not widget.runner.running)
        seconds = time.perf_counter() - begun
        run_until(lambda: time.perf_counter() - begun > seconds + 0.3)  # layers drawn
    return meter.row(name, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=768, help="stained region side (px)")
    args = parser.parse_args()
    viewer = napari.Viewer()
    viewer.window.resize(1600, 1000)
    (slide,) = viewer.open(str(sample_slide_path()), plugin="napari-mupd")
    meter = GapMeter()
    rows = []

    with meter:  # the peer: the same loop with nothing to do
        run_until(lambda: len(meter.ticks) > 400)
    rows.append(meter.row("idle viewer (peer)", (meter.ticks[-1] - meter.ticks[0])))
    rows.append(measure_add_layer(meter, viewer))

    stain = dock(viewer, "Virtual stain")
    with meter:  # then the model's libraries are imported in a background thread
        begun = time.perf_counter()
        run_until(lambda: not any(thread.is_alive() for thread in _WARMING))
        rows.append(
            meter.row("model libraries imported in the background", time.perf_counter() - begun)
        )
    x, y, s = 700, 900, args.side
    corners = np.array([[y - 0.5, x - 0.5], [y + s - 0.5, x + s - 0.5]])
    viewer.add_shapes([corners], shape_type="rectangle", scale=slide.scale, units=slide.units)
    stain.model.target.value = "IHC:Ki67"
    rows.append(measure(meter, f"Virtual stain, {s} px IHC", stain, stain.run.clicked.emit))
    stain.samples.value = 2  # the mean of two samples and its uncertainty: two layers
    rows.append(
        measure(meter, f"Virtual stain, {s} px IHC, 2 samples + uncertainty layer", stain,
                stain.run.clicked.emit)
    )  # fmt: skip
    stain.samples.value = 1

    generate = dock(viewer, "Generate tissue")
    generate.prompt.value = "H&E, colon, adenocarcinoma"
    generate.n_tiles.value = 8
    rows.append(measure(meter, "Generate tissue, 8 tiles", generate, generate.run.clicked.emit))

    export = dock(viewer, "Export tiles")
    export.region.source.value = slide
    export.region.mode.value = "whole image"
    export.n_tiles.value = 8
    with tempfile.TemporaryDirectory() as folder:
        export.out.value = folder
        rows.append(measure(meter, "Export tiles, 8 x 3 targets", export, export.run.clicked.emit))

    compare = dock(viewer, "Compare stains")
    compare.virtual.value = stain.added[0]
    compare.real.value = slide
    rows.append(measure_compare(meter, compare))
    viewer.close()

    print(
        f"\nnapari-mupd {__version__}, napari {napari.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}\n"
    )
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if c == "job" else "--:" for c in columns) + "|")
    for row in rows:
        cells = [row[c] if isinstance(row[c], str | int) else f"{row[c]:.1f}" for c in columns]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def measure_add_layer(meter: GapMeter, viewer: napari.Viewer) -> dict[str, Any]:
    """The second peer: napari adding one RGB layer of the size Generate adds (a grid of
    8 tiles of 128 px) with nothing else running, the floor of any dock that adds a layer
    (napari builds the layer's controls and visual on the GUI thread)."""
    tiles = np.random.default_rng(0).integers(0, 256, (256, 512, 3), dtype=np.uint8)
    with meter:
        begun = time.perf_counter()
        run_until(lambda: time.perf_counter() - begun > 0.2)
        layer = viewer.add_image(tiles, rgb=True, name="peer", translate=(0, 3000))
        run_until(lambda: time.perf_counter() - begun > 0.7)
    viewer.layers.remove(layer)
    return meter.row("napari adds one 256 x 512 RGB layer (peer)", time.perf_counter() - begun)


def measure_compare(meter: GapMeter, compare: Any) -> dict[str, Any]:
    """The Compare dock's metrics (its own runner)."""
    with meter:
        begun = time.perf_counter()
        compare.measure.native.click()
        run_until(lambda: not compare.measuring.running)
        seconds = time.perf_counter() - begun
        run_until(lambda: time.perf_counter() - begun > seconds + 0.3)
    return meter.row("Compare stains, metrics", seconds)


if __name__ == "__main__":
    main()
