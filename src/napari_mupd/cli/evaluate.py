"""``mupd eval``: metrics of predicted against real tiles, or of a checkpoint on held-out data."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_mupd.errors import EvalError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_tiles(folder: Path, stems: list[str]) -> list[np.ndarray]:
    """RGB uint8 tiles of ``folder`` by file stem (alpha dropped)."""
    from napari_mupd.train.datasets import read_rgb

    files = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    return [read_rgb(files[s]) for s in stems]


def paired_stems(pred: Path, real: Path) -> list[str]:
    """File stems present in both folders, sorted."""
    for folder in (pred, real):
        if not folder.is_dir():
            raise EvalError(f"{folder}: not a folder")
    stems = [
        {p.stem for p in f.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES} for f in (pred, real)
    ]
    common = sorted(stems[0] & stems[1])
    if not common:
        raise EvalError(f"no image file names in common between {pred} and {real}")
    return common


def markdown(df) -> str:
    """A plain DataFrame as a Markdown table (3 decimals)."""
    head = [str(df.index.name or ""), *map(str, df.columns)]
    rows = [
        [str(i), *(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r)]
        for i, r in zip(df.index, df.itertuples(index=False), strict=True)
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def write_report(tables: dict, out: Path, title: str) -> Path:
    """Markdown report, a CSV per table and the plots; returns the report's path."""
    from napari_mupd.eval.report import format_table, plot_report

    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv")
        if name == "structure":
            lines += [
                f"## {name}",
                "",
                "Structure r of virtual IHC: nuclear density vs the source H&E's "
                "haematoxylin on 4-px blocks over tissue (1 = the source's own nuclei).",
                "",
                markdown(df),
                "",
            ]
            continue
        if name == "adherence":
            lines += [
                f"## {name}",
                "",
                "Share of generated tiles that answer to their condition, on histology "
                "features: text and RNA, the share a classifier of real training tiles "
                "assigns to the prompted class / the spot's expression cluster (balanced "
                "over classes); reference, the share of other held-out tiles farther from "
                "the tile than its reference. 1 = perfect; chance in the last column; "
                "[stain features]: the same on the stain statistics alone, which blur does "
                f"not move. {df.attrs.get('tiles', '?')} tiles per condition and method; "
                "details in adherence-detail.csv.",
                "",
                markdown(df),
                "",
            ]
            continue
        if name == "adherence-detail":
            continue
        if name == "downstream":
            a = df.attrs
            df.attrs["per_seed"].to_csv(out / "downstream-per-seed.csv", index=False)
            lines += [
                f"## {name}",
                "",
                f"Scarce real tiles: balanced accuracy on {a['test_tiles']} held-out tiles of "
                f"{len(a['classes'])} classes ({'; '.join(a['classes'])}; chance "
                f"{a['chance']:.3f}), mean and std over {a['seeds']} seeds; gain: paired "
                f"by seed against real only. Extra tiles per class: {a['extra']} augmented "
                f"and / or {a['extra']} synthetic (text guidance {a['guidance']:g}).",
                "",
                markdown(df),
                "",
            ]
            continue
        if name == "few-shot":
            lines += [
                f"## {name}",
                "",
                f"classes: {'; '.join(df.attrs['classes'])}; "
                f"{df.attrs['test_tiles']} held-out test tiles",
                "",
                markdown(df),
                "",
            ]
            continue
        plots = plot_report(df, out / name)
        lines += [f"## {name}", "", format_table(df)]
        lines += [f"![{p.stem}]({name}/{p.name})" for p in plots] + [""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def cmd_eval(args: argparse.Namespace) -> int:
    """Score tiles (``--pred``/``--real``) or a checkpoint on its held-out split (``--config``)."""
    from napari_mupd.eval.report import evaluate_pairs, format_table

    out = Path(args.out)
    if args.config:
        from napari_mupd.eval.experiments.heldout import evaluate_checkpoint
        from napari_mupd.model.loading import load_pipeline
        from napari_mupd.train.config import TrainConfig

        config = TrainConfig.from_yaml(args.config)
        model = Path(args.model) if args.model else config.path(config.out_dir) / "final"
        pipe = load_pipeline(model, args.device)
        tables = evaluate_checkpoint(
            pipe,
            config,
            steps=args.steps,
            seed=args.seed,
            regression_steps=args.regression_steps,
            regression_params=args.regression_params,
        )
        if args.adherence:
            from napari_mupd.eval.experiments.adherence import (
                adherence_experiment,
                adherence_summary,
            )

            rows = adherence_experiment(
                pipe, config, tiles=args.adherence_tiles, steps=args.steps, seed=args.seed
            )
            if len(rows):
                tables["adherence"] = adherence_summary(rows)
                tables["adherence"].attrs["tiles"] = args.adherence_tiles
                tables["adherence-detail"] = rows.set_index("condition")
        if args.few_shot:
            from napari_mupd.eval.experiments.downstream import downstream_experiment
            from napari_mupd.eval.experiments.fewshot import few_shot_experiment

            tables["few-shot"] = few_shot_experiment(pipe, config, steps=args.steps)
            tables["downstream"] = downstream_experiment(pipe, config, steps=args.steps)
        if not tables:
            raise EvalError(f"{args.config}: no dataset holds out a test split (holdout: 0)")
        title = f"Held-out evaluation of {model} ({pipe.config.name}, {pipe.model_hash[:12]})"
    else:
        if not (args.pred and args.real):
            raise EvalError("give --pred and --real folders, or --config")
        pred, real = Path(args.pred), Path(args.real)
        stems = paired_stems(pred, real)
        df = evaluate_pairs(
            read_tiles(pred, stems), read_tiles(real, stems), kind=args.kind, mpp=args.mpp
        )
        tables = {"pairs": df}
        title = f"{pred} against {real} ({len(stems)} tiles)"
    report = write_report(tables, out, title)
    for name, df in tables.items():
        if name == "adherence-detail":
            continue
        plain = name in ("few-shot", "structure", "adherence", "downstream")
        print(f"## {name}\n{markdown(df) if plain else format_table(df)}")
    print(f"report written to {report.resolve()}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``eval``."""
    ev = sub.add_parser("eval", help="metrics: predicted vs real tiles, or a checkpoint")
    ev.add_argument("--pred", help="folder of predicted tiles")
    ev.add_argument("--real", help="folder of real tiles (paired by file name)")
    ev.add_argument("--kind", default="IHC", choices=["IHC", "mIF"])
    ev.add_argument("--mpp", type=float, help="pixel size for the nuclei statistics")
    ev.add_argument("--config", help="a training YAML: evaluate on its held-out split")
    ev.add_argument("--model", help="checkpoint folder (default: OUT_DIR/final of the config)")
    ev.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--regression-steps",
        type=int,
        default=300,
        help="training steps of the U-Net regression baseline",
    )
    ev.add_argument(
        "--regression-params",
        type=int,
        help="parameters of the U-Net baseline (default: as many as the transformer)",
    )
    ev.add_argument(
        "--adherence",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --config: how far generated tiles follow their text, RNA and reference "
        "conditions at guidance 1, 2, 4 and unconditionally (default: on)",
    )
    ev.add_argument(
        "--adherence-tiles",
        type=int,
        default=4,
        help="tiles generated per condition and guidance for --adherence",
    )
    ev.add_argument(
        "--few-shot",
        action="store_true",
        help="also run the classification with/without synthetic tiles: 10 real tiles "
        "per class (saturated), and 1 or 3 per class against classical augmentation",
    )
    ev.add_argument("--device", default=None)
    ev.add_argument("--out", required=True, help="folder for report.md, CSVs and plots")
    ev.set_defaults(func=cmd_eval)
