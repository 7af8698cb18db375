"""Between napari layers and the engine (no Qt): slides, regions and result layers.

Coordinates: an image layer's data pixel k is centred at data coordinate k (napari's
convention), so level-0 pixel corners lie at data coordinates ``k - 0.5``. A region
drawn on a Shapes layer goes world -> slide data -> level-0 corner coordinates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from napari_mupd.engine.virtual_stain import StainResult
from napari_mupd.errors import RegionError
from napari_mupd.imaging.regions import Region
from napari_mupd.imaging.resize import resample
from napari_mupd.imaging.stains import compose_stains
from napari_mupd.io import Slide
from napari_mupd.plugin import LayerData

if TYPE_CHECKING:
    from pathlib import Path

    import napari
    from napari.layers import Image, Layer, Shapes

#: Round-off allowed when snapping world coordinates to pixel corners.
EPS = 1e-6

#: Colormaps given to multiplex-IF markers, in panel order.
MARKER_COLORMAPS = ("green", "magenta", "cyan", "yellow", "red", "blue", "bop orange")


def layer_slide(layer: Image) -> Slide:
    """The slide behind an image layer: the reader's own, or one over the layer's data."""
    slide = layer.metadata.get("slide")
    if isinstance(slide, Slide) and not slide.closed:
        if not slide.multichannel:
            return slide
        if layer.metadata.get("channel") is not None:  # one channel of a fluorescence slide
            lo, hi = (float(v) for v in layer.contrast_limits)
            arrays = slide.channel_arrays(layer.metadata["channel"])
            return Slide.from_arrays(
                [_Windowed(a, lo, hi) for a in arrays], mpp=slide.mpp, name=layer.name
            )
    levels = list(layer.data) if layer.multiscale else [layer.data]
    return Slide.from_arrays(levels, mpp=layer_mpp(layer), name=layer.name)


class _Windowed:
    """A channel's (Y, X) level as grey uint8, its contrast window stretched to 0-255."""

    def __init__(self, array: Any, lo: float, hi: float) -> None:
        self.array, self.lo, self.span = array, lo, max(hi - lo, 1e-12)
        self.shape, self.dtype, self.ndim = tuple(array.shape), np.dtype(np.uint8), 2

    def __getitem__(self, key: Any) -> np.ndarray:
        values = (np.asarray(self.array[key], np.float32) - self.lo) / self.span
        return (np.clip(values, 0, 1) * 255 + 0.5).astype(np.uint8)


def layer_mpp(layer: Image) -> tuple[float, float] | None:
    """Micrometres per level-0 pixel (y, x): from the reader, or a scale in micrometres."""
    mpp = layer.metadata.get("mpp")
    if mpp:
        return (float(mpp[0]), float(mpp[1]))
    if all(str(u) in ("micrometer", "micron", "um") for u in layer.units[-2:]):
        sy, sx = (float(s) for s in layer.scale[-2:])
        return sy, sx
    return None


def _to_level0(image: Image, world_yx: np.ndarray) -> np.ndarray:
    """World (y, x) points -> level-0 pixel-corner (x, y) coordinates of ``image``."""
    ndim = image.ndim
    out = []
    for y, x in world_yx:
        point = np.zeros(ndim)
        point[-2:] = (y, x)
        data = np.asarray(image.world_to_data(point))[-2:]
        out.append((data[1] + 0.5, data[0] + 0.5))
    return np.asarray(out)


def region_from_shape(shapes: Shapes, index: int, image: Image) -> Region:
    """The region of shape ``index`` of a Shapes layer, on ``image``'s level 0.

    Axis-aligned rectangles give rectangular regions; every other shape (polygons,
    ellipses, rotated rectangles) gives its bounding box masked by its outline.
    """
    if not 0 <= index < len(shapes.data):
        raise RegionError(f"{shapes.name!r} has no shape {index} (it has {len(shapes.data)})")
    vertices = np.asarray(shapes.data[index], float)[:, -2:]
    world = np.asarray([shapes.data_to_world(np.r_[np.zeros(shapes.ndim - 2), v])[-2:]
                        for v in vertices])  # fmt: skip
    xy = _to_level0(image, world)
    kind = shapes.shape_type[index]
    if kind in ("line", "path"):
        raise RegionError(f"shape {index} of {shapes.name!r} is a {kind}; draw an area")
    if kind == "rectangle":
        x0, y0 = np.floor(xy.min(axis=0) + EPS).astype(int)
        x1, y1 = np.ceil(xy.max(axis=0) - EPS).astype(int)
        rounded = {(round(x, 6), round(y, 6)) for x, y in xy}
        xs, ys = {p[0] for p in rounded}, {p[1] for p in rounded}
        if len(xs) == 2 and len(ys) == 2:
            return Region(int(x0), int(y0), int(x1 - x0), int(y1 - y0))
    return Region.from_polygon(xy)


def region_from_view(viewer: napari.components.ViewerModel, image: Image) -> Region:
    """The part of ``image``'s level 0 visible in the viewer's 2-D canvas."""
    if viewer.dims.ndisplay != 2:
        raise RegionError("switch the viewer to 2-D to stain the field of view")
    height, width = viewer.canvas.size
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari 0.9
    zoom = camera.zoom
    cy, cx = camera.center[-2:]
    half_h, half_w = height / zoom / 2, width / zoom / 2
    corners = np.array([[cy - half_h, cx - half_w], [cy + half_h, cx + half_w]])
    (x0, y0), (x1, y1) = _to_level0(image, corners)
    slide_w, slide_h = (image.level_shapes[0][:2][::-1] if image.multiscale
                        else image.data.shape[:2][::-1])  # fmt: skip
    x0, y0 = max(0, int(np.floor(min(x0, x1) + EPS))), max(0, int(np.floor(min(y0, y1) + EPS)))
    x1, y1 = (
        min(slide_w, int(np.ceil(max(x0, x1) - EPS))),
        min(slide_h, int(np.ceil(max(y0, y1) - EPS))),
    )
    if x1 <= x0 or y1 <= y0:
        raise RegionError(f"{image.name!r} is not in view; pan to the tissue to stain")
    return Region(x0, y0, x1 - x0, y1 - y0)


def _placement(
    result: StainResult, image: Image, source_mpp: float | None = None
) -> dict[str, Any]:
    """scale/translate/units that lay a result over ``image`` (which may be moved);
    ``source_mpp``: the pixel size the user gave a source whose file has none."""
    sy, sx = result.scale
    ty, tx = result.translate
    base_scale = np.asarray(image.scale[-2:], float)
    # results are in the slide's physical units when it has a pixel size, else pixels
    given = (source_mpp, source_mpp) if source_mpp else None
    unit = np.asarray(layer_mpp(image) or given or (1.0, 1.0), float)
    factor = base_scale / unit
    offset = np.asarray(image.translate[-2:], float)
    return {
        "scale": (sy * factor[0], sx * factor[1]),
        "translate": (ty * factor[0] + offset[0], tx * factor[1] + offset[1]),
        "units": tuple(str(u) for u in image.units[-2:]),
    }


def result_layers(
    result: StainResult, image: Image, target: str, source_mpp: float | None = None
) -> list[LayerData]:
    """Layers for a stain of ``image``: RGB, or one additive layer per marker, plus std
    (``source_mpp``: see `_placement`)."""
    place = _placement(result, image, source_mpp)
    meta = {**result.metadata, "source_layer": image.name}
    label = target.split(":", 1)[-1] if target.startswith("IHC") else target
    region = result.metadata.get("region", {})
    where = f"seed {result.metadata.get('seed', 0)}, {region.get('x', 0)},{region.get('y', 0)}"
    name = f"{image.name} [virtual {label}, {where}]"
    layers: list[LayerData] = []
    if result.channels == ("R", "G", "B"):  # RGBA: glass and skipped tiles see-through
        layers.append((result.rgba_uint8(), {"name": name, "rgb": True, "metadata": meta,
                                             **place}, "image"))  # fmt: skip
    else:
        for i, marker in enumerate(result.channels):
            kwargs = {
                "name": f"{image.name} [virtual {marker}, {where}]",
                "colormap": MARKER_COLORMAPS[i % len(MARKER_COLORMAPS)],
                "blending": "additive",
                "contrast_limits": (0.0, 1.0),
                "metadata": {**meta, "marker": marker},
                **place,
            }
            layers.append((result.image[..., i], kwargs, "image"))
    if result.std is not None:
        std = result.std.mean(axis=-1)
        kwargs = {
            "name": f"{name} uncertainty",
            "colormap": "inferno",
            "contrast_limits": (0.0, max(float(std.max()), 1e-6)),
            "metadata": {**meta, "uncertainty": "per-pixel std over samples, mean of channels"},
            "visible": False,
            **place,
        }
        layers.append((std, kwargs, "image"))
    return layers


def world_matrix(layer: Layer) -> np.ndarray:
    """3 x 3 map of a 2-D layer's data (y, x) to world (y, x), its ``affine`` included."""
    if layer.ndim != 2:
        raise RegionError(f"{layer.name!r} has {layer.ndim} dimensions; compare 2-D layers")
    origin, down, right = (np.asarray(layer.data_to_world(p), float)[-2:]
                           for p in ((0, 0), (1, 0), (0, 1)))  # fmt: skip
    return np.array([[*(down - origin), 0], [*(right - origin), 0], [*origin, 1]]).T


def _level_matrix(layer: Image, level: int) -> np.ndarray:
    """3 x 3 map of a pyramid level's pixels (y, x) to level-0 data (y, x), centres kept."""
    dy, dx = np.asarray(layer.downsample_factors[level], float)[-2:]
    return np.array([[dy, 0, (dy - 1) / 2], [0, dx, (dx - 1) / 2], [0, 0, 1]])


def _level_pixels(layer: Image, level: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels (y0, x0, y1, x1) of a level: RGB uint8 for RGB layers, a fluorescence
    slide's channel in [0, 1] over the layer's contrast limits, else the raw values."""
    y0, x0, y1, x1 = box
    if layer.rgb:
        slide = layer_slide(layer)
        ds = slide.downsamples[level]
        return slide.read_region((round(x0 * ds), round(y0 * ds)), level, (x1 - x0, y1 - y0))
    data = layer.data[level] if layer.multiscale else layer.data
    pixels = np.asarray(data[y0:y1, x0:x1])
    if layer.metadata.get("channel") is not None and isinstance(layer.metadata.get("slide"), Slide):
        # a channel of a fluorescence slide: [0, 1] over its contrast window, as virtual
        # markers are, so that SSIM and PSNR compare like with like
        lo, hi = (float(v) for v in layer.contrast_limits)
        return np.clip((pixels.astype(np.float32) - lo) / max(hi - lo, 1e-12), 0, 1)
    return pixels


def layer_thumbnail(layer: Image, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """An image layer's RGB overview (longer side ``max_size``) and the 3 x 3 map of its
    pixels (y, x) to world (y, x)."""
    overview = _nuclear_overview(layer, max_size)
    if overview is None:
        overview = layer_slide(layer).thumbnail(max_size)
    h, w = np.asarray(layer.level_shapes[0], float)[-2:]
    fy, fx = h / overview.shape[0], w / overview.shape[1]
    to_data = np.array([[fy, 0, (fy - 1) / 2], [0, fx, (fx - 1) / 2], [0, 0, 1]])
    return overview, world_matrix(layer) @ to_data


def _nuclear_overview(layer: Image, max_size: int) -> np.ndarray | None:
    """For a channel layer of a fluorescence slide with a nuclear channel (DAPI,
    Hoechst): that channel's overview drawn as haematoxylin, so automatic registration
    matches its nuclei with an H&E's. None for any other layer."""
    slide = layer.metadata.get("slide")
    if not isinstance(slide, Slide) or slide.closed or layer.metadata.get("channel") is None:
        return None
    nuclear = slide.nuclear_channel
    if nuclear is None:
        return None
    lo, hi = slide.contrast_limits(nuclear)
    windowed = [_Windowed(a, lo, hi) for a in slide.channel_arrays(nuclear)]
    grey = Slide.from_arrays(windowed, mpp=slide.mpp).thumbnail(max_size)[..., 0]
    densities = np.zeros((*grey.shape, 3), np.float32)
    densities[..., 0] = grey.astype(np.float32) / 255  # haematoxylin OD up to 1
    return compose_stains(densities)


def read_on_grid(
    source: Image, target: Image, max_pixels: int = 2048 * 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``target``'s pixels, ``source``'s resampled onto them, and where ``source`` has data.

    The grid is ``target``'s finest level of at most ``max_pixels``; ``source`` is read
    at its level nearest that resolution (not coarser) and resampled linearly through
    both layers' world transforms (scale, translate, rotate, shear and ``affine``).
    """
    sizes = [int(np.prod(s[-2:])) for s in target.level_shapes]
    level = next((i for i, n in enumerate(sizes) if n <= max_pixels), len(sizes) - 1)
    th, tw = (int(v) for v in target.level_shapes[level][-2:])
    grid = np.linalg.inv(world_matrix(source)) @ world_matrix(target) @ _level_matrix(target, level)
    factor = np.sqrt(abs(np.linalg.det(grid[:2, :2])))
    downsamples = np.asarray(source.downsample_factors, float)[:, -2:].max(axis=1)
    source_level = int(np.flatnonzero(downsamples <= factor * 1.001).max(initial=0))
    grid = np.linalg.inv(_level_matrix(source, source_level)) @ grid
    corners = grid @ np.array([[0, 0, th - 1, th - 1], [0, tw - 1, 0, tw - 1], [1, 1, 1, 1]])
    sh, sw = (int(v) for v in source.level_shapes[source_level][-2:])
    y0, x0 = np.maximum(np.floor(corners[:2].min(axis=1)).astype(int) - 1, 0)
    y1, x1 = np.minimum(np.ceil(corners[:2].max(axis=1)).astype(int) + 2, (sh, sw))
    if y1 <= y0 or x1 <= x0:
        raise RegionError(f"{source.name!r} does not overlap {target.name!r}")
    region = _level_pixels(source, source_level, (y0, x0, y1, x1))
    shift = np.array([[1, 0, -y0], [0, 1, -x0], [0, 0, 1]])
    pixels, valid = resample(region, shift @ grid, (th, tw), cval=255 if source.rgb else 0)
    return _level_pixels(target, level, (0, 0, th, tw)), pixels, valid


def show_demo(viewer: napari.Viewer, zarr_path: Path, name: str) -> list[Layer]:
    """Open the sample slide and, over it, a stain of it written as OME-Zarr (layer ``name``)."""
    from napari_mupd.resources import sample_slide_path

    layers = viewer.open(str(sample_slide_path()), plugin="napari-mupd")
    stain = viewer.open(str(zarr_path), plugin="napari-mupd")
    for layer in stain:
        layer.name, layer.opacity = name, 0.8
    return [*layers, *stain]
