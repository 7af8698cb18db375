"""VAEs: diffusers ``AutoencoderKL`` for RGB tiles and, per marker, for mIF channels.

Latents are scaled as in diffusers: ``z = (mode(E(2x - 1)) - shift_factor) * scaling_factor``
and decoded as ``x = (D(z / scaling_factor + shift_factor) + 1) / 2`` clamped to [0, 1].
Encoding takes the posterior mode, so it is deterministic.

mIF: one single-channel AutoencoderKL is shared by all markers. A (B, K, H, W) marker
stack is encoded as B*K grey images, giving K groups of ``latent_channels`` channels
(the channel-wise latent; see `MuPDConfig.canvas_channels`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:  # the class itself: diffusers' lazy top level hides it from type checkers
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL


def build_vae(config: dict[str, Any]) -> AutoencoderKL:
    """A randomly initialised AutoencoderKL from its config dict (diffusers imported here)."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    return AutoencoderKL(**config)


def _factors(vae: AutoencoderKL) -> tuple[float, float]:
    config = vae.config  # diffusers' FrozenDict
    return float(config["scaling_factor"]), float(config.get("shift_factor") or 0.0)


def encode(vae: AutoencoderKL, images: Tensor) -> Tensor:
    """(B, C, H, W) in [0, 1] -> scaled latents (B, latent_channels, H/8, W/8)."""
    scale, shift = _factors(vae)
    dtype = next(vae.parameters()).dtype
    z = vae.encode((images * 2 - 1).to(dtype)).latent_dist.mode()
    return (z.float() - shift) * scale


def decode(vae: AutoencoderKL, latents: Tensor) -> Tensor:
    """Scaled latents -> images (B, C, H, W) in [0, 1], float32."""
    scale, shift = _factors(vae)
    dtype = next(vae.parameters()).dtype
    x = vae.decode((latents / scale + shift).to(dtype)).sample
    return ((x.float() + 1) / 2).clamp(0, 1)


def encode_markers(vae: AutoencoderKL, markers: Tensor) -> Tensor:
    """(B, K, H, W) marker intensities in [0, 1] -> (B, K * c, H/8, W/8), marker-major."""
    b, k, h, w = markers.shape
    z = encode(vae, markers.reshape(b * k, 1, h, w))
    return z.reshape(b, k * z.shape[1], *z.shape[-2:])


def decode_markers(vae: AutoencoderKL, latents: Tensor, num_markers: int) -> Tensor:
    """(B, K * c, h, w) -> (B, K, 8h, 8w) marker intensities in [0, 1]."""
    b, kc, h, w = latents.shape
    x = decode(vae, latents.reshape(b * num_markers, kc // num_markers, h, w))
    return x.reshape(b, num_markers, *x.shape[-2:])


@torch.no_grad()
def fit_scaling_factor(vae: AutoencoderKL, images: Tensor) -> float:
    """``1 / std`` of the unscaled latents of `images` (B, C, H, W) in [0, 1]: the value
    to put in the VAE config's ``scaling_factor`` so latents have unit variance."""
    z = vae.encode((images * 2 - 1).to(next(vae.parameters()).dtype)).latent_dist.mode()
    shift = _factors(vae)[1]
    return float(1.0 / (z.float() - shift).std().clamp_min(1e-6))
