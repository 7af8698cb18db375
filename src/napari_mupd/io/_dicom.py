"""DICOM whole-slide images (VL Whole Slide Microscopy) through ``wsidicom``.

A folder of DICOM files (one slide: its pyramid levels, label, overview) or a single
``.dcm`` file (its series: the other files of the folder with the same series UID) opens
lazily: frames (the DICOM tiles) are decoded by wsidicom one at a time, several on a
thread pool, and kept in the same byte-bounded LRU cache as TIFF tiles.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from napari_mupd.errors import MissingDependencyError, SlideError
from napari_mupd.imaging.pixels import to_rgb_uint8
from napari_mupd.io._backend import BackendInfo, Level, covering_tiles, level_downsample
from napari_mupd.io._cache import TileCache

_DICM_OFFSET = 128


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with path.open("rb") as fh:
            fh.seek(_DICM_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside ``folder``."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.is_file() and is_dicom_file(p)]


def has_dicom(folder: Path, look_at: int = 200) -> bool:
    """Whether one of the first ``look_at`` files of ``folder`` is DICOM (a quick test
    for napari, which asks about every folder it is given)."""
    try:
        for i, entry in enumerate(folder.iterdir()):
            if i >= look_at:
                return False
            if entry.is_file() and is_dicom_file(entry):
                return True
    except OSError:
        return False
    return False


def import_wsidicom() -> Any:
    try:
        import wsidicom
    except ImportError as exc:
        raise MissingDependencyError(
            "wsidicom", "dicom", "Reading DICOM whole-slide images"
        ) from exc
    return wsidicom


def _series_files(path: Path) -> list[Path]:
    """The files of ``path``'s slide: the folder's DICOM files, or for one file the files
    of the folder that share its series instance UID."""
    if path.is_dir():
        files = dicom_files(path)
        if not files:
            raise SlideError("a folder with no DICOM files in it")
        return files
    import pydicom

    def series(p: Path) -> str | None:
        try:
            return str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID)
        except Exception:  # not DICOM, or no series UID
            return None

    own = series(path)
    if own is None:
        raise SlideError("a DICOM file without a series instance UID")
    return [p for p in dicom_files(path.parent) if p == path or series(p) == own]


class DicomBackend:
    """The pyramid of a DICOM WSI as wsidicom reads it (brightfield RGB or grey)."""

    def __init__(self, path: Path, cache_bytes: int = 256 * 2**20) -> None:
        wsidicom = import_wsidicom()
        files = _series_files(path)
        try:
            self._wsi = wsidicom.WsiDicom.open(files)
        except Exception as exc:  # wsidicom raises many types for bad files
            raise SlideError(f"not a readable DICOM whole-slide image ({exc})") from exc
        try:
            self._levels = list(self._wsi.levels)
            if not self._levels:
                raise SlideError("a DICOM series with no whole-slide image levels")
            self.info = self._read_info()
        except Exception:
            self._wsi.close()
            raise
        self._cache = TileCache(cache_bytes)
        self._pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))

    def _read_info(self) -> BackendInfo:
        shapes = [(int(lv.size.height), int(lv.size.width)) for lv in self._levels]
        tiles = [(int(lv.tile_size.height), int(lv.tile_size.width)) for lv in self._levels]
        levels = [
            Level(s, level_downsample(shapes[0], s), t) for s, t in zip(shapes, tiles, strict=True)
        ]
        mpp = None
        spacing = getattr(self._levels[0], "mpp", None)
        if spacing is not None and spacing.width and spacing.height:
            mpp = (float(spacing.height), float(spacing.width))
        associated: dict[str, Callable[[], np.ndarray]] = {}
        if self._wsi.labels:
            associated["label"] = lambda: to_rgb_uint8(np.asarray(self._wsi.read_label()))
        if self._wsi.overviews:
            associated["macro"] = lambda: to_rgb_uint8(np.asarray(self._wsi.read_overview()))
        dataset = self._levels[0].default_instance.dataset
        return BackendInfo(
            vendor="dicom",
            levels=levels,
            mpp=mpp,
            associated=associated,
            extra={
                "series_uid": str(getattr(dataset, "SeriesInstanceUID", "")),
                "photometric": str(getattr(dataset, "PhotometricInterpretation", "")),
                "transfer_syntax": str(
                    getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "")
                ),
            },
        )

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Level pixels [y:y+h, x:x+w] as (h, w, 3) uint8, from cached frames."""
        th, tw = self.info.levels[level].tile
        wanted = covering_tiles((th, tw), y, x, h, w)
        tiles = {rc: self._cache.get((level, *rc)) for rc in wanted}
        missing = [rc for rc, tile in tiles.items() if tile is None]

        def fetch(rc: tuple[int, int]) -> np.ndarray:
            tile = self._frame(level, *rc)
            self._cache.put((level, *rc), tile)
            return tile

        fetched = self._pool.map(fetch, missing) if len(missing) > 1 else map(fetch, missing)
        tiles.update(zip(missing, fetched, strict=True))
        out = np.empty((h, w, 3), np.uint8)
        for (r, c), tile in tiles.items():
            assert tile is not None
            ty0, tx0 = r * th, c * tw
            sy0, sx0 = max(y, ty0), max(x, tx0)
            sy1, sx1 = min(y + h, ty0 + tile.shape[0]), min(x + w, tx0 + tile.shape[1])
            out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile[
                sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0
            ]
        return out

    def _frame(self, level: int, row: int, col: int) -> np.ndarray:
        from wsidicom.geometry import Point

        try:
            image = self._levels[level].get_tile(Point(col, row))
        except Exception as exc:  # a missing or undecodable frame
            raise SlideError(
                f"DICOM frame (column {col}, row {row}) of level {level} cannot be read: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return to_rgb_uint8(np.asarray(image.convert("RGB") if image.mode != "RGB" else image))

    def close(self) -> None:
        """Stop the decoder threads and close the files."""
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=True)
        if getattr(self, "_cache", None) is not None:
            self._cache.clear()
        self._wsi.close()
