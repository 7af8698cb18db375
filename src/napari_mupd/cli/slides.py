"""``mupd info`` and ``mupd demo``: slides in, summaries and previews out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

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
        "level  height x width   downsample  tile       stored",
    ]
    for i, level in enumerate(summary["levels"]):
        (h, w), (th, tw) = level["shape"], level["tile"]
        stored = "yes" if level["native"] else "computed"
        lines.append(
            f"{i:>5}  {h:>7} x {w:<7} {level['downsample']:>10.3f}  {th:>4} x {tw:<4} {stored}"
        )
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    """``mupd info``: print a slide's pyramid and metadata."""
    with open_slide(args.slide) as slide:
        summary = slide_summary(slide)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``mupd demo``: open the bundled sample slide and write a preview PNG."""
    from PIL import Image

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open_slide(sample_slide_path()) as slide:
        print(format_summary(slide_summary(slide)))
        preview = out / "preview.png"
        Image.fromarray(slide.thumbnail(args.size)).save(preview)
    print(f"\npreview written to {preview.resolve()}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``info`` and ``demo``."""
    info = sub.add_parser("info", help="describe a slide: levels, pixel size, vendor")
    info.add_argument("slide", help="slide file or OME-Zarr folder")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=cmd_info)

    demo = sub.add_parser("demo", help="run the main job on the bundled sample slide")
    demo.add_argument("--out", default="mupd-demo", help="output folder (default: mupd-demo)")
    demo.add_argument("--size", type=int, default=1024, help="longer side of the preview")
    demo.set_defaults(func=cmd_demo)
