"""``mupd export-tiles``: real tiles of a slide with virtual stains and synthetic H&E."""

from __future__ import annotations

import argparse
import csv
import sys
from typing import TYPE_CHECKING

from napari_mupd.errors import ExportError

if TYPE_CHECKING:
    from napari_mupd.imaging.augment import Augmentation


def cmd_export_tiles(args: argparse.Namespace) -> int:
    """Export tissue tiles of ``--roi`` (default: the whole slide) into ``--out``."""
    from tqdm.auto import tqdm

    from napari_mupd.cli.generate import read_rna
    from napari_mupd.cli.stain import parse_roi
    from napari_mupd.engine.export import export_tiles
    from napari_mupd.io import open_slide
    from napari_mupd.model.loading import load_pipeline

    roi = parse_roi(args.roi)
    augment, copies = augmentation(args)  # checked before the model loads
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
            augment=augment,
            copies=copies,
            progress=progress,
        )
    print(f"wrote {manifest}")
    with manifest.open(newline="", encoding="utf-8") as f:  # tiles, not their copies
        real = sum(r["kind"] == "real" and r["copy"] in ("", "0") for r in csv.DictReader(f))
    if args.n is not None and real < args.n:
        print(
            f"warning: only {real} of the {args.n} tiles asked for fit: tiles with at least "
            f"{args.min_tissue:.0%} tissue in the region (a larger region or a lower "
            "--min-tissue gives more)",
            file=sys.stderr,
        )
    return 0


def augmentation(args: argparse.Namespace) -> tuple[Augmentation | None, int]:
    """The augmentation the flags ask for (None: none) and the copies per tile; a bad
    value is an :class:`~napari_mupd.errors.ExportError`."""
    from napari_mupd.imaging.augment import Augmentation

    augment = Augmentation(
        flips=args.flips,
        stain_jitter=args.stain_jitter,
        brightness=args.brightness,
        contrast=args.contrast,
        blur=args.blur,
        zoom=args.zoom,
    )
    if args.copies is not None and args.copies < 1:
        raise ExportError(f"--copies must be at least 1, got {args.copies}")
    if not augment.active:
        if args.copies is not None:
            raise ExportError(
                "--copies makes augmented copies: add an augmentation (--flips, "
                "--stain-jitter, --brightness, --contrast, --blur or --zoom)"
            )
        return None, 1
    return augment, args.copies or 1


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
    aug = ex.add_argument_group(
        "augmentation",
        "augmented copies <id>_aug<j> of every tile and its targets, one random transform "
        "per copy (recorded in the manifest, fixed by --seed): flips/rotations and zoom move "
        "every image of a tile alike; stain jitter, brightness/contrast and blur change the "
        "H&E tiles only. All off by default.",
    )
    aug.add_argument(
        "--flips", action="store_true", help="a random flip / quarter turn (one of the 8)"
    )
    aug.add_argument(
        "--stain-jitter",
        type=float,
        default=0.0,
        metavar="S",
        help="H, E, DAB densities scaled by 1 +- S and shifted by +- S std (0.05: mild; <= 0.5)",
    )
    aug.add_argument(
        "--brightness",
        type=float,
        default=0.0,
        metavar="B",
        help="shift by up to +- B of full range (0.1: +-25 grey levels; <= 0.5)",
    )
    aug.add_argument(
        "--contrast",
        type=float,
        default=0.0,
        metavar="C",
        help="contrast times a factor in 1 +- C (<= 0.9)",
    )
    aug.add_argument(
        "--blur",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="Gaussian blur, sigma uniform in [0, SIGMA] px (<= 5)",
    )
    aug.add_argument(
        "--zoom",
        type=float,
        default=0.0,
        metavar="Z",
        help="zoom by a factor in [1/(1+Z), 1+Z], cropped or mirror-padded (<= 1)",
    )
    aug.add_argument(
        "--copies",
        type=int,
        metavar="N",
        help="augmented copies per tile, besides the tile itself (default 1)",
    )
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ex.add_argument("--model", help="checkpoint folder (default: the bundled one)")
    ex.add_argument("--device", help="cpu, cuda, mps (default: auto)")
    ex.set_defaults(func=cmd_export_tiles)
