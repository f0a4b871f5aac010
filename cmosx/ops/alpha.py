"""Straight and premultiplied (associated) alpha."""

from __future__ import annotations

import torch
from torch import Tensor

# Below this alpha the divisor is capped; such a pixel is transparent in any 8- or 16-bit file (it rounds to 0).
MIN_ALPHA = 1e-6


def unpremultiply(color: Tensor, alpha: Tensor) -> Tensor:
    """Straight colour from premultiplied colour: ``C x H x W`` / ``1 x H x W`` alpha, clamped to [0, 1];
    0 where alpha is 0 (alpha below :data:`MIN_ALPHA` divides by it)."""
    return torch.where(alpha > 0, (color / alpha.clamp_min(MIN_ALPHA)).clamp(0.0, 1.0), torch.zeros_like(color))
