"""Test helpers: paths of the real data in the repository's data/ and small slide writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from napari_mupd.resources import sample_slide_path

ROOT = Path(__file__).resolve().parents[1]
#: Real, openly licensed data kept in the repository (see data/README.md).
DATA = ROOT / "data"
CMU1 = sample_slide_path()  # the sample slide shipped inside the package
TCGA = DATA / "slides" / "tcga-cr-7395-01a-01-ts1.svs"


def pattern(h: int, w: int) -> np.ndarray:
    """An RGB image whose every pixel says where it is (up to periodicity)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack(
        [(xx * 7 + yy * 3) % 256, (yy * 5 + xx // 3) % 256, ((xx // 16 + yy // 16) * 37) % 256],
        axis=-1,
    ).astype(np.uint8)


def halve(image: np.ndarray) -> np.ndarray:
    """2x2 mean downsampling (edges trimmed), the way a scanner builds its pyramid."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).astype(np.float32)
    return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)


def pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``image`` and its successive halvings."""
    out = [image]
    for _ in range(levels - 1):
        out.append(halve(out[-1]))
    return out


def write_svs_like(path: Path, image: np.ndarray, levels: int = 3, mpp: float = 0.25) -> None:
    """An Aperio-style SVS: JPEG tiled levels, a striped thumbnail, label and macro."""
    h, w = image.shape[:2]
    desc = (
        f"Aperio Image Library v12.0.0\r\n{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=90"
        f"|AppMag = 40|MPP = {mpp}|Filename = generated"
    )
    levels_data = pyramid(image, levels)
    jpeg = {"compression": "jpeg", "compressionargs": {"level": 90}, "photometric": "rgb",
            "metadata": None}  # fmt: skip
    aperio = "Aperio Image Library v12.0.0\r\n"
    with tifffile.TiffWriter(path) as tif:
        tif.write(levels_data[0], tile=(256, 256), description=desc, **jpeg)
        thumb = levels_data[-1][::2, ::2]
        tif.write(thumb, rowsperstrip=16, description=f"{aperio}{w}x{h} -> thumbnail", **jpeg)
        for level in levels_data[1:]:
            tif.write(level, tile=(256, 256), description=desc, **jpeg)
        label = {**jpeg, "compression": "lzw", "compressionargs": None}
        tif.write(pattern(120, 300), rowsperstrip=16, subfiletype=1,
                  description=f"{aperio}label 300x120", **label)  # fmt: skip
        tif.write(pattern(200, 500), rowsperstrip=16, subfiletype=9,
                  description=f"{aperio}macro 500x200", **jpeg)  # fmt: skip


def write_ome_subifds(path: Path, image: np.ndarray, levels: int = 3, mpp: float = 0.5) -> None:
    """A pyramidal OME-TIFF: level 0 in the main IFD, lower levels in SubIFDs (lossless)."""
    data = pyramid(image, levels)
    with tifffile.TiffWriter(path, ome=True) as tif:
        meta = {"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp,
                "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}  # fmt: skip
        tif.write(data[0], subifds=levels - 1, tile=(128, 128), compression="zlib",
                  photometric="rgb", metadata=meta)  # fmt: skip
        for level in data[1:]:
            tif.write(level, subfiletype=1, tile=(128, 128), compression="zlib", photometric="rgb")


SECTIONS = DATA / "serial_sections" / "mouse_lung_lesion3"
LANDMARKS = SECTIONS / "landmarks_50pc" / "user-PS_scale-50pc"
BRAIN = DATA / "spatial" / "squidpy_mouse_brain"


def serial_sections(marker: str = "Ki67-7", target: str = "IHC:Ki67", **extra) -> dict:
    """A ``serial_sections`` dataset entry: the lung-lesion H&E and one IHC section."""
    name = "29-041-Izd2-w35-{}-les3"
    args = {
        "fixed_image": str(SECTIONS / f"{name.format('He')}.jpg"),
        "moving_image": str(SECTIONS / f"{name.format(marker)}.jpg"),
        "fixed_landmarks": str(LANDMARKS / f"{name.format('He')}.csv"),
        "moving_landmarks": str(LANDMARKS / f"{name.format(marker)}.csv"),
        "target": target,
        "landmark_scale": 0.1,
    }
    return {"serial_sections": {**args, **extra}}


def brain_spots(**extra) -> dict:
    """An ``h5ad_spots`` dataset entry: the squidpy mouse-brain Visium spots."""
    args = {"h5ad": str(BRAIN / "test_data.h5ad"), "image": str(BRAIN / "test_img.jpg")}
    return {"h5ad_spots": {**args, **extra}}
