"""Image codecs: diffusers ``AutoencoderKL`` for RGB tiles and, per marker, for mIF
channels, or a linear patch codec (`PatchCodec`) for RGB tiles.

AutoencoderKL latents are scaled as in diffusers:
``z = (mode(E(2x - 1)) - shift_factor) * scaling_factor`` and decoded as
``x = (D(z / scaling_factor + shift_factor) + 1) / 2`` clamped to [0, 1]. Encoding takes
the posterior mode, so it is deterministic. A config with ``kind: patch_pca`` builds a
`PatchCodec` instead; `encode` and `decode` take either.

mIF: one single-channel AutoencoderKL is shared by all markers. A (B, K, H, W) marker
stack is encoded as B*K grey images, giving K groups of ``latent_channels`` channels
(the channel-wise latent; see `MuPDConfig.canvas_channels`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_mupd.errors import ConfigError
from napari_mupd.model.config import CODE_SPACES, PATCH_PCA

if TYPE_CHECKING:  # the class itself: diffusers' lazy top level hides it from type checkers
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL


#: Optical density of the darkest pixel value (1/255): ``space: od`` codes OD / this.
_OD_MAX = math.log10(255)


def _to_od(images: Tensor) -> Tensor:
    """RGB in [0, 1] -> optical density scaled to [0, 1] (1/255 and below -> 1)."""
    return -torch.log10(images.clamp(min=1 / 255)) / _OD_MAX


def _from_od(od: Tensor) -> Tensor:
    """Scaled optical density -> RGB in [1/255, 1]."""
    return torch.pow(10.0, -od.clamp(0, 1) * _OD_MAX)


class PatchCodec(nn.Module):
    """A linear autoencoder of ``patch`` x ``patch`` image blocks: the block's projection
    on the top ``latent_channels`` principal components of the training tiles' blocks,
    each standardised to unit variance (`fit_patch_codec` sets them in closed form).

    ``space="od"`` codes the blocks' optical density (``-log10`` of RGB, scaled to [0, 1])
    instead of RGB: stains add up linearly there (Beer-Lambert), so a linear code keeps
    each stain's amount, where an RGB code shifts dark nuclei towards eosin. On this
    project's held-out H&E, 16 RGB components (the bundled codec) miss by ~7 grey levels
    (13 on the sample slide, eosin +20 %), 32 OD components by ~5 with every stain within
    5 % (docs/model_card.md); the trained 4-channel AutoencoderKL missed by ~17.
    Encoding and decoding are one strided convolution each.
    """

    basis: Tensor  # (latent_channels, in_channels * patch * patch): the components
    mean: Tensor  # (in_channels * patch * patch,): the mean block
    latent_std: Tensor  # (latent_channels,): each component's std on the fitted blocks

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 16,
        patch: int = 8,
        space: Literal["rgb", "od"] = "rgb",
    ) -> None:
        super().__init__()
        if space not in CODE_SPACES:
            raise ConfigError(f"a patch codec codes 'rgb' or 'od' blocks, not {space!r}")
        self.in_channels, self.latent_channels, self.patch = in_channels, latent_channels, patch
        self.space = space
        dim = in_channels * patch * patch
        self.register_buffer("basis", torch.zeros(latent_channels, dim))
        self.register_buffer("mean", torch.full((dim,), 0.5))
        self.register_buffer("latent_std", torch.ones(latent_channels))

    @property
    def config(self) -> dict[str, Any]:
        """The codec's config dict (what `build_vae` takes back)."""
        return {
            "kind": PATCH_PCA,
            "in_channels": self.in_channels,
            "latent_channels": self.latent_channels,
            "patch": self.patch,
            "space": self.space,
        }

    def to_code_space(self, images: Tensor) -> Tensor:
        """Images in [0, 1] -> the values the codec codes (themselves, or scaled OD)."""
        return _to_od(images) if self.space == "od" else images

    def _kernel(self) -> Tensor:
        return self.basis.reshape(-1, self.in_channels, self.patch, self.patch)

    def _mean_image(self, h: int, w: int) -> Tensor:
        p = self.patch
        return self.mean.reshape(1, self.in_channels, p, p).repeat(1, 1, h, w)

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1], H and W multiples of ``patch`` -> (B, k, H/p, W/p)."""
        p = self.patch
        x = self.to_code_space(images.to(self.basis.dtype))
        x = x - self._mean_image(x.shape[-2] // p, x.shape[-1] // p)
        z = F.conv2d(x, self._kernel(), stride=p)
        return (z / self.latent_std[:, None, None]).float()

    def decode_latents(self, latents: Tensor) -> Tensor:
        """(B, k, h, w) standardised latents -> images (B, C, p h, p w) in [0, 1]."""
        z = latents.to(self.basis.dtype) * self.latent_std[:, None, None]
        x = F.conv_transpose2d(z, self._kernel(), stride=self.patch)
        x = x + self._mean_image(*latents.shape[-2:])
        return (_from_od(x) if self.space == "od" else x.clamp(0, 1)).float()


@torch.no_grad()
def fit_patch_codec(codec: PatchCodec, images: Tensor, max_blocks: int = 200_000) -> None:
    """Set `codec` to the principal components of the blocks of ``images`` (B, C, H, W)
    in [0, 1], taken in the codec's space (RGB or optical density), under all eight
    rotations and flips (so that a turned tile codes as well as the tile; see
    `turn_latents`): at most ``max_blocks`` blocks, evenly spaced, in float64; each
    component's sign fixed so that its largest entry is positive (the fit is
    deterministic)."""
    c, p, k = codec.in_channels, codec.patch, codec.latent_channels
    b, _, h, w = images.shape
    blocks = codec.to_code_space(images.double()).reshape(b, c, h // p, p, w // p, p)
    blocks = blocks.permute(0, 2, 4, 1, 3, 5).reshape(-1, c, p, p)
    blocks = blocks[:: max(1, 8 * len(blocks) // max_blocks)]
    turns = [torch.rot90(blocks, r, dims=(-2, -1)) for r in range(4)]
    blocks = torch.cat(turns + [t.flip(-1) for t in turns]).reshape(-1, c * p * p)
    if len(blocks) < k:
        raise ValueError(f"{len(blocks)} blocks cannot fit {k} components")
    mean = blocks.mean(0)
    _, _, vh = torch.linalg.svd(blocks - mean, full_matrices=False)
    basis = vh[:k]
    signs = torch.sign(basis.gather(1, basis.abs().argmax(1, keepdim=True)))
    basis = basis * signs
    std = ((blocks - mean) @ basis.T).std(0).clamp_min(1e-6)
    codec.basis.copy_(basis.float())
    codec.mean.copy_(mean.float())
    codec.latent_std.copy_(std.float())


def build_vae(config: dict[str, Any]) -> AutoencoderKL | PatchCodec:
    """A codec from its config dict: a `PatchCodec` for ``kind: patch_pca``, otherwise a
    randomly initialised AutoencoderKL (`build_autoencoder`)."""
    if config.get("kind") == PATCH_PCA:
        return PatchCodec(**{k: v for k, v in config.items() if k != "kind"})
    return build_autoencoder(config)


def build_autoencoder(config: dict[str, Any]) -> AutoencoderKL:
    """A randomly initialised AutoencoderKL from its config dict (diffusers imported here)."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    return AutoencoderKL(**config)


def turn_latents(
    latents: Tensor, moves: list[tuple[int, bool]], vae: AutoencoderKL | PatchCodec | None = None
) -> Tensor:
    """Rotate (``k`` quarter turns) and flip (left-right, after the turn) each latent map
    (B, C, h, w) as its image would be, one ``(k, flip)`` per map. Latents of ``vae``
    (None: block statistics, or AutoencoderKL latents, which are close to equivariant) are
    moved as a grid; a `PatchCodec` codes each block in a fixed orientation, so its
    channels are decoded, turned and encoded again."""
    if isinstance(vae, PatchCodec):
        c = vae.latent_channels
        images = _turn(vae.decode_latents(latents[:, :c]), moves)
        return torch.cat([vae.encode_images(images), _turn(latents[:, c:], moves)], dim=1)
    return _turn(latents, moves)


def _turn(x: Tensor, moves: list[tuple[int, bool]]) -> Tensor:
    out = [torch.rot90(z, k, dims=(-2, -1)) for z, (k, _) in zip(x, moves, strict=True)]
    out = [z.flip(-1) if flip else z for z, (_, flip) in zip(out, moves, strict=True)]
    return torch.stack(out) if out else x


def _factors(vae: AutoencoderKL) -> tuple[float, float]:
    config = vae.config  # diffusers' FrozenDict
    return float(config["scaling_factor"]), float(config.get("shift_factor") or 0.0)


def encode(vae: AutoencoderKL | PatchCodec, images: Tensor) -> Tensor:
    """(B, C, H, W) in [0, 1] -> scaled latents (B, latent_channels, H/8, W/8)."""
    if isinstance(vae, PatchCodec):
        return vae.encode_images(images)
    scale, shift = _factors(vae)
    dtype = next(vae.parameters()).dtype
    z = vae.encode((images * 2 - 1).to(dtype)).latent_dist.mode()
    return (z.float() - shift) * scale


def decode(vae: AutoencoderKL | PatchCodec, latents: Tensor) -> Tensor:
    """Scaled latents -> images (B, C, H, W) in [0, 1], float32."""
    if isinstance(vae, PatchCodec):
        return vae.decode_latents(latents)
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
