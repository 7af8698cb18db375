"""Screenshots of the running plugin for docs/user_guide.md (not drawn by hand).

    xvfb-run -a -s "-screen 0 1680x1050x24" .venv/bin/python scripts/screenshots.py

Opens napari, docks each widget through the plugin manifest, drives it like a user
(the bundled model on the bundled sample slide; the serial sections and Visium spots
of the repository's data/ for "Compare stains" and "Generate tissue") and saves the window.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_mupd.resources import sample_slide_path

DATA = Path(__file__).resolve().parents[1] / "data"
SECTIONS = DATA / "serial_sections" / "mouse_lung_lesion3"


def wait(widget, timeout: float = 600) -> None:
    """Process events until the widget's task is done."""
    start = time.monotonic()
    while widget.runner.running:
        QApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() - start > timeout:
            raise TimeoutError("the task did not finish")
    for _ in range(20):
        QApplication.processEvents()


def save(viewer: napari.Viewer, path: Path) -> None:
    """The whole window, docks included."""
    for _ in range(20):
        QApplication.processEvents()
    pixels = viewer.screenshot(canvas_only=False, flash=False)
    # 256 colours keep the docs light (~4x smaller) and the widgets legible
    Image.fromarray(pixels[..., :3]).quantize(256).save(path, optimize=True)
    print(f"wrote {path}")


def new_viewer() -> napari.Viewer:
    """A viewer with a window big enough for a dock and the slide."""
    viewer = napari.Viewer()
    viewer.window.resize(1600, 1000)
    return viewer


def dock(viewer: napari.Viewer, name: str):
    """Dock one of our widgets the way the Plugins menu does."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-mupd", name)
    return widget


def undock(viewer: napari.Viewer, widget) -> None:
    """Close a dock to leave room for the next."""
    viewer.window.remove_dock_widget(widget.native.parent())


def answer_yes(widget) -> None:
    """Say yes to "go on?" (and print the question the dock asked)."""
    widget.runner.ask = lambda question: print(f"asked: {question}") or True


def look_at(viewer: napari.Viewer, layer, x: float, y: float, w: float, h: float) -> None:
    """Centre the camera on level-0 pixels [x, x+w) x [y, y+h) of ``layer``."""
    sy, sx = layer.scale[-2:]
    viewer.camera.center = ((y + h / 2) * sy, (x + w / 2) * sx)
    canvas_h, canvas_w = viewer.window._qt_viewer.canvas.size
    viewer.camera.zoom = min(canvas_h / (h * sy), canvas_w / (w * sx))


def virtual_stain(out: Path) -> None:
    viewer = new_viewer()
    (slide,) = viewer.open(str(sample_slide_path()), plugin="napari-mupd")
    x, y, w, h = 700, 900, 1024, 1024
    corners = np.array([[y - 0.5, x - 0.5], [y + h - 0.5, x + w - 0.5]])
    viewer.add_shapes([corners], shape_type="rectangle", scale=slide.scale, units=slide.units,
                      edge_color="yellow", face_color="transparent", edge_width=8)  # fmt: skip
    widget = dock(viewer, "Virtual stain")
    answer_yes(widget)
    widget.model.target.value = "IHC:Ki67"
    widget.run.clicked.emit()
    wait(widget)
    viewer.layers.selection.active = widget.added[0]
    look_at(viewer, slide, x + 256, y + 256, 400, 400)  # close enough to see the cells
    save(viewer, out / "virtual_stain.png")
    viewer.close()


def generate_tissue(out: Path) -> None:
    viewer = new_viewer()
    brain = DATA / "spatial" / "squidpy_mouse_brain" / "test_data.h5ad"
    layers = viewer.open(str(brain), plugin="napari-mupd")
    points = next(la for la in layers if isinstance(la, napari.layers.Points))
    points.selected_data = set(range(6))
    widget = dock(viewer, "Generate tissue")
    answer_yes(widget)
    widget.prompt.value = "H&E, brain, cortex"
    widget.rna_source.value = "selected Visium spots"
    widget.n_tiles.value = 4
    widget.run.clicked.emit()
    wait(widget)
    viewer.reset_view()
    save(viewer, out / "generate_tissue.png")
    viewer.close()


def compare_stains(out: Path) -> None:
    viewer = new_viewer()
    name = "29-041-Izd2-w35-{}-les3.jpg"
    (he,) = viewer.open(str(SECTIONS / name.format("He")), plugin="napari-mupd")
    h, w = he.data[0].shape[:2] if he.multiscale else he.data.shape[:2]
    corners = np.array([[-0.5, -0.5], [h - 0.5, w - 0.5]])
    viewer.add_shapes([corners], shape_type="rectangle", face_color="transparent")
    stain = dock(viewer, "Virtual stain")
    answer_yes(stain)
    stain.slide_mpp.value = 3.5  # these 5 % scans do not say: ~3.5 um/px (nuclei ~2 px)
    stain.model.target.value = "IHC:Ki67"
    stain.run.clicked.emit()
    wait(stain)
    (virtual,) = stain.added
    viewer.layers.remove("Shapes")
    undock(viewer, stain)
    (real,) = viewer.open(str(SECTIONS / name.format("Ki67-7")), plugin="napari-mupd")
    real.name = "Ki67 (real serial section)"
    widget = dock(viewer, "Compare stains")
    widget.real.value, widget.virtual.value = real, virtual
    widget.mode.value = "side by side"  # two linked canvases, each layer opaque
    widget.register.native.click()
    while widget.registering.running:
        QApplication.processEvents()
        time.sleep(0.02)
    widget.measure.native.click()
    while widget.measuring.running:
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.reset_view()
    save(viewer, out / "compare_stains.png")
    viewer.close()


def export_tiles(out: Path, folder: Path) -> None:
    viewer = new_viewer()
    viewer.open(str(sample_slide_path()), plugin="napari-mupd")
    widget = dock(viewer, "Export tiles")
    answer_yes(widget)
    widget.region.mode.value = "whole image"
    widget.n_tiles.value = 8
    widget.augment.flips.value = True
    widget.augment.stain_jitter.value = 0.05
    widget.augment.copies.value = 1
    widget.out.value = str(folder)
    widget.preview.clicked.emit()  # the planned tiles, drawn before the run
    widget.run.clicked.emit()
    wait(widget)
    save(viewer, out / "export_tiles.png")
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images", help="folder for the PNGs")
    parser.add_argument("--only", nargs="*", help="some of: stain generate compare export")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ["stain", "generate", "compare", "export"])
    if "stain" in only:
        virtual_stain(out)
    if "generate" in only:
        generate_tissue(out)
    if "compare" in only:
        compare_stains(out)
    if "export" in only:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            export_tiles(out, Path(tmp) / "tiles")


if __name__ == "__main__":
    main()
