"""Training augmentation that keeps the blur map physically consistent: zoom and horizontal flip.

Enlarging an image by a ratio r stretches every blur kernel by r, so the Gaussian sigma measured in the
new pixels is r times the old one. The authors' code *divides* sigma by r, which is backwards (technical
notes, section 5); here the blur map is resized and its values multiplied by r. Note that zooming in
can push sigma above the dataset's sigma_max (e.g. 5 * 1.5 = 7.5 for kernel 21); the value is kept,
since clipping it would make the map lie about the image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cmosx.errors import UsageError

ZOOM_RATIOS = (1.0, 1.2, 1.5)


def zoom(sample: dict, ratio: float, scale: int = 4) -> dict:
    """Resize a sample by ``ratio`` (HR size rounded to a multiple of ``scale``).

    HR and LR: bicubic (antialiased when shrinking), clamped to [0, 1]; blur map: bilinear, values times
    the actual HR size ratio; labels: nearest. Other keys are kept.
    """
    if ratio <= 0:
        raise UsageError(f"zoom ratio must be > 0, got {ratio}")
    _, h, w = sample["hr"].shape
    nh = max(scale, int(round(h * ratio / scale)) * scale)
    nw = max(scale, int(round(w * ratio / scale)) * scale)
    if (nh, nw) == (h, w):
        return dict(sample)
    actual = (nh / h + nw / w) / 2.0
    shrink = actual < 1.0

    def resize(x: torch.Tensor, size, mode: str) -> torch.Tensor:
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        if mode in ("bilinear", "bicubic") and shrink:
            kwargs["antialias"] = True
        return F.interpolate(x.unsqueeze(0), size=size, mode=mode, **kwargs)[0]

    out = dict(sample)
    out["hr"] = resize(sample["hr"], (nh, nw), "bicubic").clamp(0, 1)
    out["lr"] = resize(sample["lr"], (nh // scale, nw // scale), "bicubic").clamp(0, 1)
    out["blur"] = resize(sample["blur"], (nh, nw), "bilinear") * actual
    out["labels"] = resize(sample["labels"].unsqueeze(0).float(), (nh, nw), "nearest-exact")[0].long()
    return out


def hflip(sample: dict) -> dict:
    """Mirror a sample left-right."""
    out = dict(sample)
    for key in ("hr", "lr", "blur", "labels"):
        out[key] = sample[key].flip(-1)
    return out


def crop(sample: dict, size: tuple[int, int], rng: np.random.Generator, scale: int = 4) -> dict:
    """Random HR crop of ``size`` aligned to the scale, LR cropped to match."""
    ch, cw = size
    _, h, w = sample["hr"].shape
    if ch > h or cw > w or ch % scale or cw % scale:
        raise UsageError(f"crop {size} must be multiples of {scale} within the image {h}x{w}")
    y = int(rng.integers(0, (h - ch) // scale + 1)) * scale
    x = int(rng.integers(0, (w - cw) // scale + 1)) * scale
    out = dict(sample)
    out["hr"] = sample["hr"][:, y : y + ch, x : x + cw].contiguous()
    out["blur"] = sample["blur"][:, y : y + ch, x : x + cw].contiguous()
    out["labels"] = sample["labels"][y : y + ch, x : x + cw].contiguous()
    out["lr"] = sample["lr"][:, y // scale : (y + ch) // scale, x // scale : (x + cw) // scale].contiguous()
    return out


def random_zoom_flip(
    sample: dict,
    rng: np.random.Generator,
    ratios: tuple[float, ...] = ZOOM_RATIOS,
    flip_p: float = 0.5,
    crop_size: tuple[int, int] | None = None,
    scale: int = 4,
) -> dict:
    """The training augmentation: zoom by a ratio drawn from ``ratios``, flip with ``flip_p``, and crop
    back to ``crop_size`` (default: the input size, so zooming in shows a random window)."""
    size = crop_size or tuple(sample["hr"].shape[-2:])
    out = zoom(sample, float(rng.choice(ratios)), scale)
    if rng.random() < flip_p:
        out = hflip(out)
    return crop(out, size, rng, scale)
