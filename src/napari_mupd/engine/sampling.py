"""Sampling from a pipeline with progress and cancel, and what the engine runs on tiles:
a MuPD pipeline as a :class:`TileModel`, or any callable with the same shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from napari_mupd.errors import Cancelled, ConditionError

Cancel = Callable[[], bool]
Progress = Callable[[int, int], None]


def sample(
    pipe: Any,
    cancel: Cancel,
    progress: Progress | None = None,
    total: int = 0,
    **kwargs: Any,
) -> Any:
    """``pipe(**kwargs)`` that stops within a step once ``cancel()`` turns true.

    Raises :class:`~napari_mupd.errors.Cancelled` when interrupted; ``progress(step,
    total)`` after each step.
    """

    def step_end(p: Any, step: int, t: float, state: dict) -> dict:
        if progress is not None:
            progress(step + 1, total)
        if cancel():
            p.interrupt = True
        return state

    out = pipe(callback_on_step_end=step_end, output_type="np", **kwargs)
    if out.interrupted:
        raise Cancelled("cancelled")
    return out


class TileModel(Protocol):
    """Maps (B, T, T, 3) uint8 source tiles (plus noise) to (B, T, T, C) float32 in [0, 1];
    a model that `renders_detail` also takes the same tiles at k times the resolution,
    (B, kT, kT, 3), and returns (B, kT, kT, C)."""

    tile_size: int
    channels: tuple[str, ...]
    latent_channels: int  # channels of the noise a tile needs; 0 for deterministic models
    mpp: float | None  # the pixel size the model works at (None: the slide's own)
    renders_detail: bool  # whether it can draw its output on finer source tiles

    def __call__(
        self,
        sources: np.ndarray,
        noise: np.ndarray | None,
        cancel: Cancel,
        details: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stain a batch of tiles; ``noise`` is (B, latent_channels, T/8, T/8) or None."""
        ...


class PipelineTileModel:
    """A :class:`~napari_mupd.model.MuPDPipeline` virtual stain as a :class:`TileModel`."""

    def __init__(
        self,
        pipe: Any,
        target: str,
        *,
        text: str | None = None,
        rna: Any = None,
        steps: int | None = None,
        guidance: float | dict = 1.0,
        mpp: float | None = None,
    ) -> None:
        self.pipe, self.text, self.rna = pipe, text, rna
        self.spec = pipe.config.resolve_target(target)
        if not self.spec.uses_source:
            raise ConditionError(f"{target} is not a staining target; choose IHC:<marker> or mIF")
        self.target, self.steps, self.guidance = self.spec.name, steps, guidance
        self.tile_size = pipe.config.resolution
        self.channels = ("R", "G", "B") if self.spec.kind != "mIF" else self.spec.markers
        self.latent_channels = len(self.spec.channels)
        self.mpp = mpp if mpp is not None else pipe.config.mpp_for(self.spec)
        self.renders_detail = self.spec.kind == "IHC"

    def __call__(
        self,
        sources: np.ndarray,
        noise: np.ndarray | None,
        cancel: Cancel,
        details: np.ndarray | None = None,
    ) -> np.ndarray:
        """Run the pipeline on a batch; raises :class:`Cancelled` when ``cancel`` turns true."""
        import torch

        n = len(sources)
        out = sample(
            self.pipe,
            cancel,
            image=sources,
            text=None if self.text is None else [self.text] * n,
            rna=self.rna,
            target=self.target,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            latents=None if noise is None else torch.from_numpy(noise),
            detail=details,
        )
        return out.images

    def provenance(self) -> dict[str, Any]:
        """Model id, hash and sampling settings, for layer metadata and output files."""
        return {
            "model": self.pipe.config.name,
            "model_hash": self.pipe.model_hash,
            "target": self.target,
            "steps": self.steps or self.pipe.config.default_steps.get(self.spec.kind),
            "guidance": self.guidance,
            "text": self.text,
            "rna": self.rna is not None,
        }
