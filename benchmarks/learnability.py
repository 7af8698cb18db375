"""Learnability check: does `mupd train` learn a virtual stain whose answer is known?

    python benchmarks/learnability.py [--steps 1500] [--renderer-steps 600] [--out DIR]

Tiles of the bundled sample slide (CMU-1-Small-Region, 1 um/px) get an "IHC" computed from
their own haematoxylin by a fixed rule (`napari_mupd.eval.experiments.learnability`); the
renderer and a small MuPD transformer are trained on the left 70 % of the slide with
``mupd train-renderer`` and ``mupd train``; the right 30 % is scored. Goal: DAB r >= 0.9
and structure r >= 0.9 on the held-out tiles. Prints a markdown table, CPU minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from napari_mupd.eval.experiments.learnability import run_learnability
from napari_mupd.resources import sample_slide_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--renderer-steps", type=int, default=600)
    parser.add_argument("--out", help="work folder (default: a temporary one)")
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        results = run_learnability(
            root, sample_slide_path(), steps=args.steps, renderer_steps=args.renderer_steps
        )
    minutes = (time.perf_counter() - start) / 60
    print(
        f"\nLearnability ({args.steps} transformer steps, {args.renderer_steps} renderer "
        f"steps, {minutes:.1f} min on {torch.get_num_threads()} CPU threads)\n"
    )
    print("| method | DAB patch r | DAB r (4-px blocks) | structure r |")
    print("|---|--:|--:|--:|")
    for name, row in results.items():
        print(
            f"| {name} | {row['dab_patch_r']:.3f} | {row['dab_block_r']:.3f} | "
            f"{row['structure_r']:.3f} |"
        )


if __name__ == "__main__":
    main()
