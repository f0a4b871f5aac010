"""Resampling between the LR and HR pixel grids of direct subsampling: LR pixel ``i`` sits on HR pixel ``s*i``.

Pixel-centre resizing (``F.interpolate(..., align_corners=False)`` or ``avg_pool2d``) places LR pixel ``i``
at HR ``s*i + (s-1)/2`` instead (1.5 HR px off for x4), so every place where LR and HR maps meet uses
these two functions.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def grid_upsample(lr: Tensor, scale: int, mode: str = "bilinear") -> Tensor:
    """``B x C x h x w`` -> ``B x C x sh x sw`` bilinear, with HR pixel ``s*i`` exactly on LR pixel ``i``.

    Values between two LR pixels are linear blends (``mode="bicubic"``: Keys cubic on the same grid, which
    may overshoot); the last ``s - 1`` HR rows and columns (beyond the last LR pixel) repeat its value
    (replicate padding). Any value range and dtype.
    """
    if scale == 1:
        return lr
    h, w = lr.shape[-2:]
    padded = F.pad(lr, (0, 1, 0, 1), mode="replicate")
    up = F.interpolate(padded, size=(h * scale + 1, w * scale + 1), mode=mode, align_corners=True)
    return up[..., : h * scale, : w * scale]


def grid_downsample(hr: Tensor, scale: int) -> Tensor:
    """``B x C x H x W`` (H, W multiples of ``scale``) -> ``B x C x H/s x W/s``: the mean of the
    ``(s+1) x (s+1)`` HR window centred on each LR pixel's HR position ``s*i`` (borders replicated).

    Averaging keeps a sigma map in HR pixels and one-hot probabilities summing to the share of
    non-ignored pixels; centring keeps the result on the grid (``avg_pool2d(x, s)`` is centred on
    ``s*i + (s-1)/2``). For odd ``s`` the window is ``s x s``.
    """
    if scale == 1:
        return hr
    if hr.shape[-1] % scale or hr.shape[-2] % scale:
        from cmosx.errors import UsageError

        raise UsageError(f"HR size {tuple(hr.shape[-2:])} is not a multiple of the scale {scale}")
    k = scale + 1 if scale % 2 == 0 else scale
    r = k // 2
    padded = F.pad(hr, (r, r, r, r), mode="replicate")
    return F.avg_pool2d(padded, kernel_size=k, stride=scale)[..., : hr.shape[-2] // scale, : hr.shape[-1] // scale]
