"""The training objective: batches, the flow-matching loss with condition dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mupd.model import MuPDConfig, MuPDPipeline
from napari_mupd.train.loss import drop_conditions, make_training_batch, training_loss


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
