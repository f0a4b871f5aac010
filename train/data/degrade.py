"""From a defocused HR image to the LR network input (paper Eq. 1: (x * k) downsampled by s, plus n).

Default: direct s-fold subsampling (every s-th pixel, starting at 0, as MANet does), no noise, no JPEG.
Options: ``bicubic`` (antialiased bicubic resize by 1/s), additive Gaussian noise (sigma in 8-bit levels),
JPEG re-encoding at a quality, or at a quality drawn uniformly from ``jpeg_quality..jpeg_quality_max`` for a
share ``jpeg_probability`` of the images. The chosen settings are recorded in each dataset's metadata.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cmosx.errors import UsageError

Downsampler = Literal["direct", "bicubic"]


@dataclass(frozen=True)
class Degradation:
    """How LR images are made from blurred HR ones."""

    scale: int = 4
    downsampler: Downsampler = "direct"
    noise_sigma: float = 0.0  # Gaussian noise std in 8-bit levels (0 = off)
    jpeg_quality: int | None = None  # None = off; the lowest quality when a range is given
    jpeg_quality_max: int | None = None  # None = always jpeg_quality
    jpeg_probability: float = 1.0  # share of images that are JPEG re-encoded

    def __post_init__(self):
        if self.downsampler not in ("direct", "bicubic"):
            raise UsageError(f"unknown downsampler {self.downsampler!r} (expected 'direct' or 'bicubic')")
        if self.scale < 1:
            raise UsageError(f"scale must be >= 1, got {self.scale}")
        if self.noise_sigma < 0:
            raise UsageError(f"noise sigma must be >= 0, got {self.noise_sigma}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise UsageError(f"JPEG quality must be in 1..100, got {self.jpeg_quality}")
        if self.jpeg_quality_max is not None and not (
            self.jpeg_quality is not None and self.jpeg_quality <= self.jpeg_quality_max <= 100
        ):
            raise UsageError(f"JPEG quality range {self.jpeg_quality}-{self.jpeg_quality_max} is not within 1..100")
        if not 0.0 <= self.jpeg_probability <= 1.0:
            raise UsageError(f"JPEG probability must be in [0, 1], got {self.jpeg_probability}")

    def to_dict(self) -> dict:
        return asdict(self)


def quantise_8bit(image: torch.Tensor) -> torch.Tensor:
    """Round a [0, 1] image to 8-bit levels (what a PNG stores)."""
    return torch.round(image.clamp(0, 1) * 255.0) / 255.0


def downsample(image: torch.Tensor, scale: int, downsampler: Downsampler = "direct") -> torch.Tensor:
    """3 x H x W -> 3 x H/s x W/s (H, W multiples of s)."""
    if scale == 1:
        return image
    if downsampler == "direct":
        return image[:, ::scale, ::scale].contiguous()
    h, w = image.shape[-2:]
    small = F.interpolate(
        image.unsqueeze(0), size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True
    )
    return small[0].clamp(0, 1)


def degrade(blurred_hr: torch.Tensor, spec: Degradation, rng: np.random.Generator) -> torch.Tensor:
    """Blurred HR (3 x H x W in [0, 1]) -> LR (3 x H/s x W/s, 8-bit quantised, [0, 1])."""
    lr = downsample(blurred_hr, spec.scale, spec.downsampler)
    if spec.noise_sigma > 0:
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        lr = lr + torch.randn(lr.shape, generator=gen) * (spec.noise_sigma / 255.0)
    lr = quantise_8bit(lr)
    if spec.jpeg_quality is not None:
        quality = spec.jpeg_quality
        if spec.jpeg_quality_max is not None or spec.jpeg_probability < 1.0:  # draws only when randomised
            quality = int(rng.integers(spec.jpeg_quality, (spec.jpeg_quality_max or spec.jpeg_quality) + 1))
            if rng.random() >= spec.jpeg_probability:
                return lr
        lr = jpeg_roundtrip(lr, quality)
    return lr


def jpeg_roundtrip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode a 3 x H x W [0, 1] image as JPEG (4:2:0) at ``quality``."""
    arr = (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as im:
        out = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(out.copy()).permute(2, 0, 1)
