"""The one region type: a rectangle (x, y, width, height), optionally masked by a polygon."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_mupd.errors import RegionError


@dataclass(frozen=True)
class Region:
    """A rectangle of pixels, optionally restricted to a polygon.

    ``x``, ``y`` is the top-left pixel and ``width``, ``height`` the size, in level-0
    pixels of a slide unless a function says otherwise (e.g. a window of an output
    grid). ``polygon`` holds (x, y) vertices in the same pixels, corners of pixels at
    integers. Every public function takes regions in this order, never (y, x, h, w).
    """

    x: int
    y: int
    width: int
    height: int
    polygon: tuple[tuple[float, float], ...] | None = None

    @classmethod
    def from_micrometres(
        cls, x: float, y: float, width: float, height: float, mpp: tuple[float, float]
    ) -> Region:
        """A rectangle given in micrometres on a slide of pixel size ``mpp`` (y, x)."""
        return cls(
            round(x / mpp[1]), round(y / mpp[0]), round(width / mpp[1]), round(height / mpp[0])
        )

    @classmethod
    def from_polygon(cls, xy: Sequence[Sequence[float]] | np.ndarray) -> Region:
        """The bounding box of a polygon of (x, y) vertices, masked by it."""
        points = np.asarray(xy, float)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
            raise RegionError(f"a polygon needs at least 3 (x, y) vertices, got {points.shape}")
        x0, y0 = np.floor(points.min(axis=0) + 1e-6).astype(int)  # tolerate round-off
        x1, y1 = np.ceil(points.max(axis=0) - 1e-6).astype(int)
        polygon = tuple((float(px), float(py)) for px, py in points)
        return cls(int(x0), int(y0), int(x1 - x0), int(y1 - y0), polygon)

    def check_within(self, size: tuple[int, int], name: str = "the image") -> None:
        """Raise :class:`RegionError` unless the region has an area and overlaps an image
        of ``size`` (width, height) called ``name``."""
        width, height = size
        if self.width <= 0 or self.height <= 0:
            raise RegionError(f"region {self} has no area")
        if (
            self.x >= width
            or self.y >= height
            or self.x + self.width <= 0
            or self.y + self.height <= 0
        ):
            raise RegionError(
                f"region x={self.x}, y={self.y}, {self.width}x{self.height} lies outside "
                f"{name} ({width}x{height} px)"
            )

    def clip(self, size: tuple[int, int], name: str = "the image") -> Region:
        """The region cut to an image of ``size`` (width, height); the polygon is kept."""
        self.check_within(size, name)
        width, height = size
        x0, y0 = max(self.x, 0), max(self.y, 0)
        x1, y1 = min(self.x + self.width, width), min(self.y + self.height, height)
        return Region(x0, y0, x1 - x0, y1 - y0, self.polygon)
