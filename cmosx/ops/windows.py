"""Split a feature map into non-overlapping windows and merge them back (exact inverse).

Both keep the memory layout: a channels_last input gives channels_last windows (and back), so the
convolutions around them stay on the fast channels_last path on the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cmosx.errors import ArgumentError


def _is_channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last)


def window_split(x: Tensor, window: tuple[int, int]) -> Tensor:
    """``B x C x H x W`` (H, W multiples of the window) -> ``(B * nh * nw) x C x wh x ww``.

    Windows are ordered row-major per image: index ``b * nh * nw + i * nw + j`` is the window at
    rows ``i*wh:(i+1)*wh`` and columns ``j*ww:(j+1)*ww`` of image ``b``.
    """
    B, C, H, W = x.shape
    wh, ww = window
    if H % wh or W % ww:
        raise ArgumentError(f"window_split: size {H}x{W} is not a multiple of the window {wh}x{ww}")
    nh, nw = H // wh, W // ww
    if _is_channels_last(x):
        hwc = x.permute(0, 2, 3, 1).reshape(B, nh, wh, nw, ww, C).permute(0, 1, 3, 2, 4, 5)
        return hwc.reshape(B * nh * nw, wh, ww, C).permute(0, 3, 1, 2)
    x = x.reshape(B, C, nh, wh, nw, ww).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B * nh * nw, C, wh, ww)


def window_merge(windows: Tensor, batch: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_split`: ``(B * nh * nw) x C x wh x ww`` -> ``B x C x H x W``."""
    _, C, wh, ww = windows.shape
    nh, nw = height // wh, width // ww
    if _is_channels_last(windows):
        hwc = windows.permute(0, 2, 3, 1).reshape(batch, nh, nw, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
        return hwc.reshape(batch, height, width, C).permute(0, 3, 1, 2)
    x = windows.reshape(batch, nh, nw, C, wh, ww).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, C, height, width)
