"""``mupd stain``: virtual staining of a region or a whole slide."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_mupd.errors import OutputError, RegionError, SlideError
from napari_mupd.imaging.regions import Region

if TYPE_CHECKING:
    from napari_mupd.engine.jobs import JobSpec
    from napari_mupd.engine.virtual_stain import StainResult
    from napari_mupd.io import Slide

#: The structure score of a whole-slide output is read off its finest level at most this
#: many pixels across (and the slide at the same grid).
STRUCTURE_SIDE = 2048


def parse_roi(text: str | None) -> Region | None:
    """The region of ``--roi x,y,w,h`` (level-0 pixels), or None for the whole slide."""
    if text is None:
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise RegionError(f"--roi must be x,y,w,h in level-0 pixels, got {text!r}") from exc
    return Region(x, y, w, h)


def output_format(out: str, fmt: str | None) -> str:
    """'ome-zarr', 'ome-tiff' or 'flat' from ``--format`` or the output's suffix."""
    name = out.lower().rstrip("/")
    if fmt:
        return fmt
    if name.endswith(".ome.zarr") or name.endswith(".zarr"):
        return "ome-zarr"
    if name.endswith((".ome.tif", ".ome.tiff")):
        return "ome-tiff"
    if name.endswith((".png", ".tif", ".tiff")):
        return "flat"
    raise OutputError(
        f"cannot tell the format of {out!r}: end it in .ome.zarr, .ome.tif, .png or .tif"
    )


def output_mpp(text: str, slide: Slide) -> float | None:
    """``--output-mpp``: 'slide' (the slide's own pixel size), 'model' (None: the model's
    grid) or a number of micrometres per pixel."""
    if text == "model":
        return None
    if text == "slide":
        return slide.mpp[0] if slide.mpp else None
    try:
        value = float(text)
    except ValueError as exc:
        raise RegionError(
            f"--output-mpp must be 'slide', 'model' or a number, not {text!r}"
        ) from exc
    if value <= 0:
        raise RegionError(f"--output-mpp must be positive, got {value}")
    return value


def check_source_mpp(slide: Slide, given: str | None) -> float | None:
    """``--source-mpp`` when the slide needs it: a number, or "estimate" (from the size of
    its nuclei, printed); a slide without a pixel size and without it is refused (the
    model would read it at a wrong scale)."""
    if given is None:
        if slide.mpp is None:
            raise SlideError(
                f"{slide.path.name} does not say its pixel size, and the model reads tissue "
                "at a fixed one: give --source-mpp (micrometres per pixel; about 0.25 for a "
                "40x scan, 0.5 for 20x) or --source-mpp estimate"
            )
        return None
    if given == "estimate":
        from napari_mupd.engine.tissue import estimate_slide_mpp

        mpp, region = estimate_slide_mpp(slide)
        print(
            f"{slide.path.name}: about {mpp:.3g} um/px, estimated from nuclear size in "
            f"{region.width} x {region.height} px at {region.x},{region.y} (an estimate: "
            "within ~30 %, check it)"
        )
        return mpp
    try:
        value = float(given)
    except ValueError:
        value = float("nan")
    if not 0 < value < 100:
        raise SlideError(
            f"--source-mpp must be micrometres per pixel (e.g. 0.5) or 'estimate', got {given}"
        )
    return value


def cmd_stain(args: argparse.Namespace) -> int:
    """Stain ``--roi`` (default: the whole slide) and write it as ``--out`` says."""
    from napari_mupd.io import open_slide
    from napari_mupd.model.config import MuPDConfig
    from napari_mupd.resources import resolve_model

    # arguments first, in a second, before torch and the model load
    fmt = output_format(args.out, args.format)
    model = resolve_model(args.model)
    MuPDConfig.load(model).resolve_target(args.target)
    region = parse_roi(args.roi)
    with open_slide(args.slide) as slide:
        source_mpp = check_source_mpp(slide, args.source_mpp)
        if source_mpp is not None:
            slide.mpp = (source_mpp, source_mpp)
        out_mpp = output_mpp(args.output_mpp, slide)
        if region is not None:
            region.check_within(slide.dimensions, slide.path.name)

    from tqdm.auto import tqdm

    from napari_mupd.engine.jobs import JobSpec, run_job
    from napari_mupd.model.loading import check_device

    device = check_device(args.device)
    spec = JobSpec(
        slide=str(Path(args.slide).resolve()),
        model=str(model),
        target=args.target,
        out=str(Path(args.out).resolve()),
        region=region,
        text=args.text,
        steps=args.steps,
        seed=args.seed,
        samples=args.samples,
        mpp=args.mpp,
        output_mpp=out_mpp,
        source_mpp=source_mpp,
        guidance=args.guidance,
        device=device,
    )
    if fmt == "flat":
        return _stain_flat(spec)
    zarr_out = spec.out if fmt == "ome-zarr" else spec.out + ".partial.ome.zarr"
    job = JobSpec(**{**spec.__dict__, "out": zarr_out})
    with tqdm(desc="stain", unit="chunk", disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        run_job(
            job,
            workers=args.workers,
            scheduler=args.scheduler,
            overwrite=args.overwrite,
            progress=progress,
        )
    score = _job_structure(job)
    if fmt == "ome-tiff":
        _zarr_to_ome_tiff(Path(zarr_out), Path(spec.out))
        shutil.rmtree(zarr_out)
    print(f"wrote {spec.out}{_structure_note(score)}")
    return 0


def _structure_note(score: float | None) -> str:
    if score is None:
        return ""
    return f"; structure r {score:.2f} (nuclei kept from the source H&E; 1 = all of them)"


def _job_structure(spec: JobSpec) -> float | None:
    """The structure score of a finished IHC job, on its finest level at most
    `STRUCTURE_SIDE` px across, written into the output's provenance."""
    import numpy as np
    import zarr

    from napari_mupd.eval.structure import structure_or_none
    from napari_mupd.imaging.resize import resize
    from napari_mupd.io import open_slide

    group: Any = zarr.open_group(spec.out, mode="r+")
    if [c["label"] for c in group.attrs["omero"]["channels"]] != ["R", "G", "B"]:
        return None  # mIF: a structure score needs a nuclear channel by name
    paths = [d["path"] for d in group.attrs["multiscales"][0]["datasets"]]
    level = next((p for p in paths if max(group[p].shape[1:]) <= STRUCTURE_SIDE), paths[-1])
    virtual = np.moveaxis(np.asarray(group[level][:]), 0, -1)
    with open_slide(spec.slide) as slide:
        w, h = slide.dimensions
        region = spec.region or Region(0, 0, w, h)
        factor = region.width / virtual.shape[1]
        lvl = max(i for i, d in enumerate(slide.downsamples) if d <= factor + 1e-6)
        ds = slide.downsamples[lvl]
        size = (max(1, round(region.width / ds)), max(1, round(region.height / ds)))
        source = resize(slide.read_region((region.x, region.y), lvl, size), virtual.shape[:2])
    score = structure_or_none(virtual, source)
    if score is None:
        return None
    group.attrs["napari_mupd"] = {**group.attrs["napari_mupd"], "structure_r": score}
    return score


def _stain_flat(spec: JobSpec) -> int:
    from napari_mupd.engine.sampling import PipelineTileModel
    from napari_mupd.engine.virtual_stain import stain_region
    from napari_mupd.io import open_slide
    from napari_mupd.io.writers import write_flat
    from napari_mupd.model.loading import load_pipeline

    pipe = load_pipeline(spec.model, spec.device)
    model = PipelineTileModel(
        pipe, spec.target, text=spec.text, steps=spec.steps, guidance=spec.guidance, mpp=spec.mpp
    )
    with open_slide(spec.slide) as slide:
        if spec.source_mpp is not None:
            slide.mpp = (spec.source_mpp, spec.source_mpp)
        w, h = slide.dimensions
        region = spec.region or Region(0, 0, w, h)
        result = stain_region(
            slide,
            region,
            model,
            seed=spec.seed,
            samples=spec.samples,
            output_mpp=spec.output_mpp,
        )
    score = result_structure(result)
    write_flat(spec.out, result.image, result.channels)
    print(
        f"wrote {spec.out} ({result.image.shape[1]}x{result.image.shape[0]} px, "
        f"{result.scale[1]:.3g} {result.units}/px){_structure_note(score)}"
    )
    return 0


def result_structure(result: StainResult) -> float | None:
    """The structure score of a stained region (IHC), also put in its metadata."""
    from napari_mupd.eval.structure import structure_or_none

    if result.channels != ("R", "G", "B") or result.source is None:
        return None
    score = structure_or_none(result.rgb_uint8(), result.source)
    result.metadata["structure_r"] = score
    return score


def _zarr_to_ome_tiff(zarr_path: Path, out: Path) -> None:
    from napari_mupd.io.ome_zarr import read_ome_zarr
    from napari_mupd.io.writers import write_ome_tiff

    image = read_ome_zarr(zarr_path)
    write_ome_tiff(out, image.levels, image.channels, mpp=image.mpp, description=image.attrs)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``stain``."""
    st = sub.add_parser("stain", help="virtually stain a region or a whole slide")
    st.add_argument("slide")
    st.add_argument(
        "--target",
        required=True,
        help=f"IHC:<marker> or mIF:<m1>,<m2>,... (the bundled model: {bundled_targets()})",
    )
    st.add_argument("--roi", help="x,y,w,h in level-0 pixels (default: the whole slide)")
    st.add_argument("--text", help="an optional caption condition")
    st.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--samples", type=int, default=1, help=">1: mean and per-pixel std")
    st.add_argument("--guidance", type=float, default=1.0)
    st.add_argument("--mpp", type=float, help="pixel size to stain at (default: the model's)")
    st.add_argument(
        "--source-mpp",
        help="the slide's pixel size in micrometres, when its file does not say (required "
        "then), or 'estimate' (from the size of its nuclei)",
    )
    st.add_argument(
        "--output-mpp",
        default="slide",
        help="pixel size IHC is drawn at, on the source's own cells: 'slide' (default: the "
        "slide's own), 'model' (the model's grid) or micrometres per pixel",
    )
    st.add_argument("--model", help="checkpoint folder (default: the bundled one)")
    st.add_argument("--device", help="cpu, cuda, mps (default: auto)")
    st.add_argument(
        "--workers", type=int, help="local dask workers (default: one per GPU, else one)"
    )
    st.add_argument("--scheduler", help="address of an existing dask scheduler")
    st.add_argument("--format", choices=["ome-zarr", "ome-tiff", "flat"])
    st.add_argument("--overwrite", action="store_true", help="replace another job's output")
    st.add_argument("--out", required=True, help="OUT.ome.zarr, OUT.ome.tif, OUT.png or OUT.tif")
    st.set_defaults(func=cmd_stain)


def bundled_targets() -> str:
    """The bundled checkpoint's virtual-staining targets, for ``--help`` (read from its
    config.json; no model is loaded)."""
    import json

    from napari_mupd.resources import bundled_model_path

    try:
        config = json.loads((bundled_model_path() / "config.json").read_text())
    except (OSError, ValueError):
        return "not installed"
    return ", ".join(t for t in config.get("targets", []) if not t.upper().startswith("H"))
