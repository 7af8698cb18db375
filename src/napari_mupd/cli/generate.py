"""``mupd generate``: synthetic tiles (or virtual stains of tiles) with a manifest."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_mupd._version import __version__
from napari_mupd.errors import ConditionError


def read_rna(path: str, spot: str | None) -> Any:
    """Expression from a CSV or an ``.h5ad`` (one spot by ``--spot``, or its only row)."""
    if not path.endswith(".h5ad"):
        return path
    import anndata

    adata = anndata.read_h5ad(path)
    if spot is not None:
        if spot not in adata.obs_names:
            raise ConditionError(
                f"{path}: no spot {spot!r} (first ones: {list(adata.obs_names[:3])})"
            )
        return adata[spot]
    if adata.n_obs != 1:
        raise ConditionError(f"{path} holds {adata.n_obs} spots: choose one with --spot")
    return adata


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate ``--n`` tiles from text, RNA or an image and write PNGs plus manifest.json."""
    from PIL import Image

    from napari_mupd.imaging.pixels import to_uint8
    from napari_mupd.imaging.resize import fit_tile
    from napari_mupd.io.slide import open_slide
    from napari_mupd.model.loading import load_pipeline

    if not (args.text or args.rna or args.image):
        raise ConditionError("give at least one condition: --text, --rna or --image")
    pipe = load_pipeline(args.model, args.device)
    words = pipe.check_words(args.text) if args.text else None
    if words:  # never drop a word without saying so
        print(f"mupd: note: {words.note()}", file=sys.stderr)
    image = None
    if args.image:
        with open_slide(args.image) as slide:
            w, h = slide.dimensions
            image = slide.read_region((0, 0), 0, (w, h))
        side = pipe.config.resolution
        if image.shape[:2] != (side, side):
            image = fit_tile(image, side)
    result = pipe(
        text=args.text,
        rna=read_rna(args.rna, args.spot) if args.rna else None,
        image=image,
        target=args.target,
        num_images=args.n,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator=args.seed,
        output_type="np",
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, tile in enumerate(result.images):
        name = f"tile_{i:04d}.png"
        pixels = to_uint8(tile)
        Image.fromarray(pixels if pixels.shape[-1] == 3 else pixels[..., 0]).save(out / name)
        files.append(name)
    manifest = {
        "napari_mupd_version": __version__,
        "files": files,
        "inputs": {"text": args.text, "rna": args.rna, "spot": args.spot, "image": args.image},
        "text_words": None
        if words is None
        else {"unknown": list(words.unknown), "cut": list(words.cut)},
        **result.provenance(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    if result.rna_report is not None:
        print(result.rna_report)
    print(f"wrote {len(files)} tiles and manifest.json to {out.resolve()}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``generate``."""
    gen = sub.add_parser("generate", help="synthesise tiles from text, RNA or an image")
    gen.add_argument("--text", help="a prompt, e.g. 'H&E, colon, adenocarcinoma'")
    gen.add_argument("--rna", help="expression: CSV (gene,value) or .h5ad")
    gen.add_argument("--spot", help="the spot (obs name) of an .h5ad to use")
    gen.add_argument("--image", help="reference tile (H&E target) or source H&E (IHC target)")
    gen.add_argument("--target", default="H&E", help="H&E, IHC:<marker> or mIF:<m1>,<m2>")
    gen.add_argument("--n", type=int, default=4, help="number of tiles")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    gen.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance")
    gen.add_argument("--model", help="checkpoint folder (default: the bundled one)")
    gen.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    gen.add_argument("--out", required=True, help="output folder")
    gen.set_defaults(func=cmd_generate)
