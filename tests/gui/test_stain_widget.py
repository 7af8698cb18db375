"""The "Virtual stain" dock widget in a real viewer, with a tiny model on the sample slide."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from helpers import CMU1
from napari_mupd.errors import RegionError
from napari_mupd.plugin.widgets import stain
from napari_mupd.plugin.widgets._controls import FIELD_OF_VIEW
from napari_mupd.plugin.widgets.stain import VirtualStainWidget

pytestmark = pytest.mark.gui

#: Seconds the event-loop timer of the cancel test runs at least.
MIN_TIMED = 1.0


@pytest.fixture
def setup(make_napari_viewer, tiny_model_dir):
    viewer = make_napari_viewer()
    (slide_layer,) = viewer.open(str(CMU1), plugin="napari-mupd")
    widget = VirtualStainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Virtual stain")
    widget.model.use_folder(str(tiny_model_dir))
    return viewer, slide_layer, widget


def add_rectangle(viewer, slide_layer, x, y, w, h):
    """A rectangle over level-0 pixels [x, x+w) x [y, y+h) (corners at k - 0.5)."""
    corners = np.array([[y - 0.5, x - 0.5], [y + h - 0.5, x + w - 0.5]])
    return viewer.add_shapes(
        [corners], shape_type="rectangle", scale=slide_layer.scale, units=slide_layer.units
    )


def run_and_wait(qtbot, widget, timeout=60_000):
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=timeout)


def test_targets_come_from_the_model(setup):
    _, _, widget = setup
    assert list(widget.model.target.choices) == ["IHC:Ki67", "mIF:CD3,CD8"]
    widget.model.source.value = widget.model.source.choices[0]  # the bundled checkpoint
    assert "IHC:Ki67" in widget.model.target.choices
    assert "H&E" not in widget.model.target.choices
    assert widget.model.target.value == "IHC:Ki67"  # the model's default, not the first
    assert "read at 3.5 µm/px" in widget.model.about.value


def test_ihc_layer_lies_over_its_region(setup, qtbot):
    viewer, slide_layer, widget = setup
    x, y, w, h = 1001, 503, 256, 192
    add_rectangle(viewer, slide_layer, x, y, w, h)
    widget.model.target.value = "IHC:Ki67"
    run_and_wait(qtbot, widget)
    (layer,) = widget.added
    assert layer.name == "CMU-1-Small-Region [virtual Ki67, seed 0, 1001,503]"
    assert layer.rgb and layer.data.dtype == np.uint8 and layer.data.shape[2] == 4  # RGBA
    meta = layer.metadata
    assert meta["region"]["x"] == x and meta["region"]["width"] == w
    assert meta["target"] == "IHC:Ki67" and len(meta["model_hash"]) == 64
    assert -1 <= meta["structure_r"] <= 1  # the stain's nuclei against the H&E's
    d = meta["output_downsample"]  # IHC is drawn at the slide's own pixel size
    assert d == pytest.approx(1.0, abs=0.01)
    k, grid = meta["detail"], meta["downsample"]  # the model's grid, k times finer
    assert layer.data.shape[:2] == (k * round(h / grid), k * round(w / grid))
    # level-0 pixel (r, c) falls in output pixel ((r - y) // d, (c - x) // d)
    for r, c in [(y, x), (y + h - 1, x + w - 1), (y + 77, x + 130)]:
        world = slide_layer.data_to_world((r, c))
        out = np.asarray(layer.world_to_data(world))
        np.testing.assert_allclose(out, [(r + 0.5 - y) / d - 0.5, (c + 0.5 - x) / d - 0.5])


def test_mif_gives_one_additive_layer_per_marker_and_uncertainty(setup, qtbot):
    viewer, slide_layer, widget = setup
    add_rectangle(viewer, slide_layer, 1000, 1000, 160, 160)  # tissue, not glass
    widget.model.target.value = "mIF:CD3,CD8"
    widget.samples.value = 2
    run_and_wait(qtbot, widget)
    names = [layer.name for layer in widget.added]
    assert names == [
        "CMU-1-Small-Region [virtual CD3, seed 0, 1000,1000]",
        "CMU-1-Small-Region [virtual CD8, seed 0, 1000,1000]",
        "CMU-1-Small-Region [virtual mIF:CD3,CD8, seed 0, 1000,1000] uncertainty",
    ]
    cd3, cd8, std = widget.added
    assert not std.visible and viewer.layers.selection.active is cd3  # the stain is active
    assert cd3.colorbar.visible and std.colorbar.visible
    assert cd3.blending == cd8.blending == "additive"
    assert cd3.colormap.name != cd8.colormap.name
    assert cd3.metadata["marker"] == "CD3" and cd3.metadata["samples"] == 2
    assert std.data.ndim == 2 and std.data.max() > 0  # two seeds differ
    np.testing.assert_allclose(std.scale, cd3.scale)


def test_each_result_layer_is_added_on_its_own_turn_of_the_event_loop(setup, qtbot):
    """napari builds a layer on the GUI thread in one stretch: three in one turn would
    stall the viewer three times as long. The job counts as running until the last."""
    viewer, slide_layer, widget = setup
    add_rectangle(viewer, slide_layer, 1000, 1000, 160, 160)
    widget.model.target.value = "mIF:CD3,CD8"
    widget.samples.value = 2
    events: list[str] = []

    def inserted(event) -> None:
        events.append(f"layer (running: {widget.runner.running})")
        QTimer.singleShot(0, lambda: events.append("turn"))

    viewer.layers.events.inserted.connect(inserted)
    run_and_wait(qtbot, widget)
    qtbot.waitUntil(lambda: events.count("turn") == 3, timeout=5_000)
    layer = "layer (running: True)"
    assert events == [layer, "turn", layer, "turn", layer, "turn"]


def test_polygon_and_field_of_view(setup, qtbot):
    viewer, slide_layer, widget = setup
    triangle = np.array([[300.0, 300.0], [300.0, 500.0], [480.0, 400.0]])
    viewer.add_shapes(
        [triangle], shape_type="polygon", scale=slide_layer.scale, units=slide_layer.units
    )
    run_and_wait(qtbot, widget)
    (layer,) = widget.added
    assert layer.metadata["region"]["polygon"] is not None
    camera = viewer.scene.camera
    camera.center = slide_layer.data_to_world((600, 900))
    camera.zoom = 2.0 / slide_layer.scale[0]  # 2 screen px per level-0 px
    widget.region.mode.value = FIELD_OF_VIEW
    region = widget.region.regions()[0]
    height, width = viewer.canvas.size
    assert abs(region.width - width / 2) <= 2 and abs(region.height - height / 2) <= 2
    assert abs(region.x + region.width / 2 - 900.5) <= 1


def test_bad_inputs_notify_and_keep_the_viewer(setup, qtbot, monkeypatch):
    viewer, _, widget = setup
    widget.run.clicked.emit()  # no shapes yet: an error notification, no crash, no worker
    assert not widget.runner.running and widget.added == []
    slide = widget.region.image()
    add_rectangle(viewer, slide, 0, 0, 2220, 2967)
    monkeypatch.setattr(stain, "MAX_PIXELS", 500 * 500)  # IHC at the slide's 0.499 um/px
    widget.run.clicked.emit()
    assert not widget.runner.running and widget.added == []
    with pytest.raises(RegionError, match="2220 x 2967 px"):
        widget.check_size(slide, widget.region.regions())
    widget.model.folder.value = "/nonexistent/model"
    assert widget.model.target.choices == ()
    assert "no MuPD checkpoint" in widget.model.about.value


def test_cancel_stops_within_one_tile_and_gui_stays_responsive(setup, qtbot):
    from qtpy.QtCore import Qt, QTimer

    from napari_mupd.plugin.widgets._runner import _WARMING

    for thread in _WARMING:  # the one-off warm-up when the first dock opened is not measured
        thread.join()
    viewer, slide_layer, widget = setup
    add_rectangle(viewer, slide_layer, 0, 0, 2000, 2000)  # ~ 1,700 tiles: minutes of work
    widget.model.target.value = "IHC:Ki67"
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    reports: list[tuple[int, int, bool]] = []  # (done, total, cancel already asked)

    def record(done: int, total: int) -> None:  # runs in the worker thread, as it reports
        reports.append((done, total, widget.runner._event.is_set()))

    widget.runner.progressed.connect(record, Qt.ConnectionType.DirectConnection)
    started = time.perf_counter()
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: len(reports) >= 15, timeout=60_000)
    widget.cancel.clicked.emit()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30_000)
    # the timer runs at least a second however fast the job was, so that ticks are counted
    # over a fixed time: a blocked event loop shows as too few ticks or a long gap
    qtbot.waitUntil(lambda: time.perf_counter() - started >= MIN_TIMED, timeout=10_000)
    timer.stop()
    assert widget.added == []
    assert reports[-1][0] < reports[-1][1]  # stopped early
    # at most the batch in flight reports once Cancel is pressed
    assert sum(asked for *_, asked in reports) <= 1
    gaps = np.diff(ticks)
    print(f"event loop: longest gap {gaps.max() * 1000:.0f} ms over {len(gaps)} ticks")
    assert len(gaps) > 50  # 10 ms ticks over at least a second: ~100 when the loop is free
    assert gaps.max() < 0.1, f"event loop blocked for {gaps.max() * 1000:.0f} ms"


def test_progress_moves_the_activity_bar_and_says_the_time_left(setup, qtbot, monkeypatch):
    """The napari progress bar advances with the tiles (its `update`, which the activity
    dock follows) and the dock reads done/total with an estimate of the time left."""
    from napari_mupd.plugin.widgets import _runner

    _, _, widget = setup
    runner = widget.runner
    monkeypatch.setattr(_runner.time, "monotonic", lambda: 110.0)
    runner._bar = _runner.progress(total=0, desc="Virtual Ki67")
    runner._description = "Virtual Ki67"
    runner._started = 100.0
    updates: list[int] = []
    monkeypatch.setattr(runner._bar, "update", lambda n: updates.append(n) or None)
    runner._draw(28, 192)  # 10 s for 28 tiles: 164 more take about a minute
    assert runner._bar.total == 192 and updates == [28]
    assert widget.status.value == "Virtual Ki67: 28/192, about 59 s left"
    assert _runner._duration(3 * 3600 + 65) == "3 h 1 min"
    runner._bar.close()
    runner._bar = None


def test_a_layer_without_pixel_size_asks_for_it(setup, qtbot):
    """A plain image layer (no pixel size) is not stained as if 1 px were 1 um: the dock
    asks for its pixel size, then lays the stain over it in its own pixel units."""
    viewer, slide_layer, widget = setup
    assert not widget.slide_mpp.enabled and widget.slide_mpp.value == pytest.approx(0.499)
    pixels = np.asarray(slide_layer.data[0][1000:1512, 800:1312])
    plain = viewer.add_image(pixels, rgb=True, name="plain")
    widget.region.source.value = plain
    assert widget.slide_mpp.enabled and widget.slide_mpp.value == 0
    corners = np.array([[100 - 0.5, 120 - 0.5], [292 - 0.5, 376 - 0.5]])
    viewer.add_shapes([corners], shape_type="rectangle")
    widget.run.clicked.emit()  # refused: no pixel size
    assert not widget.runner.running and widget.added == []
    assert "slide µm/px" in widget.status.value
    assert widget.estimate.enabled
    widget.estimate.clicked.emit()  # or accept an estimate from the nuclei: truly 0.499
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    assert 0.33 < widget.slide_mpp.value < 0.75 and "estimate" in widget.status.value
    widget.slide_mpp.value = 0.5
    run_and_wait(qtbot, widget)
    (layer,) = widget.added
    assert layer.metadata["output_downsample"] == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(layer.scale, [layer.metadata["output_downsample"]] * 2)
    np.testing.assert_allclose(layer.data_to_world((0, 0)), (100, 120), atol=0.02)


def test_a_long_job_asks_first_with_the_tile_count_and_time(setup, qtbot, monkeypatch):
    """A big region is measured on its first tiles, then the dock asks; "no" stops it
    with nothing added. (The tiny model is quick: "long" here is over half a second.)"""
    from napari_mupd.plugin.widgets import _runner

    monkeypatch.setattr(_runner, "ASK_AFTER_S", 0.5)
    viewer, slide_layer, widget = setup
    add_rectangle(viewer, slide_layer, 0, 0, 2000, 2000)
    widget.model.target.value = "IHC:Ki67"
    asked: list[tuple[str, int]] = []

    def no(question: str) -> bool:
        asked.append((question, widget.runner._bar.n))
        return False

    widget.runner.ask = no
    run_and_wait(qtbot, widget)
    ((question, done),) = asked
    total = int(question.split(" of ")[1].split()[0])
    assert total > 100 and "s per tile" in question and "Go on?" in question
    assert 0 < done < total // 4  # asked after the first batches, long before the end
    assert widget.added == [] and "cancelled" in widget.status.value


def test_a_measured_rate_is_remembered_and_asks_before_the_first_tile(setup, qtbot, monkeypatch):
    from napari_mupd.plugin.widgets import _runner

    viewer, slide_layer, widget = setup
    add_rectangle(viewer, slide_layer, 1000, 500, 200, 200)
    widget.model.target.value = "IHC:Ki67"
    run_and_wait(qtbot, widget)  # short: no question; its rate is remembered
    assert len(widget.added) == 1 and len(widget.runner.rates) == 1
    monkeypatch.setattr(_runner, "ASK_AFTER_S", 0.0)  # now every job is "long"
    asked: list[int] = []
    widget.runner.ask = lambda question: asked.append(widget.runner._bar.n) or True
    run_and_wait(qtbot, widget)
    assert asked == [0]  # from the remembered rate, before any tile of this run
    assert len(widget.added) == 1  # "yes": the job went on


def test_guidance_scales_show_only_with_their_condition(setup, tmp_path):
    _, _, widget = setup
    conditions = widget.conditions
    assert conditions.text_scale.native.isHidden() and conditions.rna_scale.native.isHidden()
    conditions.text.value = "tumour with lymphocytes"
    assert not conditions.text_scale.native.isHidden()
    conditions.rna.value = tmp_path / "profile.csv"
    assert not conditions.rna_scale.native.isHidden()
    conditions.text.value = "  "
    assert conditions.text_scale.native.isHidden()


def test_the_stain_prompt_names_the_words_the_model_does_not_know(setup):
    _, _, widget = setup  # the tiny model knows 6 words
    words = widget.conditions.words
    assert words.native.isHidden()
    widget.conditions.text.value = "tumour with Ki67 hotspot"
    assert not words.native.isHidden() and "does not know" in words.value
    assert "Ki67" in words.value
    widget.conditions.text.value = ""
    assert words.native.isHidden()
