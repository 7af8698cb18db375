"""Multichannel and DICOM region reads: open_slide against the readers' own paths.

Two rows: a 5-channel uint16 pyramidal OME-TIFF (one channel, then all five, per
512 px region at level 0) read by ``Slide.read_region`` and by tifffile's own zarr store
(``series.aszarr()`` through zarr); and a DICOM WSI (made by wsidicomizer from an SVS-like
JPEG TIFF) read by ``Slide.read_region`` (wsidicom) and by OpenSlide 4. Each reader reads
the same random regions once, cold (a new open), and the checksums are compared.

    python benchmarks/bench_multichannel.py [--size 8192] [--regions 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def write_multichannel(path: Path, size: int, channels: int = 5) -> None:
    """A (C, size, size) uint16 OME-TIFF with SubIFD levels down to ~1k, 512 px tiles,
    deflate-compressed, built block by block (no full-size array in memory)."""
    levels = []
    side = size
    while side >= 1024:
        levels.append(side)
        side //= 2
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4000, (channels, 512, 512), dtype=np.uint16)

    def tiles(side: int):
        for c in range(channels):
            for _ in range(side // 512):
                for _ in range(side // 512):
                    yield np.roll(base[c], rng.integers(0, 512), axis=0)

    meta = {"axes": "CYX", "Channel": {"Name": [f"M{i}" for i in range(channels)]}}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        kw = {"tile": (512, 512), "dtype": np.uint16, "compression": "zlib"}
        tif.write(tiles(levels[0]), shape=(channels, levels[0], levels[0]),
                  subifds=len(levels) - 1, metadata=meta, **kw)  # fmt: skip
        for side in levels[1:]:
            tif.write(tiles(side), shape=(channels, side, side), subfiletype=1,
                      metadata=None, **kw)  # fmt: skip


def write_dicom(folder: Path, size: int) -> Path:
    from wsidicomizer import WsiDicomizer
    from wsidicomizer.sources import TiffSlideSource

    from helpers import pattern, write_svs_like

    svs = folder.parent / "source.svs"
    write_svs_like(svs, pattern(size, size), levels=3)
    folder.mkdir(exist_ok=True)
    WsiDicomizer.convert(svs, folder, preferred_source=TiffSlideSource, tile_size=256,
                         include_label=False, include_overview=False,
                         include_thumbnail=False, workers=1)  # fmt: skip
    return folder


def locations(n: int, side: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, side - 512, (n, 2))


def time_reads(read, where: np.ndarray) -> tuple[float, int]:
    total = 0
    start = time.perf_counter()
    for x, y in where:
        total += int(np.asarray(read(int(x), int(y)), np.int64).sum() % 1_000_003)
    return (time.perf_counter() - start) / len(where) * 1e3, total


def bench_multichannel(path: Path, side: int, n: int) -> list[str]:
    import zarr

    from napari_mupd.io import open_slide

    where = locations(n, side)
    rows = []
    for label, channels in (("1 channel", [2]), ("5 channels", [0, 1, 2, 3, 4])):
        with open_slide(path) as slide:
            ours, a = time_reads(
                lambda x, y, c=channels: slide.read_region((x, y), 0, (512, 512), channels=c),
                where,
            )
        with tifffile.TiffFile(path) as tif:
            store = tif.series[0].aszarr(level=0)
            array = zarr.open(store, mode="r")
            lo, hi = min(channels), max(channels) + 1
            theirs, b = time_reads(
                lambda x, y, a=array, lo=lo, hi=hi: np.asarray(a[lo:hi, y : y + 512, x : x + 512]),
                where,
            )
            store.close()
        same = "same pixels" if a == b else "DIFFERENT pixels"
        rows.append(f"| OME-TIFF 5 x uint16, {label} | {ours:.1f} | tifffile zarr store "
                    f"{theirs:.1f} | {theirs / ours:.1f}x | {same} |")  # fmt: skip
    return rows


def bench_dicom(folder: Path, side: int, n: int) -> list[str]:
    import openslide

    from napari_mupd.io import open_slide

    where = locations(n, side)
    with open_slide(folder) as slide:
        ours, a = time_reads(lambda x, y: slide.read_region((x, y), 0, (512, 512)), where)
    first = sorted(folder.iterdir())[0]
    reference = openslide.OpenSlide(str(first))
    theirs, b = time_reads(
        lambda x, y: np.asarray(reference.read_region((x, y), 0, (512, 512)))[..., :3], where
    )
    same = "same pixels" if a == b else "DIFFERENT pixels"
    return [f"| DICOM WSI (JPEG frames) | {ours:.1f} | OpenSlide {theirs:.1f} | "
            f"{theirs / ours:.1f}x | {same} |"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=8192, help="slide side in px (8192)")
    parser.add_argument("--regions", type=int, default=200, help="512 px regions (200)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mc = root / "five.ome.tif"
        write_multichannel(mc, args.size)
        rows = bench_multichannel(mc, args.size, args.regions)
        dicom_side = min(args.size, 4096)
        rows += bench_dicom(write_dicom(root / "dicom", dicom_side), dicom_side, args.regions)
    print(f"{args.regions} random 512 px regions at level 0, ms per region (cold open)\n")
    print("| slide | open_slide | other reader | speed-up | check |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
