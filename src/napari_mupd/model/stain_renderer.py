"""Virtual IHC in stain space: a stain latent, source features and a structure-conditioned
renderer.

A virtual stain must show the source's own cells. The transformer predicts, on its 8x
latent grid, *how much* haematoxylin and DAB each block holds (the stain latent); the
:class:`StainRenderer` draws it at full resolution from a structure map, the nuclear
optical density of the source H&E, so nuclei, tissue edges and glass come from the source
and the model decides the stain. The renderer's output are haematoxylin and DAB optical
densities, turned into RGB by the Beer-Lambert law with the fixed colour-deconvolution
vectors of :mod:`napari_mupd.imaging.stains`: the output can only be an H-DAB image, with
no eosin, whatever the network does.

The renderer is trained self-supervised on IHC tiles alone: the structure map is then the
tile's own nuclear density (haematoxylin + DAB optical density), with a random gain so that
magnitudes come from the latent and shapes from the structure. At inference the map is the
source H&E's haematoxylin density, at any resolution: the network sees a few pixels
around each pixel and the latent upsampled to them, so the same weights render at the
model's pixel size or several times finer.

Known limit: DAB is drawn on the structure the source shows, its nuclei and what lies
close to them. For membrane and cytoplasm markers (CD31, pan-cytokeratin) the brown sits
on and around the positive cells rather than exactly on their membranes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_mupd.imaging.stains import HED_FROM_RGB, RGB_FROM_HED
from napari_mupd.model.config import STAIN_CHANNELS

#: Downsampling of the stain latent and of the source features (the VAE's, 8x).
FACTOR = 8
#: Scale of the renderer's additive (off-structure) densities.
_OFFSET_SCALE = 0.1


def stain_densities(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> haematoxylin, eosin and DAB optical densities (>= 0)."""
    od = -torch.log10(rgb.float().clamp(min=1 / 255))
    matrix = torch.as_tensor(HED_FROM_RGB, device=rgb.device)
    return torch.einsum("bchw,cd->bdhw", od, matrix).clamp(min=0)


def compose_stains(densities: Tensor) -> Tensor:
    """(B, 3, H, W) haematoxylin, eosin and DAB densities -> RGB in [0, 1] (Beer-Lambert)."""
    matrix = torch.as_tensor(RGB_FROM_HED, device=densities.device)
    od = torch.einsum("bdhw,dc->bchw", densities.float(), matrix)
    return torch.pow(10.0, -od).clamp(0, 1)


def _pool(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, FACTOR)


def pooled_stains(densities: Tensor) -> Tensor:
    """(B, 3, H, W) densities -> (B, 4, H/8, W/8): mean haematoxylin, mean DAB, root mean
    square DAB and mean eosin per 8 x 8 block.

    For an IHC target this is its stain latent (before normalisation); for a source H&E it
    is what the transformer sees of the source (the DAB channel of an H&E holds the
    haematoxylin that leaks into it: darkness).
    """
    h, e, dab = densities[:, 0:1], densities[:, 1:2], densities[:, 2:3]
    return torch.cat([_pool(h), _pool(dab), _pool(dab**2).sqrt(), _pool(e)], dim=1)


def structure_map(densities: Tensor) -> Tensor:
    """(B, 1, H, W) nuclear density of an IHC tile's densities: haematoxylin + DAB."""
    return densities[:, 0:1] + densities[:, 2:3]


def source_structure(rgb: Tensor) -> Tensor:
    """(B, 1, H, W) structure map of a source H&E: its haematoxylin density."""
    return stain_densities(rgb)[:, 0:1]


class StainRenderer(nn.Module):
    """Stain latent + full-resolution structure map -> haematoxylin and DAB densities.

    Per pixel the network predicts four non-negative maps ``a, b, c_h, c_d`` from the
    structure ``s``, its mean over the latent's block and the latent (bilinearly
    upsampled), and
    returns ``H = a s + c_h``, ``DAB = b s + c_d`` (eosin 0): where the structure is empty
    (glass) and the latent says so, the output is white. Its receptive field is 5 px.
    """

    def __init__(self, latent_channels: int = STAIN_CHANNELS, width: int = 32) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.net = nn.Sequential(
            nn.Conv2d(2 + latent_channels, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 1),
            nn.GELU(),
            nn.Conv2d(width, 4, 1),
        )

    def forward(self, latent: Tensor, structure: Tensor) -> Tensor:
        """latent (B, C, h, w) un-normalised stain latent; structure (B, 1, H, W) with H, W
        any multiple of h, w. Returns (B, 3, H, W) densities."""
        size = structure.shape[-2:]
        factor = size[0] // latent.shape[-2]
        up = F.interpolate(latent.float(), size=size, mode="bilinear", align_corners=False)
        local = F.avg_pool2d(structure, factor) if factor > 1 else structure
        local = F.interpolate(local, size=size, mode="bilinear", align_corners=False)
        a, b, ch, cd = F.softplus(self.net(torch.cat([structure, local, up], 1))).split(1, 1)
        hema = a * structure + _OFFSET_SCALE * ch
        dab = b * structure + _OFFSET_SCALE * cd
        return torch.cat([hema, torch.zeros_like(hema), dab], dim=1)
