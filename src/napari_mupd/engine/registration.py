"""Registering serial sections: affine transforms from matching landmarks, or found
automatically from the haematoxylin both stains share.

Coordinates are pixel (x, y) with pixel centres at integers (scikit-image's convention).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import fft, ndimage, optimize
from skimage.transform import AffineTransform, resize, warp

from napari_mupd.errors import RegistrationError
from napari_mupd.imaging.pixels import as_rgb, to_uint8
from napari_mupd.imaging.resize import downscale
from napari_mupd.imaging.stains import hematoxylin_density


@dataclass(frozen=True)
class Registration:
    """An affine map from a moving image's pixel (x, y) to the fixed image's.

    ``residuals`` are the distances (fixed pixels) between mapped and fixed
    landmarks after the fit (empty for `register_auto`). ``score`` is the normalised
    cross-correlation of the smoothed haematoxylin densities after `register_auto`.
    """

    matrix: np.ndarray
    residuals: np.ndarray
    score: float | None = None

    @property
    def transform(self) -> AffineTransform:
        """The map as a scikit-image transform."""
        return AffineTransform(matrix=self.matrix)

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) moving (x, y) points into the fixed image."""
        return self.transform(np.asarray(xy, dtype=float))

    def warp(self, moving: np.ndarray, shape: tuple[int, int], *, cval: float = 1.0) -> np.ndarray:
        """Resample ``moving`` onto the fixed image's (h, w) grid (uint8 in, uint8 out).

        Pixels with no source are ``cval`` (white by default).
        """
        out = warp(
            moving,
            self.transform.inverse,
            output_shape=shape,
            order=1,
            cval=cval,
            preserve_range=False,
        )
        return to_uint8(out) if moving.dtype == np.uint8 else out

    def valid_mask(self, moving_shape: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
        """Where the warped moving image has data on the fixed grid."""
        ones = np.ones(moving_shape, np.float32)
        return warp(ones, self.transform.inverse, output_shape=shape, order=0, cval=0) > 0.5


def read_landmarks(path: str | os.PathLike, scale: float = 1.0) -> np.ndarray:
    """(N, 2) landmark (x, y) from a CSV with X and Y columns (ANHIR / QuPath style)."""
    table = pd.read_csv(path)
    columns = {c.strip().lower(): c for c in table.columns}
    if "x" not in columns or "y" not in columns:
        raise RegistrationError(f"{path}: a landmark CSV needs X and Y columns")
    return table[[columns["x"], columns["y"]]].to_numpy(dtype=float) * scale


def register_landmarks(moving_xy: np.ndarray, fixed_xy: np.ndarray) -> Registration:
    """Least-squares affine map taking moving landmarks onto fixed ones."""
    moving_xy, fixed_xy = np.asarray(moving_xy, float), np.asarray(fixed_xy, float)
    if moving_xy.shape != fixed_xy.shape or moving_xy.ndim != 2 or moving_xy.shape[1] != 2:
        raise RegistrationError(
            f"landmarks must be two (N, 2) arrays of equal length, got {moving_xy.shape} "
            f"and {fixed_xy.shape}"
        )
    if len(moving_xy) < 3:
        raise RegistrationError(
            f"an affine map needs at least 3 landmark pairs, got {len(moving_xy)}"
        )
    transform = AffineTransform.from_estimate(moving_xy, fixed_xy)
    if not transform:
        raise RegistrationError("the landmarks are degenerate (collinear or repeated)")
    residuals = np.linalg.norm(transform(moving_xy) - fixed_xy, axis=1)
    return Registration(transform.params, residuals)


#: `register_auto` fails below this NCC of the smoothed haematoxylin densities, or below
#: `MIN_DETAIL` for their fine structure (2-8 px band-pass at the finest level). Measured
#: on the four IHC vs H&E lung sections (also rotated): 0.61-0.82 and 0.20-0.41. Pairs of
#: unrelated tissue reached 0.57 but then at most 0.13 of fine structure; noise at most
#: 0.15 and 0.12. See docs/staining.md, "Registration".
MIN_SCORE = 0.35
MIN_DETAIL = 0.15
#: A pyramid level: a smoothed density and its (x, y) scale relative to the input image.
Level = tuple[np.ndarray, np.ndarray]
#: Fixed pixels sampled (on a regular grid) per pyramid level when refining.
_MAX_SAMPLES = 50_000
#: Fraction of the fixed image the moving one must cover after registration.
_MIN_OVERLAP = 0.25
#: Singular values of a plausible map's linear part (sections at about the same scale).
_SCALE_RANGE = (0.67, 1.5)


def register_auto(
    fixed_rgb: np.ndarray,
    moving_rgb: np.ndarray,
    *,
    max_side: int = 512,
    angle_step: float = 3.0,
    min_score: float = MIN_SCORE,
    min_detail: float = MIN_DETAIL,
) -> Registration:
    """Affine map taking ``moving_rgb`` onto ``fixed_rgb``, found from the images alone.

    Meant for serial sections at about the same pixel size (within ~10 %), stained
    differently (H&E, IHC): both are reduced to their haematoxylin density. A rotation
    sweep (every ``angle_step`` degrees, shift by FFT cross-correlation) on a coarse
    overview finds the pose; the six affine parameters are then refined by maximising
    the normalised cross-correlation (NCC) of the smoothed densities, coarse to fine, up
    to a longest side of ``max_side`` px. Raises `RegistrationError` when an image has
    no contrast, the final NCC is below ``min_score``, that of the fine structure
    (band-passed densities) below ``min_detail``, or the map is implausible.
    """
    fixed_rgb, moving_rgb = _as_rgb(fixed_rgb, "fixed"), _as_rgb(moving_rgb, "moving")
    longest = max(*fixed_rgb.shape[:2], *moving_rgb.shape[:2])
    factor = min(1.0, max_side / longest)
    fixed, moving = _density(fixed_rgb, "fixed", factor), _density(moving_rgb, "moving", factor)
    sides = _level_sides(max(*fixed[0].shape, *moving[0].shape), max_side)
    (f, fs), (m, ms) = _levels(fixed, moving, sides[0])
    poses = _rotation_sweep(_high_pass(f), _high_pass(m), angle_step)
    fits = [_refine(f, m, pose, rigid=True) for pose in poses]
    matrix = _unscale(max(fits, key=lambda fit: fit[1])[0], fs, ms)
    for side in sides:
        (f, fs), (m, ms) = _levels(fixed, moving, side)
        local, score, overlap = _refine(f, m, _rescale(matrix, fs, ms))
        matrix = _unscale(local, fs, ms)
    similarity = _Similarity(_band_pass(f), _band_pass(m))
    detail = -similarity(similarity.params(local))[0]
    _check_plausible(matrix, (score, detail), (min_score, min_detail), overlap)
    return Registration(matrix, np.empty(0), score)


def _as_rgb(rgb: np.ndarray, name: str) -> np.ndarray:
    """``rgb`` as an (h, w, 3) uint8 array of at least 16 x 16 px, or `RegistrationError`."""
    rgb = as_rgb(rgb, name, RegistrationError)
    if min(rgb.shape[:2]) < 16:
        raise RegistrationError(f"{name}: an image of {rgb.shape[:2]} px is too small")
    return rgb


def _density(rgb: np.ndarray, name: str, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin density of ``rgb`` shrunk by ``factor``, and its (x, y) scale."""
    shape = _shrunk(rgb.shape, factor)
    scale = np.array([shape[1] / rgb.shape[1], shape[0] / rgb.shape[0]])
    if shape != rgb.shape[:2]:
        rgb = downscale(rgb, shape)
    density = hematoxylin_density(rgb)
    if np.ptp(ndimage.uniform_filter(density, 5)) < 0.02:
        raise RegistrationError(f"{name}: the image shows no haematoxylin contrast to register")
    return np.maximum(density - _background(density), 0), scale


def _background(density: np.ndarray) -> float:
    """The commonest haematoxylin density above glass: a pale counterstain's background.

    Subtracting it makes glass and unstained tissue alike, so that a section's outline
    (or a rotated image's white corners) does not outweigh the structure inside it.
    """
    counts, edges = np.histogram(density, bins=100, range=(0.01, 0.51))
    return float(edges[np.argmax(counts)]) if counts.any() else 0.0


def _shrunk(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """(h, w) of ``shape`` times ``factor`` (at most 1), at least one pixel."""
    factor = min(1.0, factor)
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def _level_sides(longest: int, max_side: int) -> list[int]:
    """Longest sides of the pyramid levels, coarse to fine (a quarter, half, full)."""
    return sorted({min(longest, max(64, max_side // k)) for k in (4, 2, 1)})


def _levels(fixed: Level, moving: Level, side: int) -> tuple[Level, Level]:
    """Both densities on one scale, the longer of them ``side`` px long, and smoothed."""
    factor = side / max(*fixed[0].shape, *moving[0].shape)
    sigma = 1.0 + 0.5 * np.log2(max(side, 128) / 128)
    return _level(*fixed, factor, sigma), _level(*moving, factor, sigma)


def _level(density: np.ndarray, scale: np.ndarray, factor: float, sigma: float) -> Level:
    """A density shrunk by ``factor`` and smoothed, and its (x, y) scale to input pixels."""
    shape = _shrunk(density.shape, factor)
    scale = scale * [shape[1] / density.shape[1], shape[0] / density.shape[0]]
    if shape != density.shape:
        density = resize(density, shape, anti_aliasing=True)
    return ndimage.gaussian_filter(density.astype(np.float64), sigma), scale


def _high_pass(image: np.ndarray) -> np.ndarray:
    """``image`` less its blur over an eighth of its size: structure, not overall shading."""
    return image - ndimage.gaussian_filter(image, max(image.shape) / 8)


def _band_pass(image: np.ndarray) -> np.ndarray:
    """A (smoothed) level less its blur at 8 px: the fine structure only."""
    return image - ndimage.gaussian_filter(image, 8.0)


def _scaling(scale: np.ndarray) -> np.ndarray:
    """Input pixel (x, y) -> pixel of an image resized by ``scale`` (centres preserved)."""
    sx, sy = scale
    return np.array([[sx, 0, (sx - 1) / 2], [0, sy, (sy - 1) / 2], [0, 0, 1]])


def _rescale(matrix: np.ndarray, fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """A map between input pixels as one between level pixels."""
    return _scaling(fixed) @ matrix @ np.linalg.inv(_scaling(moving))


def _unscale(matrix: np.ndarray, fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """A map between level pixels as one between input pixels."""
    return np.linalg.inv(_scaling(fixed)) @ matrix @ _scaling(moving)


def _warp(image: np.ndarray, inverse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` resampled on a (h, w) grid; ``inverse`` maps output (x, y) to input (x, y)."""
    swap = inverse[[1, 0, 2]][:, [1, 0, 2]]
    return ndimage.affine_transform(
        image, swap[:2, :2], offset=swap[:2, 2], output_shape=shape, order=1, cval=0.0
    )


def _rotation_sweep(fixed: np.ndarray, moving: np.ndarray, step: float) -> list[np.ndarray]:
    """Poses (moving -> fixed pixels) of the three best-correlated, distinct rotations."""
    h, w = fixed.shape
    diag = int(np.ceil(np.hypot(*moving.shape)))
    shape = (fft.next_fast_len(h + diag, real=True), fft.next_fast_len(w + diag, real=True))
    padded = np.zeros(shape)
    padded[:h, :w] = fixed - fixed.mean()
    spectrum, norm = fft.rfft2(padded), np.linalg.norm(padded)
    moving = moving - moving.mean()
    centre = AffineTransform(translation=(-(moving.shape[1] - 1) / 2, -(moving.shape[0] - 1) / 2))
    canvas = np.zeros(shape)
    found = []
    for angle in np.arange(0.0, 360.0, step):
        rotate = centre + AffineTransform(
            rotation=np.radians(angle), translation=((diag - 1) / 2,) * 2
        )
        canvas[:diag, :diag] = _warp(moving, np.linalg.inv(rotate.params), (diag, diag))
        corr = fft.irfft2(spectrum * np.conj(fft.rfft2(canvas)), s=shape)
        dy, dx = np.unravel_index(np.argmax(corr), shape)
        score = corr[dy, dx] / (norm * np.linalg.norm(canvas) + 1e-12)
        shift = AffineTransform(translation=(dx - shape[1] * (dx >= w), dy - shape[0] * (dy >= h)))
        found.append((score, angle, (rotate + shift).params))
    poses: list[np.ndarray] = []
    kept: list[float] = []
    for _, angle, pose in sorted(found, key=lambda item: -item[0]):
        if all(abs((angle - a + 180) % 360 - 180) >= 15 for a in kept):
            poses.append(pose)
            kept.append(angle)
        if len(poses) == 3:
            break
    return poses


class _Similarity:
    """Minus the NCC (and its gradient) of fixed samples and the moving image under an
    affine map, parametrised as fixed -> moving on coordinates centred and scaled to ~1."""

    def __init__(self, fixed: np.ndarray, moving: np.ndarray) -> None:
        h, w = fixed.shape
        stride = max(1, int(np.ceil(np.sqrt(h * w / _MAX_SAMPLES))))
        yy, xx = np.mgrid[0:h:stride, 0:w:stride]
        half = max(h, w) / 2
        self.normalise = np.array(
            [[1 / half, 0, -(w - 1) / 2 / half], [0, 1 / half, -(h - 1) / 2 / half], [0, 0, 1]]
        )
        self.points = self.normalise @ np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
        self.values = fixed[yy, xx].ravel()
        self.images = [moving, *np.gradient(moving)]  # value, d/dy, d/dx
        self.limits = np.array([[moving.shape[1] - 1], [moving.shape[0] - 1]])
        self.overlap = 0.0

    def params(self, matrix: np.ndarray) -> np.ndarray:
        """Parameters of a moving -> fixed map."""
        return (np.linalg.inv(matrix) @ np.linalg.inv(self.normalise))[:2].ravel()

    def matrix(self, params: np.ndarray) -> np.ndarray:
        """The moving -> fixed map of parameters."""
        return np.linalg.inv(np.vstack([params.reshape(2, 3), [0, 0, 1]]) @ self.normalise)

    def __call__(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        xy = params.reshape(2, 3) @ self.points
        inside = ((xy >= 0) & (xy <= self.limits)).all(axis=0)
        self.overlap = float(inside.mean())
        if inside.sum() < 100:
            return 0.0, np.zeros(6)
        coords = xy[::-1, inside]
        value, grad_y, grad_x = (ndimage.map_coordinates(i, coords, order=1) for i in self.images)
        a = self.values[inside] - self.values[inside].mean()
        b = value - value.mean()
        norm_a, norm_b = np.linalg.norm(a) + 1e-12, np.linalg.norm(b) + 1e-12
        ncc = float(a @ b) / (norm_a * norm_b)
        d_b = a / (norm_a * norm_b) - ncc * b / norm_b**2
        points = self.points[:, inside]
        grad = np.concatenate([points @ (d_b * grad_x), points @ (d_b * grad_y)])
        return float(-ncc), -grad


Cost = Callable[[np.ndarray], tuple[float, np.ndarray]]


def _refine(
    fixed: np.ndarray, moving: np.ndarray, matrix: np.ndarray, *, rigid: bool = False
) -> tuple[np.ndarray, float, float]:
    """The map maximising the NCC near ``matrix``, its NCC and the overlap it covers.

    ``rigid`` varies only a rotation about the fixed centre and a shift after ``matrix``
    (robust from a rough start); otherwise all six affine parameters vary.
    """
    similarity = _Similarity(fixed, moving)
    start = similarity.params(matrix)
    cost: Cost = similarity
    to_params: Callable[[np.ndarray], np.ndarray] = lambda x: x  # noqa: E731
    if rigid:
        cost, to_params = _rigid(similarity, start)
    result = optimize.minimize(
        cost, np.zeros(3) if rigid else start, jac=True, method="L-BFGS-B",
        options={"maxiter": 100, "ftol": 1e-6},
    )  # fmt: skip
    params = to_params(result.x)
    score = -similarity(params)[0]
    return similarity.matrix(params), score, similarity.overlap


def _rigid(similarity: _Similarity, start: np.ndarray) -> tuple[Callable, Callable]:
    """Cost and parameter map of a rotation (radians) and shift composed with ``start``."""
    base = np.vstack([start.reshape(2, 3), [0, 0, 1]])

    def to_params(q: np.ndarray) -> np.ndarray:
        c, s = np.cos(q[0]), np.sin(q[0])
        return (base @ np.array([[c, -s, q[1]], [s, c, q[2]], [0, 0, 1]]))[:2].ravel()

    def cost(q: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = similarity(to_params(q))
        c, s = np.cos(q[0]), np.sin(q[0])
        turn = base[:2, :2] @ np.array([[-s, -c], [c, -s]])
        jacobian = np.zeros((6, 3))
        jacobian[[0, 1, 3, 4], 0] = turn.ravel()
        jacobian[[2, 5], 1], jacobian[[2, 5], 2] = base[:2, 0], base[:2, 1]
        return value, grad @ jacobian

    return cost, to_params


def _check_plausible(
    matrix: np.ndarray,
    scores: tuple[float, float],
    minimum: tuple[float, float],
    overlap: float,
) -> None:
    """Raise `RegistrationError` unless a found map is trustworthy."""
    for what, score, low in zip(("haematoxylin", "fine structure"), scores, minimum, strict=True):
        if score < low:
            raise RegistrationError(
                f"no reliable match: the {what} correlates at {score:.2f} after registration "
                f"(needs {low:.2f}); are these sections of the same tissue?"
            )
    if overlap < _MIN_OVERLAP:
        raise RegistrationError(f"the sections overlap on only {overlap:.0%} after registration")
    singular = np.linalg.svd(matrix[:2, :2], compute_uv=False)
    low, high = _SCALE_RANGE
    if singular.min() < low or singular.max() > high:
        raise RegistrationError(
            f"implausible map: it scales by {singular.min():.2f}-{singular.max():.2f}; "
            "register images at about the same pixel size"
        )
