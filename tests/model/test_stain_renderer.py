"""Virtual IHC in stain space: the stain latent, the renderer, and detail rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import CMU1
from napari_mupd import open_slide
from napari_mupd.errors import ConditionError
from napari_mupd.imaging.stains import compose_stains as compose_np
from napari_mupd.imaging.stains import stain_densities as densities_np
from napari_mupd.model.stain_renderer import (
    StainRenderer,
    anchor_to_source,
    compose_stains,
    pooled_stains,
    stain_densities,
)


@pytest.fixture(scope="module")
def he() -> np.ndarray:
    with open_slide(CMU1) as slide:
        return slide.read_region((640, 1280), 0, (64, 64))


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255


def test_torch_colour_deconvolution_matches_the_numpy_one(he):
    d = stain_densities(to_tensor(he))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(d, densities_np(he), atol=1e-5)
    rgb = compose_stains(torch.from_numpy(d).permute(2, 0, 1)[None])[0].permute(1, 2, 0)
    np.testing.assert_allclose(rgb.numpy() * 255, compose_np(d), atol=0.51)


def test_stain_latent_is_block_statistics(he):
    d = stain_densities(to_tensor(he))
    z = pooled_stains(d)[0]
    assert z.shape == (4, 8, 8)
    block = d[0, :, :8, 8:16]
    assert z[0, 0, 1] == pytest.approx(block[0].mean().item(), rel=1e-5)  # haematoxylin
    assert z[1, 0, 1] == pytest.approx(block[2].mean().item(), rel=1e-5)  # DAB
    assert z[2, 0, 1] == pytest.approx(block[2].pow(2).mean().sqrt().item(), rel=1e-5)
    assert z[3, 0, 1] == pytest.approx(block[1].mean().item(), rel=1e-5)  # eosin


def test_renderer_draws_only_haematoxylin_and_dab_at_any_scale(he):
    """Whatever its weights, the output has no eosin, glass stays glass, and the same
    weights draw on structure maps 1, 2 or 3 times finer than the latent's 8x grid."""
    torch.manual_seed(0)
    renderer = StainRenderer(width=8)
    z = torch.rand(1, 4, 8, 8)
    for k in (1, 2, 3):
        s = torch.rand(1, 1, 64 * k, 64 * k)
        out = renderer(z, s)
        assert out.shape == (1, 3, 64 * k, 64 * k)
        assert torch.all(out[:, 1] == 0) and torch.all(out >= 0)
        rgb = compose_stains(out)
        assert stain_densities(rgb)[:, 1].abs().max() < 1e-4  # no eosin in the picture
    glass = renderer(torch.zeros(1, 4, 8, 8), torch.zeros(1, 1, 64, 64))
    assert glass.max() <= 0.1 * np.log(2) * 2  # only the small additive terms


def test_anchor_takes_each_blocks_nuclear_density_from_the_source(he):
    """Amounts follow the source block by block, whatever the latent says; the latent
    keeps each block's DAB share, and a finer structure map pools to the same blocks."""
    s = stain_densities(to_tensor(he))[:, 0:1]
    z = torch.rand(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    anchored = anchor_to_source(z, s, gain=1.5)
    block = torch.nn.functional.avg_pool2d(s, 8)
    torch.testing.assert_close(anchored[:, 0:1] + anchored[:, 1:2], 1.5 * block)
    torch.testing.assert_close(
        anchored[:, 1:2] / (anchored[:, 0:1] + anchored[:, 1:2]),
        z[:, 1:2] / (z[:, 0:1] + z[:, 1:2]),
    )
    torch.testing.assert_close(anchored[:, 3:], z[:, 3:])  # eosin kept
    fine = torch.nn.functional.interpolate(s, scale_factor=2, mode="nearest")
    torch.testing.assert_close(anchor_to_source(z, fine, gain=1.5), anchored)
    empty = anchor_to_source(torch.zeros(1, 4, 8, 8), s, gain=1.5)
    assert torch.isfinite(empty).all() and torch.all(empty[:, 1:3] == 0)  # no DAB invented


def test_pipeline_renders_ihc_on_a_finer_source(pipe, make_tile):
    """`detail` draws the stain on the source k times finer: output k times larger."""
    source = make_tile(1)
    fine = np.kron(source, np.ones((2, 2, 1), np.uint8))
    out = pipe(image=source, detail=fine, target="IHC:Ki67", num_inference_steps=2, generator=0)
    assert out.images.shape == (1, 128, 128, 3)
    coarse = pipe(image=source, target="IHC:Ki67", num_inference_steps=2, generator=0)
    assert coarse.images.shape == (1, 64, 64, 3)
    with pytest.raises(ConditionError, match="integer multiple"):
        pipe(image=source, detail=fine[:100], target="IHC:Ki67", num_inference_steps=1)
    with pytest.raises(ConditionError, match="give image too"):
        pipe(detail=fine, target="IHC:Ki67", num_inference_steps=1)


def _blobs(seed: int, size: int = 64) -> torch.Tensor:
    """A structure map of round 'nuclei' (OD 0.6) on a pale background (OD 0.05)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    s = np.full((size, size), 0.05, np.float32)
    for cy, cx in rng.integers(4, size - 4, (40, 2)):
        s[(yy - cy) ** 2 + (xx - cx) ** 2 <= 5] = 0.6
    return torch.from_numpy(s)[None, None]


def test_nuclear_readout_colours_whole_nuclei():
    """Nuclear marker: every nucleus all brown or all blue, positive in proportion to its
    DAB share, the same draw wherever a tile cuts it; other markers: nuclei stay blue."""
    from scipy import ndimage

    from napari_mupd.model.stain_renderer import POSITIVE_DAB, nuclear_readout

    s = _blobs(0)
    mixed = torch.cat([0.6 * s, torch.zeros_like(s), 0.4 * s], 1)  # 40 % DAB everywhere
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    out = nuclear_readout(mixed, s, 8, noise, nuclear_marker=True)[0].numpy()
    labels, n = ndimage.label(s[0, 0].numpy() > 0.3)
    share = out[2] / np.maximum(out[0] + out[2], 1e-9)
    kinds = [np.unique(np.round(share[labels == i], 3)) for i in range(1, n + 1)]
    assert all(len(k) == 1 and k[0] in (0.0, POSITIVE_DAB) for k in kinds)
    positive = np.mean([k[0] > 0 for k in kinds])
    assert 0.15 < positive < 0.65  # ~40 % of the nuclei, from draws
    np.testing.assert_allclose(out[0] + out[2], (mixed[0, 0] + mixed[0, 2]).numpy(), rtol=1e-6)
    again = nuclear_readout(mixed, s, 8, noise, nuclear_marker=True)[0].numpy()
    np.testing.assert_array_equal(out, again)
    # a window shifted by whole latent blocks sees the same nuclei draw the same
    part = nuclear_readout(mixed[..., 16:, 16:], s[..., 16:, 16:], 8, noise[..., 2:, 2:], True)
    inner = labels[16:, 16:]
    whole = [i for i in range(1, n + 1) if (labels == i).sum() == (inner == i).sum()]
    for i in whole:
        a, b = out[2][labels == i], part[0, 2].numpy()[inner == i]
        np.testing.assert_allclose(a, b, rtol=1e-6)
    membrane = nuclear_readout(mixed, s, 8, noise, nuclear_marker=False)[0].numpy()
    assert (membrane[2][labels > 0] == 0).all() and (membrane[2][labels == 0] > 0).all()


def test_pipeline_nuclei_modes(pipe, make_tile):
    source = make_tile(2)
    cells = pipe(image=source, target="IHC:Ki67", num_inference_steps=2, generator=0)
    mean = pipe(image=source, target="IHC:Ki67", num_inference_steps=2, generator=0, nuclei="mean")
    assert cells.images.shape == mean.images.shape
    with pytest.raises(ConditionError, match="nuclei must be"):
        pipe(image=source, target="IHC:Ki67", num_inference_steps=1, nuclei="some")
