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

Between blocks the amounts follow the source too (:func:`anchor_to_source`): a block's
nuclear density (haematoxylin + DAB) is the source's haematoxylin there, times a gain
measured on the training data, and the latent decides only the share of it that is DAB.
So the counterstain is the source's own, block to block and pixel to pixel, and the model
says which cells are positive, which is all it can know.

Known limit: DAB is drawn on the structure the source shows, its nuclei and what lies
close to them. For membrane and cytoplasm markers (CD31, pan-cytokeratin) the brown sits
on and around the positive cells rather than exactly on their membranes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_mupd.imaging.stains import HED_FROM_RGB, RGB_FROM_HED
from napari_mupd.model.config import STAIN_CHANNELS

#: Downsampling of the stain latent and of the source features (the VAE's, 8x).
FACTOR = 8
#: Scale of the renderer's additive (off-structure) densities.
_OFFSET_SCALE = 0.1
#: Optical density added to the structure and its block mean before their ratio (glass).
_EPS = 0.02


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


def anchor_to_source(latent: Tensor, structure: Tensor, gain: float) -> Tensor:
    """The stain latent (B, 4, h, w, un-normalised) with each block's nuclear density
    (haematoxylin + DAB) taken from the source: ``gain`` times the block's mean of
    ``structure`` (B, 1, H, W), the source's haematoxylin. The latent keeps what the source
    cannot say, each block's share of DAB (which cells are positive); the amounts follow
    the source's own cells, block to block as the renderer makes them follow within a
    block. The root mean square DAB scales with the mean DAB; eosin is kept.
    """
    factor = structure.shape[-2] // latent.shape[-2]
    source = gain * F.avg_pool2d(structure.clamp(min=0), factor)
    total = latent[:, 0:1] + latent[:, 1:2]
    share = latent[:, 1:2] / total.clamp(min=1e-6)
    scale = torch.where(total > 1e-6, source / total.clamp(min=1e-6), torch.zeros_like(total))
    return torch.cat(
        [(1 - share) * source, share * source, latent[:, 2:3] * scale, latent[:, 3:]], 1
    )


class StainRenderer(nn.Module):
    """Stain latent + full-resolution structure map -> haematoxylin and DAB densities.

    The structure enters only as its contrast ``r = s / mean(s)`` over the latent's block,
    so how much stain there is comes from the latent alone and how it is laid out from the
    structure: an H&E with twice the haematoxylin of the training IHC gives the same stain.
    Per pixel the network predicts four non-negative maps ``a, b, c_h, c_d`` from ``r`` and
    the latent (bilinearly upsampled: mean haematoxylin ``h``, mean DAB ``d``, ...) and
    returns ``H = a r h + c_h``, ``DAB = b r d + c_d`` (eosin 0): glass, where the latent
    has no stain, stays white. Its receptive field is 5 px.
    """

    def __init__(self, latent_channels: int = STAIN_CHANNELS, width: int = 32) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.net = nn.Sequential(
            nn.Conv2d(1 + latent_channels, width, 3, padding=1),
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
        contrast = (structure.clamp(min=0) + _EPS) / (local.clamp(min=0) + _EPS)
        a, b, ch, cd = F.softplus(self.net(torch.cat([contrast, up], 1))).split(1, 1)
        hema = a * contrast * up[:, 0:1].clamp(min=0) + _OFFSET_SCALE * ch
        dab = b * contrast * up[:, 1:2].clamp(min=0) + _OFFSET_SCALE * cd
        return torch.cat([hema, torch.zeros_like(hema), dab], dim=1)


#: A pixel is nuclear where the structure is this many times its block mean and dense.
NUCLEUS_CONTRAST, NUCLEUS_MIN_OD = 1.3, 0.15
#: The share of a positive nucleus's optical density drawn as DAB (the rest stays blue).
POSITIVE_DAB = 0.8


def nuclear_readout(
    densities: Tensor, structure: Tensor, factor: int, noise: Tensor, nuclear_marker: bool
) -> Tensor:
    """Decide the stain nucleus by nucleus, as IHC shows it.

    The renderer spreads a block's DAB over all of its nuclei (a mean); a real IHC has
    whole nuclei brown or blue. Nuclei are the connected pixels of ``structure`` (B, 1, H,
    W) denser than `NUCLEUS_CONTRAST` times their block mean (blocks of ``factor`` px)
    and `NUCLEUS_MIN_OD`. For a nuclear marker each nucleus turns positive (brown) with
    probability equal to its share of DAB in ``densities`` (B, 3, H, W), so the expected
    DAB is kept; the others turn blue. For membrane and cytoplasm markers every nucleus
    is blue and the DAB around it stays. The draw for a nucleus comes from ``noise``
    (B, C, H / factor, W / factor, the sampler's initial noise, one field over a whole
    slide) at its centroid, hashed with the centroid's place in its block: tiles that
    share a nucleus share its draw.
    """
    from scipy import ndimage

    dens = densities.detach().float().cpu().numpy()
    s = structure.detach().float().cpu().numpy()[:, 0]
    z = noise.detach().float().cpu().numpy()
    out = dens.copy()
    for i in range(len(dens)):
        h, d = dens[i, 0], dens[i, 2]
        block = ndimage.zoom(s[i].reshape(s.shape[1] // factor, factor, -1, factor).mean((1, 3)),
                             factor, order=1)  # fmt: skip
        nuclei = (s[i] > NUCLEUS_CONTRAST * block) & (s[i] > NUCLEUS_MIN_OD)
        labels, n = ndimage.label(nuclei)
        if n == 0:
            continue
        total = h + d
        if not nuclear_marker:
            out[i, 0][nuclei], out[i, 2][nuclei] = total[nuclei], 0.0
            continue
        index = np.arange(1, n + 1)
        share = ndimage.sum(d, labels, index) / np.maximum(ndimage.sum(total, labels, index), 1e-6)
        cy, cx = np.asarray(ndimage.center_of_mass(nuclei, labels, index), float).reshape(-1, 2).T
        by, bx = (cy // factor).astype(int), (cx // factor).astype(int)
        seed = z[i][:, by, bx].T @ np.linspace(12.9898, 78.233, z.shape[1])
        seed += 4.1414 * np.round(cy % factor) + 2.7183 * np.round(cx % factor)
        draw = np.modf(np.abs(np.sin(seed) * 43758.5453))[0]
        positive = np.zeros(n + 1, bool)
        positive[1:] = draw < share
        yes, no = positive[labels] & nuclei, ~positive[labels] & nuclei
        out[i, 0][yes], out[i, 2][yes] = (1 - POSITIVE_DAB) * total[yes], POSITIVE_DAB * total[yes]
        out[i, 0][no], out[i, 2][no] = total[no], 0.0
    return torch.from_numpy(out).to(densities.device)
