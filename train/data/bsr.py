"""One BSR sample from a sharp image with depth and labels: defocus, then degrade to LR.

The sample is the dict every dataset yields (docs/interfaces.md)::

    {"hr": 3 x H x W float [0, 1] (sharp, 8-bit levels), "lr": 3 x H/4 x W/4 float [0, 1],
     "blur": 1 x H x W float sigma in HR px (0.01 steps, as stored on disk),
     "labels": H x W int64 (255 ignore), "space_invariant": bool tensor, "name": str}
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from cmosx.errors import UsageError
from cmosx.train.data.defocus import render_space_invariant, render_space_variant, sigma_max_for
from cmosx.train.data.degrade import Degradation, degrade, quantise_8bit


@contextmanager
def one_torch_thread():
    """Run a block with one torch thread, restoring the previous count after.

    Scene synthesis and layered rendering are thousands of small tensor ops; extra intra-op threads only
    spin (measured 7-15x slower per sample with 2 threads on busy cores)."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_kernel_size(kernel_size: int) -> None:
    if kernel_size < 5 or kernel_size % 2 == 0:
        raise UsageError(f"kernel size must be odd and >= 5 (21 or 61 in the paper), got {kernel_size}")


def check_stream_settings(
    what: str, size: tuple[int, int], kernel_size: int, degradation: Degradation | None, min_side: int = 0, **shares
) -> Degradation:
    """Check a streamed dataset's settings and return its degradation (default: x4 direct subsampling).

    ``size`` (H, W) must be multiples of the scale and, with ``min_side``, at least ``min_side`` LR pixels a
    side; every keyword share must lie in [0, 1]. Raises :class:`UsageError` naming ``what``."""
    check_kernel_size(kernel_size)
    degradation = degradation or Degradation()
    s = degradation.scale
    if size[0] % s or size[1] % s or min(size) < min_side * s:
        at_least = f" and at least {min_side * s}" if min_side else ""
        raise UsageError(f"{what} size {size} must be multiples of {s}{at_least}")
    for name, value in shares.items():
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{name} must be in [0, 1], got {value}")
    return degradation


def make_bsr_sample(
    image: torch.Tensor,
    depth: torch.Tensor,
    labels: torch.Tensor,
    *,
    kernel_size: int,
    space_invariant: bool,
    blur_rng: np.random.Generator,
    noise_rng: np.random.Generator,
    degradation: Degradation,
    name: str,
) -> tuple[dict, dict]:
    """Build a sample and a JSON-ready record of its blur parameters.

    ``image`` 3 x H x W [0, 1]; ``depth`` H x W metres (> 0); ``labels`` H x W int64; H, W multiples of
    the degradation scale.
    """
    check_kernel_size(kernel_size)
    _, h, w = image.shape
    if h % degradation.scale or w % degradation.scale:
        raise UsageError(f"{name}: size {h}x{w} is not a multiple of the scale {degradation.scale}")
    hr = quantise_8bit(image)
    if space_invariant:
        sigma = float(blur_rng.uniform(0.0, sigma_max_for(kernel_size)))
        rendered = render_space_invariant(hr, sigma)
    else:
        rendered = render_space_variant(hr, depth, kernel_size, blur_rng)
    lr = degrade(rendered.image, degradation, noise_rng)
    blur = torch.round(rendered.sigma * 100.0) / 100.0
    sample = {
        "hr": hr,
        "lr": lr,
        "blur": blur,
        "labels": labels.to(torch.int64),
        "space_invariant": torch.tensor(bool(space_invariant)),
        "name": name,
    }
    return sample, {"blur": rendered.params(), "layers": rendered.stats.layers}


def resize_scene(
    image: torch.Tensor, depth: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resize an image (antialiased bilinear), its depth and labels (nearest, no mixed depths) to (H, W)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, depth, labels
    import torch.nn.functional as F

    img = F.interpolate(image.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    dep = F.interpolate(depth.view(1, 1, *depth.shape), size=size, mode="nearest-exact")[0, 0]
    lab = F.interpolate(labels.view(1, 1, *labels.shape).float(), size=size, mode="nearest-exact")[0, 0].long()
    return img.clamp(0, 1), dep, lab
