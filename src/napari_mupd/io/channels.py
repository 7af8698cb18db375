"""Channels of multichannel (fluorescence, multiplex) slides: names, colours, ranges.

A brightfield slide (RGB, or grey) has no channels (``Slide.channels == ()``); a
multichannel slide has one :class:`Channel` per plane, in the file's order, read from the
file's own metadata (OME-XML, PerkinElmer/Akoya QPTIFF XML, ImageJ, OME-Zarr ``omero``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Usual display colours of common stains and markers (lower-case names).
MARKER_COLOURS = {
    "dapi": "0000FF",
    "hoechst": "0000FF",
    "panck": "FFFFFF",
    "cd3": "FF0000",
    "cd8": "00FF00",
    "cd4": "FF00FF",
    "cd20": "FFFF00",
    "cd68": "00FFFF",
}
#: Other names of markers: a virtual marker finds a real channel by any of them.
MARKER_ALIASES = {
    "dapi": ("dapi", "hoechst", "hoechst33342", "nuclei", "nuclear", "dna"),
    "ki67": ("ki67", "mki67", "mib1"),
    "panck": ("panck", "pancytokeratin", "cytokeratin", "ck", "keratin", "aecam"),
    "cd3": ("cd3", "cd3e"),
    "cd8": ("cd8", "cd8a"),
    "cd20": ("cd20", "ms4a1"),
    "cd31": ("cd31", "pecam1"),
    "pdl1": ("pdl1", "cd274"),
    "pd1": ("pd1", "cd279", "pdcd1"),
    "sma": ("sma", "asma", "acta2"),
    "foxp3": ("foxp3",),
    "cd68": ("cd68",),
    "cd4": ("cd4",),
}
_CANONICAL = {alias: key for key, aliases in MARKER_ALIASES.items() for alias in aliases}
#: Colours cycled for channels the file gives none for.
COLOURS = ("FF0000", "00FF00", "00FFFF", "FF00FF", "FFFF00", "FF8000", "8000FF")
_RGB_NAMES = {"r", "g", "b", "a", "red", "green", "blue", "alpha", "rgb"}


@dataclass(frozen=True)
class Channel:
    """One channel of a multichannel slide.

    ``color`` is ``"RRGGBB"`` (the file's, else a usual one for the marker, else a cycled
    one); ``value_range`` the range of the pixel type (``(0, 65535)`` for uint16, the
    file's stated range for float when it says, else ``(0.0, 1.0)``); ``display_range``
    the contrast window the file gives (OME-Zarr ``omero`` window, ImageJ ranges), or
    None. Emission / excitation are in nanometres, exposure in the file's unit (QPTIFF:
    microseconds), each None when the file does not say. ``fluor`` is the dye (QPTIFF,
    OME) when the name is the marker.
    """

    index: int
    name: str
    color: str
    dtype: np.dtype
    value_range: tuple[float, float]
    display_range: tuple[float, float] | None = None
    emission: float | None = None
    excitation: float | None = None
    exposure: float | None = None
    fluor: str | None = None

    @property
    def rgb(self) -> tuple[float, float, float]:
        """The colour as (r, g, b) floats in [0, 1]."""
        r, g, b = (int(self.color[i : i + 2], 16) / 255 for i in (0, 2, 4))
        return r, g, b

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description (``mupd info --json``)."""
        return {
            "index": self.index,
            "name": self.name,
            "color": self.color,
            "dtype": str(self.dtype),
            "value_range": list(self.value_range),
            "display_range": list(self.display_range) if self.display_range else None,
            "emission": self.emission,
            "excitation": self.excitation,
            "exposure": self.exposure,
            "fluor": self.fluor,
        }


def dtype_range(dtype: np.dtype) -> tuple[float, float]:
    """The value range of a pixel type: the integer limits, (0, 1) for float."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0  # bool, float


def is_multichannel(count: int, dtype: np.dtype, names: Sequence[str | None] = ()) -> bool:
    """Whether ``count`` planes of ``dtype`` named ``names`` are channels, not colour.

    One plane is grey (brightfield); 2-4 unnamed (or R/G/B-named) 8- or 16-bit planes are
    colour (grey + alpha, RGB, RGBA), as before channels existed; anything else (5 or
    more planes, named markers, float or 32-bit pixels) is multichannel.
    """
    if count < 2:
        return False
    named = [n for n in names if n]
    if named and any(n.strip().lower() not in _RGB_NAMES for n in named):
        return True
    if named and count <= 4:  # R, G, B(, A)
        return False
    if count >= 5:
        return True
    return np.dtype(dtype) not in (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(bool))


def unique_names(names: Sequence[str | None]) -> list[str]:
    """Names for every channel: ``C<i>`` where the file gives none; a repeated name gets
    ``-2``, ``-3``, ... so that every channel can be asked for by name."""
    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        base = (name or "").strip() or f"C{i}"
        candidate, n = base, 2
        while candidate.lower() in seen:
            candidate, n = f"{base}-{n}", n + 1
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def marker_key(name: str) -> str:
    """A marker name reduced for matching: lower case, letters and digits only, aliases
    to one name ("Ki-67" and "MKI67" -> "ki67", "pan-cytokeratin" -> "panck"). A dye
    suffix after a space or slash is ignored ("CD8 (Opal 520)" -> "cd8")."""
    text = re.split(r"[\s/(]", name.strip(), maxsplit=1)[0] if name.strip() else ""
    for candidate in (name, text):
        key = re.sub(r"[^a-z0-9]", "", candidate.lower())
        if key in _CANONICAL:
            return _CANONICAL[key]
    return re.sub(r"[^a-z0-9]", "", name.lower())


def match_channel(name: str, channel_names: Sequence[str]) -> int | None:
    """Index of the channel called ``name``: the same name ignoring case, else the same
    marker by :func:`marker_key` (aliases such as Ki-67 / Ki67, PanCK /
    pan-cytokeratin); None when no channel matches."""
    lowered = [c.lower() for c in channel_names]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    key = marker_key(name)
    keys = [marker_key(c) for c in channel_names]
    return keys.index(key) if key and key in keys else None


def default_colour(name: str, index: int) -> str:
    """The usual colour of a marker, else a cycled one."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return MARKER_COLOURS.get(key, COLOURS[index % len(COLOURS)])


def hex_colour(value: Any) -> str | None:
    """``"RRGGBB"`` from a hex string, an ``"r,g,b"`` string, an (r, g, b) tuple of 0-255
    ints or an OME signed 32-bit RGBA integer; None when it is none of these."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if re.fullmatch(r"[0-9a-fA-F]{6}([0-9a-fA-F]{2})?", text):
            return text[:6].upper()
        parts = re.split(r"[,\s]+", text)
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            value = tuple(int(p) for p in parts)
        else:
            try:
                value = int(text)
            except ValueError:
                return None
    if isinstance(value, int):  # OME: RGBA packed in a signed int32
        rgba = value & 0xFFFFFFFF
        value = ((rgba >> 24) & 255, (rgba >> 16) & 255, (rgba >> 8) & 255)
    try:
        r, g, b = (int(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not all(0 <= v <= 255 for v in (r, g, b)):
        return None
    return f"{r:02X}{g:02X}{b:02X}"


def make_channels(
    count: int, dtype: np.dtype, described: Sequence[dict[str, Any]] = ()
) -> list[Channel]:
    """``count`` channels of ``dtype`` from what the file says about each (a dict per
    channel with any of name, color, display_range, value_range, emission, excitation,
    exposure, fluor; missing channels or keys are filled in)."""
    info = [dict(described[i]) if i < len(described) else {} for i in range(count)]
    names = unique_names([d.get("name") for d in info])
    dtype = np.dtype(dtype)
    out = []
    for i, (name, d) in enumerate(zip(names, info, strict=True)):
        out.append(
            Channel(
                index=i,
                name=name,
                color=hex_colour(d.get("color")) or default_colour(name, i),
                dtype=dtype,
                value_range=_pair(d.get("value_range")) or dtype_range(dtype),
                display_range=_pair(d.get("display_range")),
                emission=_positive(d.get("emission")),
                excitation=_positive(d.get("excitation")),
                exposure=_positive(d.get("exposure")),
                fluor=d.get("fluor") or None,
            )
        )
    return out


def _positive(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out > 0 and np.isfinite(out) else None


def _pair(value: Any) -> tuple[float, float] | None:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return None
    return lo, hi
