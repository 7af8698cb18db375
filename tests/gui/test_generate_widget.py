"""The "Generate tissue" dock widget in a real viewer with a tiny model."""

from __future__ import annotations

import napari
import numpy as np
import pytest

from helpers import BRAIN, CMU1
from napari_mupd.engine.synthesis import mosaic
from napari_mupd.model import MuPDPipeline
from napari_mupd.plugin.widgets.generate import (
    GRID,
    RNA_FILE,
    RNA_SPOTS,
    STACK,
    GenerateTissueWidget,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def setup(make_napari_viewer, tiny_model_dir):
    viewer = make_napari_viewer()
    widget = GenerateTissueWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Generate tissue")
    widget.model.use_folder(str(tiny_model_dir))
    return viewer, widget


def generate(qtbot, widget):
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)


def test_prompt_gives_the_pipelines_tiles_as_a_grid(setup, qtbot, tiny_model_dir):
    _, widget = setup
    assert list(widget.model.target.choices) == ["H&E"]
    widget.prompt.value = "tumour with lymphocytes"
    widget.n_tiles.value = 3
    widget.seed.value = 7
    generate(qtbot, widget)
    (layer,) = widget.added
    assert layer.name == "synthetic H&E [tumour with lymphocytes, seed 7]"
    (y0, x0), (y1, x1) = (np.asarray(e)[-2:] for e in layer.extent.world)
    middle = ((y0 + y1) / 2, (x0 + x1) / 2)

    def centred() -> bool:  # the view moves there on the next turn of the event loop
        return np.allclose(np.asarray(widget.viewer.scene.camera.center)[-2:], middle)

    qtbot.waitUntil(centred, timeout=5_000)
    assert layer.metadata["seed"] == 7 and layer.metadata["conditions"] == ["text"]
    pipe = MuPDPipeline.from_pretrained(tiny_model_dir)
    expected = pipe(text="tumour with lymphocytes", num_images=3, generator=7).images
    tiles = (np.clip(expected, 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(layer.data, mosaic(tiles))
    np.testing.assert_allclose(layer.scale, (1.0, 1.0))  # the model's 1 um/px


def test_stack_with_rna_file_and_reference(setup, qtbot, tmp_path):
    viewer, widget = setup
    (slide_layer,) = viewer.open(str(CMU1), plugin="napari-mupd")
    corners = np.array([[500.0, 500.0], [756.0, 756.0]])
    viewer.add_shapes([corners], shape_type="rectangle", scale=slide_layer.scale,
                      units=slide_layer.units)  # fmt: skip
    rna = tmp_path / "rna.csv"
    rna.write_text("gene,value\nCD3E,4.0\nMKI67,2.5\n")
    widget.rna_source.value = RNA_FILE
    widget.rna_file.value = str(rna)
    widget.use_reference.value = True
    widget.layout_choice.value = STACK
    widget.n_tiles.value = 2
    generate(qtbot, widget)
    (layer,) = widget.added
    assert layer.data.shape == (2, 64, 64, 3)
    assert sorted(layer.metadata["conditions"]) == ["image", "rna"]
    assert layer.metadata["reference_region"]["x"] == 500  # corner 500.5 -> pixel 500
    assert layer.translate[-1] > slide_layer.extent.world[1][-1]  # beside the slide
    assert viewer.dims.axis_labels[0] == "sample"  # the stack's slider, not "-3"


def test_no_condition_is_an_error_and_cancel_stops(setup, qtbot):
    _, widget = setup
    widget.run.clicked.emit()
    assert not widget.runner.running and widget.added == []
    widget.prompt.value = "   "  # blank counts as empty
    widget.run.clicked.emit()
    assert not widget.runner.running
    widget.prompt.value = "fat"
    widget.steps.value = 400
    widget.n_tiles.value = 16
    widget.layout_choice.value = GRID
    steps: list[int] = []
    widget.runner.progressed.connect(lambda done, total: steps.append(done))
    widget.run.clicked.emit()
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=30_000)
    widget.cancel.clicked.emit()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30_000)
    assert widget.added == [] and steps[-1] < 400
    assert "cancelled" in widget.status.value


def test_rna_of_the_spots_selected_on_a_visium_layer(setup, qtbot, tiny_model_dir):
    from napari_mupd.io.visium import spots_expression

    viewer, widget = setup
    layers = viewer.open(str(BRAIN / "test_data.h5ad"), plugin="napari-mupd")
    (points,) = [layer for layer in layers if isinstance(layer, napari.layers.Points)]
    assert widget.legend.native.isHidden()  # no RNA from spots chosen yet
    widget.rna_source.value = RNA_SPOTS
    # the legend names each cluster in the colour its spots are outlined in
    legend = points.metadata["clusters"]
    column = legend["column"]
    assert not widget.legend.native.isHidden() and widget.legend.value.startswith(column)
    for i in (0, 5):
        cluster = points.features[column].iloc[i]
        colour = legend["colours"][cluster]
        np.testing.assert_allclose(
            points.border_color[i],
            napari.utils.colormaps.standardize_color.transform_color(colour)[0],
        )
        assert f"<font color='{colour}'>&#9632;</font>&nbsp;{cluster}" in widget.legend.value
    widget.run.clicked.emit()  # nothing selected yet: an error, no run
    assert not widget.runner.running and widget.added == []
    points.selected_data = {0, 3, 5}
    widget.n_tiles.value = 1
    generate(qtbot, widget)
    (layer,) = widget.added
    assert layer.metadata["conditions"] == ["rna"]
    barcodes = points.features["barcode"].iloc[[0, 3, 5]].tolist()
    expected = MuPDPipeline.from_pretrained(tiny_model_dir)(
        rna=spots_expression(points.metadata["visium"]["path"], barcodes), generator=0
    ).images
    np.testing.assert_array_equal(
        layer.data, (np.clip(expected[0], 0, 1) * 255 + 0.5).astype(np.uint8)
    )


def test_guidance_scales_show_only_with_their_condition(setup):
    _, widget = setup
    hidden = lambda w: w.native.isHidden()  # noqa: E731
    assert hidden(widget.text_scale) and hidden(widget.rna_scale) and hidden(widget.image_scale)
    widget.prompt.value = "colon, adenocarcinoma"
    widget.rna_source.value = RNA_FILE
    widget.use_reference.value = True
    assert not any(hidden(w) for w in (widget.text_scale, widget.rna_scale, widget.image_scale))


def test_words_the_model_does_not_read_are_named(setup, qtbot):
    _, widget = setup  # the tiny model knows 6 words and reads 16 tokens
    assert widget.words.native.isHidden()
    widget.prompt.value = "tumor with Ki67"  # as the user types
    assert not widget.words.native.isHidden()
    assert "does not know" in widget.words.value and "with, Ki67" in widget.words.value
    widget.prompt.value = "tumor, colon"
    assert widget.words.native.isHidden() and widget.words.value == ""
    widget.prompt.value = "Ki67 hotspot tumor invasive colon"
    widget.n_tiles.value, widget.steps.value = 1, 1
    generate(qtbot, widget)  # the pipeline's own answer, in the status line too
    (layer,) = widget.added
    assert layer.metadata["text_words"]["unknown"] == ("Ki67", "hotspot")
    assert "16-token limit, ignored: invasive, colon" in widget.status.value
    assert "Ki67, hotspot" in widget.words.value and not widget.words.native.isHidden()
