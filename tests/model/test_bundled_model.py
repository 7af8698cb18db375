"""The bundled checkpoint: it draws real IHC faithfully and keeps the sample's own cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from napari_mupd import open_slide
from napari_mupd.engine.sampling import PipelineTileModel
from napari_mupd.engine.tissue import MIN_TISSUE, most_tissue_region
from napari_mupd.engine.virtual_stain import stain_region
from napari_mupd.eval.structure import structure_score
from napari_mupd.imaging.stains import stain_densities as densities_np
from napari_mupd.model.loading import load_pipeline
from napari_mupd.model.stain_renderer import (
    compose_stains,
    pooled_stains,
    stain_densities,
    structure_map,
)
from napari_mupd.resources import sample_slide_path


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(None, "cpu")


@torch.inference_mode()
def test_the_renderer_round_trips_real_ihc_it_never_saw(pipe):
    """scikit-image's colon IHC (not in the training data) drawn back from its stain
    latent and its own nuclear density: DAB within 10 %, no eosin, MAE < 10/255."""
    image = data.immunohistochemistry()
    tiles = [
        image[y : y + 128, x : x + 128] for y in range(0, 512, 128) for x in range(0, 512, 128)
    ]
    x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255
    d = stain_densities(x)
    y = compose_stains(pipe.stain_renderer(pooled_stains(d), structure_map(d)))
    y = (y * 255).round() / 255
    dy = stain_densities(y)
    assert abs(float(dy[:, 2].mean() / d[:, 2].mean()) - 1) < 0.10
    assert float(dy[:, 1].mean()) < 0.005
    assert float((y - x).abs().mean()) * 255 < 10


def test_the_demo_keeps_the_samples_cells_in_ihc_colours(pipe):
    """`mupd demo`'s settings: the sample's 512 px region with the most tissue, the model
    at its pixel size, the stain drawn at the slide's: its nuclei follow the H&E's
    (structure r >= 0.8), it is an H-DAB image (no eosin) and glass stays white."""
    with open_slide(sample_slide_path()) as slide:
        region = most_tissue_region(slide, 512)
        model = PipelineTileModel(pipe, "IHC:Ki67")
        result = stain_region(slide, region, model, output_mpp=slide.mpp[0], min_tissue=MIN_TISSUE)
    assert result.image.shape[:2] == (511, 511) or result.image.shape[:2] == (512, 512)
    assert result.source is not None
    virtual = result.rgb_uint8()
    assert structure_score(virtual, result.source) >= 0.8
    d = densities_np(virtual)
    assert d[..., 1].mean() < 0.005  # no eosin: not a pink-and-purple H&E
    assert (d[..., 0] > 0.1).mean() > 0.05  # haematoxylin counterstain on the nuclei


@torch.inference_mode()
def test_the_he_codec_round_trips_the_samples_held_out_tiles(pipe):
    """The bundled H&E codec on the sample slide's held-out tiles (the right 30 %, at the
    model's 1 um/px, never seen by its fit; skin, the hardest of its sources: 13 grey
    levels where the config's held-out tiles average 7, docs/model_card.md): less than
    half the error of each 8 x 8 block's own colour (30 grey levels), haematoxylin and
    eosin within 25 % (the block colour loses 27 % of the eosin); and
    scikit-image's colon IHC within the IHC goal (MAE < 10/255, DAB within 10 %, no eosin)."""
    from napari_mupd.model.vae import decode, encode
    from napari_mupd.train.datasets import build_dataset

    spec = {"slide": str(sample_slide_path()), "mpp": 1.0, "caption": "-", "holdout": 0.3}
    tiles = build_dataset({"slide_tiles": {**spec, "split": "test"}}, pipe.config.resolution)
    assert len(tiles) >= 10
    he = np.stack([tiles[i].image for i in range(len(tiles))])
    colon = data.immunohistochemistry()
    ihc = np.stack([colon[y : y + 128, x : x + 128] for y in (0, 256) for x in (0, 256)])
    for images, is_he in ((he, True), (ihc, False)):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        y = (decode(pipe.vae, encode(pipe.vae, x)) * 255).round() / 255
        error = float((y - x).abs().mean())
        d, dy = stain_densities(x), stain_densities(y)
        if is_he:
            blocks = F.interpolate(F.avg_pool2d(x, 8), scale_factor=8, mode="bilinear")
            assert error < 0.5 * float((blocks - x).abs().mean())
            for stain in (0, 1):  # haematoxylin, eosin
                assert abs(float(dy[:, stain].mean() / d[:, stain].mean()) - 1) < 0.25
        else:
            assert error * 255 < 10
            assert abs(float(dy[:, 2].mean() / d[:, 2].mean()) - 1) < 0.10
            assert float(dy[:, 1].mean()) < 0.005
