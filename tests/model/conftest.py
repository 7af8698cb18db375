"""Fixtures for the model tests: tiny random pipelines on the CPU, one thread."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import BRAIN
from napari_mupd.model import MuPDConfig, MuPDPipeline

# Tiny models gain nothing from threads, and a busy shared CPU makes OpenMP spin.
torch.set_num_threads(1)


@pytest.fixture
def config() -> MuPDConfig:
    return MuPDConfig.tiny()


@pytest.fixture
def pipe(config: MuPDConfig) -> MuPDPipeline:
    """A fresh tiny pipeline (random weights, seed 0) on the CPU."""
    return MuPDPipeline.from_config(config, device="cpu")


@pytest.fixture
def mouse_brain() -> Path:
    """The real Visium test data (49 spots x 1,999 genes)."""
    return BRAIN / "test_data.h5ad"


@pytest.fixture
def make_tile() -> Callable[..., np.ndarray]:
    """make_tile(seed, size=64): a random uint8 RGB tile."""

    def tile(seed: int, size: int = 64) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)

    return tile
