"""Registration: the sub-pixel shift that best aligns an output image with its ground truth.

An upscaler whose output sits off the subsampling grid loses PSNR to misregistration alone (a
pixel-centre bicubic x4 of ``LR = HR[::4, ::4]`` sits 1.5 HR px right of and below the truth).
:func:`register` finds ``(dx, dy)`` minimising the mean squared error on BT.601 Y between the output
moved by ``(dx, dy)`` (cubic-spline shifting, :mod:`cmosx.train.spline`) and the truth, over a region
that leaves out ``border`` plus the search range plus a margin on every side:

1. a grid of 0.25 px steps within ``+-max_shift`` (MSE on every third pixel of every third row),
2. a 3 x 3 grid of 0.25 px around the best point, then one of 0.05 px around the minimum of a quadratic
   fitted to it, and the minimum of a quadratic fitted to that (all pixels of the region).

``dx, dy`` are in HR px, positive right / down: the output matches best when moved by them (bicubic:
about (-1.5, -1.5); an output on the grid: (0, 0)). ``gain_db`` is the PSNR-Y that move gains over
the output as it is, on the same region. Ties (a flat image) resolve to the smallest shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from cmosx.errors import ArgumentError
from cmosx.train.metrics import rgb_to_y
from cmosx.train.spline import shift_images

MAX_SHIFT = 4.0
COARSE_STEP = 0.25
FINE_STEP = 0.05
_COARSE_STRIDE = 3
_MARGIN = 4  # beyond the search range: the replicated edge reaches a few pixels into a shifted image


@dataclass(frozen=True)
class Registration:
    dx: float  # HR px, positive: the output is best moved right
    dy: float  # HR px, positive: down
    gain_db: float  # PSNR-Y gained by that move (inf if it makes the output exact)


def _region(size: int, margin: int) -> slice:
    if size - 2 * margin < 8:
        raise ArgumentError(f"image too small to register: {size} px with a margin of {margin} px per side")
    return slice(margin, size - margin)


def _mse_grid(out_y: Tensor, tgt_y: Tensor, dxs: list[float], dys: list[float], rows: slice, cols: slice) -> Tensor:
    """``len(dys) x len(dxs)`` MSE of the output moved by each shift, over ``tgt_y[rows, cols]``."""
    moved = shift_images(out_y, dxs, dys)[..., rows, cols]
    return (moved - tgt_y[rows, cols]).double().square().mean(dim=(-1, -2))


def _coarse(out_y: Tensor, tgt_y: Tensor, max_shift: float, rows: slice, cols: slice) -> tuple[float, float]:
    """The best shift on a ``COARSE_STEP`` grid: 16 fractional phases, integer parts by slicing."""
    steps = round(1 / COARSE_STEP)
    phases = [k * COARSE_STEP for k in range(steps)]
    moved = shift_images(out_y, phases, phases)  # [fy, fx] x H x W
    # every third pixel (3 is prime to the scale, so every phase of the HR grid counts alike): the nine
    # residues of the moved stack, contiguous, and the target's
    s = _COARSE_STRIDE
    residues = {(p, q): moved[..., p::s, q::s].contiguous() for p in range(s) for q in range(s)}
    target = tgt_y[rows.start : rows.stop : s, cols.start : cols.stop : s]
    h, w = target.shape
    reach = math.ceil(max_shift)
    integers = range(-reach, reach)
    mse = torch.empty(len(integers), len(integers), steps, steps)  # [iy, ix, fy, fx]
    for a, iy in enumerate(integers):
        for b, ix in enumerate(integers):
            # moved by (ix + fx, iy + fy): out[n] = phase[n - i], so the region reads phase[rows - iy, cols - ix]
            r0, c0 = rows.start - iy, cols.start - ix
            window = residues[(r0 % s, c0 % s)][..., r0 // s : r0 // s + h, c0 // s : c0 // s + w]
            mse[a, b] = (window - target).square().mean(dim=(-1, -2))
    grid = torch.tensor([i + f for i in integers for f in phases])  # the shifts along one axis, ascending
    mse = mse.permute(0, 2, 1, 3).reshape(len(grid), len(grid))  # [dy, dx]
    dy, dx = torch.meshgrid(grid, grid, indexing="ij")
    allowed = (dx.abs() <= max_shift) & (dy.abs() <= max_shift)
    mse = torch.where(allowed, mse, torch.full_like(mse, math.inf))
    near_best = mse <= mse.min() * (1 + 1e-6) + 1e-12  # ties (a flat image): the smallest shift
    distance = torch.where(near_best, dx.square() + dy.square(), torch.full_like(mse, math.inf))
    best = int(torch.argmin(distance))
    return float(dx.flatten()[best]), float(dy.flatten()[best])


def _quadratic_minimum(mse: Tensor) -> tuple[float, float]:
    """Offsets (u, v) in [-1, 1] (grid units, x then y) of the minimum of a quadratic fitted to 3 x 3 values.

    Falls back to the best grid point when the fit has no minimum (a flat or saddle-shaped surface).
    """
    v, u = torch.meshgrid(torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0]), indexing="ij")
    u, v, f = u.flatten().double(), v.flatten().double(), mse.flatten().double()
    design = torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v], dim=1)
    a = torch.linalg.lstsq(design, f[:, None]).solution.flatten()
    hessian = torch.tensor([[2 * a[3], a[4]], [a[4], 2 * a[5]]], dtype=torch.float64)
    best = int(torch.argmin(f))
    fallback = (float(u[best]), float(v[best]))
    if bool(torch.linalg.eigvalsh(hessian).min() <= 1e-12 * max(float(f.abs().max()), 1e-30)):
        return fallback
    minimum = -torch.linalg.solve(hessian, a[1:3])
    if not bool(torch.isfinite(minimum).all()):
        return fallback
    return float(minimum[0].clamp(-1, 1)), float(minimum[1].clamp(-1, 1))


def _refine(out_y, tgt_y, dx: float, dy: float, step: float, rows, cols) -> tuple[float, float]:
    offsets = [-step, 0.0, step]
    mse = _mse_grid(out_y, tgt_y, [dx + o for o in offsets], [dy + o for o in offsets], rows, cols)
    u, v = _quadratic_minimum(mse)
    return dx + u * step, dy + v * step


def register(output: Tensor, target: Tensor, border: int, max_shift: float = MAX_SHIFT) -> Registration:
    """Best sub-pixel shift of ``output`` against ``target`` (both ``3 x H x W`` in [0, 1]; see module)."""
    if output.shape != target.shape:
        raise ArgumentError(f"shape mismatch {tuple(output.shape)} vs {tuple(target.shape)}")
    out_y = rgb_to_y(output.clamp(0.0, 1.0))[0].float()
    tgt_y = rgb_to_y(target)[0].float()
    margin = max(border, 0) + math.ceil(max_shift) + _MARGIN
    rows, cols = _region(out_y.shape[-2], margin), _region(out_y.shape[-1], margin)
    dx, dy = _coarse(out_y, tgt_y, max_shift, rows, cols)
    dx, dy = _refine(out_y, tgt_y, dx, dy, COARSE_STEP, rows, cols)
    dx, dy = _refine(out_y, tgt_y, dx, dy, FINE_STEP, rows, cols)
    if abs(dx) > max_shift or abs(dy) > max_shift:
        dx, dy = max(-max_shift, min(max_shift, dx)), max(-max_shift, min(max_shift, dy))
    moved = float(_mse_grid(out_y, tgt_y, [dx], [dy], rows, cols)[0, 0])
    as_is = float((out_y[rows, cols] - tgt_y[rows, cols]).double().square().mean())
    if as_is <= moved:  # no move does better than none
        return Registration(dx=0.0, dy=0.0, gain_db=0.0)
    gain = math.inf if moved == 0.0 else 10.0 * math.log10(as_is / moved)
    return Registration(dx=dx, dy=dy, gain_db=gain)
