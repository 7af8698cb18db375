"""What a slide backend provides to :class:`~napari_mupd.io.Slide`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from napari_mupd.io.channels import Channel


@dataclass(frozen=True)
class Level:
    """One level of a slide pyramid.

    ``shape`` and ``tile`` are (height, width) in pixels; ``downsample`` is relative
    to level 0 (OpenSlide's convention: the mean of the two axes' ratios);
    ``native`` is False for levels computed lazily from a finer one.
    """

    shape: tuple[int, int]
    downsample: float
    tile: tuple[int, int]
    native: bool = True


@dataclass
class BackendInfo:
    """Static facts a backend reads from the file on open."""

    vendor: str
    levels: list[Level]
    mpp: tuple[float, float] | None = None
    objective_power: float | None = None
    associated: dict[str, Callable[[], np.ndarray]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: Empty for brightfield (RGB or grey) slides; one per plane for multichannel ones,
    #: whose backend then implements :meth:`ChannelBackend.read_channels`.
    channels: list[Channel] = field(default_factory=list)


class Backend(Protocol):
    """A reader of native pyramid levels."""

    info: BackendInfo

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Return level pixels [y:y+h, x:x+w] (inside the level) as (h, w, 3) uint8."""
        ...

    def close(self) -> None:
        """Release file handles and threads."""
        ...


class ChannelBackend(Backend, Protocol):
    """A reader of the native levels of a multichannel slide."""

    def read_channels(
        self, level: int, y: int, x: int, h: int, w: int, channels: tuple[int, ...]
    ) -> np.ndarray:
        """Return planes ``channels`` of [y:y+h, x:x+w] as (len(channels), h, w), native dtype."""
        ...


def level_downsample(base: tuple[int, int], shape: tuple[int, int]) -> float:
    """OpenSlide's downsample of a level: the mean of the height and width ratios."""
    return (base[0] / shape[0] + base[1] / shape[1]) / 2


def covering_tiles(tile: tuple[int, int], y: int, x: int, h: int, w: int) -> list[tuple[int, int]]:
    """(row, column) of the ``tile`` (th, tw) grid cells that a box [y:y+h, x:x+w] touches,
    row by row."""
    th, tw = tile
    return [
        (r, c)
        for r in range(y // th, (y + h - 1) // th + 1)
        for c in range(x // tw, (x + w - 1) // tw + 1)
    ]
