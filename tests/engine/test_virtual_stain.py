"""Region staining: blending, alignment with the slide, seams, windows, cancel."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from helpers import CMU1
from napari_mupd import RegionError, open_slide
from napari_mupd.engine.noise import noise_window
from napari_mupd.engine.sampling import PipelineTileModel
from napari_mupd.engine.tiling import Blender, tile_starts
from napari_mupd.engine.virtual_stain import Grid, stain_grid, stain_region
from napari_mupd.errors import Cancelled
from napari_mupd.imaging.regions import Region
from napari_mupd.model import MuPDConfig, MuPDPipeline


class Identity:
    """Returns its input: a stain that must reproduce the slide exactly."""

    channels = ("R", "G", "B")
    latent_channels = 0
    renders_detail = False

    def __init__(self, tile_size: int = 64, mpp: float | None = None) -> None:
        self.tile_size, self.mpp = tile_size, mpp

    def __call__(self, sources, noise, cancel):
        return sources.astype(np.float32) / 255


class DetailIdentity(Identity):
    """Returns the fine source it was given: output at the detail resolution."""

    renders_detail = True

    def __call__(self, sources, noise, cancel, details=None):
        assert details is None or details.shape[1] == sources.shape[1] * (
            details.shape[1] // sources.shape[1]
        )
        return (sources if details is None else details).astype(np.float32) / 255


class Constant(Identity):
    def __call__(self, sources, noise, cancel):
        return np.full(sources.shape, 0.4, np.float32)


class NoiseEcho(Identity):
    """Shows the noise it was given, so windows can be compared."""

    latent_channels = 3

    def __call__(self, sources, noise, cancel):
        up = noise.repeat(8, axis=2).repeat(8, axis=3)
        return np.moveaxis(up, 1, -1).astype(np.float32)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(10, 64, 16), (64, 64, 16), (300, 64, 16), (1000, 128, 32)]
)
def test_blend_weights_sum_to_one(length, tile, overlap):
    starts = tile_starts(length, tile, overlap, align=8)
    assert starts[0] == 0 and starts[-1] + tile >= length
    assert all(s % 8 == 0 for s in starts)
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))
    blender = Blender(length, length, 1, tile, overlap, starts, starts)
    total = np.zeros((length, length))
    for y in starts:
        for x in starts:
            blender.add(y, x, np.ones((tile, tile, 1)))
            w = blender.weights(y, x)[: length - y, : length - x]
            total[y : y + tile, x : x + tile] += w
    normalised = np.zeros_like(total)
    for y in starts:
        for x in starts:
            w = blender.weights(y, x)[: length - y, : length - x]
            normalised[y : y + tile, x : x + tile] += w / total[y : y + tile, x : x + tile]
    np.testing.assert_allclose(normalised, 1.0, atol=1e-12)
    np.testing.assert_allclose(blender.result(), 1.0, atol=1e-6)


@pytest.mark.parametrize(("x", "y", "w", "h"), [(0, 0, 200, 152), (40, 80, 136, 72)])
def test_detail_renders_the_slide_at_its_own_resolution(x, y, w, h):
    """A model on a 4x coarser grid that draws on the 4x finer source gives level 0 back,
    laid exactly where the slide's pixels are."""
    with open_slide(CMU1) as slide:
        model = DetailIdentity(mpp=4 * slide.mpp[0])
        coarse = stain_region(slide, Region(x, y, w, h), model)
        result = stain_region(slide, Region(x, y, w, h), model, output_mpp=slide.mpp[0])
        assert result.metadata["detail"] == 4 and coarse.metadata["detail"] == 1
        assert result.image.shape[:2] == (4 * coarse.image.shape[0], 4 * coarse.image.shape[1])
        np.testing.assert_array_equal(result.rgb_uint8(), slide.read_region((x, y), 0, (w, h)))
        np.testing.assert_allclose(result.scale, slide.mpp)
        np.testing.assert_allclose(result.translate, (y * slide.mpp[0], x * slide.mpp[1]))
        with pytest.raises(RegionError, match="its own grid"):
            grid = Grid.for_region(slide, Region(x, y, w, h), model.mpp)
            stain_grid(slide, grid, Identity(), detail=2)


@pytest.mark.parametrize(
    ("x", "y", "w", "h"), [(0, 0, 200, 150), (37, 81, 131, 77), (2101, 2900, 300, 200)]
)
def test_identity_model_reproduces_the_slide_at_level0(x, y, w, h):
    with open_slide(CMU1) as slide:
        result = stain_region(slide, Region(x, y, w, h), Identity())
        expected = slide.read_region((x, y), 0, (w, h))
        np.testing.assert_array_equal(result.rgb_uint8(), expected)
        assert result.scale == pytest.approx((0.499, 0.499))
        assert result.translate == pytest.approx((y * 0.499, x * 0.499))


@pytest.mark.parametrize(("mpp", "level"), [(1.0, 1), (2.0, 2)])
def test_identity_model_lands_on_lower_levels(generated, mpp, level):
    with open_slide(generated["ome"]) as slide:  # 0.5 um/px, levels 2x and 4x
        d = 2**level
        region = Region(17 * d, 33 * d, 90 * d, 70 * d)
        result = stain_region(slide, region, Identity(mpp=mpp))
        assert result.image.shape == (70, 90, 3)
        expected = slide.levels[level][33 : 33 + 70, 17 : 17 + 90].compute()
        np.testing.assert_array_equal(result.rgb_uint8(), expected)
        # output pixel 0 covers level-0 pixels [x, x + d): its centre in world units
        assert result.translate == pytest.approx(
            ((33 * d + (d - 1) / 2) * 0.5, (17 * d + (d - 1) / 2) * 0.5)
        )
        assert result.scale == pytest.approx((d * 0.5, d * 0.5))


def test_identity_model_with_resampling_matches_area_average():
    with open_slide(CMU1) as slide:
        result = stain_region(slide, Region(100, 200, 300, 240), Identity(mpp=0.499 * 3))
        assert result.image.shape == (80, 100, 3)
        level0 = slide.read_region((100, 200), 0, (300, 240)).astype(float)
        area = level0.reshape(80, 3, 100, 3, 3).mean(axis=(1, 3))
        assert np.abs(result.rgb_uint8() - area).mean() < 1.0


def test_constant_model_shows_no_seams():
    with open_slide(CMU1) as slide:
        result = stain_region(slide, Region(10, 10, 500, 333), Constant())
        np.testing.assert_allclose(result.image, 0.4, atol=1e-6)


def test_any_window_equals_the_whole():
    with open_slide(CMU1) as slide:
        grid = Grid.for_region(slide, Region(0, 0, 400, 300), None)
        model = NoiseEcho()
        whole, _ = stain_grid(slide, grid, model, seed=5)
        window = Region(101, 37, 333 - 101, 250 - 37)
        part, _ = stain_grid(slide, grid, model, seed=5, window=window)
        np.testing.assert_array_equal(part, whole[37:250, 101:333])


def test_noise_field_is_the_same_however_it_is_cut():
    whole = noise_window(3, 4, Region(0, 0, 90, 100))
    part = noise_window(3, 4, Region(41, 30, 40, 50))
    np.testing.assert_array_equal(part, whole[:, 30:80, 41:81])
    assert not np.array_equal(noise_window(4, 4, Region(0, 0, 10, 10)), whole[:, :10, :10])


def test_samples_give_uncertainty():
    with open_slide(CMU1) as slide:
        flat = stain_region(slide, Region(0, 0, 100, 100), Identity(), samples=3)
        np.testing.assert_array_equal(flat.std, 0)
        noisy = stain_region(slide, Region(0, 0, 100, 100), NoiseEcho(), samples=3)
        assert noisy.std.mean() > 0.3


def test_cancel_stops_between_tiles():
    calls = []

    class Counting(Identity):
        def __call__(self, sources, noise, cancel):
            calls.append(len(sources))
            return super().__call__(sources, noise, cancel)

    with open_slide(CMU1) as slide, pytest.raises(Cancelled):
        stain_region(
            slide,
            Region(0, 0, 1000, 1000),
            Counting(),
            batch_size=1,
            cancel=lambda: len(calls) >= 2,
        )
    assert len(calls) == 2


def test_polygon_region_masks_and_skips_tiles():
    with open_slide(CMU1) as slide:
        triangle = Region.from_polygon([(0, 0), (400, 0), (0, 400)])
        result = stain_region(slide, triangle, Constant())
        assert result.mask.shape == (400, 400)
        assert result.mask[10, 10] and not result.mask[390, 390]
        assert (result.image[-60:, -60:] == 1.0).all()  # the far tile was skipped: white
        assert np.allclose(result.image[:60, :60], 0.4)


def test_regions_off_the_slide_are_errors():
    with open_slide(CMU1) as slide:
        with pytest.raises(RegionError, match="outside"):
            stain_region(slide, Region(5000, 5000, 10, 10), Identity())
        with pytest.raises(RegionError, match="no area"):
            stain_region(slide, Region(0, 0, 0, 10), Identity())
        with pytest.raises(RegionError, match="3"):
            Region.from_polygon([(0, 0), (1, 1)])


def test_pipeline_tile_model_stains_with_a_tiny_mupd():
    pipe = MuPDPipeline.from_config(MuPDConfig.tiny())
    model = PipelineTileModel(pipe, "ihc:ki67", steps=2, mpp=1.0)
    with open_slide(CMU1) as slide:
        result = stain_region(slide, Region(100, 100, 200, 150), model, seed=1)
        again = stain_region(slide, Region(100, 100, 200, 150), model, seed=1)
    assert result.image.shape == (75, 100, 3)
    np.testing.assert_array_equal(result.image, again.image)
    assert result.metadata["target"] == "IHC:Ki67" and result.metadata["model_hash"]
    mif = PipelineTileModel(pipe, "mIF:CD8,CD3", steps=1)
    assert mif.channels == ("CD8", "CD3")
    with pytest.raises(Exception, match="not a staining target"):
        PipelineTileModel(pipe, "H&E")


def test_glass_is_skipped_and_left_see_through():
    """With min_tissue, tiles over glass are not stained, and the RGBA image is
    transparent there and opaque over the tissue, as the slide's tissue map says."""
    from napari_mupd.engine.tissue import MIN_TISSUE, slide_tissue

    calls = []

    class Counting(Constant):
        def __call__(self, sources, noise, cancel):
            calls.append(len(sources))
            return super().__call__(sources, noise, cancel)

    with open_slide(CMU1) as slide:
        region = Region(0, 0, 1200, 1200)  # the sample's top left is mostly glass
        every = stain_region(slide, region, Constant(tile_size=128))
        result = stain_region(slide, region, Counting(tile_size=128), min_tissue=MIN_TISSUE)
        tissue = slide_tissue(slide)
    assert every.mask.all()  # without min_tissue, every tile is stained
    assert 0 < result.mask.mean() < 1
    rgba = result.rgba_uint8()
    assert (rgba[..., 3][~result.mask] == 0).all() and (rgba[..., 3][result.mask] == 255).all()
    assert (result.image[~result.mask] == 1.0).all()  # skipped: white under the alpha
    ys, xs = np.nonzero(~result.mask)
    points = zip(ys[::997], xs[::997], strict=True)
    glass = [tissue.fraction(Region(int(x), int(y), 1, 1)) for y, x in points]
    assert np.mean(glass) < 0.2  # what was skipped is glass on the tissue map
