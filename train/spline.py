"""Interpolating cubic splines on an image's own pixel grid: fractional shifts and x``s`` upsampling.

The interpolating (cardinal) cubic spline passes through every sample and reproduces cubic polynomials.
Its kernel is ``eta(x) = sum_j sqrt(3) z^|j| beta3(x - j)`` with ``z = sqrt(3) - 2`` and ``beta3`` the
cubic B-spline: ``eta(0) = 1``, ``eta(k) = 0`` at the other integers, and ``|eta(x)|`` decays as
``|z|^|x|``, so it is applied as a convolution truncated at ``TAPS`` samples either side (the weights
left out are below 1e-5). Edges are extended by replication.

- :func:`shift_images` moves content by a fraction of a pixel: ``out[n] = in(n - t)`` (positive ``t``
  moves the picture right / down).
- :func:`grid_cubic_upsample` places LR pixel ``i`` on HR pixel ``s*i``, the grid that direct
  subsampling (``LR = HR[::s, ::s]``) keeps: HR pixel ``s*i + p`` is the spline at ``i + p/s``. (A
  pixel-centre ``F.interpolate`` puts LR pixel ``i`` at HR ``s*i + (s-1)/2``: 1.5 px off for x4.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

TAPS = 10
_Z = math.sqrt(3.0) - 2.0


def _beta3(x: Tensor) -> Tensor:
    """The cubic B-spline (support ``|x| < 2``)."""
    a = x.abs()
    inner = 2.0 / 3.0 - a**2 + a**3 / 2.0
    outer = (2.0 - a).clamp(min=0.0) ** 3 / 6.0
    return torch.where(a < 1.0, inner, outer)


def cardinal_cubic(x: Tensor) -> Tensor:
    """The interpolating cubic-spline kernel ``eta`` at ``x`` (any shape, float64)."""
    j = torch.arange(-(TAPS + 3), TAPS + 4, dtype=torch.float64)
    x = x.to(torch.float64)
    return (math.sqrt(3.0) * _Z ** j.abs() * _beta3(x[..., None] - j)).sum(-1)


def _shift_last(x: Tensor, shifts: Sequence[float]) -> Tensor:
    """``... x L`` -> ``S x ... x L``: entry ``k`` moved by ``shifts[k]`` samples along the last dimension."""
    lead, length = x.shape[:-1], x.shape[-1]
    reach = TAPS + math.ceil(max(abs(float(t)) for t in shifts))
    k = reach - torch.arange(2 * reach + 1, dtype=torch.float64)  # out[n] = sum_k in[n - k] eta(k - t)
    weights = torch.stack([cardinal_cubic(k - float(t)) for t in shifts]).to(x.dtype)[:, None, :]
    padded = F.pad(x.reshape(-1, 1, length), (reach, reach), mode="replicate")
    out = F.conv1d(padded, weights)  # N x S x L
    return out.permute(1, 0, 2).reshape(len(shifts), *lead, length)


def shift_images(image: Tensor, dxs: Sequence[float], dys: Sequence[float]) -> Tensor:
    """Move ``... x H x W`` images by every ``(dx, dy)`` pair of ``dxs x dys`` (HR px; right / down).

    Returns ``len(dys) x len(dxs) x ... x H x W``: entry ``[j, i]`` is ``image(y - dys[j], x - dxs[i])``.
    """
    rows = _shift_last(image.transpose(-1, -2), dys).transpose(-1, -2)  # Y x ... x H x W
    return _shift_last(rows, dxs).transpose(0, 1)  # Y x X x ... x H x W


def grid_cubic_upsample(lr: Tensor, scale: int) -> Tensor:
    """``... x h x w`` -> ``... x sh x sw`` cubic spline with LR pixel ``i`` on HR pixel ``s*i`` (not clamped)."""

    def along_last(x: Tensor) -> Tensor:
        phases = _shift_last(x, [-p / scale for p in range(scale)])  # phase p holds x(i + p/s)
        return phases.movedim(0, -1).reshape(*x.shape[:-1], x.shape[-1] * scale)

    return along_last(along_last(lr).transpose(-1, -2)).transpose(-1, -2)
