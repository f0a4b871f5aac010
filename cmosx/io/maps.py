"""Writing estimated maps: the float32 blur map (TIFF or .npy), a readable colour preview with a sigma legend,
and the semantic map as a palette PNG with its class names."""

from __future__ import annotations

import colorsys
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from cmosx.errors import UsageError
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


def write_semantic_map(semantic_lr: Tensor, class_names: list[str], png_path: Path, json_path: Path) -> None:
    """The most likely class per pixel as a palette PNG (pixel value = class id) plus a JSON legend.

    semantic_lr: C x H x W class probabilities. The class names are in the PNG text chunk ``cmosx:classes`` and in
    ``json_path`` as ``{"classes": [{"id", "name", "color"}...]}``.
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
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=info)
    atomic_write_bytes(png_path, buffer.getvalue())
    atomic_write_bytes(json_path, (json.dumps({"classes": legend}, indent=1) + "\n").encode("utf-8"))
