"""Image inputs: validation to a float tensor, and the reference-image token projector."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from napari_mupd.errors import ConditionError


def _as_array(image: object) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        return image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        return image
    if type(image).__module__.startswith("PIL."):
        return np.asarray(image)
    if isinstance(image, Sequence) and image and not isinstance(image, str):
        return np.stack([_as_array(i) for i in image])
    raise ConditionError(
        f"image: expected a numpy array, torch tensor or PIL image (H, W, 3), "
        f"got {type(image).__name__}"
    )


def image_to_tensor(
    image: object,
    *,
    size: int | None = None,
    multiple_of: int = 1,
    channels: int = 3,
    what: str = "image",
) -> Tensor:
    """A tile or batch as a float tensor (B, channels, H, W) in [0, 1].

    Accepts (H, W, C) or (B, H, W, C) as uint8 (0-255) or float in [0, 1] (numpy, torch
    or PIL; a list of tiles is stacked); C = `channels` (3: RGB; K for an mIF stack).
    `size`: required side (square); `multiple_of`: required divisor of both sides.
    Anything else is a ConditionError naming the problem.
    """
    arr = _as_array(image)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ConditionError(
            f"{what}: expected (H, W, {channels}) or (B, H, W, {channels}), got shape {arr.shape}"
        )
    if arr.shape[-1] != channels:
        hint = " (drop the alpha channel)" if (channels, arr.shape[-1]) == (3, 4) else ""
        raise ConditionError(
            f"{what}: expected {channels} channels last, got shape {arr.shape}{hint}"
        )
    if arr.dtype == np.uint8:
        out = torch.from_numpy(arr.astype(np.float32) / 255.0)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ConditionError(f"{what}: contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ConditionError(
                f"{what}: float images must lie in [0, 1], got [{lo:.3g}, {hi:.3g}] "
                "(pass uint8 for 0-255 data)"
            )
        out = torch.from_numpy(arr.astype(np.float32))
    else:
        raise ConditionError(
            f"{what}: dtype {arr.dtype} not supported; use uint8 or float in [0, 1]"
        )
    _, h, w, _ = out.shape
    if size is not None and (h, w) != (size, size):
        raise ConditionError(f"{what}: expected {size}x{size} px tiles, got {h}x{w}")
    if h % multiple_of or w % multiple_of or h == 0 or w == 0:
        raise ConditionError(
            f"{what}: height and width must be positive multiples of {multiple_of} px, got {h}x{w}"
        )
    return out.permute(0, 3, 1, 2).contiguous()


class ReferenceImageEncoder(nn.Module):
    """Reference tile latent (B, C, h, w) -> tokens: patchify conv, position, MLP, norm."""

    def __init__(self, latent_channels: int, patch: int, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(latent_channels, dim, kernel_size=patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, latents: Tensor) -> Tensor:
        """(B, C, h, w) scaled VAE latents -> (B, num_tokens, dim)."""
        x = self.proj(latents).flatten(2).transpose(1, 2)
        return self.norm(self.mlp(x + self.pos))
