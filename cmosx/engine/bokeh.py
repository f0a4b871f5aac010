"""Keeping the bokeh: strongly defocused regions get a smooth interpolation instead of restoration.

The blur map (sigma in HR px, at LR resolution) becomes a weight in [0, 1] -- 0 where the photo is
restored as usual, 1 where it is kept as soft as it was -- and the x4 output is blended towards a
grid-aligned bilinear upsampling of the LR photo (HR pixel ``s*i`` on LR pixel ``i``, the project's
pixel grid) with that weight. Bilinear interpolation is a convex combination of neighbouring LR
pixels, so kept regions get no invented texture, no overshoot and no ringing.

The weight ramps smoothly (smoothstep) from 0 at ``threshold - BOKEH_RAMP`` to 1 at
``threshold + BOKEH_RAMP`` sigma; it is then eroded and box-smoothed by ``BOKEH_SMOOTH_RADIUS`` LR
pixels, which removes speckle and spreads the transition over a few pixels on the defocused side
only: every pixel whose own weight is 0 keeps weight exactly 0, so in-focus regions equal the
default output bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cmosx.errors import ArgumentError
from cmosx.ops.grid import grid_upsample

# Sigma (HR px of the x4 output) at which the weight is 0.5. Chosen on real shallow-depth-of-field
# photos downscaled to 640 px wide (docs/keep-bokeh.md): with the bundled estimator, subjects read
# 0.3-3.2 (cat's face 90th percentile 3.2, dandelion 2.0) and out-of-focus backgrounds 3.6-4.5
# (medians: dragonfly 4.1, nuthatch 4.2, dandelion field 4.3).
DEFAULT_BOKEH_SIGMA = 3.75
BOKEH_RAMP = 0.5  # half width of the smoothstep ramp, sigma units
BOKEH_SMOOTH_RADIUS = 2  # LR pixels: erosion then box smoothing of the weight
_STRIP_ROWS = 64  # LR rows blended at a time (bounds the temporary HR buffers)


def bokeh_weight(blur_lr: Tensor, threshold: float, ramp: float = BOKEH_RAMP) -> Tensor:
    """``1 x H x W`` sigma (HR px) -> ``1 x H x W`` float32 weight in [0, 1] of the smooth interpolation.

    0 where ``sigma <= threshold - ramp`` (and at every pixel whose ramp value is 0, see the module
    docstring), 1 where the whole neighbourhood is ``>= threshold + ramp``.
    """
    sigma = blur_lr.detach().float().reshape(1, 1, *blur_lr.shape[-2:])
    t = ((sigma - (threshold - ramp)) / (2.0 * ramp)).clamp_(0.0, 1.0)
    own = t * t * (3.0 - 2.0 * t)  # smoothstep
    r = BOKEH_SMOOTH_RADIUS
    size = 2 * r + 1
    # Erode, then average over the same window: each pixel's result averages minima that all include
    # the pixel itself, so it never exceeds its own weight (0 stays 0); the minimum guards rounding.
    # Pooling rather than kornia: kornia.filters.box_blur was 4.5x slower (53 vs 12 ms on a 750 x 1000
    # map, one thread, 2-core Xeon, loaded) and not bit-equal; kornia.morphology.erosion gives the same
    # values but unfolds 25 values a pixel on CUDA and in kornia < 0.9 (2.5 GB for a 25 MP photo).
    eroded = -F.max_pool2d(F.pad(-own, (r, r, r, r), mode="replicate"), size, stride=1)
    weight = torch.minimum(F.avg_pool2d(F.pad(eroded, (r, r, r, r), mode="replicate"), size, stride=1), own)
    return weight[0].clamp_(0.0, 1.0)


def blend_towards_interpolation(sr: Tensor, lr: Tensor, weight_lr: Tensor, scale: int) -> Tensor:
    """Blend ``sr`` in place towards the grid-aligned bilinear upsampling of ``lr`` by ``weight_lr``.

    sr: ``C x sH x sW`` (the restored output, [0, 1]); lr: ``C x H x W`` in [0, 1]; weight_lr:
    ``1 x H x W`` in [0, 1], upsampled the same way. Works in strips of LR rows so the temporary HR
    buffers stay small; the result equals blending the whole image at once. Returns ``sr``.
    """
    height, width = lr.shape[-2:]
    if tuple(sr.shape[-2:]) != (height * scale, width * scale):
        raise ArgumentError(f"output {tuple(sr.shape[-2:])} is not {scale} x the input {(height, width)}")
    both = torch.cat([lr.float(), weight_lr.float()], dim=0)
    for y0 in range(0, height, _STRIP_ROWS):
        y1 = min(y0 + _STRIP_ROWS, height)
        # One LR row past the strip (when there is one) so its last HR rows interpolate towards it.
        up = grid_upsample(both[None, :, y0 : min(y1 + 1, height)], scale)[0]
        up = up[:, : (y1 - y0) * scale]
        smooth, weight = up[:-1], up[-1:]
        strip = sr[:, y0 * scale : y1 * scale]
        strip.add_(weight * (smooth - strip))
    return sr
