"""Turning the model's RGB x4 upscale into a photo upscale: grayscale, alpha, and scales 2 and 3."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from cmosx.io.photo import Photo
from cmosx.ops.alpha import unpremultiply

# Rec. 601 luma weights (what Pillow uses for RGB -> L): grey results are converted back with these.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def to_grayscale(rgb: Tensor) -> Tensor:
    """3 x H x W -> 1 x H x W luma in [0, 1]."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    return (rgb * weights).sum(dim=0, keepdim=True)


def resize(values: Tensor, height: int, width: int) -> Tensor:
    """C x h x w -> C x height x width, bicubic; antialiased when shrinking. Result clamped to [0, 1]."""
    if values.shape[-2:] == (height, width):
        return values
    shrinking = height < values.shape[-2] or width < values.shape[-1]
    out = F.interpolate(values[None], size=(height, width), mode="bicubic", align_corners=False, antialias=shrinking)
    return out[0].clamp_(0.0, 1.0)  # a fresh tensor: clamped in place (the photo can be large)


def upscale_photo(photo: Photo, upscale_rgb: Callable[[Tensor], Tensor], scale: int) -> Photo:
    """Upscale ``photo`` by ``scale`` (2, 3 or 4) with ``upscale_rgb`` (3 x H x W -> 3 x 4H x 4W in [0, 1]).

    - Grayscale photos run as grey replicated to RGB and come back to one channel (Rec. 601 luma).
    - Alpha is upscaled separately (bicubic). The colour goes to the model premultiplied by alpha and is divided
      by the upscaled alpha afterwards, so colour hidden under transparent pixels cannot bleed into edges.
    - Scales 2 and 3 run the native x4 model, then an antialiased bicubic downscale to the requested size.
    """
    height, width = photo.height, photo.width
    rgb = photo.rgb()
    if photo.alpha is not None:
        rgb = rgb * photo.alpha
    out = upscale_rgb(rgb).float().clamp_(0.0, 1.0)  # in place: a 4x photo is large
    native_h, native_w = out.shape[-2:]
    alpha = None
    if photo.alpha is not None:
        alpha = resize(photo.alpha, native_h, native_w)
        out = unpremultiply(out, alpha)
    color = to_grayscale(out) if photo.is_grayscale else out
    target_h, target_w = height * scale, width * scale
    color = resize(color, target_h, target_w)
    if alpha is not None:
        alpha = resize(alpha, target_h, target_w)
    return photo.with_pixels(color.contiguous(), None if alpha is None else alpha.contiguous())
