"""Padding helpers that work for any image size, including 1-pixel-wide inputs.

``torch.nn.functional.pad`` in ``reflect`` mode needs the pad to be smaller than the padded dimension;
these helpers fall back to repeated reflection (and to replication for a 1-pixel dimension) so that
every size works. Padding is added at the bottom and right only, so the top-left pixel keeps its
coordinates: a tile whose origin is a multiple of the pad multiple sees the same grid as the whole image.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from cmosx.errors import ArgumentError

PadMode = Literal["reflect", "replicate"]


def _pad_dim_reflect(x: Tensor, pad: int, dim: int) -> Tensor:
    """Reflect-pad ``x`` at the end of spatial ``dim`` (-1 or -2) by ``pad``, in steps when pad >= size."""
    while pad > 0:
        size = x.shape[dim]
        if size == 1:  # nothing to reflect: repeat the single row/column
            pads = (0, pad, 0, 0) if dim == -1 else (0, 0, 0, pad)
            return F.pad(x, pads, mode="replicate")
        step = min(pad, size - 1)
        pads = (0, step, 0, 0) if dim == -1 else (0, 0, 0, step)
        x = F.pad(x, pads, mode="reflect")
        pad -= step
    return x


def pad_bottom_right(x: Tensor, pad_h: int, pad_w: int, mode: PadMode = "reflect") -> Tensor:
    """Pad a ``B x C x H x W`` tensor by ``pad_h`` rows at the bottom and ``pad_w`` columns at the right."""
    if pad_h == 0 and pad_w == 0:
        return x
    if mode == "replicate":
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    if mode != "reflect":
        raise ArgumentError(f"unknown pad mode {mode!r}")
    x = _pad_dim_reflect(x, pad_w, -1)
    return _pad_dim_reflect(x, pad_h, -2)


def pad_to_multiple(x: Tensor, multiple: tuple[int, int], mode: PadMode = "reflect") -> Tensor:
    """Pad ``B x C x H x W`` at the bottom/right so that H and W are multiples of ``multiple`` (mh, mw)."""
    mh, mw = multiple
    h, w = x.shape[-2:]
    return pad_bottom_right(x, (-h) % mh, (-w) % mw, mode)


def crop_to(x: Tensor, height: int, width: int) -> Tensor:
    """Keep the top-left ``height x width`` of a ``... x H x W`` tensor."""
    return x[..., :height, :width]
