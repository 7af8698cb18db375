"""``mupd export-tiles``: real tiles of a slide with virtual stains and synthetic H&E."""

from __future__ import annotations

import argparse
import csv
import sys


def cmd_export_tiles(args: argparse.Namespace) -> int:
    """Export tissue tiles of ``--roi`` (default: the whole slide) into ``--out``."""
    from tqdm.auto import tqdm

    from napari_mupd.cli.generate import read_rna
    from napari_mupd.cli.stain import parse_roi
    from napari_mupd.engine.export import export_tiles
    from napari_mupd.io import open_slide
    from napari_mupd.model.loading import load_pipeline

    roi = parse_roi(args.roi)
    pipe = load_pipeline(args.model, args.device)
    with open_slide(args.slide) as slide, tqdm(desc="export", unit="file", disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        manifest = export_tiles(
            slide,
            roi,
            pipe,
            args.out,
            tile_size=args.tile_size,
            count=args.n,
            stride=args.stride,
            targets=args.target or ["H&E"],
            text=args.text,
            rna=read_rna(args.rna, args.spot) if args.rna else None,
            use_reference=not args.no_reference,
            seed=args.seed,
            steps=args.steps,
            min_tissue=args.min_tissue,
            mpp=args.mpp,
            progress=progress,
        )
    print(f"wrote {manifest}")
    real = sum(1 for row in csv.DictReader(manifest.open()) if row["kind"] == "real")
    if args.n is not None and real < args.n:
        print(
            f"warning: only {real} of the {args.n} tiles asked for fit: tiles with at least "
            f"{args.min_tissue:.0%} tissue in the region (a larger region or a lower "
            "--min-tissue gives more)",
            file=sys.stderr,
        )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``export-tiles``."""
    ex = sub.add_parser(
        "export-tiles", help="training tiles: real H&E, virtual stains, synthetic H&E + manifest"
    )
    ex.add_argument("slide")
    ex.add_argument("--out", required=True, help="output folder (a rerun resumes it)")
    ex.add_argument(
        "--target",
        action="append",
        help="H&E (synthetic), IHC:<marker> or mIF:<m1>,<m2>; repeat for several (default H&E)",
    )
    ex.add_argument("--roi", help="x,y,w,h in level-0 pixels (default: the whole slide)")
    ex.add_argument("--n", type=int, help="number of tiles, picked at random (default: all)")
    ex.add_argument("--stride", type=int, help="pixels between tiles (default: the tile size)")
    ex.add_argument("--tile-size", type=int, help="tile side in pixels (default: the model's)")
    ex.add_argument("--min-tissue", type=float, default=0.5, help="tissue fraction per tile")
    ex.add_argument("--mpp", type=float, help="pixel size of the tiles (default: the model's)")
    ex.add_argument("--text", help="a prompt for the generated tiles")
    ex.add_argument("--rna", help="expression: CSV (gene,value) or .h5ad")
    ex.add_argument("--spot", help="the spot (obs name) of an .h5ad to use")
    ex.add_argument(
        "--no-reference", action="store_true", help="synthetic H&E without the real tile"
    )
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ex.add_argument("--model", help="checkpoint folder (default: the bundled one)")
    ex.add_argument("--device", help="cpu, cuda, mps (default: auto)")
    ex.set_defaults(func=cmd_export_tiles)
