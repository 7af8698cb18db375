"""Training tiles from a slide: real H&E tiles, their virtual stains and synthetic H&E.

An export folder (``<id>`` is ``<slide>_x<X>_y<Y>``, the tile's level-0 top-left)::

    real_he/<id>.png          the real H&E tile, resampled to the model's pixel grid
    virtual_ki67/<id>.png     a virtual stain of that tile (one folder per target)
    synthetic_he/<id>.png     synthetic H&E conditioned on text / RNA / the real tile
    virtual_cd3-cd8/<id>.tif  mIF targets: an OME-TIFF, one named uint8 plane per marker
    rna.csv               the expression profile (gene,value), when one was given
    captions.csv          path,caption of the synthetic H&E made from a prompt
    manifest.csv          one row per written file (:data:`COLUMNS`)
    manifest.json         the same rows, the export's settings and whether it is complete

With an :class:`~napari_mupd.imaging.augment.Augmentation`, each tile also gets
``copies`` augmented copies ``<id>_aug<j>`` (j = 1, 2, ...) beside it in every folder,
made from the written files (the model is not run again): one drawn transform per copy,
its geometric part (flips / rotations, zoom) applied to the real tile and all its targets
alike, its photometric part (stain jitter, brightness / contrast, blur) to the H&E tiles
only (real and synthetic), never to virtual IHC or marker planes, whose values are the
labels. The transform of copy j of the tile at candidate index k is drawn from
``numpy.random.default_rng([seed, k, j])``, so a seed gives the same bytes every time,
and is recorded in the manifest (``copy``, ``augment``).

``PairedTileFolder(out / "real_he", out / "virtual_ki67", "IHC:Ki67", tile_size)`` reads the
pairs as they lie (``PairedTileFolder(out / "real_he", out / "virtual_cd3-cd8",
"mIF:CD3,CD8", tile_size)`` the marker planes, by their OME channel names),
``CaptionedTiles(out / "captions.csv", tile_size)`` the captioned tiles. Files are
written to a temporary name and renamed, so a file that exists is whole: a rerun with the
same settings skips them and finishes the export.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from napari_mupd._version import __version__
from napari_mupd.engine.sampling import Cancel, Progress, sample
from napari_mupd.engine.tissue import slide_tissue
from napari_mupd.engine.virtual_stain import Grid
from napari_mupd.errors import Cancelled, ConditionError, ExportError
from napari_mupd.imaging.augment import Augmentation, Kind, Transform
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.imaging.regions import Region
from napari_mupd.imaging.resize import resize
from napari_mupd.io import Slide

#: Folder of the real H&E tiles; the others are named by `target_folder`.
REAL = "real_he"
MANIFEST_CSV = "manifest.csv"
MANIFEST_JSON = "manifest.json"
RNA_CSV = "rna.csv"
CAPTIONS_CSV = "captions.csv"
#: Columns of the manifest, one row per written file.
COLUMNS = (
    "id",
    "kind",  # real, virtual (a stain of the real tile) or synthetic (generated H&E)
    "target",
    "path",  # relative to the export folder
    "source",  # the real tile a virtual or synthetic tile was made from
    "slide",
    "x",  # level-0 top-left of the tile
    "y",
    "size",  # level-0 pixels the tile covers
    "mpp",  # micrometres per pixel of the tile (empty when the slide's is unknown)
    "tile_size",
    "channels",
    "seed",
    "steps",
    "text",
    "rna",  # rna.csv when an expression profile conditioned the tile
    "rna_genes",  # panel genes found in it, e.g. 6/8
    "copy",  # 0: the tile as cut or made; j >= 1: its augmented copy j
    "augment",  # JSON of the transform applied to this file (empty for copy 0)
    "model",
    "model_hash",
    "napari_mupd_version",
)


@dataclass(frozen=True)
class TileSpot:
    """One tile to export: its place on the grid, on level 0, and its noise seed."""

    id: str
    gx: int  # top-left on the grid
    gy: int
    x: int  # top-left on level 0
    y: int
    seed: int


def target_folder(target: str) -> str:
    """Folder of a target's tiles, named so a real tile is never mistaken for a made one:
    ``H&E`` -> ``synthetic_he``, ``IHC:Ki67`` -> ``virtual_ki67``, ``mIF:CD3,CD8`` ->
    ``virtual_cd3-cd8``."""
    kind, _, markers = target.partition(":")
    if not markers:
        return "synthetic_" + re.sub(r"[^a-z0-9]+", "", kind.lower())
    return "virtual_" + re.sub(r"[^a-z0-9]+", "-", markers.lower()).strip("-")


def plan_tiles(
    slide: Slide,
    grid: Grid,
    tile_size: int,
    *,
    stride: int | None = None,
    count: int | None = None,
    min_tissue: float = 0.5,
    seed: int = 0,
) -> list[TileSpot]:
    """Tiles of ``grid`` with at least ``min_tissue`` tissue (and half inside a polygon).

    Candidates lie ``stride`` grid pixels apart (default: touching); ``count`` picks that
    many of them at random (fixed by ``seed``). Each keeps the seed ``seed + k``, k its
    index among the candidates, so the same settings always give the same tiles.
    """
    t, stride = tile_size, stride or tile_size
    if t < 1 or stride < 1:
        raise ExportError(f"tile size and stride must be positive, got {t} and {stride}")
    if count is not None and count < 1:
        raise ExportError(f"count must be at least 1, got {count}")
    height, width = grid.shape
    if height < t or width < t:
        raise ExportError(
            f"the region ({width}x{height} px at the model's pixel size) is smaller than "
            f"one {t} px tile"
        )
    tissue = slide_tissue(slide)
    polygon = grid.mask()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", slide.path.stem) or "slide"
    spots = []
    for k, (gy, gx) in enumerate(
        (gy, gx)
        for gy in range(0, height - t + 1, stride)
        for gx in range(0, width - t + 1, stride)
    ):
        if polygon is not None and polygon[gy : gy + t, gx : gx + t].mean() < 0.5:
            continue
        area = grid.to_level0(Region(gx, gy, t, t))
        if tissue.has_tissue(area, min_tissue):
            spots.append(TileSpot(f"{stem}_x{area.x}_y{area.y}", gx, gy, area.x, area.y, seed + k))
    if not spots:
        raise ExportError(
            f"{slide.path.name}: no {t} px tile in the region has {min_tissue:.0%} tissue; "
            "choose a region over tissue or lower min_tissue"
        )
    if count is not None and count < len(spots):
        picked = np.random.default_rng(seed).choice(len(spots), count, replace=False)
        spots = [spots[i] for i in sorted(picked)]
    return spots


def plan_export(
    slide: Slide,
    region: Region | None,
    *,
    tile_size: int,
    mpp: float | None,
    stride: int | None = None,
    count: int | None = None,
    min_tissue: float = 0.5,
    seed: int = 0,
) -> tuple[Grid, list[TileSpot]]:
    """The grid at ``mpp`` over ``region`` (default: the whole slide; clipped to it) and
    the tiles :func:`plan_tiles` picks on it: the tiles `export_tiles` cuts with these
    settings, e.g. to preview them (:func:`tile_regions`)."""
    if seed < 0:
        raise ExportError(f"seed must be 0 or more, got {seed}")
    if region is None:
        width, height = slide.dimensions
        region = Region(0, 0, width, height)
    grid = Grid.for_region(slide, region.clip(slide.dimensions, slide.path.name), mpp)
    spots = plan_tiles(
        slide, grid, tile_size, stride=stride, count=count, min_tissue=min_tissue, seed=seed
    )
    return grid, spots


def tile_regions(grid: Grid, spots: Sequence[TileSpot], tile_size: int) -> list[Region]:
    """The level-0 region each tile of ``spots`` covers (``tile_size`` grid pixels)."""
    return [grid.to_level0(Region(s.gx, s.gy, tile_size, tile_size)) for s in spots]


def export_tiles(
    slide: Slide,
    region: Region | None,
    pipe: Any,
    out_dir: str | os.PathLike,
    *,
    tile_size: int | None = None,
    count: int | None = None,
    stride: int | None = None,
    targets: Sequence[str] = ("H&E",),
    text: str | None = None,
    rna: Any = None,
    use_reference: bool = True,
    seed: int = 0,
    steps: int | None = None,
    min_tissue: float = 0.5,
    mpp: float | None = None,
    augment: Augmentation | None = None,
    copies: int = 1,
    progress: Progress | None = None,
    cancel: Cancel = lambda: False,
) -> Path:
    """Export tissue tiles of ``region`` (default: the whole slide) and what ``pipe`` makes.

    For every tile: the real H&E, and per target a virtual stain of it (IHC, mIF) or
    synthetic H&E (``"H&E"``; conditioned on ``text``, ``rna`` and, with
    ``use_reference``, the real tile). ``text`` and ``rna`` (one profile: a mapping gene
    -> value, a Series or a CSV) condition every generated tile. Tiles are ``tile_size``
    px (default: the model's) at ``mpp`` (default: the model's). With ``augment`` (when
    any of it is on), ``copies`` augmented copies of every tile and its targets follow
    (see the module). Reruns with the same settings skip finished files;
    :class:`Cancelled` stops within one tile, leaving a manifest of what was written.
    Returns the path of ``manifest.csv``.
    """
    config = pipe.config
    t = tile_size or config.resolution
    multiple = 8 * config.patch_size
    if t % multiple:
        raise ExportError(f"tile size must be a multiple of {multiple} px, got {t}")
    if not targets:
        raise ExportError("choose at least one target (H&E, IHC:<marker> or mIF:<markers>)")
    specs = [config.resolve_target(target) for target in targets]  # ConditionError if unknown
    if text is not None and not text.strip():
        raise ConditionError("text: the prompt is empty; give words or no prompt")
    if copies < 1:
        raise ExportError(f"copies must be at least 1, got {copies}")
    if augment is not None and not augment.active:
        augment = None
    profile, report = _profile(rna, config)
    if region is None:
        width, height = slide.dimensions
        region = Region(0, 0, width, height)
    grid, spots = plan_export(
        slide,
        region,
        tile_size=t,
        mpp=mpp if mpp is not None else config.mpp,
        stride=stride,
        count=count,
        min_tissue=min_tissue,
        seed=seed,
    )
    steps_of = {s.name: steps or config.default_steps.get(s.kind, 25) for s in specs}
    tile_mpp = None if slide.mpp is None else round(slide.mpp[0] * grid.downsample, 6)
    settings = {
        "slide": str(slide.path),
        "region": [region.x, region.y, region.width, region.height],
        "polygon": region.polygon,
        "mpp": tile_mpp,
        "tile_size": t,
        "stride": stride or t,
        "count": count,
        "min_tissue": min_tissue,
        "targets": [s.name for s in specs],
        "text": text,
        "rna": None if profile is None else _digest(profile),
        "use_reference": use_reference,
        "seed": seed,
        "steps": steps_of,
        "model": config.name,
        "model_hash": pipe.model_hash,
        "augment": None if augment is None else {**augment.to_dict(), "copies": copies},
    }
    settings = json.loads(json.dumps(settings))
    out = Path(out_dir)
    _claim(out, settings)
    if profile is not None and not (out / RNA_CSV).exists():
        _atomic(
            out / RNA_CSV, lambda tmp: profile.to_csv(tmp, header=["value"], index_label="gene")
        )
    common = {
        "slide": str(slide.path),
        "size": round(t * grid.downsample),
        "mpp": tile_mpp,
        "tile_size": t,
        "model": config.name,
        "model_hash": settings["model_hash"],
        "napari_mupd_version": __version__,
    }
    rows: list[dict[str, Any]] = []
    n_copies = copies if augment is not None else 0
    total, done = len(spots) * (1 + len(specs)) * (1 + n_copies), 0
    complete = False
    try:
        for spot in spots:
            if cancel():
                raise Cancelled("cancelled")
            real = grid.read(slide, Region(spot.gx, spot.gy, t, t))
            source = f"{REAL}/{spot.id}.png"
            base = {**common, "id": spot.id, "x": spot.x, "y": spot.y, "copy": 0}
            if not (out / source).exists():
                _save(out / source, real)
            row = _row({**base, "kind": "real", "target": "H&E", "path": source})
            made: list[_Made] = [_Made(row, "he", real)]
            rows.append(row)
            done += 1
            _report(progress, done, total)
            for spec in specs:
                if cancel():
                    raise Cancelled("cancelled")
                suffix = ".tif" if spec.kind == "mIF" else ".png"
                row = {
                    **base,
                    "kind": "virtual" if spec.uses_source else "synthetic",
                    "target": spec.name,
                    "path": f"{target_folder(spec.name)}/{spot.id}{suffix}",
                    "source": source,
                    "channels": ",".join(spec.markers) if spec.kind == "mIF" else "R,G,B",
                    "seed": spot.seed,
                    "steps": steps_of[spec.name],
                    "text": text,
                    "rna": RNA_CSV if profile is not None else None,
                    "rna_genes": _genes(report),
                }
                tile = None
                if not (out / row["path"]).exists():
                    image = real if spec.uses_source or use_reference else None
                    conditions = {"text": text, "rna": profile, "image": image}
                    tile = _generate(pipe, spec, conditions, t, spot.seed, row["steps"], cancel)
                    _save(out / row["path"], tile, spec.markers if spec.kind == "mIF" else ())
                made.append(_Made(_row(row), "he" if spec.kind == "H&E" else "intensity", tile))
                rows.append(made[-1].row)
                done += 1
                _report(progress, done, total)
            for j in range(1, n_copies + 1):
                assert augment is not None
                transform = augment.draw(np.random.default_rng([seed, spot.seed - seed, j]))
                for item in made:
                    if cancel():
                        raise Cancelled("cancelled")
                    rows.append(_augmented_copy(out, item, transform, j))
                    done += 1
                    _report(progress, done, total)
        complete = True
    finally:
        _write_manifest(out, rows, settings, report, complete)
    return out / MANIFEST_CSV


@dataclass
class _Made:
    """A file of one tile (its manifest row), how it is augmented, its pixels if at hand."""

    row: dict[str, Any]
    kind: Kind
    pixels: np.ndarray | None


def _copy_path(path: str, j: int) -> str:
    """``folder/<id>.png`` -> ``folder/<id>_aug<j>.png``."""
    folder, _, name = path.rpartition("/")
    stem, dot, suffix = name.rpartition(".")
    return f"{folder}/{stem}_aug{j}{dot}{suffix}"


def _augmented_copy(out: Path, item: _Made, transform: Transform, j: int) -> dict[str, Any]:
    """Write copy ``j`` of ``item`` (unless it exists) and return its manifest row."""
    row = item.row
    path = _copy_path(row["path"], j)
    if not (out / path).exists():
        if item.pixels is None:  # written by an earlier run: read it back (lossless)
            item.pixels = read_tile(out / row["path"])
        names = row["channels"].split(",") if row["path"].endswith(".tif") else ()
        _save(out / path, transform.apply(item.pixels, item.kind), names)
    return {
        **row,
        "id": f"{row['id']}_aug{j}",
        "path": path,
        # the augmented tile a copy pairs with; for the real tile, its original
        "source": row["path"] if row["kind"] == "real" else _copy_path(row["source"], j),
        "copy": j,
        "augment": json.dumps(transform.to_dict(item.kind), sort_keys=True),
    }


def _profile(rna: Any, config: Any) -> tuple[Any, Any]:
    """One expression profile as a Series gene -> value, and what the model found in it."""
    if rna is None:
        return None, None
    from napari_mupd.model.encoders.rna import expression_features, read_expression

    frame = read_expression(rna)
    if len(frame) != 1:
        raise ConditionError(f"rna: give one expression profile, got {len(frame)} rows")
    profile = frame.iloc[0]
    report = expression_features(profile, config.genes, config.gene_sets).report
    return profile, report


def _digest(profile: Any) -> str:
    """sha256 of a profile's genes and values (what the settings compare)."""
    text = profile.to_csv(header=False, float_format="%.9g")
    return hashlib.sha256(text.encode()).hexdigest()


def _genes(report: Any) -> str | None:
    if report is None:
        return None
    return f"{len(report.found)}/{len(report.found) + len(report.missing)}"


def _claim(out: Path, settings: dict[str, Any]) -> None:
    """Create ``out``, or check that it holds an export with these very settings."""
    manifest = out / MANIFEST_JSON
    if manifest.is_file():
        try:
            existing = json.loads(manifest.read_text(encoding="utf-8")).get("settings")
        except (OSError, ValueError) as exc:
            raise ExportError(f"{manifest} cannot be read: {exc}") from exc
        if existing != settings:
            differ = sorted(k for k in settings if (existing or {}).get(k) != settings[k])
            raise ExportError(
                f"{out} holds another export (different {', '.join(differ)}); "
                "choose an empty folder or delete it"
            )
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} is not empty and holds no export; choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, [], settings, None, False)


def _generate(
    pipe: Any,
    spec: Any,
    conditions: dict[str, Any],
    size: int,
    seed: int,
    steps: int,
    cancel: Cancel,
) -> np.ndarray:
    """One tile of ``spec`` as uint8 (H, W, C); raises :class:`Cancelled` mid-sampling."""
    image = conditions["image"]
    if image is not None and not spec.uses_source:  # a reference tile at the model's size
        image = resize(image, (pipe.config.resolution, pipe.config.resolution))
    result = sample(
        pipe,
        cancel,
        text=conditions["text"],
        rna=conditions["rna"],
        image=image,
        target=spec.name,
        height=None if spec.uses_source else size,
        width=None if spec.uses_source else size,
        num_inference_steps=steps,
        generator=seed,
    )
    return to_uint8(result.images[0])


def _save(path: Path, pixels: np.ndarray, channels: Sequence[str] = ()) -> None:
    """Write a tile atomically: PNG, or a (C, H, W) OME-TIFF for marker channels, named
    ``channels`` (what :func:`~napari_mupd.io.open_slide` and the mIF training datasets
    read the markers by). The OME UUID is derived from the name and the pixels, not drawn,
    so a seed still gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tif":
        import tifffile

        planes = np.ascontiguousarray(np.moveaxis(pixels, -1, 0))
        digest = hashlib.sha256(planes.tobytes()).hexdigest()
        uid = uuid.uuid5(uuid.NAMESPACE_URL, f"napari-mupd:{path.name}:{digest}")
        metadata: dict[str, Any] = {"axes": "CYX", "UUID": f"urn:uuid:{uid}"}
        if channels:
            metadata["Channel"] = {"Name": list(channels)}
        _atomic(
            path,
            lambda tmp: tifffile.imwrite(
                tmp, planes, ome=True, photometric="minisblack", metadata=metadata
            ),
        )
    else:
        _atomic(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def read_tile(path: str | os.PathLike) -> np.ndarray:
    """A tile of an export as (H, W, C) uint8: a PNG, or a (C, H, W) TIFF of markers."""
    path = Path(path)
    if path.suffix == ".tif":
        import tifffile

        planes = tifffile.imread(path)
        return np.moveaxis(planes if planes.ndim == 3 else planes[None], 0, -1)
    with Image.open(path) as image:
        return np.asarray(image)


def _row(values: dict[str, Any]) -> dict[str, Any]:
    """A manifest row: every column, in order (RGB unless told otherwise)."""
    return {c: values.get(c) for c in COLUMNS} | {"channels": values.get("channels", "R,G,B")}


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write`` to a temporary name beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _write_manifest(
    out: Path, rows: list[dict[str, Any]], settings: dict[str, Any], report: Any, complete: bool
) -> None:
    """manifest.json (settings, rows, completeness) and manifest.csv (rows), atomically."""
    manifest = {
        "napari_mupd_version": __version__,
        "complete": complete,
        "settings": settings,
        "rna": None if report is None else {"file": RNA_CSV, **report.to_dict()},
        "columns": list(COLUMNS),
        "tiles": rows,
    }
    text = json.dumps(manifest, indent=2) + "\n"
    _atomic(out / MANIFEST_JSON, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    _atomic(out / MANIFEST_CSV, lambda tmp: _write_csv(tmp, rows, COLUMNS))
    captions = [
        {"path": r["path"], "caption": r["text"]}
        for r in rows
        if r["kind"] == "synthetic" and r["text"]
    ]
    if captions:
        _atomic(out / CAPTIONS_CSV, lambda tmp: _write_csv(tmp, captions, ("path", "caption")))


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


__all__ = [
    "COLUMNS",
    "TileSpot",
    "export_tiles",
    "plan_export",
    "plan_tiles",
    "read_tile",
    "target_folder",
    "tile_regions",
]
