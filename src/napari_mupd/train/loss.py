"""The training objective beside the trainer: batches, flow matching, condition dropout.

:func:`make_training_batch` encodes target tiles and their conditions with a pipeline's
(frozen) VAE, :class:`TrainableMuPD` holds the trained parts with the loss as forward,
and :func:`training_loss` is one loss evaluation. The loop is in :mod:`.trainer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from napari_mupd.errors import ConditionError
from napari_mupd.model.attention import StreamInput
from napari_mupd.model.encoders.image import image_to_tensor
from napari_mupd.model.encoders.rna import expression_features
from napari_mupd.model.pipeline import MuPDPipeline
from napari_mupd.model.transformer import MuPDTransformer
from napari_mupd.model.vae import encode


@dataclass
class TrainingBatch:
    """One batch, encoded up to the trainable encoders (see `make_training_batch`).

    latents: (B, canvas, h, w) clean scaled target latents; channel_mask: (B, canvas)
    bool, the channels each sample's target uses; text_ids/text_mask: (B, L) tokens;
    rna: (B, 2F) RNA features; reference: (B, C, h_r, w_r) reference-tile latents;
    source: (B, latent_channels, h, w) source H&E latents. Each ``*_present`` (B,) bool
    says which samples have that input.
    """

    latents: Tensor
    target_ids: Tensor
    channel_mask: Tensor
    text_ids: Tensor | None = None
    text_mask: Tensor | None = None
    text_present: Tensor | None = None
    rna: Tensor | None = None
    rna_present: Tensor | None = None
    reference: Tensor | None = None
    reference_present: Tensor | None = None
    source: Tensor | None = None
    source_present: Tensor | None = None


def drop_conditions(
    present: Mapping[str, Tensor], p: float, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Drop each condition of each sample independently with probability `p`.

    Used in training (p = 0.1 by default) so the model also learns the unconditional and
    single-modality velocities that classifier-free guidance needs.
    """
    out = {}
    for name, mask in present.items():
        keep = torch.rand(mask.shape, generator=generator) >= p
        out[name] = mask & keep.to(mask.device)
    return out


#: How training draws t: "uniform" on (0, 1) (SiT, rectified flow) or "logit_normal" (0, 1)
#: (SD3), which puts only 1.4 % of the draws above t = 0.9, where the layout is decided.
TimestepSampling = Literal["uniform", "logit_normal"]
DEFAULT_TIMESTEPS: TimestepSampling = "uniform"


def sample_timesteps(
    n: int, generator: torch.Generator | None = None, sampling: TimestepSampling = DEFAULT_TIMESTEPS
) -> Tensor:
    """Training times t in (0, 1), uniform or logit-normal(0, 1)."""
    if sampling == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator))
    if sampling == "uniform":
        return torch.rand(n, generator=generator)
    raise ConditionError(f"timestep sampling must be 'uniform' or 'logit_normal', not {sampling!r}")


def flow_matching_loss(
    transformer: MuPDTransformer,
    latents: Tensor,
    target_ids: Tensor,
    channel_mask: Tensor,
    streams: Mapping[str, StreamInput] | None = None,
    source: Tensor | None = None,
    source_present: Tensor | None = None,
    generator: torch.Generator | None = None,
    timesteps: TimestepSampling = DEFAULT_TIMESTEPS,
) -> Tensor:
    """Mean squared velocity error on the target's channels, t drawn by ``timesteps``.

    ``x_t = (1 - t) x_0 + t * noise`` and the target is ``v = noise - x_0``; channels a
    sample's target does not use are zeroed in the input and left out of the mean.
    Noise and t are drawn on the CPU from `generator`, so a seed fixes the loss.
    """
    b = latents.shape[0]
    mask = channel_mask.to(latents.dtype)[:, :, None, None]
    noise = torch.randn(latents.shape, generator=generator).to(latents) * mask
    t = sample_timesteps(b, generator, timesteps).to(latents.device)
    x0 = latents * mask
    x_t = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
    pred = transformer(x_t, t, target_ids, streams, source, source_present)
    err = (pred.float() - (noise - x0).float()) ** 2 * mask
    return err.sum() / (mask.sum() * latents.shape[-2] * latents.shape[-1]).clamp_min(1)


class TrainableMuPD(nn.Module):
    """The transformer and its trainable condition encoders, with the loss as forward.

    One module, so that an optimiser, EMA and ``accelerate`` (DDP) see every trained
    parameter and gradients flow through the wrapped forward.
    """

    def __init__(
        self,
        transformer: MuPDTransformer,
        text_encoder: nn.Module | None,
        rna_encoder: nn.Module,
        image_encoder: nn.Module,
        condition_dropout: float,
        drop_source: bool = False,
        timesteps: TimestepSampling = DEFAULT_TIMESTEPS,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.text_encoder = text_encoder
        self.rna_encoder = rna_encoder
        self.image_encoder = image_encoder
        self.condition_dropout = condition_dropout
        self.drop_source = drop_source
        self.timesteps: TimestepSampling = timesteps

    def forward(self, batch: TrainingBatch, generator: torch.Generator | None = None) -> Tensor:
        """Flow-matching loss of a batch, conditions dropped at ``condition_dropout``."""
        streams: dict[str, StreamInput] = {}
        if batch.text_ids is not None and batch.text_mask is not None:
            assert batch.text_present is not None and self.text_encoder is not None
            tokens = self.text_encoder(batch.text_ids, batch.text_mask)
            streams["text"] = StreamInput(tokens, batch.text_present, batch.text_mask)
        if batch.rna is not None:
            assert batch.rna_present is not None
            streams["rna"] = StreamInput(self.rna_encoder(batch.rna), batch.rna_present)
        if batch.reference is not None:
            assert batch.reference_present is not None
            tokens = self.image_encoder(batch.reference)
            streams["image"] = StreamInput(tokens, batch.reference_present)
        present = {k: s.present for k, s in streams.items()}
        if batch.source is not None and self.drop_source:  # guided like a stream
            present["source"] = (
                batch.source_present
                if batch.source_present is not None
                else torch.ones(len(batch.source), dtype=torch.bool, device=batch.source.device)
            )
        kept = drop_conditions(present, self.condition_dropout, generator)
        streams = {k: StreamInput(s.tokens, kept[k], s.key_mask) for k, s in streams.items()}
        return flow_matching_loss(
            self.transformer,
            batch.latents,
            batch.target_ids,
            batch.channel_mask,
            streams,
            batch.source,
            kept.get("source", batch.source_present),
            generator,
            self.timesteps,
        )


@torch.no_grad()
def make_training_batch(
    pipe: MuPDPipeline,
    target: str,
    images: object = None,
    text: Sequence[str | None] | None = None,
    rna: object = None,
    reference: object = None,
    source: object = None,
    *,
    latents: Tensor | None = None,
    source_latents: Tensor | None = None,
    reference_latents: Tensor | None = None,
) -> TrainingBatch:
    """Encode B target tiles of ``target`` and their conditions with ``pipe``'s encoders
    (text may hold None per sample).

    ``latents``, ``source_latents`` and ``reference_latents`` stand in for
    ``images``, ``source`` and ``reference`` when they were encoded before (a
    trainer's latent cache).
    """
    if latents is None:
        latents, spec = pipe.encode_target(images, target)
    else:
        spec = pipe.config.resolve_target(target)
        latents = latents.to(pipe.device)
    b = latents.shape[0]
    dev = pipe.device
    batch = TrainingBatch(
        latents=latents,
        target_ids=torch.full((b,), spec.index, dtype=torch.long, device=dev),
        channel_mask=torch.zeros(b, latents.shape[1], dtype=torch.bool, device=dev),
    )
    batch.channel_mask[:, list(spec.channels)] = True
    if text is not None:
        if len(text) != b:
            raise ConditionError(f"text: {len(text)} prompts for {b} images")
        given = [i for i, p in enumerate(text) if p is not None]
        batch.text_present = torch.zeros(b, dtype=torch.bool, device=dev)
        batch.text_present[given] = True
        prompts = [p for p in text if p is not None]
        ids, mask = pipe.text_encoder.tokenize(prompts or ["none"])
        batch.text_ids = torch.zeros(b, ids.shape[1], dtype=torch.long, device=dev)
        batch.text_mask = torch.ones(b, ids.shape[1], dtype=torch.bool, device=dev)
        if given:
            batch.text_ids[given], batch.text_mask[given] = ids.to(dev), mask.to(dev)
    if rna is not None:
        feats = expression_features(rna, pipe.config.genes, pipe.config.gene_sets)
        batch.rna = feats.tensor().to(dev).expand(b, -1).clone()
        batch.rna_present = torch.ones(b, dtype=torch.bool, device=dev)
    if reference is not None:
        x = image_to_tensor(reference, size=pipe.config.resolution, what="reference image")
        reference_latents = encode(pipe.vae, x.to(dev))
    if reference_latents is not None:
        batch.reference = reference_latents.to(dev).expand(b, -1, -1, -1).clone()
        batch.reference_present = torch.ones(b, dtype=torch.bool, device=dev)
    if source is not None:
        source_latents = pipe.encode_source(source)
    if source_latents is not None:
        batch.source = source_latents.to(dev)
        batch.source_present = torch.ones(b, dtype=torch.bool, device=dev)
    return batch


def training_loss(
    pipe: MuPDPipeline,
    batch: TrainingBatch,
    generator: torch.Generator | None = None,
    timesteps: TimestepSampling = DEFAULT_TIMESTEPS,
) -> Tensor:
    """Flow-matching loss with condition dropout (``config.condition_dropout``, a virtual
    stain's source too where ``config.source_guidance``); the text (built-in), RNA and
    image encoders receive gradients with the transformer."""
    with pipe.autocast():
        return trainable(pipe, timesteps)(batch, generator)


def trainable(pipe: MuPDPipeline, timesteps: TimestepSampling = DEFAULT_TIMESTEPS) -> TrainableMuPD:
    """The trained parts as one module (what an optimiser and accelerate wrap)."""
    return TrainableMuPD(
        pipe.transformer,
        pipe.text_encoder,
        pipe.rna_encoder,
        pipe.image_encoder,
        pipe.config.condition_dropout,
        drop_source=pipe.config.source_guidance,
        timesteps=timesteps,
    )
