from __future__ import annotations

import torch

from napari_mupd.model import MuPDConfig
from napari_mupd.model.vae import (
    build_vae,
    decode_markers,
    encode,
    encode_markers,
    fit_scaling_factor,
)


@torch.no_grad()
def test_marker_latents_are_one_group_per_marker() -> None:
    config = MuPDConfig.tiny()
    vae = build_vae(config.mif_vae).eval()
    stack = torch.rand(2, 3, 32, 32)
    z = encode_markers(vae, stack)
    assert z.shape == (2, 3 * config.mif_latent_channels, 4, 4)
    torch.testing.assert_close(z[:, 2:4], encode(vae, stack[:, 1:2]))  # marker 1 = group 1
    out = decode_markers(vae, z, 3)
    assert out.shape == (2, 3, 32, 32)
    assert out.min() >= 0 and out.max() <= 1


@torch.no_grad()
def test_fitted_scaling_factor_gives_unit_variance_latents() -> None:
    config = MuPDConfig.tiny()
    vae = build_vae(config.vae).eval()
    images = torch.rand(4, 3, 32, 32)
    factor = fit_scaling_factor(vae, images)
    vae.register_to_config(scaling_factor=factor)
    assert abs(float(encode(vae, images).std()) - 1.0) < 1e-3
