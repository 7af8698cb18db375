from __future__ import annotations

import pytest
import torch

from napari_mupd.errors import ConfigError
from napari_mupd.model import MuPDConfig
from napari_mupd.model.stain_renderer import compose_stains, stain_densities
from napari_mupd.model.vae import (
    PatchCodec,
    build_vae,
    decode,
    decode_markers,
    encode,
    encode_markers,
    fit_patch_codec,
    fit_scaling_factor,
    turn_latents,
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


def _smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear").clamp(0, 1)


@torch.no_grad()
def test_patch_codec_is_the_principal_components_of_its_blocks() -> None:
    images = _smooth_images(16)
    full = PatchCodec(latent_channels=192)  # every component: lossless
    fit_patch_codec(full, images)
    torch.testing.assert_close(decode(full, encode(full, images)), images, atol=1e-4, rtol=0)
    small = PatchCodec(latent_channels=4)
    fit_patch_codec(small, images)
    z = encode(small, images)
    assert z.shape == (16, 4, 4, 4)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(4), atol=0.05, rtol=0)
    error = (decode(small, z) - images).abs().mean()
    assert 0 < error < (images.mean(dim=(2, 3), keepdim=True) - images).abs().mean()
    again = PatchCodec(latent_channels=4)
    fit_patch_codec(again, images)  # deterministic, signs included
    torch.testing.assert_close(again.basis, small.basis)


@torch.no_grad()
def test_an_optical_density_codec_keeps_each_stains_amount() -> None:
    """Stains add up in optical density, so a linear code of OD blocks keeps their means
    exactly (the mean block is in the code); with every component it is lossless; and it
    decodes to valid RGB. An RGB code of the same size shifts the stains of dark pixels."""
    g = torch.Generator().manual_seed(3)
    dens = torch.nn.functional.interpolate(torch.rand(8, 3, 4, 4, generator=g), size=(32, 32))
    dens = dens * torch.tensor([1.2, 0.6, 0.0])[None, :, None, None]  # H&E: no DAB
    dens = dens * (torch.rand(8, 1, 32, 32, generator=g) > 0.3)  # sharp "nuclei" and glass
    images = compose_stains(dens)
    full = PatchCodec(latent_channels=192, space="od")
    fit_patch_codec(full, images)
    torch.testing.assert_close(decode(full, encode(full, images)), images, atol=1e-3, rtol=0)
    for space in ("od", "rgb"):
        codec = PatchCodec(latent_channels=8, space=space)
        fit_patch_codec(codec, images)
        out = decode(codec, encode(codec, images))
        assert out.min() >= 0 and out.max() <= 1
        before, after = (
            stain_densities(images).mean((0, 2, 3)),
            stain_densities(out).mean((0, 2, 3)),
        )
        ratio = (after[:2] / before[:2] - 1).abs().max()
        if space == "od":
            assert ratio < 0.05
        else:
            assert ratio > 0.05
    with pytest.raises(ConfigError, match="'rgb' or 'od'"):
        PatchCodec(space="lab")


def test_patch_codec_is_built_from_its_config_and_checked() -> None:
    codec = build_vae({"kind": "patch_pca", "in_channels": 3, "latent_channels": 8, "patch": 8})
    assert isinstance(codec, PatchCodec) and codec.config["latent_channels"] == 8
    assert codec.space == "rgb"  # checkpoints from before ``space`` code RGB
    od = build_vae({**codec.config, "space": "od"})
    assert isinstance(od, PatchCodec) and od.config["space"] == "od"
    with pytest.raises(ConfigError, match="'rgb' or 'od'"):
        MuPDConfig.from_dict(
            {
                **MuPDConfig.tiny().to_dict(),
                "vae": {**codec.config, "latent_channels": 4, "space": "hsv"},
            }
        )
    with pytest.raises(ConfigError, match="latent channels"):
        MuPDConfig.from_dict({**MuPDConfig.tiny().to_dict(), "vae": codec.config})
    with pytest.raises(ConfigError, match="patch: 8"):
        MuPDConfig.from_dict(
            {
                **MuPDConfig.tiny().to_dict(),
                "vae": {**codec.config, "latent_channels": 4, "patch": 4},
            }
        )


@torch.no_grad()
def test_turned_codec_latents_decode_to_the_turned_image() -> None:
    """A block code is not equivariant: moving its grid alone would leave each block's
    content unturned; `turn_latents` turns the content too."""
    images = _smooth_images(4, seed=1) + 0.1 * torch.rand(
        4, 3, 32, 32, generator=torch.Generator().manual_seed(2)
    )
    codec = PatchCodec(latent_channels=48)
    fit_patch_codec(codec, torch.cat([images, images.flip(-1), images.transpose(-1, -2)]))
    z = encode(codec, images)
    moves = [(1, False), (2, True), (0, True), (3, False)]
    want = torch.stack(
        [
            torch.rot90(x, k, dims=(-2, -1))
            for x, (k, _) in zip(decode(codec, z), moves, strict=True)
        ]
    )
    want = torch.stack([x.flip(-1) if f else x for x, (_, f) in zip(want, moves, strict=True)])
    turned = turn_latents(z, moves, codec)
    error = (decode(codec, turned) - want).abs().mean()  # what the 48 components lose
    assert error < 0.02
    assert (decode(codec, turn_latents(z, moves)) - want).abs().mean() > 2 * error  # grid alone
    grid = turn_latents(torch.arange(8.0).reshape(1, 2, 2, 2), [(1, True)])
    torch.testing.assert_close(
        grid[0], torch.rot90(torch.arange(8.0).reshape(2, 2, 2), 1, (-2, -1)).flip(-1)
    )
