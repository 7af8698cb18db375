"""The training objective: batches, the flow-matching loss with condition dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mupd.errors import ConditionError, ConfigError
from napari_mupd.model import MuPDConfig, MuPDPipeline
from napari_mupd.train.config import TrainConfig
from napari_mupd.train.loss import (
    drop_conditions,
    make_training_batch,
    sample_timesteps,
    training_loss,
)


@pytest.fixture
def pipe() -> MuPDPipeline:
    """A fresh tiny pipeline (random weights, seed 0) on the CPU."""
    return MuPDPipeline.from_config(MuPDConfig.tiny(), device="cpu")


def test_one_optimiser_step_lowers_the_loss(pipe: MuPDPipeline) -> None:
    rng = np.random.default_rng(0)
    he = make_training_batch(
        pipe,
        "H&E",
        rng.random((2, 64, 64, 3), dtype=np.float32),
        text=["tumor with stroma", None],
        rna={"CD3E": 3.0, "MKI67": 1.0},
        reference=rng.random((64, 64, 3), dtype=np.float32),
    )
    mif = make_training_batch(
        pipe,
        "mIF:CD3,CD8",
        rng.random((2, 64, 64, 2), dtype=np.float32),
        source=rng.random((2, 64, 64, 3)),
    )
    assert he.text_present.tolist() == [True, False]
    assert mif.channel_mask[0].tolist() == [True] * 4
    params = [
        p for name, m in pipe.components.items() if name != "scheduler" for p in m.parameters()
    ]
    trainable = [p for p in params if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=1e-3)
    for m in (pipe.transformer, pipe.text_encoder, pipe.rna_encoder, pipe.image_encoder):
        m.train()

    def loss() -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return training_loss(pipe, he, g) + training_loss(pipe, mif, g)

    before = loss()
    before.backward()
    assert pipe.text_encoder.embed.weight.grad is not None
    assert pipe.image_encoder.proj.weight.grad is not None
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        after = loss()
    assert after.item() < before.item()


def test_condition_dropout_rate() -> None:
    present = {"text": torch.ones(20_000, dtype=torch.bool)}
    kept = drop_conditions(present, 0.1, torch.Generator().manual_seed(0))
    assert abs(1 - kept["text"].float().mean().item() - 0.1) < 0.01
    none = drop_conditions({"rna": torch.zeros(10, dtype=torch.bool)}, 0.0)
    assert not none["rna"].any()


def test_uniform_timesteps_train_the_high_noise_steps_that_logit_normal_starves() -> None:
    def high(sampling) -> float:
        t = sample_timesteps(50_000, torch.Generator().manual_seed(0), sampling)
        assert t.min() > 0 and t.max() < 1
        return (t > 0.9).float().mean().item()

    assert abs(high("uniform") - 0.1) < 0.01
    assert abs(high("logit_normal") - 0.014) < 0.003  # P(N(0, 1) > logit 0.9 = 2.197)
    with pytest.raises(ConditionError, match="uniform"):
        sample_timesteps(4, None, "cosine")  # type: ignore[arg-type]


def test_the_training_config_chooses_the_timestep_sampling() -> None:
    task = {"name": "t", "kind": "plain", "data": []}
    assert TrainConfig.from_dict({"out_dir": "x", "tasks": [task]}).timesteps == "uniform"
    old = TrainConfig.from_dict({"out_dir": "x", "tasks": [task], "timesteps": "logit_normal"})
    assert old.timesteps == "logit_normal"
    with pytest.raises(ConfigError, match="timesteps"):
        TrainConfig.from_dict({"out_dir": "x", "tasks": [task], "timesteps": "cosine"})


def test_the_loss_draws_t_as_asked(pipe, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    batch = make_training_batch(pipe, "H&E", rng.random((256, 64, 64, 3), dtype=np.float32))
    seen: list[torch.Tensor] = []
    forward = pipe.transformer.forward

    def spy(x, t, *args, **kwargs):
        seen.append(t)
        return forward(x, t, *args, **kwargs)

    monkeypatch.setattr(pipe.transformer, "forward", spy)
    with torch.no_grad():
        training_loss(pipe, batch, torch.Generator().manual_seed(0))
        training_loss(pipe, batch, torch.Generator().manual_seed(0), "logit_normal")
    uniform, logit = ((t > 0.9).float().mean().item() for t in seen)
    assert uniform > 0.05 and logit < 0.04


def test_training_drops_a_virtual_stains_source_like_a_condition(pipe, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    batch = make_training_batch(
        pipe, "IHC:Ki67", rng.random((64, 64, 64, 3)), source=rng.random((64, 64, 64, 3))
    )
    seen: list[torch.Tensor] = []

    def spy(*args, **kwargs) -> torch.Tensor:
        seen.append(args[6])  # source_present
        return torch.zeros(())

    monkeypatch.setattr("napari_mupd.train.loss.flow_matching_loss", spy)
    pipe.config.condition_dropout = 0.25
    training_loss(pipe, batch, torch.Generator().manual_seed(0))
    assert seen[0].all()  # a checkpoint from before keeps its source
    pipe.config.source_guidance = True
    training_loss(pipe, batch, torch.Generator().manual_seed(0))
    dropped = 1 - seen[1].float().mean().item()
    assert 0.1 < dropped < 0.4  # about a quarter of the 64 sources are withheld
