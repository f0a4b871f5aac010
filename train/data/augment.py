"""Training augmentation on one pixel grid: crop, horizontal flip and zoom.

Every function keeps the pixel grid of direct subsampling: LR pixel ``i`` sits on HR pixel ``s*i`` (with
blur, noise and JPEG off, ``lr == hr[:, ::s, ::s]``), and the HR-sized maps (``blur``, ``labels`` and
``layers`` when present) stay aligned with ``hr``.

- :func:`crop` cuts at HR offsets that are multiples of ``s``.
- :func:`hflip` mirrors, then drops ``s - 1`` HR columns at the left and the last LR column: mirrored, LR
  pixel ``i`` would sit on HR pixel ``s*i + s - 1``.
- :func:`zoom` enlarges a window of the *sharp* HR by ``r`` (sigma times ``r``, the physical rule; the
  authors' code divides, technical notes section 5), then re-renders the defocus from the zoomed sigma map
  and degrades it again, so the LR is exact for the new scene instead of a resized old LR.

Samples are the dicts of docs/interfaces.md: ``hr`` 3 x H x W [0, 1], ``lr`` 3 x H/s x W/s, ``blur``
1 x H x W (sigma, HR px), ``labels`` H x W int64 (255 ignore); other keys are copied.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cmosx.errors import DatasetError, UsageError
from cmosx.train.data.defocus import render_sigma_map
from cmosx.train.data.degrade import Degradation, degrade, quantise_8bit

HR_KEYS = ("hr", "blur", "labels", "layers")  # tensors on the HR grid (the last two are H x W)
ZOOM_RATIOS = (1.0, 1.2, 1.5)


def _hr_keys(sample: dict[str, Any]) -> list[str]:
    return [key for key in HR_KEYS if key in sample]


def crop(sample: dict[str, Any], top: int, left: int, size: tuple[int, int], scale: int = 4) -> dict[str, Any]:
    """The HR window ``size`` at (``top``, ``left``), multiples of ``scale``, and the LR window on it."""
    ch, cw = size
    h, w = sample["hr"].shape[-2:]
    if top % scale or left % scale or ch % scale or cw % scale:
        raise UsageError(f"crop {ch}x{cw} at ({top}, {left}) is not on the x{scale} grid")
    if top < 0 or left < 0 or top + ch > h or left + cw > w:
        name = sample.get("name", "?")
        raise DatasetError(f"sample {name}: {h} x {w} is smaller than the crop {ch} x {cw} at ({top}, {left})")
    out = dict(sample)
    for key in _hr_keys(sample):
        out[key] = sample[key][..., top : top + ch, left : left + cw]
    y, x = top // scale, left // scale
    out["lr"] = sample["lr"][..., y : y + ch // scale, x : x + cw // scale]
    return out


def random_crop(sample: dict[str, Any], size: tuple[int, int], gen: torch.Generator, scale: int = 4) -> dict:
    """:func:`crop` at a uniformly drawn grid position (``gen`` seeds it)."""
    h, w = sample["hr"].shape[-2:]
    if size[0] > h or size[1] > w:
        name = sample.get("name", "?")
        raise DatasetError(f"sample {name}: {h} x {w} is smaller than the crop {size[0]} x {size[1]}")
    y = int(torch.randint(0, (h - size[0]) // scale + 1, (1,), generator=gen)) * scale
    x = int(torch.randint(0, (w - size[1]) // scale + 1, (1,), generator=gen)) * scale
    return crop(sample, y, x, size, scale)


def hflip(sample: dict[str, Any], scale: int = 4) -> dict[str, Any]:
    """Mirror left-right on the grid: HR width shrinks by ``scale``, LR width by one pixel."""
    w_lr = sample["lr"].shape[-1]
    if w_lr < 2:
        raise UsageError("a sample one LR pixel wide cannot be mirrored on the grid")
    keep = (w_lr - 1) * scale
    out = dict(sample)
    for key in _hr_keys(sample):
        out[key] = sample[key].flip(-1)[..., scale - 1 : scale - 1 + keep]
    out["lr"] = sample["lr"].flip(-1)[..., : w_lr - 1]
    return out


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    kwargs = {} if mode == "nearest-exact" else {"align_corners": False}
    return F.interpolate(x.unsqueeze(0), size=size, mode=mode, **kwargs)[0]


def zoom(
    sample: dict[str, Any],
    ratio: float,
    size: tuple[int, int],
    gen: torch.Generator,
    degradation: Degradation,
    noise_rng: np.random.Generator,
    flip: bool = False,
) -> dict[str, Any]:
    """Enlarge a random window of the sharp HR by ``ratio`` (>= 1) to exactly ``size`` and re-degrade.

    HR bicubic (8-bit levels), sigma bilinear times the size ratio, labels nearest; ``flip`` mirrors the
    zoomed scene before rendering. The blur is rendered from the zoomed sigma map
    (:func:`~cmosx.train.data.defocus.render_sigma_map`) and the LR made by ``degradation`` (direct
    subsampling, noise and JPEG as configured), so the grid holds exactly.
    """
    if ratio < 1.0:
        raise UsageError(f"zoom ratio must be >= 1, got {ratio}")
    ch, cw = size
    h, w = sample["hr"].shape[-2:]
    wh, ww = min(h, math.ceil(ch / ratio)), min(w, math.ceil(cw / ratio))
    y = int(torch.randint(0, h - wh + 1, (1,), generator=gen))
    x = int(torch.randint(0, w - ww + 1, (1,), generator=gen))
    window = (slice(y, y + wh), slice(x, x + ww))
    actual = (ch / wh + cw / ww) / 2.0
    out = dict(sample)
    out["hr"] = quantise_8bit(_resize(sample["hr"][:, window[0], window[1]], size, "bicubic"))
    blur = _resize(sample["blur"][:, window[0], window[1]], size, "bilinear") * actual
    for key in ("labels", "layers"):
        if key in sample:
            part = sample[key][window].unsqueeze(0).float()
            out[key] = _resize(part, size, "nearest-exact")[0].to(torch.int64)
    if flip:  # a mirrored scene, rendered afterwards: nothing to realign
        blur = blur.flip(-1)
        for key in _hr_keys(out):
            if key != "blur":
                out[key] = out[key].flip(-1)
    rendered = render_sigma_map(out["hr"], blur)
    out["blur"] = torch.round(rendered.sigma * 100.0) / 100.0
    out["lr"] = degrade(rendered.image, degradation, noise_rng)
    return out


def augment(
    sample: dict[str, Any],
    gen: torch.Generator,
    *,
    size: tuple[int, int],
    scale: int = 4,
    flip: bool = True,
    zoom_ratios: tuple[float, ...] = (1.0,),
    degradation: Degradation | None = None,
    noise_rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """The training augmentation: a zoom ratio drawn from ``zoom_ratios``, a flip with probability 1/2
    (when ``flip``), and a ``size`` crop, all on the grid. Zooms other than 1 need ``degradation``; a flip
    that would leave less than ``size`` is skipped (the sample is then only cropped)."""
    ratio = float(zoom_ratios[int(torch.randint(0, len(zoom_ratios), (1,), generator=gen))])
    mirror = flip and bool(torch.rand((), generator=gen) < 0.5)
    if ratio != 1.0:
        if degradation is None:
            raise UsageError("zoom augmentation needs the dataset's degradation to re-render the LR")
        rng = noise_rng or np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
        return zoom(sample, ratio, size, gen, degradation, rng, flip=mirror)
    h, w = sample["hr"].shape[-2:]
    if mirror and w - scale >= size[1]:
        sample = hflip(sample, scale)
    return random_crop(sample, size, gen, scale)
