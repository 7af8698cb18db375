"""The scarce-data downstream task (real, augmented, synthetic, both) on tiny data."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import BRAIN, CMU1
from napari_mupd.errors import EvalError
from napari_mupd.eval.experiments.downstream import ARMS, downstream_experiment
from napari_mupd.model import MuPDConfig, MuPDPipeline
from napari_mupd.train.config import TrainConfig


def captions_config(tmp_path) -> TrainConfig:
    brain = {"slide": str(BRAIN / "test_img.jpg"), "holdout": 0.3, "caption": "brain"}
    skin = {"slide": str(CMU1), "mpp": 2.0, "holdout": 0.3, "caption": "skin"}
    return TrainConfig.from_dict(
        {
            "out_dir": str(tmp_path),
            "model": {"preset": "tiny"},
            "tasks": [
                {
                    "name": "captions",
                    "kind": "text",
                    "data": [{"slide_tiles": brain}, {"slide_tiles": skin}],
                }
            ],
        },
        base_dir=tmp_path,
    )


@pytest.mark.slow
def test_downstream_compares_the_four_training_sets_over_seeds(tmp_path):
    pipe = MuPDPipeline.from_config(MuPDConfig.tiny())
    table = downstream_experiment(
        pipe, captions_config(tmp_path), shots=(1, 2), extra=2, seeds=3, max_pool=8,
        max_test=6, steps=1, log=lambda _: None,
    )  # fmt: skip
    assert tuple(table.index) == ARMS
    assert list(table.columns) == [
        f"{s}-shot{c}" for s in (1, 2) for c in ("", " std", " gain", " gain std")
    ]
    means = table[["1-shot", "2-shot"]].to_numpy()
    assert ((means >= 0) & (means <= 1)).all() and np.isfinite(table.to_numpy()).all()
    assert (table.loc["real only", ["1-shot gain", "2-shot gain"]] == 0).all()
    assert table.attrs["classes"] == ["brain", "skin"] and table.attrs["chance"] == 0.5
    per_seed = table.attrs["per_seed"]
    assert len(per_seed) == 2 * 3 * len(ARMS)
    # the gain is paired by seed: same real tiles, one arm minus the other
    one = per_seed[per_seed["shots"] == 1].pivot(index="seed", columns="arm")
    gain = one["balanced_accuracy"]["real + both"] - one["balanced_accuracy"]["real only"]
    assert table.loc["real + both", "1-shot gain"] == pytest.approx(gain.mean())
    with pytest.raises(EvalError, match="fewer training tiles than"):
        downstream_experiment(pipe, captions_config(tmp_path), shots=(10_000,), seeds=1)


def test_report_writes_the_downstream_table_and_its_seeds(tmp_path):
    import pandas as pd

    from napari_mupd.cli.evaluate import write_report

    table = pd.DataFrame({"1-shot": [0.5, 0.6, 0.7, 0.8]}, index=pd.Index(ARMS, name="set"))
    per_seed = pd.DataFrame(
        {"shots": [1], "seed": [0], "arm": ["real only"], "balanced_accuracy": [0.5]}
    )
    table.attrs.update(classes=["a", "b"], test_tiles=9, chance=0.5, seeds=1, extra=2,
                       guidance=1.0, per_seed=per_seed)  # fmt: skip
    report = write_report({"downstream": table}, tmp_path, "t").read_text()
    assert "9 held-out tiles of 2 classes (a; b; chance 0.500)" in report
    assert "| real + both | 0.800 |" in report
    assert (tmp_path / "downstream-per-seed.csv").is_file()
