"""Classical augmentations on tiny generated images: each does what it says, geometric ones
keep a tile and its targets aligned, photometric ones touch H&E only, draws are seeded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import pattern
from napari_mupd.errors import ExportError
from napari_mupd.imaging import augment as aug
from napari_mupd.imaging.augment import Augmentation, Transform
from napari_mupd.imaging.stains import compose_stains, stain_densities

ALL = Augmentation(flips=True, stain_jitter=0.1, brightness=0.1, contrast=0.2, blur=1.0, zoom=0.3)


def he_tile(size: int = 32) -> np.ndarray:
    """An H&E-like tile: haematoxylin blobs on an eosin background, built from densities."""
    yy, xx = np.mgrid[0:size, 0:size]
    h = 0.6 * ((xx // 8 + yy // 8) % 2) + 0.05 * (xx % 5) / 4
    e = 0.25 + 0.1 * (yy / size)
    return compose_stains(np.stack([h, e, np.zeros_like(h)], axis=-1))


def test_the_eight_flips_and_rotations():
    image = pattern(8, 8)
    moved = {aug.apply_dihedral(image, k, f).tobytes() for k in range(4) for f in (False, True)}
    assert len(moved) == 8  # the dihedral group, all distinct
    np.testing.assert_array_equal(aug.apply_dihedral(image, 1, False), np.rot90(image))
    np.testing.assert_array_equal(aug.apply_dihedral(image, 0, True), image[:, ::-1])
    rng = np.random.default_rng(0)
    assert {aug.draw_dihedral(rng) for _ in range(200)} == {
        (k, f) for k in range(4) for f in (False, True)
    }
    a, b = aug.dihedral([image, image.copy()], np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_zoom_in_and_out_keep_the_size():
    image = np.zeros((32, 32), np.uint8)
    image[12:20, 12:20] = 200  # an 8 px square in the middle
    bigger, smaller = aug.zoom(image, 2.0), aug.zoom(image, 0.5)
    assert bigger.shape == smaller.shape == (32, 32) and bigger.dtype == np.uint8
    assert 14 <= (bigger > 100).sum(axis=0).max() <= 18  # ~16 px across
    middle = smaller[8:24, 8:24]
    assert 3 <= (middle > 100).sum(axis=0).max() <= 5  # ~4 px across, in the middle
    # zooming out mirrors the tile into the border (no blank frame): squares repeat there
    assert (smaller > 100).sum() > (middle > 100).sum()
    np.testing.assert_array_equal(aug.zoom(image, 1.0), image)
    labels = np.arange(16, dtype=np.int32).reshape(4, 4).repeat(8, 0).repeat(8, 1)
    zoomed = aug.zoom(labels, 1.37, labels=True)
    assert zoomed.dtype == np.int32 and set(np.unique(zoomed)) <= set(range(16))
    with pytest.raises(ExportError, match="positive"):
        aug.zoom(image, 0.0)


def test_stain_jitter_moves_the_stains_it_is_told_to():
    tile = he_tile()
    before = stain_densities(tile).reshape(-1, 3).mean(axis=0)
    more_h = stain_densities(aug.jitter_stains(tile, (1.5, 1, 1), (0, 0, 0)))
    after = more_h.reshape(-1, 3).mean(axis=0)
    assert after[0] == pytest.approx(1.5 * before[0], rel=0.05)
    assert after[1] == pytest.approx(before[1], rel=0.05)
    same = aug.jitter_stains(tile, (1, 1, 1), (0, 0, 0))
    assert np.abs(same.astype(int) - tile).max() <= 1  # identity up to rounding
    jittered = aug.stain_jitter(tile, np.random.default_rng(1), 0.05)
    assert 0 < np.abs(jittered.astype(int) - tile).mean() < 15  # mild, but not nothing


def test_brightness_contrast_and_blur():
    tile = np.full((16, 16, 3), 100, np.uint8)
    tile[::2] = 140  # stripes: mean 120, +-20
    brighter = aug.brightness_contrast(tile, 0.1, 1.0)
    assert brighter.mean() == pytest.approx(120 + 25.5, abs=0.6)
    stronger = aug.brightness_contrast(tile, 0.0, 1.5)
    assert stronger.mean() == pytest.approx(120, abs=0.6)
    assert stronger.astype(float).std() == pytest.approx(1.5 * tile.std(), abs=0.6)
    blurred = aug.blur(tile, 1.5)
    assert blurred.mean() == pytest.approx(120, abs=1)
    assert blurred.astype(float).std() < 0.5 * tile.std()
    np.testing.assert_array_equal(aug.blur(tile, 0.0), tile)


def test_a_target_derived_from_a_tile_stays_derived():
    """One transform: what a tile's target is of the tile, the augmented target is of the
    augmented tile (geometric part alike; photometric never on the target)."""
    tile = he_tile(40)
    target = tile[..., ::-1].copy()  # a per-pixel function of the tile (marker planes)
    mask = (tile[..., 0] < 128).astype(np.uint8)  # a label map of the tile
    rng = np.random.default_rng(5)
    for _ in range(6):
        t = ALL.draw(rng)
        moved = t.apply(tile, "intensity")  # the geometric part only
        np.testing.assert_array_equal(t.apply(target, "intensity"), moved[..., ::-1])
        np.testing.assert_array_equal(
            t.apply(mask, "labels"), (t.apply(tile, "labels")[..., 0] < 128).astype(np.uint8)
        )
        he = t.apply(tile, "he")
        assert he.shape == tile.shape and not np.array_equal(he, moved)  # colours changed


def test_photometric_only_on_he():
    t = Transform(brightness=0.2, contrast=1.3, blur=1.0, stain_scale=(1.2, 1, 1),
                  stain_shift=(0, 0, 0))  # fmt: skip
    tile = he_tile()
    np.testing.assert_array_equal(t.apply(tile, "intensity"), tile)
    np.testing.assert_array_equal(t.apply(tile, "labels"), tile)
    assert not np.array_equal(t.apply(tile, "he"), tile)
    assert set(t.to_dict("intensity")) == set()
    with pytest.raises(ExportError, match="unknown image kind"):
        t.apply(tile, "rgb")  # type: ignore[arg-type]


def test_draws_are_seeded_recorded_and_replayed():
    draw = ALL.draw
    assert draw(np.random.default_rng([1, 2])) == draw(np.random.default_rng([1, 2]))
    assert draw(np.random.default_rng([1, 2])) != draw(np.random.default_rng([1, 3]))
    t = draw(np.random.default_rng(9))
    recorded = json.loads(json.dumps(t.to_dict("he")))
    assert set(recorded) == {"rot90", "flip", "zoom", "stain_scale", "stain_shift",
                             "brightness", "contrast", "blur"}  # fmt: skip
    assert set(t.to_dict("intensity")) == {"rot90", "flip", "zoom"}
    replayed = Transform.from_dict(recorded)
    assert replayed == t
    tile = he_tile()
    np.testing.assert_array_equal(replayed.apply(tile), t.apply(tile))
    with pytest.raises(ExportError, match="unknown augmentation parameters: twirl"):
        Transform.from_dict({"twirl": 1})


def test_settings_draw_in_range_and_independently():
    rng = np.random.default_rng(0)
    for t in (ALL.draw(rng) for _ in range(50)):
        assert t.rot90 in range(4) and isinstance(t.flip, bool)
        assert 1 / 1.3 - 1e-6 <= t.zoom <= 1.3 + 1e-6
        assert all(0.9 <= s <= 1.1 for s in t.stain_scale)
        assert abs(t.brightness) <= 0.1 and 0.8 <= t.contrast <= 1.2 and 0 <= t.blur <= 1
    off = Augmentation()
    assert not off.active and off.draw(rng) == Transform()
    assert Augmentation(blur=0.5).active
    # turning blur on does not change the flips drawn with the same seed
    flips = Augmentation(flips=True).draw(np.random.default_rng(4))
    both = Augmentation(flips=True, blur=1.0).draw(np.random.default_rng(4))
    assert (flips.rot90, flips.flip) == (both.rot90, both.flip) and flips.blur is None


@pytest.mark.parametrize(
    "kwargs",
    [{"stain_jitter": -0.1}, {"brightness": 0.6}, {"contrast": 1.0}, {"blur": float("nan")},
     {"zoom": 2.0}],
)  # fmt: skip
def test_bad_settings_raise_export_errors(kwargs):
    name = next(iter(kwargs)).replace("_", "-")
    with pytest.raises(ExportError, match=f"augmentation {name} must be between 0 and"):
        Augmentation(**kwargs)


def test_training_uses_the_shared_augmentations():
    from napari_mupd.train import augment as train_augment

    assert train_augment.dihedral is aug.dihedral
    assert train_augment.stain_jitter is aug.stain_jitter
