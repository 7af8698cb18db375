"""``mupd eval`` on tile folders, and held-out evaluation of a (tiny) checkpoint."""

from __future__ import annotations

import anndata
import numpy as np
import pytest
from PIL import Image

from helpers import BRAIN, CMU1, brain_spots, serial_sections
from napari_mupd.cli import main
from napari_mupd.eval.experiments.heldout import evaluate_checkpoint, split_datasets
from napari_mupd.model import MuPDConfig, MuPDPipeline
from napari_mupd.train.config import TrainConfig


def test_eval_folders_identical_tiles_score_perfectly(tmp_path, capsys):
    ihc = np.asarray(__import__("skimage.data", fromlist=["data"]).immunohistochemistry())
    for folder in ("pred", "real"):
        (tmp_path / folder).mkdir()
        for i in range(3):
            Image.fromarray(ihc[i * 100 : i * 100 + 128, :128]).save(
                tmp_path / folder / f"t{i}.png"
            )
    Image.fromarray(ihc[:64, :64]).save(tmp_path / "real" / "unpaired.png")
    assert (
        main(
            [
                "eval",
                "--pred",
                str(tmp_path / "pred"),
                "--real",
                str(tmp_path / "real"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| prediction | 3 | 1.000 |" in out  # patch Pearson r = 1
    assert (tmp_path / "out" / "report.md").exists()
    assert (tmp_path / "out" / "pairs" / "metrics.png").exists()


def test_eval_needs_pairs(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert (
        main(
            [
                "eval",
                "--pred",
                str(tmp_path / "a"),
                "--real",
                str(tmp_path / "b"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "no image file names in common" in capsys.readouterr().err
    assert main(["eval", "--out", str(tmp_path / "out")]) == 2


@pytest.fixture
def heldout_config(tmp_path) -> TrainConfig:
    genes = list(anndata.read_h5ad(BRAIN / "test_data.h5ad").var_names[:8])
    return TrainConfig.from_dict(
        {
            "out_dir": str(tmp_path / "run"),
            "model": {"preset": "tiny", "genes": genes},
            "tasks": [
                {
                    "name": "ki67",
                    "kind": "stain",
                    "data": [serial_sections(holdout=0.25)],
                },
                {
                    "name": "spots",
                    "kind": "rna",
                    "data": [brain_spots(holdout=0.3)],
                },
            ],
        },
        base_dir=tmp_path,
    )


def test_holdout_splits_do_not_overlap(heldout_config):
    task = heldout_config.tasks[0]
    train = split_datasets(task, heldout_config, 64, "train")[0]
    test = split_datasets(task, heldout_config, 64, "test")[0]
    assert len(train) and len(test)
    right_edge_of_train = max(x for _, x in train.boxes) + 64
    assert right_edge_of_train <= min(x for _, x in test.boxes)


def test_heldout_evaluation_scores_model_and_baselines(heldout_config):
    pipe = MuPDPipeline.from_config(
        MuPDConfig.from_dict(
            {**MuPDConfig.tiny().to_dict(), "genes": heldout_config.model["genes"]}
        )
    )
    tables = evaluate_checkpoint(
        pipe, heldout_config, steps=1, regression_steps=2, log=lambda _: None
    )
    stain = tables["ki67"]
    assert list(stain.index)[:6] == [
        "MuPD", "MuPD (mean read-out)", "colour deconvolution", "linear colour map",
        "H&E darkness", "nearest neighbour",
    ]  # fmt: skip
    assert len(stain) == 7 and stain["n_tiles"].iloc[0] > 0
    assert np.isfinite(stain["ssim"]).all() and np.isfinite(stain["structure_r"]).all()
    spots = tables["spots"]
    assert list(spots.columns) == ["n_tiles", "fid", "kid", "nuclei_distance"]
    assert np.isfinite(spots["fid"]).all()
    structure = tables["structure"]  # every held-out H&E source, and the demo's region
    assert list(structure["target"].unique()) == ["IHC:Ki67"]
    assert any(name.startswith("mupd demo") for name in structure.index)
    assert len(structure) == 3 and structure["tiles"].iloc[0] > 0


def test_few_shot_experiment_runs_end_to_end(tmp_path):
    from napari_mupd.eval.adherence import logistic_regression
    from napari_mupd.eval.experiments.fewshot import few_shot_experiment

    x = np.concatenate([np.random.default_rng(0).normal(m, 1, (20, 3)) for m in (0, 5)])
    y = np.repeat([0, 1], 20)
    assert (logistic_regression(x, y, 2)(x) == y).mean() > 0.95

    brain = BRAIN / "test_img.jpg"
    config = TrainConfig.from_dict(
        {
            "out_dir": str(tmp_path),
            "model": {"preset": "tiny"},
            "tasks": [
                {
                    "name": "captions",
                    "kind": "text",
                    "data": [
                        {"slide_tiles": {"slide": str(brain), "caption": "brain", "holdout": 0.3}},
                        {
                            "slide_tiles": {
                                "slide": str(CMU1),
                                "mpp": 2.0,
                                "caption": "skin",
                                "holdout": 0.3,
                            }
                        },
                    ],
                }
            ],
        },
        base_dir=tmp_path,
    )
    pipe = MuPDPipeline.from_config(MuPDConfig.tiny())
    df = few_shot_experiment(
        pipe, config, shots=3, synthetic=2, seeds=2, steps=1, log=lambda _: None
    )
    assert df.attrs["classes"] == ["brain", "skin"]
    assert list(df.columns) == ["real only", "real + synthetic"]
    assert ((df.loc[[0, 1]] >= 0) & (df.loc[[0, 1]] <= 1)).all().all()


@pytest.mark.slow
def test_eval_config_reports_adherence(tmp_path, tiny_model_dir, capsys):
    import yaml

    config = {
        "out_dir": str(tmp_path / "run"),
        "model": {"preset": "tiny"},
        "tasks": [
            {
                "name": "captions",
                "kind": "text",
                "data": [
                    {"slide_tiles": {"slide": str(BRAIN / "test_img.jpg"), "caption": "brain",
                                     "holdout": 0.3}},
                    {"slide_tiles": {"slide": str(CMU1), "mpp": 2.0, "caption": "skin",
                                     "holdout": 0.3}},
                ],
            }
        ],
    }  # fmt: skip
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    args = ["eval", "--config", str(tmp_path / "train.yaml"), "--model", str(tiny_model_dir)]
    args += ["--steps", "1", "--adherence-tiles", "1", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "## adherence" in out and "| condition | unconditional (floor) | guidance 1 |" in out
    assert "| text: captions | 0.500 |" in out  # the floor: chance of two classes
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## adherence" in report and "| text: captions [stain features] | 0.500 |" in report
    assert (tmp_path / "out" / "adherence-detail.csv").is_file()
