"""Baselines for H&E -> IHC virtual staining, trained on the same pairs as the model.

Every baseline takes and returns uint8 (h, w, 3) RGB tiles: one array, or a list for
a batch. ``fit(sources, targets)`` learns from matching H&E and IHC tiles.

* `ColourDeconvolutionBaseline`: a per-pixel linear map from H&E stain densities to
  IHC haematoxylin and DAB densities, re-rendered with the H-DAB colours.
* `LinearColourMapBaseline`: a per-pixel affine map of the H&E's RGB to the IHC's RGB.
* `DarknessBaseline`: the IHC's haematoxylin and DAB as affine functions of the H&E's
  darkness alone (mean optical density), re-rendered with the H-DAB colours.
* `NearestNeighbourBaseline`: the IHC target of the most similar training H&E tile.
* `RegressionBaseline`: a small U-Net trained with L1 (pix2pix without the GAN), with
  a width chosen to match a parameter budget, i.e. "a network of the same size".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from scipy.ndimage import gaussian_filter, zoom
from torch import Tensor, nn
from torch.nn import functional as F

from napari_mupd.errors import EvalError
from napari_mupd.eval._checks import as_tiles
from napari_mupd.eval.features import histology_features, standardise
from napari_mupd.imaging.pixels import as_rgb, to_uint8
from napari_mupd.imaging.stains import compose_stains, optical_density, stain_densities

Tiles = np.ndarray | Sequence[np.ndarray]


def _apply(tiles: Tiles, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """``fn`` on one tile, or on each tile of a list."""
    if isinstance(tiles, np.ndarray) and tiles.ndim == 3:
        return fn(as_rgb(tiles, "tile"))
    return [fn(t) for t in as_tiles(tiles)]


def _pairs(sources: Tiles, targets: Tiles) -> tuple[list[np.ndarray], list[np.ndarray]]:
    src, tgt = as_tiles(sources, "sources"), as_tiles(targets, "targets")
    if len(src) != len(tgt):
        raise EvalError(f"{len(src)} source tiles but {len(tgt)} target tiles")
    for i, (s, t) in enumerate(zip(src, tgt, strict=True)):
        if s.shape != t.shape:
            raise EvalError(f"pair {i}: source {s.shape} and target {t.shape} differ in size")
    return src, tgt


class ColourDeconvolutionBaseline:
    """IHC from H&E by colour deconvolution and a fitted linear stain map.

    The H&E tile is unmixed into haematoxylin (H) and eosin (E) densities; its IHC
    haematoxylin counterstain and DAB densities are each predicted as
    ``c0 + c1 H + c2 E + c3 H_s + c4 E_s`` (``H_s``, ``E_s``: H and E smoothed with a
    Gaussian of `context_sigma` px, a little tissue context), the ten coefficients
    fitted by least squares on the training pixels, then rendered as an H-DAB image.
    """

    def __init__(self, context_sigma: float = 4.0, max_pixels: int = 200_000, seed: int = 0):
        self.context_sigma = context_sigma
        self.max_pixels = max_pixels
        self.seed = seed
        self.coef: np.ndarray | None = None  # (5, 2): design columns -> (H, DAB)

    def _design(self, he: np.ndarray) -> np.ndarray:
        d = stain_densities(he)[..., :2]
        smooth = gaussian_filter(d, sigma=(self.context_sigma, self.context_sigma, 0))
        ones = np.ones((*d.shape[:2], 1), np.float32)
        return np.concatenate([ones, d, smooth], axis=-1).reshape(-1, 5)

    def fit(self, sources: Tiles, targets: Tiles) -> ColourDeconvolutionBaseline:
        """Fit the coefficients on matching H&E and IHC tiles (a random pixel subset)."""
        src, tgt = _pairs(sources, targets)
        x = np.concatenate([self._design(s) for s in src])
        y = np.concatenate([stain_densities(t)[..., [0, 2]].reshape(-1, 2) for t in tgt])
        if len(x) > self.max_pixels:
            keep = np.random.default_rng(self.seed).choice(len(x), self.max_pixels, False)
            x, y = x[keep], y[keep]
        self.coef = np.linalg.lstsq(x.astype(np.float64), y, rcond=None)[0]
        return self

    def _predict_one(self, he: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise EvalError("ColourDeconvolutionBaseline: call fit() before predict()")
        h_dab = np.maximum(self._design(he) @ self.coef, 0).reshape(*he.shape[:2], 2)
        zeros = np.zeros(he.shape[:2], np.float32)
        return compose_stains(np.stack([h_dab[..., 0], zeros, h_dab[..., 1]], axis=-1))

    def predict(self, he: Tiles) -> np.ndarray | list[np.ndarray]:
        """Predicted IHC tile(s) for H&E tile(s)."""
        return _apply(he, self._predict_one)


class _LeastSquaresBaseline:
    """A per-pixel least-squares map from features of the H&E to features of the IHC."""

    name = "least squares"

    def __init__(self, max_pixels: int = 200_000, seed: int = 0) -> None:
        self.max_pixels = max_pixels
        self.seed = seed
        self.coef: np.ndarray | None = None

    def _design(self, he: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _target(self, ihc: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _render(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, sources: Tiles, targets: Tiles) -> _LeastSquaresBaseline:
        """Fit the map on matching H&E and IHC tiles (a random pixel subset)."""
        src, tgt = _pairs(sources, targets)
        x = np.concatenate([self._design(s) for s in src])
        y = np.concatenate([self._target(t) for t in tgt])
        if len(x) > self.max_pixels:
            keep = np.random.default_rng(self.seed).choice(len(x), self.max_pixels, False)
            x, y = x[keep], y[keep]
        self.coef = np.linalg.lstsq(x.astype(np.float64), y, rcond=None)[0]
        return self

    def _predict_one(self, he: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise EvalError(f"{type(self).__name__}: call fit() before predict()")
        return self._render((self._design(he) @ self.coef).reshape(*he.shape[:2], -1))

    def predict(self, he: Tiles) -> np.ndarray | list[np.ndarray]:
        """Predicted IHC tile(s) for H&E tile(s)."""
        return _apply(he, self._predict_one)


class LinearColourMapBaseline(_LeastSquaresBaseline):
    """IHC RGB = an affine function of the H&E pixel's RGB, fitted by least squares."""

    def _design(self, he: np.ndarray) -> np.ndarray:
        rgb = he.reshape(-1, 3).astype(np.float32) / 255
        return np.concatenate([rgb, np.ones((len(rgb), 1), np.float32)], axis=1)

    def _target(self, ihc: np.ndarray) -> np.ndarray:
        return ihc.reshape(-1, 3).astype(np.float32) / 255

    def _render(self, values: np.ndarray) -> np.ndarray:
        return to_uint8(values)


class DarknessBaseline(_LeastSquaresBaseline):
    """IHC haematoxylin and DAB densities = affine functions of the H&E's darkness (its
    mean optical density over R, G, B), rendered with the H-DAB colours."""

    def _design(self, he: np.ndarray) -> np.ndarray:
        dark = optical_density(he).mean(axis=-1).reshape(-1, 1)
        return np.concatenate([dark, np.ones_like(dark)], axis=1)

    def _target(self, ihc: np.ndarray) -> np.ndarray:
        return stain_densities(ihc)[..., [0, 2]].reshape(-1, 2)

    def _render(self, values: np.ndarray) -> np.ndarray:
        h_dab = np.maximum(values, 0)
        zeros = np.zeros(h_dab.shape[:2], np.float32)
        return compose_stains(np.stack([h_dab[..., 0], zeros, h_dab[..., 1]], axis=-1))


class NearestNeighbourBaseline:
    """The IHC target of the training H&E tile closest to the query.

    ``features="histology"``: Euclidean distance between `features.histology_features`
    standardised on the training sources (content, not position). ``"pixels"``: between
    the tiles shrunk to `thumbnail` px a side (layout and colour).
    """

    def __init__(
        self,
        features: Literal["histology", "pixels"] = "histology",
        thumbnail: int = 16,
        mpp: float | None = None,
    ) -> None:
        if features not in ("histology", "pixels"):
            raise EvalError(f"features must be 'histology' or 'pixels', not {features!r}")
        self.features = features
        self.thumbnail = thumbnail
        self.mpp = mpp
        self._reference: np.ndarray | None = None
        self._keys: np.ndarray | None = None
        self._targets: list[np.ndarray] = []

    def _describe(self, tiles: list[np.ndarray]) -> np.ndarray:
        if self.features == "histology":
            return histology_features(tiles, self.mpp)
        thumbs = []
        for t in tiles:
            factor = (self.thumbnail / t.shape[0], self.thumbnail / t.shape[1], 1)
            thumbs.append(zoom(t.astype(np.float32) / 255, factor, order=1).ravel())
        return np.stack(thumbs)

    def fit(self, sources: Tiles, targets: Tiles) -> NearestNeighbourBaseline:
        """Remember the training pairs and their source features."""
        src, tgt = _pairs(sources, targets)
        raw = self._describe(src)
        self._reference = raw
        self._keys = standardise(raw, raw) if self.features == "histology" else raw
        self._targets = [t.copy() for t in tgt]
        return self

    def _predict_one(self, he: np.ndarray) -> np.ndarray:
        if self._keys is None or self._reference is None:
            raise EvalError("NearestNeighbourBaseline: call fit() before predict()")
        query = self._describe([he])
        if self.features == "histology":
            query = standardise(query, self._reference)
        nearest = int(np.argmin(((self._keys - query) ** 2).sum(axis=1)))
        return self._targets[nearest].copy()

    def predict(self, he: Tiles) -> np.ndarray | list[np.ndarray]:
        """The nearest training target for each H&E tile (its size, not the query's)."""
        return _apply(he, self._predict_one)


def _groups(channels: int) -> int:
    return int(np.gcd(channels, 8))


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(_groups(cout), cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.GroupNorm(_groups(cout), cout),
            nn.SiLU(),
        )


class _UNet(nn.Module):
    """RGB -> RGB U-Net, two 2x downsamplings, widths w, 2w, 4w; sigmoid output."""

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.mid = _Block(3, w), _Block(w, 2 * w), _Block(2 * w, 4 * w)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), _Block(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), _Block(2 * w, w)
        self.out = nn.Conv2d(w, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x * 2 - 1)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return torch.sigmoid(self.out(d1))


def _count(width: int) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in _UNet(width).parameters())


def width_for_params(params: int) -> int:
    """The U-Net width whose parameter count is closest to ``params`` (about 455 w^2)."""
    lo, hi = 1, 1
    while _count(hi) < params:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _count(mid) < params else (lo, mid)
    return min((lo, hi), key=lambda w: abs(_count(w) - params))


def _to_tensor(tiles: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255


class RegressionBaseline:
    """Direct H&E -> IHC regression: a U-Net trained with L1 on the paired tiles.

    Give ``params`` (a parameter budget, e.g. the MuPD model's size; the closest width
    is taken) or ``width``. ``fit`` trains on CPU (or ``device``) with AdamW on random
    crops with flips and 90-degree rotations; ``save``/``load`` use safetensors only.
    """

    def __init__(
        self,
        params: int | None = None,
        width: int = 16,
        crop: int = 128,
        lr: float = 2e-3,
        device: str | torch.device = "cpu",
    ) -> None:
        self.width = width_for_params(params) if params is not None else width
        self.crop = crop
        self.lr = lr
        self.device = torch.device(device)
        self.net = _UNet(self.width).to(self.device)

    @property
    def num_parameters(self) -> int:
        """Trainable parameters of the network."""
        return sum(p.numel() for p in self.net.parameters())

    def fit(
        self, sources: Tiles, targets: Tiles, steps: int = 500, batch_size: int = 8, seed: int = 0
    ) -> list[float]:
        """Train for ``steps`` AdamW steps on random crops; returns the L1 loss per step."""
        src, tgt = _pairs(sources, targets)
        pairs = [np.concatenate([s, t], axis=-1) for s, t in zip(src, tgt, strict=True)]
        crop = min(self.crop, *(min(p.shape[:2]) for p in pairs)) // 4 * 4
        if crop < 4:
            raise EvalError("RegressionBaseline: tiles must be at least 4 px a side")
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        optimiser = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=1e-4)
        self.net.train()
        history = []
        for _ in range(steps):
            batch = []
            for i in rng.integers(len(pairs), size=batch_size):
                p = pairs[i]
                y, x = rng.integers(p.shape[0] - crop + 1), rng.integers(p.shape[1] - crop + 1)
                p = np.rot90(p[y : y + crop, x : x + crop], k=int(rng.integers(4)))
                batch.append(np.ascontiguousarray(p[:, ::-1] if rng.random() < 0.5 else p))
            data = _to_tensor(batch).to(self.device)
            loss = F.l1_loss(self.net(data[:, :3]), data[:, 3:])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            history.append(loss.item())
        return history

    @torch.inference_mode()
    def _predict_one(self, he: np.ndarray) -> np.ndarray:
        self.net.eval()
        h, w = he.shape[:2]
        x = F.pad(_to_tensor([he]), (0, -w % 4, 0, -h % 4), mode="replicate")
        y = self.net(x.to(self.device))[0, :, :h, :w]
        return to_uint8(y.permute(1, 2, 0).cpu().numpy())

    def predict(self, he: Tiles) -> np.ndarray | list[np.ndarray]:
        """Predicted IHC tile(s); any size (padded to a multiple of 4, then cropped)."""
        return _apply(he, self._predict_one)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the weights and the width to one .safetensors file."""
        path = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, path, metadata={"format": "pt", "width": str(self.width)})
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], device: str | torch.device = "cpu"
    ) -> RegressionBaseline:
        """A baseline from a file written by `save` (safetensors only, never pickles)."""
        with safe_open(str(path), framework="pt") as f:
            width = int((f.metadata() or {}).get("width", 0))
            if width < 1:
                raise EvalError(f"{path}: not a RegressionBaseline file (no width metadata)")
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        model = cls(width=width, device=device)
        model.net.load_state_dict(state, strict=True)
        return model
