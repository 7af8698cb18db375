"""Training data from what a user really has, as :class:`Sample` items of one tile size.

Every dataset is a sequence (``len`` and ``[i]``) of samples with the same tile size;
each sample carries the target image, the target name, and whichever conditions it has.

Targets of an ``mIF:<m1>,<m2>,...`` task are marker intensities, not RGB: a multichannel
file (OME-TIFF, QPTIFF, multi-page TIFF: anything :func:`~napari_mupd.io.open_slide` opens
as channels; or a ``.npy`` array (H, W, K) already in the markers' order) is read by
:func:`read_markers`, its channels picked by name in the order of the target's markers
(case-insensitive, with the aliases of :mod:`napari_mupd.io.channels`: Ki-67 / Ki67,
Hoechst / DAPI), and scaled to [0, 1] by the pixel type's range (:data:`MARKER_SCALING`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image

from napari_mupd.engine.registration import read_landmarks, register_landmarks
from napari_mupd.engine.tissue import slide_tissue
from napari_mupd.errors import DatasetError
from napari_mupd.imaging.regions import Region
from napari_mupd.imaging.resize import fit_tile, resize
from napari_mupd.imaging.tissue import TissueMap, tissue_mask
from napari_mupd.io import open_slide
from napari_mupd.io.channels import match_channel
from napari_mupd.model.config import split_target

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Files an mIF target may be: multichannel TIFFs (OME-TIFF, QPTIFF) and numpy arrays.
MARKER_SUFFIXES = (".tif", ".tiff", ".qptiff", ".npy")
#: How marker intensities become [0, 1]: ``(value - low) / (high - low)`` with (low, high)
#: the channel's value range (the pixel type's: 0-255 for uint8, 0-65535 for uint16; for
#: float, the range the file states, else 0-1), clipped. Fixed per file, not per tile, so
#: a dim tile stays dim and a marker's absence is not stretched into noise.
MARKER_SCALING = "dtype range"
Split = Literal["train", "test"]


@dataclass
class Sample:
    """One training example: a target tile and its conditions."""

    image: np.ndarray  # (H, W, 3) uint8 target tile; (H, W, K) float32 in [0, 1] for mIF
    target: str = "H&E"
    source: np.ndarray | None = None  # (H, W, 3) uint8 source H&E (virtual staining)
    text: str | None = None
    rna: pd.Series | None = None  # gene symbol -> expression
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def he(self) -> np.ndarray:
        """The sample's H&E tile: the source of a virtual-staining pair, else the target."""
        return self.source if self.source is not None else self.image


def sources(samples: Sequence[Sample]) -> list[np.ndarray]:
    """The source H&E tiles of virtual-staining samples (a DatasetError if one has none)."""
    out = [s.source for s in samples if s.source is not None]
    if len(out) != len(samples):
        raise DatasetError("a virtual staining task needs a source H&E tile for every sample")
    return out


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def is_mif(target: str) -> bool:
    """Whether ``target`` is a multiplex IF panel (``mIF:<m1>,<m2>,...``)."""
    try:
        return split_target(target)[0] == "mIF"
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc


def read_markers(path: str | os.PathLike, markers: Sequence[str]) -> np.ndarray:
    """The channels ``markers`` of a multichannel file as (H, W, K) float32 in [0, 1].

    A TIFF (OME-TIFF, QPTIFF, multi-page) is opened with :func:`~napari_mupd.io.open_slide`
    and its level 0 read whole; each marker finds its channel by name (case-insensitive,
    aliases such as Ki-67 / Ki67 or Hoechst / DAPI), in the markers' order whatever the
    file's. A ``.npy`` array (H, W, K) has no names: its K channels are the markers, in
    order. Intensities are scaled by :data:`MARKER_SCALING`. A file without a marker, a
    brightfield file or a wrong channel count is a :class:`DatasetError` naming the file.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return _npy_markers(path, markers)
    try:
        slide = open_slide(path)
    except ValueError as exc:  # SlideError
        raise DatasetError(f"{path}: {exc}") from exc
    with slide:
        if not slide.channels:
            raise DatasetError(
                f"{path}: a brightfield (RGB) image, not the channels of {', '.join(markers)}; "
                "an mIF target needs a multichannel file (OME-TIFF with channel names, QPTIFF)"
            )
        names = slide.channel_names
        picked = []
        for marker in markers:
            index = match_channel(marker, names)
            if index is None:
                raise DatasetError(
                    f"{path}: no channel for marker {marker!r}; it has {', '.join(names)}"
                )
            picked.append(index)
        planes = slide.read_region((0, 0), 0, slide.dimensions, channels=picked)
        ranges = [slide.channels[i].value_range for i in picked]
    out = np.empty((*planes.shape[1:], len(picked)), np.float32)
    for k, (plane, (low, high)) in enumerate(zip(planes, ranges, strict=True)):
        out[..., k] = (plane.astype(np.float32) - low) / (high - low)
    return np.clip(out, 0, 1, out=out)


def _npy_markers(path: Path, markers: Sequence[str]) -> np.ndarray:
    array = np.load(path, allow_pickle=False)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] != len(markers):
        raise DatasetError(
            f"{path}: expected (H, W, {len(markers)}) for {', '.join(markers)} (a .npy has no "
            f"channel names: its channels are the markers, in order), got shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        return np.clip((array.astype(np.float32) - info.min) / (info.max - info.min), 0, 1)
    out = array.astype(np.float32)
    if not np.isfinite(out).all() or out.min() < 0 or out.max() > 1:
        raise DatasetError(f"{path}: float marker intensities must be finite and in [0, 1]")
    return out


def read_target(path: str | os.PathLike, target: str) -> np.ndarray:
    """A target tile: (H, W, 3) uint8 RGB, or (H, W, K) float32 markers for ``mIF:`` ones."""
    if is_mif(target):
        return read_markers(path, split_target(target)[1])
    return read_rgb(path)


def fit_target(image: np.ndarray, size: int) -> np.ndarray:
    """:func:`~napari_mupd.imaging.resize.fit_tile` for RGB and for float marker stacks
    (each channel resized in float: area filter when shrinking, bicubic when growing)."""
    if image.dtype == np.uint8:
        return fit_tile(image, size)
    return _resize_float(_square(image), (size, size))


def _square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return image[y : y + side, x : x + side]


def _resize_float(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float (h, w, k) image resized channel by channel (Pillow's float mode), in [0, 1]."""
    h, w = shape
    if image.shape[:2] == (h, w):
        return np.ascontiguousarray(image, np.float32)
    shrinks = image.shape[0] * image.shape[1] > h * w
    method = Image.Resampling.BOX if shrinks else Image.Resampling.BICUBIC
    planes = [
        np.asarray(Image.fromarray(image[..., k].astype(np.float32)).resize((w, h), method))
        for k in range(image.shape[-1])
    ]
    return np.clip(np.stack(planes, axis=-1), 0, 1).astype(np.float32)


def _stem(path: Path) -> str:
    """A file's name without its suffix, ``.ome`` included (``x.ome.tif`` pairs with ``x.png``)."""
    stem = path.stem
    return stem[: -len(".ome")] if stem.lower().endswith(".ome") else stem


def _images(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)


def spatial_split(xs: Sequence[float], width: float, holdout: float, split: Split) -> list[bool]:
    """Which tiles (left edges ``xs``, ``width`` wide) belong to ``split``.

    The rightmost ``holdout`` fraction of tiles is the test set; training tiles end
    left of the first test tile, so no pixel is in both. ``holdout`` 0 keeps all.
    """
    if not 0 <= holdout < 1:
        raise DatasetError(f"holdout must be in [0, 1), got {holdout}")
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    if holdout == 0 or not xs:
        return [split == "train"] * len(xs)
    line = float(np.quantile(xs, 1 - holdout))
    if split == "test":
        return [x >= line for x in xs]
    return [x + width <= line for x in xs]


class PairedTileFolder(Sequence[Sample]):
    """Registered pairs: ``source_dir/x.png`` and ``target_dir/x.png`` share a file stem.

    For an ``mIF:`` target the target files are multichannel (``x.ome.tif``, ``x.tif``,
    ``x.qptiff`` or ``x.npy``), read by :func:`read_markers`: the channels of the target's
    markers, by name, in its order, scaled to [0, 1]. The first pair is read when the
    dataset is made, so a missing marker fails at once.
    """

    def __init__(
        self,
        source_dir: str | os.PathLike,
        target_dir: str | os.PathLike,
        target: str,
        tile_size: int,
    ) -> None:
        mif = is_mif(target)
        sources = {_stem(p): p for p in _images(Path(source_dir))}
        found = _images(Path(target_dir), MARKER_SUFFIXES if mif else IMAGE_SUFFIXES)
        targets = {_stem(p): p for p in found}
        self.stems = sorted(sources.keys() & targets.keys())
        if not self.stems:
            raise DatasetError(f"no file names in common between {source_dir} and {target_dir}")
        self.sources, self.targets = sources, targets
        self.target, self.tile_size = target, tile_size
        if mif:
            read_target(targets[self.stems[0]], target)  # a missing marker fails here

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        stem = self.stems[i]
        return Sample(
            image=fit_target(read_target(self.targets[stem], self.target), self.tile_size),
            source=fit_tile(read_rgb(self.sources[stem]), self.tile_size),
            target=self.target,
            meta={"pair": stem},
        )


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1:
        return image
    h, w = image.shape[:2]
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    return resize(image, shape) if image.dtype == np.uint8 else _resize_float(image, shape)


class SerialSectionPairs(Sequence[Sample]):
    """Paired tiles from two serial sections registered by matching landmarks.

    The moving section (e.g. an IHC) is warped onto the fixed one (the H&E) by the
    least-squares affine map of the landmarks; tiles are cut on a grid where the H&E
    shows tissue and the warped section has data. Landmarks pair by their order (the ANHIR
    convention): points beyond the shorter list have no partner and are left out.
    ``scale`` resamples both sections (and their landmarks) first, e.g. to bring them to
    the model's pixel size. For an ``mIF:`` target the moving section is a multichannel
    file read by :func:`read_markers` (markers by name, scaled to [0, 1]).
    """

    def __init__(
        self,
        fixed_image: str | os.PathLike,
        moving_image: str | os.PathLike,
        fixed_landmarks: str | os.PathLike,
        moving_landmarks: str | os.PathLike,
        target: str,
        tile_size: int,
        *,
        landmark_scale: float = 1.0,
        scale: float = 1.0,
        stride: int | None = None,
        min_tissue: float = 0.5,
        holdout: float = 0.0,
        split: Split = "train",
    ) -> None:
        if scale <= 0:
            raise DatasetError(f"{fixed_image}: scale must be positive, got {scale}")
        fixed = _rescale(read_rgb(fixed_image), scale)
        moving = _rescale(read_target(moving_image, target), scale)
        moving_xy = read_landmarks(moving_landmarks, landmark_scale * scale)
        fixed_xy = read_landmarks(fixed_landmarks, landmark_scale * scale)
        n = min(len(moving_xy), len(fixed_xy))  # pairs by order; extra points are unpaired
        self.registration = register_landmarks(moving_xy[:n], fixed_xy[:n])
        shape = fixed.shape[:2]
        self.fixed = fixed
        if moving.dtype == np.uint8:
            self.warped = self.registration.warp(moving, shape)
        else:  # marker intensities: no signal (0) where the section has no data
            self.warped = self.registration.warp(moving, shape, cval=0.0).astype(np.float32)
        valid = self.registration.valid_mask(moving.shape[:2], shape)
        usable = TissueMap(tissue_mask(fixed) & valid)
        stride = stride or tile_size // 2
        self.boxes = [
            (y, x)
            for y in range(0, shape[0] - tile_size + 1, stride)
            for x in range(0, shape[1] - tile_size + 1, stride)
            if usable.has_tissue(Region(x, y, tile_size, tile_size), min_tissue)
            and valid[y : y + tile_size, x : x + tile_size].all()
        ]
        keep = spatial_split([x for _, x in self.boxes], tile_size, holdout, split)
        self.boxes = [box for box, k in zip(self.boxes, keep, strict=True) if k]
        if not self.boxes:
            raise DatasetError(f"{fixed_image}: no {tile_size}-px tile with enough tissue")
        self.target, self.tile_size = target, tile_size
        self.name = Path(moving_image).stem

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        y, x = self.boxes[i]
        s = self.tile_size
        return Sample(
            image=self.warped[y : y + s, x : x + s].copy(),
            source=self.fixed[y : y + s, x : x + s].copy(),
            target=self.target,
            meta={"section": self.name, "y": y, "x": x},
        )


#: Label table columns that build a caption, in this order.
CAPTION_FIELDS = ("magnification", "stain", "organ", "diagnosis", "description")


def build_caption(row: dict[str, Any]) -> str:
    """A caption from labels and metadata, e.g. '20x H&E, colon, adenocarcinoma'."""
    parts = [str(row[k]).strip() for k in CAPTION_FIELDS if k in row and pd.notna(row[k])]
    parts = [p for p in parts if p]
    if not parts:
        raise DatasetError(f"no caption and none of {CAPTION_FIELDS} to build one: {row}")
    return ", ".join(parts)


class CaptionedTiles(Sequence[Sample]):
    """Tiles with captions or labels from a CSV: a ``path`` column (relative to the CSV)
    plus ``caption``, or label columns (organ, stain, diagnosis, magnification, ...)
    from which a caption is built."""

    def __init__(self, csv: str | os.PathLike, tile_size: int) -> None:
        table = pd.read_csv(csv)
        if "path" not in table.columns:
            raise DatasetError(f"{csv}: needs a 'path' column")
        root = Path(csv).parent
        self.rows = table.to_dict("records")
        for row in self.rows:
            row["path"] = root / str(row["path"])
            if not row["path"].exists():
                raise DatasetError(f"{csv}: {row['path']} does not exist")
            caption = row.get("caption")
            row["caption"] = (
                caption if isinstance(caption, str) and caption.strip() else build_caption(row)
            )
        self.tile_size = tile_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        row = self.rows[i]
        return Sample(
            image=fit_tile(read_rgb(row["path"]), self.tile_size),
            text=row["caption"],
            meta={"path": str(row["path"])},
        )


class SpatialSpots(Sequence[Sample]):
    """Spot-centred H&E tiles paired with the spot's expression (Visium-like data).

    ``coords`` are spot centres in pixels of ``image``; each tile covers
    ``context`` spot diameters and is resized to ``tile_size``.
    """

    def __init__(
        self,
        image: np.ndarray,
        expression: pd.DataFrame,
        coords: np.ndarray,
        spot_diameter: float,
        tile_size: int,
        *,
        context: float = 2.0,
        name: str = "spots",
        holdout: float = 0.0,
        split: Split = "train",
    ) -> None:
        if len(expression) != len(coords):
            raise DatasetError(f"{name}: {len(expression)} expression rows for {len(coords)} spots")
        half = max(4, round(spot_diameter * context / 2))
        h, w = image.shape[:2]
        inside = [
            i for i, (x, y) in enumerate(coords) if half <= x <= w - half and half <= y <= h - half
        ]
        keep = spatial_split([coords[i][0] - half for i in inside], 2 * half, holdout, split)
        inside = [i for i, k in zip(inside, keep, strict=True) if k]
        if not inside:
            raise DatasetError(f"{name}: no spot lies far enough inside the image")
        self.image, self.half, self.tile_size, self.name = image, half, tile_size, name
        self.expression = expression.iloc[inside]
        self.coords = np.asarray(coords)[inside]

    @classmethod
    def from_h5ad(
        cls,
        h5ad: str | os.PathLike,
        image: str | os.PathLike,
        tile_size: int,
        spot_diameter: float | None = None,
        **kwargs: Any,
    ) -> SpatialSpots:
        """AnnData with ``obsm['spatial']`` in pixels of ``image``."""
        import anndata

        adata = anndata.read_h5ad(h5ad)
        if "spatial" not in adata.obsm:
            raise DatasetError(f"{h5ad}: no obsm['spatial'] spot coordinates")
        if spot_diameter is None:
            spot_diameter = _spot_diameter(adata)
        x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        expression = pd.DataFrame(x, index=adata.obs_names, columns=adata.var_names)
        return cls(
            read_rgb(image),
            expression,
            np.asarray(adata.obsm["spatial"], float),
            spot_diameter,
            tile_size,
            name=Path(h5ad).stem,
            **kwargs,
        )

    @classmethod
    def from_spaceranger(
        cls, folder: str | os.PathLike, tile_size: int, image: str = "lowres", **kwargs: Any
    ) -> SpatialSpots:
        """A Space Ranger output folder (filtered matrix .h5, spatial/ with positions)."""
        from napari_mupd.io.visium import read_spaceranger

        spots = read_spaceranger(folder, image=image)
        return cls(
            spots.image,
            spots.expression,
            spots.coords,
            spots.spot_diameter,
            tile_size,
            name=Path(folder).name,
            **kwargs,
        )

    def __len__(self) -> int:
        return len(self.expression)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        x, y = (round(v) for v in self.coords[i])
        tile = self.image[y - self.half : y + self.half, x - self.half : x + self.half]
        row = self.expression.iloc[i]
        return Sample(
            image=fit_tile(tile, self.tile_size),
            rna=row,
            meta={"spot": str(row.name), "dataset": self.name},
        )


def _spot_diameter(adata: Any) -> float:
    try:
        library = next(iter(adata.uns["spatial"].values()))
        scalefactors = library["scalefactors"]
        return float(scalefactors["spot_diameter_fullres"])
    except (KeyError, StopIteration, TypeError) as exc:
        raise DatasetError("spot diameter unknown: pass spot_diameter") from exc


class SlideTiles(Sequence[Sample]):
    """Tiles of an unlabeled slide on a grid, background skipped, read lazily.

    ``mpp`` is the pixel size of the tiles (default: the slide's level 0, or its own
    pixel size when unknown); the nearest finer level is read and resized. A
    ``caption`` may be attached to every tile.
    """

    def __init__(
        self,
        slide: str | os.PathLike,
        tile_size: int,
        *,
        mpp: float | None = None,
        min_tissue: float = 0.5,
        caption: str | None = None,
        holdout: float = 0.0,
        split: Split = "train",
    ) -> None:
        self.slide = open_slide(slide)
        downsample = 1.0
        if mpp is not None and self.slide.mpp is not None:
            downsample = max(1.0, mpp / self.slide.mpp[0])
        self.level = max(i for i, d in enumerate(self.slide.downsamples) if d <= downsample + 1e-6)
        self.read_size = round(tile_size * downsample / self.slide.downsamples[self.level])
        self.step = round(tile_size * downsample)  # level-0 pixels per tile
        tissue = slide_tissue(self.slide)
        width, height = self.slide.dimensions
        step = self.step
        self.boxes = [
            (x, y)
            for y in range(0, height - step + 1, step)
            for x in range(0, width - step + 1, step)
            if tissue.has_tissue(Region(x, y, step, step), min_tissue)
        ]
        keep = spatial_split([x for x, _ in self.boxes], step, holdout, split)
        self.boxes = [box for box, k in zip(self.boxes, keep, strict=True) if k]
        if not self.boxes:
            raise DatasetError(f"{slide}: no {tile_size}-px tile with enough tissue")
        self.tile_size, self.caption = tile_size, caption

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        x, y = self.boxes[i]
        pixels = self.slide.read_region((x, y), self.level, (self.read_size, self.read_size))
        return Sample(
            image=fit_tile(pixels, self.tile_size),
            text=self.caption,
            meta={"slide": self.slide.path.name, "x": x, "y": y},
        )


__all__ = [
    "CaptionedTiles",
    "PairedTileFolder",
    "Sample",
    "SerialSectionPairs",
    "SlideTiles",
    "SpatialSpots",
    "build_caption",
    "build_dataset",
    "fit_target",
    "is_mif",
    "read_markers",
    "read_rgb",
    "read_target",
    "sources",
]


def build_dataset(spec: dict[str, Any], tile_size: int, resolve: Any = Path) -> Sequence[Sample]:
    """A dataset from a config entry ``{type: {arguments}}``; ``resolve`` maps paths.

    Types: ``paired_folders`` (source_dir, target_dir, target), ``serial_sections``
    (fixed_image, moving_image, fixed_landmarks, moving_landmarks, target,
    landmark_scale), ``captioned_tiles`` (csv), ``h5ad_spots`` (h5ad, image),
    ``spaceranger`` (folder), ``slide_tiles`` (slide, mpp, caption).
    """
    if not isinstance(spec, dict) or len(spec) != 1:
        raise DatasetError(f"a dataset entry is one {{type: {{arguments}}}} mapping, got {spec}")
    ((kind, args),) = spec.items()
    args = dict(args or {})
    paths = {
        "source_dir",
        "target_dir",
        "fixed_image",
        "moving_image",
        "fixed_landmarks",
        "moving_landmarks",
        "csv",
        "h5ad",
        "image",
        "folder",
        "slide",
    }
    for key in paths & set(args):
        if not (kind == "spaceranger" and key == "image"):
            args[key] = resolve(args[key])
    builders: dict[str, Callable[..., Sequence[Sample]]] = {
        "paired_folders": PairedTileFolder,
        "serial_sections": SerialSectionPairs,
        "captioned_tiles": CaptionedTiles,
        "h5ad_spots": SpatialSpots.from_h5ad,
        "spaceranger": SpatialSpots.from_spaceranger,
        "slide_tiles": SlideTiles,
    }
    if kind not in builders:
        raise DatasetError(f"unknown dataset type {kind!r}; known: {', '.join(builders)}")
    try:
        return builders[kind](tile_size=tile_size, **args)
    except TypeError as exc:
        raise DatasetError(f"{kind}: {exc}") from exc
