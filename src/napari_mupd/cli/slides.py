"""``mupd info`` and ``mupd demo``: slides in, summaries and previews out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_mupd.errors import SlideError
from napari_mupd.io import Slide, open_slide
from napari_mupd.resources import sample_slide_path


def slide_summary(slide: Slide) -> dict[str, Any]:
    """A JSON-ready description of a slide: levels, pixel size, vendor, images."""
    return {
        "path": str(slide.path),
        "vendor": slide.vendor,
        "dimensions": list(slide.dimensions),
        "mpp": list(slide.mpp) if slide.mpp else None,
        "objective_power": slide.metadata.get("objective_power"),
        "levels": [
            {
                "shape": list(level.shape),
                "downsample": round(level.downsample, 4),
                "tile": list(level.tile),
                "native": level.native,
            }
            for level in slide.level_info
        ],
        "associated_images": slide.metadata.get("associated_images", []),
        "kind": "multichannel" if slide.multichannel else "brightfield",
        "channels": [c.as_dict() for c in slide.channels],
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable form of :func:`slide_summary`."""
    mpp = summary["mpp"]
    lines = [
        f"file        {summary['path']}",
        f"vendor      {summary['vendor']}",
        f"size        {summary['dimensions'][0]} x {summary['dimensions'][1]} px (w x h)",
        f"pixel size  {f'{mpp[1]:.4g} x {mpp[0]:.4g} um/px (x, y)' if mpp else 'unknown'}",
        f"objective   {summary['objective_power'] or 'unknown'}",
        f"associated  {', '.join(summary['associated_images']) or 'none'}",
    ]
    channels = summary.get("channels") or []
    if channels:
        lines.append(f"channels    {len(channels)} ({channels[0]['dtype']})")
        for c in channels:
            extra = [
                f"{label} {c[key]:g}{unit}"
                for key, label, unit in (
                    ("excitation", "ex", " nm"),
                    ("emission", "em", " nm"),
                    ("exposure", "exposure", ""),
                )
                if c.get(key)
            ]
            if c.get("fluor"):
                extra.insert(0, str(c["fluor"]))
            lines.append(
                f"  {c['index']:>3}  {c['name']:<16} #{c['color']}"
                + (f"  {', '.join(extra)}" if extra else "")
            )
    else:
        lines.append("channels    RGB (brightfield)")
    lines.append("level  height x width   downsample  tile       stored")
    for i, level in enumerate(summary["levels"]):
        (h, w), (th, tw) = level["shape"], level["tile"]
        stored = "yes" if level["native"] else "computed"
        lines.append(
            f"{i:>5}  {h:>7} x {w:<7} {level['downsample']:>10.3f}  {th:>4} x {tw:<4} {stored}"
        )
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    """``mupd info``: print a slide's pyramid and metadata."""
    if args.slide is None:
        raise SlideError(
            "mupd info needs a slide: a file (.svs, .tif/.tiff, .ndpi, .mrxs, .scn, .dcm, "
            f"...) or an OME-Zarr folder; e.g. the sample: mupd info {sample_slide_path()}"
        )
    with open_slide(args.slide) as slide:
        summary = slide_summary(slide)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``mupd demo``: virtually stain a region of the bundled slide with the bundled model."""
    import numpy as np
    from PIL import Image

    from napari_mupd.cli.stain import result_structure
    from napari_mupd.engine.sampling import PipelineTileModel
    from napari_mupd.engine.tissue import most_tissue_region
    from napari_mupd.engine.virtual_stain import stain_region
    from napari_mupd.io.ome_zarr import write_ome_zarr
    from napari_mupd.model.loading import load_pipeline

    pipe = load_pipeline(args.model, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = PipelineTileModel(pipe, args.target, steps=args.steps)
    with open_slide(sample_slide_path()) as slide:
        print(format_summary(slide_summary(slide)))
        region = most_tissue_region(slide, args.size)
        print(
            f"\nstaining {model.target} on x={region.x} y={region.y} "
            f"{region.width}x{region.height} px with {pipe.config.name} on {pipe.device}: "
            f"the model reads the tissue at {model.mpp:g} um/px and draws the stain on the "
            f"slide's own cells at {slide.mpp[0] if slide.mpp else model.mpp:g} um/px ..."
        )
        out_mpp = slide.mpp[0] if slide.mpp else None
        result = stain_region(slide, region, model, seed=args.seed, output_mpp=out_mpp)
    score = result_structure(result)
    zarr_path = out / f"{model.target.replace(':', '-')}.ome.zarr"
    write_ome_zarr(
        zarr_path,
        result.image,
        result.channels,
        scale=result.scale,
        translate=result.translate,
        units=result.units,
        attrs=result.metadata,
    )
    assert result.source is not None  # stain_region reads it
    preview = out / "preview.png"
    Image.fromarray(np.concatenate([result.source, result.rgb_uint8()], axis=1)).save(preview)
    print(f"done in {result.metadata['seconds']:.1f} s")
    if score is not None:
        print(
            f"structure r {score:.2f}: how closely the stain's nuclei follow the H&E's "
            "(1 = the same cells; see docs/model_card.md)"
        )
    print(f"virtual stain: {zarr_path.resolve()}")
    print(f"side by side:  {preview.resolve()} (H&E | virtual {model.target})")
    if args.view:
        import napari

        from napari_mupd.plugin.layers import show_demo

        show_demo(napari.Viewer(), zarr_path, f"virtual {model.target}")
        napari.run()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``info`` and ``demo``."""
    info = sub.add_parser("info", help="describe a slide: levels, pixel size, vendor")
    info.add_argument("slide", nargs="?", help="slide file or OME-Zarr folder")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=cmd_info)

    demo = sub.add_parser("demo", help="virtually stain the bundled sample with the bundled model")
    demo.add_argument("--out", default="mupd-demo", help="output folder (default: mupd-demo)")
    demo.add_argument("--target", default="IHC:Ki67", help="a staining target of the model")
    demo.add_argument("--size", type=int, default=512, help="side of the region, level-0 px")
    demo.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--model", help="checkpoint folder (default: the bundled one)")
    demo.add_argument("--device", help="cpu, cuda, mps (default: auto)")
    demo.add_argument("--view", action="store_true", help="open the result in napari")
    demo.set_defaults(func=cmd_demo)
