"""Classical augmentations of histology tiles, shared by training and the tile export.

Two families, and one rule for which image gets which:

- **geometric** (the 8 flips / 90-degree rotations of the dihedral group, and a zoom in
  or out about the centre, cropped or mirror-padded back to the tile's size) move pixels.
  They apply identically to a tile and everything aligned with it: its targets, marker
  maps, masks and labels, so pairs stay pixel-aligned. Images are resampled linearly,
  labels (``kind="labels"``) by nearest neighbour so no new label values appear.
- **photometric** (stain jitter in colour-deconvolution space, brightness / contrast,
  Gaussian blur) change colours. They apply to brightfield H&E only (``kind="he"``):
  the inputs a model learns to read. Marker maps and virtual IHC (``kind="intensity"``)
  keep their values, which are the measurement a model learns to predict, and so do
  labels.

An :class:`Augmentation` says what to draw (everything off by default);
``Augmentation.draw(rng)`` gives a :class:`Transform`, the drawn parameters, which
``Transform.apply`` applies and ``Transform.to_dict`` / ``Transform.from_dict`` record
and replay. The same ``rng`` state always gives the same transform, and the same
transform the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from napari_mupd.errors import ExportError
from napari_mupd.imaging.pixels import to_uint8
from napari_mupd.imaging.stains import compose_stains, stain_densities

#: How an image is augmented: H&E (geometric + photometric), an intensity map or
#: virtual stain (geometric, linear), labels or a mask (geometric, nearest neighbour).
Kind = Literal["he", "intensity", "labels"]
KINDS: tuple[str, ...] = ("he", "intensity", "labels")

#: Upper limits of the settings (a larger value is refused as a mistake).
LIMITS = {"stain_jitter": 0.5, "brightness": 0.5, "contrast": 0.9, "blur": 5.0, "zoom": 1.0}


# -- the pieces -------------------------------------------------------------------------------
def draw_dihedral(rng: np.random.Generator) -> tuple[int, bool]:
    """One of the 8 flips / rotations: quarter turns ``k`` (0-3) and a left-right flip."""
    return int(rng.integers(4)), bool(rng.integers(2))


def apply_dihedral(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """``image`` (h, w[, c]) turned ``k`` quarter turns (numpy's ``rot90``), then mirrored
    left-right when ``flip``; a contiguous copy."""
    turned = np.rot90(image, k, axes=(0, 1))
    return np.ascontiguousarray(turned[:, ::-1] if flip else turned)


def dihedral(images: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """One random flip / rotation (of 8), the same for every image (pairs stay aligned)."""
    k, flip = draw_dihedral(rng)
    return [apply_dihedral(image, k, flip) for image in images]


def zoom(image: np.ndarray, factor: float, *, labels: bool = False) -> np.ndarray:
    """``image`` (h, w[, c]) magnified ``factor`` times about its centre, same shape.

    ``factor`` > 1 zooms in (the centre, cropped); < 1 zooms out, the uncovered border
    mirrored from the image (no blank frame). Linear interpolation, nearest neighbour for
    ``labels``. uint8 stays uint8 (rounded), labels keep their dtype, other images come
    back as float32.
    """
    if factor <= 0:
        raise ExportError(f"the zoom factor must be positive, got {factor}")
    if factor == 1:
        return image.copy()
    h, w = image.shape[:2]
    matrix = np.ones(image.ndim)
    matrix[:2] = 1 / factor
    offset = np.zeros(image.ndim)
    offset[:2] = ((h - 1) / 2 * (1 - 1 / factor), (w - 1) / 2 * (1 - 1 / factor))
    if labels:
        return ndimage.affine_transform(image, matrix, offset=offset, order=0, mode="reflect")
    out = ndimage.affine_transform(
        image.astype(np.float32), matrix, offset=offset, order=1, mode="reflect"
    )
    return to_uint8(out / 255) if image.dtype == np.uint8 else out


def draw_stain_jitter(rng: np.random.Generator, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Scales (in [1 - strength, 1 + strength]) and shifts (in [-strength, strength], in
    standard deviations) of the haematoxylin, eosin and DAB densities."""
    scale = rng.uniform(1 - strength, 1 + strength, 3)
    shift = rng.uniform(-strength, strength, 3)
    return scale, shift


def jitter_stains(rgb: np.ndarray, scale: ArrayLike, shift: ArrayLike) -> np.ndarray:
    """An RGB uint8 tile with its H, E and DAB densities (`imaging.stains`) scaled by
    ``scale`` and shifted by ``shift`` times their standard deviation over the tile."""
    densities = stain_densities(rgb)
    spread = densities.reshape(-1, 3).std(axis=0)
    moved = densities * np.asarray(scale, np.float32) + np.asarray(shift, np.float32) * spread
    return compose_stains(moved)


def stain_jitter(rgb: np.ndarray, rng: np.random.Generator, strength: float = 0.05) -> np.ndarray:
    """Perturb haematoxylin, eosin and DAB densities by small random scales and shifts.

    Colour deconvolution with the Ruifrok & Johnston vectors (`imaging.stains`);
    ``strength`` 0.05 is the mild setting of Tellez et al. (2018).
    """
    scale, shift = draw_stain_jitter(rng, strength)
    return jitter_stains(rgb, scale, shift)


def brightness_contrast(rgb: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """``(rgb - mean) * contrast + mean + brightness * 255``, rounded to uint8: the mean
    grey stays, differences grow (``contrast`` > 1) or shrink, then all shift."""
    values = rgb.astype(np.float32)
    mean = float(values.mean())
    return to_uint8(((values - mean) * contrast + mean + brightness * 255) / 255)


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of standard deviation ``sigma`` pixels (channels apart), uint8."""
    if sigma <= 0:
        return rgb.copy()
    sigmas = (sigma, sigma) + (0,) * (rgb.ndim - 2)
    out = ndimage.gaussian_filter(rgb.astype(np.float32), sigmas, mode="reflect")
    return to_uint8(out / 255)


# -- settings and drawn transforms ------------------------------------------------------------
@dataclass(frozen=True)
class Augmentation:
    """Which augmentations to draw, and how strong; everything off by default.

    - ``flips``: one of the 8 flips / quarter turns, uniformly.
    - ``stain_jitter``: its strength S (0.05 is mild): H, E and DAB densities scaled by
      1 ± S and shifted by ± S standard deviations.
    - ``brightness``: a shift of up to ±``brightness`` of the full range (0.1: ±25 grey
      levels).
    - ``contrast``: differences from the mean grey scaled by a factor in 1 ± ``contrast``.
    - ``blur``: a Gaussian blur of sigma uniform in [0, ``blur``] pixels.
    - ``zoom``: a zoom in or out by a factor log-uniform in [1 / (1 + zoom), 1 + zoom]
      (0.2: 0.83-1.2), about the centre, cropped or mirror-padded to the tile's size.

    Values out of range (negative, or above :data:`LIMITS`) raise :class:`ExportError`.
    """

    flips: bool = False
    stain_jitter: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    blur: float = 0.0
    zoom: float = 0.0

    def __post_init__(self) -> None:
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= limit:
                raise ExportError(
                    f"augmentation {name.replace('_', '-')} must be between 0 and {limit:g}, "
                    f"got {value!r}"
                )

    @property
    def active(self) -> bool:
        """Whether any augmentation is on."""
        return self.flips or any(getattr(self, name) > 0 for name in LIMITS)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (for a manifest)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def draw(self, rng: np.random.Generator) -> Transform:
        """Draw one transform. Every setting draws its numbers, in a fixed order, whether
        on or not, so turning one on does not change what the others draw. Parameters
        are rounded to 6 decimals, so the recorded ones are exactly those applied."""
        k, flip = draw_dihedral(rng)
        factor = math.exp(rng.uniform(-1, 1) * math.log1p(self.zoom))
        stain_scale, stain_shift = draw_stain_jitter(rng, 1.0)
        brightness, contrast, sigma = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 1)
        s = self.stain_jitter
        return Transform(
            rot90=k if self.flips else None,
            flip=flip if self.flips else None,
            zoom=_round(factor) if self.zoom else None,
            stain_scale=tuple(_round(1 + (v - 1) * s) for v in stain_scale) if s else None,
            stain_shift=tuple(_round(v * s) for v in stain_shift) if s else None,
            brightness=_round(brightness * self.brightness) if self.brightness else None,
            contrast=_round(1 + contrast * self.contrast) if self.contrast else None,
            blur=_round(sigma * self.blur) if self.blur else None,
        )


def _round(value: float) -> float:
    return round(float(value), 6)


@dataclass(frozen=True)
class Transform:
    """One drawn augmentation; None: not applied. Geometric: ``rot90`` / ``flip`` (applied
    first), ``zoom`` (the factor). Photometric, in this order: ``stain_scale`` /
    ``stain_shift`` (H, E, DAB), ``brightness`` (a fraction of 255), ``contrast`` (a
    factor), ``blur`` (sigma in pixels)."""

    rot90: int | None = None
    flip: bool | None = None
    zoom: float | None = None
    stain_scale: tuple[float, ...] | None = None
    stain_shift: tuple[float, ...] | None = None
    brightness: float | None = None
    contrast: float | None = None
    blur: float | None = None

    def apply(self, image: np.ndarray, kind: Kind = "he") -> np.ndarray:
        """``image`` (h, w[, c]) transformed as its ``kind`` says (see the module): the
        geometric part for every kind, the photometric part for ``"he"`` (RGB uint8)."""
        if kind not in KINDS:
            raise ExportError(f"unknown image kind {kind!r}; one of {', '.join(KINDS)}")
        out = apply_dihedral(image, self.rot90 or 0, bool(self.flip))
        if self.zoom is not None:
            out = zoom(out, self.zoom, labels=kind == "labels")
        if kind != "he":
            return out
        if self.stain_scale is not None and self.stain_shift is not None:
            out = jitter_stains(out, self.stain_scale, self.stain_shift)
        if self.brightness is not None or self.contrast is not None:
            out = brightness_contrast(out, self.brightness or 0.0, self.contrast or 1.0)
        if self.blur is not None:
            out = blur(out, self.blur)
        return out

    def to_dict(self, kind: Kind = "he") -> dict[str, Any]:
        """The parameters applied to an image of ``kind`` (the photometric ones only for
        ``"he"``), as JSON-ready values; `from_dict` replays them exactly."""
        geometric = ("rot90", "flip", "zoom")
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in asdict(self).items()
            if value is not None and (kind == "he" or name in geometric)
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Transform:
        """The transform `to_dict` recorded."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ExportError(f"unknown augmentation parameters: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
        }
        return cls(**kwargs)


__all__ = [
    "KINDS",
    "LIMITS",
    "Augmentation",
    "Kind",
    "Transform",
    "apply_dihedral",
    "blur",
    "brightness_contrast",
    "dihedral",
    "draw_dihedral",
    "draw_stain_jitter",
    "jitter_stains",
    "stain_jitter",
    "zoom",
]
