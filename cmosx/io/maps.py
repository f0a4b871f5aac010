"""Estimated maps: writing the float32 blur map (TIFF or .npy), a readable colour preview with a sigma legend,
and the semantic map as a palette PNG with its class names; reading a blur map back (or one painted in an image
editor) for ``cmosx upscale --blur-map``."""

from __future__ import annotations

import colorsys
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from cmosx.errors import InputImageError, UsageError
from cmosx.io.atomic import atomic_write_bytes

BLUR_QUANTITY = "defocus blur: Gaussian sigma in pixels of the x4 output, one value per input pixel"
MAP_FORMATS = ("tiff", "npy")

# Viridis (perceptually uniform, colour-blind safe) sampled at 9 evenly spaced points; linear in between.
_VIRIDIS = np.array(
    [
        [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
        [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
    ],
    dtype=np.float32,
)  # fmt: skip
_LEGEND_HEIGHT = 40
_MIN_PREVIEW_WIDTH = 280


def colorize(values: np.ndarray, vmax: float) -> np.ndarray:
    """H x W floats -> H x W x 3 uint8 viridis colours, 0 -> dark purple, ``vmax`` (and above) -> yellow."""
    position = np.clip(np.nan_to_num(values) / max(vmax, 1e-12), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.floor(position).astype(np.int64).clip(0, len(_VIRIDIS) - 2)
    frac = (position - low)[..., None]
    colours = _VIRIDIS[low] * (1.0 - frac) + _VIRIDIS[low + 1] * frac
    return np.round(colours).astype(np.uint8)


def blur_map_array(blur_lr: Tensor) -> np.ndarray:
    """1 x H x W (or H x W) sigma tensor -> H x W float32 numpy array."""
    values = blur_lr.detach().float().cpu()
    return np.ascontiguousarray(values.reshape(values.shape[-2:]).numpy().astype(np.float32))


def write_blur_map(blur_lr: Tensor, path: Path, fmt: str = "tiff", model: str | None = None) -> None:
    """The float32 map (sigma in pixels of the x4 output, at the input's resolution) as TIFF or .npy."""
    values = blur_map_array(blur_lr)
    buffer = io.BytesIO()
    if fmt == "tiff":
        import tifffile

        description = json.dumps({"quantity": BLUR_QUANTITY, "unit": "pixel (x4 output)", "model": model})
        tifffile.imwrite(buffer, values, description=description, metadata=None, compression="zlib")
    elif fmt == "npy":
        np.save(buffer, values, allow_pickle=False)
    else:
        raise UsageError(f"unknown map format '{fmt}' (choose {' or '.join(MAP_FORMATS)})")
    atomic_write_bytes(path, buffer.getvalue())


def read_blur_map(path: Path, size: tuple[int, int], sigma_max: float, painted_max: float | None = None) -> np.ndarray:
    """A blur map for an input of ``size`` = (height, width) -> H x W float32 sigma (HR px of the x4 output).

    Float maps (the float32 TIFF or ``.npy`` that ``cmosx blurmap`` writes) hold sigma directly. An 8- or 16-bit
    grayscale image (a map painted in an image editor) is scaled so that white means ``painted_max`` sigma; it
    needs ``painted_max``, float maps refuse it. The map must have the input's size (after its EXIF orientation,
    as ``cmosx blurmap`` writes it) and values in [0, sigma_max]. Raises :class:`InputImageError` naming the file.
    """
    path = Path(path)
    try:
        values = _decode_blur_map(path)
    except InputImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        text = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise InputImageError(f"{path}: cannot read the blur map ({text})") from None
    if values.dtype.kind == "f":
        if painted_max is not None:
            raise InputImageError(f"{path}: holds float sigma values; --blur-map-max is only for 8/16-bit maps")
        sigma = values.astype(np.float32)
    else:
        if painted_max is None:
            raise InputImageError(
                f"{path}: an {values.dtype.itemsize * 8}-bit grayscale map needs --blur-map-max SIGMA "
                "(the sigma that white stands for)"
            )
        peak = float(np.iinfo(values.dtype).max)
        sigma = (values.astype(np.float32) / peak * np.float32(painted_max)).astype(np.float32)
    if sigma.shape != tuple(size):
        raise InputImageError(
            f"{path}: blur map is {sigma.shape[1]} x {sigma.shape[0]} pixels, the input is {size[1]} x {size[0]}"
        )
    if not np.isfinite(sigma).all():
        raise InputImageError(f"{path}: blur map holds NaN or infinite values")
    low, high = float(sigma.min()), float(sigma.max())
    if low < 0 or high > sigma_max * (1 + 1e-6):
        raise InputImageError(
            f"{path}: blur map sigma spans {low:g} to {high:g}; the model's range is 0 to {sigma_max:g}"
        )
    return sigma


def _decode_blur_map(path: Path) -> np.ndarray:
    """H x W array: float (sigma) or uint8/uint16 (painted grey levels)."""
    if not path.is_file():
        raise InputImageError(f"{path}: no such blur map")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        values = np.load(path, allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        values = tifffile.imread(path)
    else:
        with Image.open(path) as image:
            if image.mode in ("RGB", "RGBA", "P", "PA", "LA", "CMYK"):
                rgb = np.asarray(image.convert("RGB"))
                if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                    raise InputImageError(
                        f"{path}: a colour image is not a blur map (the NAME_blur.png preview cannot be read back; "
                        "use NAME_blur.tif, or a grayscale image with --blur-map-max)"
                    )
                values = rgb[..., 0]
            elif image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
                values = np.asarray(image).astype(np.uint16)
            elif image.mode == "I":
                values = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
            else:
                values = np.asarray(image.convert("L") if image.mode == "1" else image)
    values = np.squeeze(values)
    if values.ndim != 2:
        raise InputImageError(f"{path}: a blur map has one channel, this file has shape {values.shape}")
    if values.dtype.kind in "ui" and values.dtype not in (np.uint8, np.uint16):
        raise InputImageError(f"{path}: unsupported blur map sample type {values.dtype} (float, 8 or 16 bit)")
    if values.dtype.kind not in "uif":
        raise InputImageError(f"{path}: unsupported blur map sample type {values.dtype}")
    return values


def write_blur_preview(blur_lr: Tensor, path: Path, sigma_max: float, model: str | None = None) -> None:
    """A colour preview PNG of the blur map with a legend bar (sigma values printed) under it.

    The colour scale is fixed, 0 to ``sigma_max`` (the model's range), so previews of different photos compare;
    the scale is also stored in the PNG text chunks ``cmosx:sigma_range`` and ``cmosx:quantity``.
    """
    values = blur_map_array(blur_lr)
    height, width = values.shape
    canvas_width = max(width, _MIN_PREVIEW_WIDTH)
    canvas = Image.new("RGB", (canvas_width, height + _LEGEND_HEIGHT), (255, 255, 255))
    canvas.paste(Image.fromarray(colorize(values, sigma_max), "RGB"), (0, 0))
    margin = 12
    bar_width = canvas_width - 2 * margin
    ramp = np.linspace(0.0, sigma_max, bar_width, dtype=np.float32)[None].repeat(8, axis=0)
    canvas.paste(Image.fromarray(colorize(ramp, sigma_max), "RGB"), (margin, height + 4))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = margin + round(fraction * (bar_width - 1))
        draw.line([(x, height + 12), (x, height + 15)], fill=(0, 0, 0))
        label = f"{fraction * sigma_max:g}"
        text_width = draw.textlength(label, font=font)
        draw.text((min(max(x - text_width / 2, 0), canvas_width - text_width), height + 16), label, (0, 0, 0), font)
    caption = "sigma (px of x4 output)"
    draw.text((canvas_width - margin - draw.textlength(caption, font=font), height + 27), caption, (0, 0, 0), font)
    info = PngInfo()
    info.add_text("cmosx:quantity", BLUR_QUANTITY)
    info.add_text("cmosx:sigma_range", f"0 {sigma_max:g}")
    info.add_text("cmosx:colormap", "viridis")
    info.add_text("cmosx:map_size", f"{width} x {height} (the map is the top-left region above the legend)")
    if model:
        info.add_text("cmosx:model", model)
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG", pnginfo=info)
    atomic_write_bytes(path, buffer.getvalue())


def class_colours(count: int) -> list[tuple[int, int, int]]:
    """``count`` distinct colours (evenly spread hues, alternating lightness), deterministic."""
    colours = []
    for index in range(count):
        hue = (index * 0.618033988749895) % 1.0
        light = 0.45 if index % 2 else 0.6
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.75)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def write_semantic_map(
    semantic_lr: Tensor, class_names: list[str], png_path: Path, json_path: Path, provenance: dict | None = None
) -> None:
    """The most likely class per pixel as a palette PNG (pixel value = class id) plus a JSON legend.

    semantic_lr: C x H x W class probabilities. The class names are in the PNG text chunk ``cmosx:classes`` and in
    ``json_path`` as ``{"classes": [{"id", "name", "color"}...]}``; ``provenance`` (where the classes were learnt,
    :func:`cmosx.models.provenance.semantic_provenance`) goes into the JSON as ``"classes_from"`` and, when it has
    a note, into the PNG text chunk ``cmosx:classes_note``.
    """
    count = int(semantic_lr.shape[0])
    if count > 256:
        raise UsageError(f"{count} classes do not fit a palette PNG (256 at most)")
    labels = semantic_lr.detach().float().argmax(dim=0).cpu().numpy().astype(np.uint8)
    names = list(class_names) if len(class_names) == count else [f"class {i}" for i in range(count)]
    colours = class_colours(count)
    image = Image.fromarray(labels, "L").convert("P")
    palette = [channel for colour in colours for channel in colour]
    image.putpalette(palette + [0] * (768 - len(palette)))
    legend = [{"id": i, "name": names[i], "color": list(colours[i])} for i in range(count)]
    info = PngInfo()
    info.add_text("cmosx:classes", json.dumps([entry["name"] for entry in legend]))
    if provenance and provenance.get("note"):
        info.add_text("cmosx:classes_note", provenance["note"])
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=info)
    atomic_write_bytes(png_path, buffer.getvalue())
    document = {"classes": legend, **({"classes_from": provenance} if provenance else {})}
    atomic_write_bytes(json_path, (json.dumps(document, indent=1) + "\n").encode("utf-8"))
