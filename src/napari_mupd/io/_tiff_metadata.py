"""Pixel size, magnification and vendor of TIFF-based slides (SVS, OME, NDPI, ...)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import tifffile
from tifffile.tifffile import svs_description_metadata

_UM_PER = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
_PLAUSIBLE_MPP = (0.01, 100.0)


def vendor(tif: tifffile.TiffFile) -> str:
    """A short vendor/format name for a TIFF slide."""
    for flag, name in (
        ("is_svs", "aperio"),
        ("is_ndpi", "hamamatsu"),
        ("is_philips", "philips"),
        ("is_bif", "ventana"),
        ("is_scn", "leica"),
        ("is_qpi", "qptiff"),
        ("is_ome", "ome-tiff"),
    ):
        if getattr(tif, flag, False):
            return name
    return "generic-tiff"


def read_metadata(tif: tifffile.TiffFile, series_index: int) -> dict[str, Any]:
    """Return ``{"mpp": (y, x) | None, "objective_power": float | None}``."""
    name = vendor(tif)
    page = tif.series[series_index].keyframe
    mpp = None
    power = None
    if name == "aperio":
        meta = svs_description_metadata(page.description)
        if _plausible(meta.get("MPP")):
            mpp = (float(meta["MPP"]), float(meta["MPP"]))
        power = _number(meta.get("AppMag"))
    elif name == "ome-tiff" and tif.ome_metadata:
        mpp, power = _ome(tif.ome_metadata, series_index)
    elif name == "philips" and tif.philips_metadata:
        mpp = _philips(tif.philips_metadata)
    elif name == "hamamatsu":
        power = _number((tif.ndpi_tags or {}).get("Magnification"))
    elif name == "ventana":
        power = _ventana_power(page)
    if mpp is None:
        mpp = _resolution_tags(page)
    return {"mpp": mpp, "objective_power": power}


def channel_metadata(tif: tifffile.TiffFile, series_index: int, count: int) -> list[dict[str, Any]]:
    """What the file says about each of ``count`` channels (name, color, emission, ...):
    OME-XML, PerkinElmer/Akoya QPTIFF page XML, ImageJ labels/ranges/LUTs, or page
    names; a dict per channel, empty where the file says nothing."""
    out: list[dict[str, Any]] = [{} for _ in range(count)]
    name = vendor(tif)
    try:
        if name == "ome-tiff" and tif.ome_metadata:
            _ome_channels(tif.ome_metadata, series_index, out)
        elif name == "qptiff":
            pages = tif.series[series_index].pages
            for i, page in enumerate(pages[:count]):
                if page is not None:
                    out[i] = _qpi_channel(getattr(page, "description", "") or "")
        elif tif.is_imagej and tif.imagej_metadata:
            _imagej_channels(tif.imagej_metadata, out)
        else:
            pages = tif.series[series_index].pages
            if len(pages) == count:
                for i, page in enumerate(pages):
                    tags = getattr(page, "tags", None)
                    tag = tags.get("PageName") if tags is not None else None
                    if tag is not None:
                        out[i]["name"] = str(tag.value)
    except (ET.ParseError, AttributeError, TypeError, ValueError, IndexError):
        pass  # metadata that does not parse: channels get default names and colours
    return out


def _ome_channels(xml: str, series_index: int, out: list[dict[str, Any]]) -> None:
    root = ET.fromstring(xml)
    ns = {"ome": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
    prefix = "ome:" if ns else ""
    images = root.findall(f"{prefix}Image", ns)
    if not images:
        return
    pixels = images[min(series_index, len(images) - 1)].find(f"{prefix}Pixels", ns)
    if pixels is None:
        return
    for i, channel in enumerate(pixels.findall(f"{prefix}Channel", ns)[: len(out)]):
        out[i] = {
            "name": channel.get("Name") or channel.get("Fluor"),
            "fluor": channel.get("Fluor") if channel.get("Name") else None,
            "color": _int_or_none(channel.get("Color")),
            "emission": channel.get("EmissionWavelength"),
            "excitation": channel.get("ExcitationWavelength"),
        }
    for plane in pixels.findall(f"{prefix}Plane", ns):
        c = _int_or_none(plane.get("TheC"))
        if c is not None and 0 <= c < len(out) and plane.get("ExposureTime"):
            out[c].setdefault("exposure", plane.get("ExposureTime"))


def _qpi_channel(description: str) -> dict[str, Any]:
    """Name (the biomarker when given, else the dye), colour, exposure of a QPTIFF page."""
    if not description.lstrip().startswith("<"):
        return {}
    root = ET.fromstring(description)

    def text(tag: str) -> str | None:
        element = root.find(f".//{tag}")
        return element.text.strip() if element is not None and element.text else None

    fluor, marker = text("Name"), text("Biomarker")
    return {
        "name": marker or fluor,
        "fluor": fluor if marker else None,
        "color": text("Color"),
        "exposure": text("ExposureTime"),
        "excitation": text("ExcitationWavelength"),
        "emission": text("EmissionWavelength"),
    }


def _imagej_channels(meta: dict[str, Any], out: list[dict[str, Any]]) -> None:
    labels = meta.get("Labels") or []
    for i, label in enumerate(labels[: len(out)]):
        out[i]["name"] = label
    ranges = meta.get("Ranges") or ()
    for i in range(min(len(out), len(ranges) // 2)):
        out[i]["display_range"] = (ranges[2 * i], ranges[2 * i + 1])
    for i, lut in enumerate((meta.get("LUTs") or [])[: len(out)]):
        lut = list(lut)
        if len(lut) == 3:
            out[i]["color"] = tuple(int(row[-1]) for row in lut)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out > 0 else None


def _plausible(value: Any) -> bool:
    number = _number(value)
    return number is not None and _PLAUSIBLE_MPP[0] < number < _PLAUSIBLE_MPP[1]


def _resolution_tags(page: tifffile.TiffPage) -> tuple[float, float] | None:
    unit = page.tags.get("ResolutionUnit")
    xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
    if unit is None or xres is None or yres is None:
        return None
    um_per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
    if um_per_unit is None:
        return None
    out = []
    for tag in (yres, xres):
        num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        if not num:
            return None
        out.append(um_per_unit * den / num)
    return (out[0], out[1]) if all(_plausible(v) for v in out) else None


def _ome(xml: str, series_index: int) -> tuple[tuple[float, float] | None, float | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    ns = {"ome": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
    prefix = "ome:" if ns else ""
    images = root.findall(f"{prefix}Image", ns)
    if not images:
        return None, None
    image = images[min(series_index, len(images) - 1)]
    pixels = image.find(f"{prefix}Pixels", ns)
    mpp = None
    if pixels is not None:
        sizes = []
        for axis in ("Y", "X"):
            size = _number(pixels.get(f"PhysicalSize{axis}"))
            unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
            if size is None or unit not in _UM_PER or not _plausible(size * _UM_PER[unit]):
                break
            sizes.append(size * _UM_PER[unit])
        else:
            mpp = (sizes[0], sizes[1])
    power = None
    settings = image.find(f"{prefix}ObjectiveSettings", ns)
    if settings is not None:
        objective = root.find(f".//{prefix}Objective[@ID='{settings.get('ID')}']", ns)
        if objective is not None:
            power = _number(objective.get("NominalMagnification"))
    return mpp, power


def _philips(xml: str) -> tuple[float, float] | None:
    match = re.search(r'DICOM_PIXEL_SPACING"[^>]*>\s*"?([\d.eE+-]+)"?\s+"?([\d.eE+-]+)', xml)
    if not match:
        return None
    y, x = (float(v) * 1e3 for v in match.groups())  # millimetres
    return (y, x) if _plausible(y) and _plausible(x) else None


def _ventana_power(page: tifffile.TiffPage) -> float | None:
    xmp = page.tags.get("XMP")
    if xmp is None:
        return None
    text = xmp.value.decode("utf-8", "replace") if isinstance(xmp.value, bytes) else str(xmp.value)
    match = re.search(r'Magnification="([\d.]+)"', text)
    return _number(match.group(1)) if match else None
