"""Out-of-focus blur from depth: thin-lens circle of confusion and a fast layered renderer.

The model follows SYNDOF (technical notes, section 7):

* ``CoC(z) = (W_px / 36) * f / (z_f - f) * A * |z - z_f| / z`` in pixels (36 mm sensor, depths in mm),
  with the f-number chosen so the largest CoC in the image equals ``kernel_size``;
* Gaussian sigma ``= (CoC - 1) / 4`` (CoC clamped to >= 1), so ``sigma <= (kernel_size - 1) / 4``;
* rendering by depth layers, far to near, with normalised "over" compositing.

The layered renderer quantises sigma into levels (0.1 steps up to sigma 2, then 4 % steps), keeps layers on
the two sides of the focal plane apart (they lie at different depths), blurs each layer only inside its
bounding box, and blurs large sigmas at a reduced resolution (area down, Gaussian, bilinear up, with the
extra variance of the resampling subtracted). Before a layer is laid over what lies behind it, the part of
the background the layer hides but now half-reveals (the occlusion band) is filled by normalised
convolution of the background, so blurred near edges turn translucent instead of leaving dark halos.

``render_defocus_reference`` is a slow direct per-pixel-kernel (scatter) renderer for tests.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cmosx.catalog import sigma_max_for
from cmosx.errors import UsageError

SENSOR_WIDTH_MM = 36.0
FOCAL_LENGTHS_MM = (50.0, 70.0, 85.0)
FOCAL_WEIGHTS = (0.2, 0.4, 0.4)  # SYNDOF's {.1, .4, .4} do not sum to one; the 50 mm share is raised

_LINEAR_STEP = 0.1  # sigma levels: 0, 0.1, ..., 2.0 ...
_LINEAR_END = 2.0
_RATIO = 1.04  # ... then 2.0 * 1.04 ** k


@dataclass(frozen=True)
class LensParams:
    """Camera settings of one rendering (recorded in the metadata)."""

    focal_length_mm: float
    f_number: float
    focus_distance_mm: float
    depth_shift_mm: float
    max_coc: float


def sample_lens(depth_m: np.ndarray, kernel_size: int, rng: np.random.Generator) -> LensParams:
    """Draw SYNDOF-like camera settings for a depth map (metres, > 0) and a kernel size."""
    f = float(rng.choice(FOCAL_LENGTHS_MM, p=np.asarray(FOCAL_WEIGHTS)))
    depth_mm = depth_m.astype(np.float64) * 1000.0
    shift = max(0.0, 5.0 * f - float(depth_mm.min()))
    # Focus on a depth drawn from the image's own depths, biased toward the near ones (u^2).
    u = float(rng.random()) ** 2
    z_f = float(np.quantile(depth_mm, u)) + shift
    coc1 = circle_of_confusion(depth_mm + shift, width_px=depth_m.shape[1], focal_mm=f, focus_mm=z_f, aperture_mm=1.0)
    peak = float(coc1.max())
    aperture = kernel_size / peak if peak > 0 else 0.0
    f_number = f / aperture if aperture > 0 else float("inf")
    return LensParams(f, f_number, z_f, shift, float(kernel_size))


def circle_of_confusion(
    depth_mm: np.ndarray, width_px: int, focal_mm: float, focus_mm: float, aperture_mm: float
) -> np.ndarray:
    """Thin-lens CoC diameter in pixels for an image ``width_px`` wide on a 36 mm sensor."""
    return (
        (width_px / SENSOR_WIDTH_MM)
        * focal_mm
        / (focus_mm - focal_mm)
        * aperture_mm
        * np.abs(depth_mm - focus_mm)
        / depth_mm
    )


def sigma_from_depth(depth_m: np.ndarray, lens: LensParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel sigma (HR px, float32 H x W) and side of focus (+1 behind the focal plane, -1 in front)."""
    depth_mm = depth_m.astype(np.float64) * 1000.0 + lens.depth_shift_mm
    aperture = lens.focal_length_mm / lens.f_number
    coc = circle_of_confusion(depth_mm, depth_m.shape[1], lens.focal_length_mm, lens.focus_distance_mm, aperture)
    coc = np.clip(coc, 1.0, lens.max_coc)
    sigma = ((coc - 1.0) / 4.0).astype(np.float32)
    side = np.where(depth_mm >= lens.focus_distance_mm, 1, -1).astype(np.int8)
    return sigma, side


def quantise_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Level index (int64) and quantised sigma for a sigma tensor: 0.1 steps to 2.0, then 4 % steps."""
    n_linear = round(_LINEAR_END / _LINEAR_STEP)
    linear = torch.round(sigma / _LINEAR_STEP)
    geometric = n_linear + torch.round(torch.log(sigma.clamp_min(_LINEAR_END) / _LINEAR_END) / math.log(_RATIO))
    level = torch.where(sigma <= _LINEAR_END, linear, geometric).long()
    return level, level_sigma(level)


def level_sigma(level: torch.Tensor) -> torch.Tensor:
    """Sigma of quantisation levels (inverse of :func:`quantise_sigma`)."""
    n_linear = round(_LINEAR_END / _LINEAR_STEP)
    lev = level.to(torch.float32)
    return torch.where(lev <= n_linear, lev * _LINEAR_STEP, _LINEAR_END * _RATIO ** (lev - n_linear))


# ----------------------------------------------------------------------------------------------- blurs


def gaussian_kernel_1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``sigma`` truncated at radius ``max(1, ceil(3 sigma))``: float32 (2r + 1,).

    Written out: ``kornia.filters.get_gaussian_kernel1d`` is this kernel to one float32 ulp but not bit for
    bit (35 of the 144 sigmas the renderer uses), which moved 3 of 1.4 M 8-bit values of six 240 x 320
    scenes (occlusion-fill thresholds flip), so stored datasets would no longer regenerate exactly."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t * t) / (2.0 * sigma * sigma))
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with zero padding. ``x``: N x C x H x W; returns the same shape.

    Shift-and-add along each axis rather than ``kornia.filters.gaussian_blur2d`` (same kernel, zero
    border): kornia made the layered renderer 1.4x slower (1.23 s vs 1.71 s for four 480 x 640 scenes,
    one thread, 2-core Xeon, loaded) and moved 11 of 3.7 M 8-bit values of those scenes (summation order),
    so stored datasets would no longer regenerate bit for bit."""
    if sigma < 0.05:
        return x
    k = gaussian_kernel_1d(sigma).tolist()
    r = (len(k) - 1) // 2
    h, w = x.shape[-2:]
    xp = F.pad(x, (r, r, 0, 0))
    y = xp[..., 0:w] * k[0]
    for i in range(1, 2 * r + 1):
        y = y.add_(xp[..., i : i + w], alpha=k[i])
    yp = F.pad(y, (0, 0, r, r))
    out = yp[..., 0:h, :] * k[0]
    for i in range(1, 2 * r + 1):
        out = out.add_(yp[..., i : i + h, :], alpha=k[i])
    return out


def reduction_for(sigma: float) -> int:
    """Integer resampling factor used to blur with ``sigma``: 1 below sigma 3, then about sigma / 1.5."""
    return max(1, int(sigma / 1.5))


def fast_blur(x: torch.Tensor, sigma: float, d: int | None = None) -> torch.Tensor:
    """Gaussian blur, at a reduced resolution for large sigma. ``x``: N x C x H x W with H, W multiples of
    :func:`reduction_for` ``(sigma)``. Area-down by d adds variance ~d^2/12 and bilinear-up ~d^2/6; both are
    subtracted from the target variance. ``d`` overrides the factor."""
    d = reduction_for(sigma) if d is None else d
    if d == 1:
        return gaussian_blur(x, sigma)
    small = F.avg_pool2d(x, d)
    residual = math.sqrt(max(sigma * sigma - d * d / 4.0, 0.0)) / d
    small = gaussian_blur(small, residual)
    return F.interpolate(small, scale_factor=d, mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------ layered renderer


@dataclass
class RenderStats:
    """How a rendering went (for benchmarks and tests)."""

    layers: int
    filled_layers: int


def _layer_table(order_key: torch.Tensor, sigma: torch.Tensor) -> list[tuple[int, float, int, int, int, int]]:
    """Per layer, far to near: (key, sigma, row min, row max, col min, col max), in one pass over the image."""
    keys, inverse = torch.unique(order_key, return_inverse=True)
    h, w = order_key.shape
    n = keys.numel()
    inv = inverse.flatten()
    rows = torch.arange(h).view(h, 1).expand(h, w).flatten()
    cols = torch.arange(w).view(1, w).expand(h, w).flatten()

    def reduce(values: torch.Tensor, how: str, start) -> torch.Tensor:
        return torch.full((n,), start, dtype=values.dtype).scatter_reduce(0, inv, values, how)

    table = zip(
        keys.tolist(),
        reduce(sigma.flatten(), "amax", 0.0).tolist(),
        reduce(rows, "amin", h).tolist(),
        reduce(rows, "amax", -1).tolist(),
        reduce(cols, "amin", w).tolist(),
        reduce(cols, "amax", -1).tolist(),
        strict=True,
    )
    return list(table)[::-1]


def _span(lo: int, hi: int, margin: int, d: int, size: int) -> tuple[int, int]:
    """[lo, hi] grown by ``margin``, its length a multiple of ``d``, kept inside [0, size)."""
    lo, hi = max(0, lo - margin), min(size, hi + 1 + margin)
    length = min(size - size % d, math.ceil((hi - lo) / d) * d)
    if lo + length > size:
        lo = size - length
    return lo, lo + length


def depth_edges(signed_sigma: torch.Tensor) -> torch.Tensor:
    """Pixels (bool H x W) next to clearly farther content: a neighbour's signed sigma (larger = farther)
    exceeds the pixel's by more than 0.5 + 5 %. These are the occluding edges that need a fill."""
    u = signed_sigma.view(1, 1, *signed_sigma.shape)
    farther = F.max_pool2d(F.pad(u, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return ((farther - u) > 0.5 + 0.05 * u.abs())[0, 0]


def _farther(u_behind: torch.Tensor, u: float) -> torch.Tensor:
    """Where content with mean signed sigma ``u_behind`` lies clearly behind a layer at ``u`` (a different
    surface): the gap exceeds 0.75 + 7.5 % of |u|. Closer content counts as the same surface."""
    return (u_behind - u) > 0.75 + 0.075 * abs(u)


def render_layers(
    image: torch.Tensor,
    sigma: torch.Tensor,
    order_key: torch.Tensor,
    side: torch.Tensor | None = None,
    fill_occlusions: bool = True,
) -> tuple[torch.Tensor, RenderStats]:
    """Blur ``image`` (3 x H x W, [0, 1]) layer by layer, far to near.

    ``sigma`` (H x W) must already hold quantised values, constant within each layer; ``order_key``
    (H x W int64, from :func:`layer_keys`) names the layers, larger keys farther (rendered first), its
    sign giving the side of the focal plane; ``side`` (H x W, +1 behind the focal plane, -1 in front)
    locates depth edges for the occlusion fill (no fill without it).

    Two premultiplied accumulators per pixel: the *front* surface (blurred layers that belong together
    are summed, like the per-pixel scatter reference, so a slanted plane or a sphere cut into thin layers
    stays one opaque surface) and the *back* (everything behind it). When a layer arrives whose depth is
    clearly nearer than the front's, the front is laid over the back (``back * (1 - coverage) + front``)
    and the layer starts a new front; the back is first extended under the layer's occluding edges
    (occlusion fill), so blurred near edges turn translucent instead of showing dark or sharp rims.
    Returns the blurred image (3 x H x W) and :class:`RenderStats`.
    """
    _, h, w = image.shape
    pad = int(math.ceil(3.0 * float(sigma.max()))) + 2
    canvas_shape = (h + 2 * pad, w + 2 * pad)
    img = F.pad(image, (pad, pad, pad, pad))
    keys = F.pad(order_key, (pad, pad, pad, pad), value=torch.iinfo(torch.int64).min)
    fill_occlusions = fill_occlusions and side is not None
    if fill_occlusions:
        edges = F.pad(depth_edges(sigma * side.to(sigma.dtype)), (pad, pad, pad, pad)).to(image.dtype)
    # front: colour (3), coverage (1), signed sigma (1); back: colour (3), coverage (1); all premultiplied
    front = torch.zeros(5, *canvas_shape)
    back = torch.zeros(4, *canvas_shape)
    layers = _layer_table(order_key, sigma)  # far (large key) to near
    filled = 0
    for key, s, r0, r1, c0, c1 in layers:
        u = s if key >= 0 else -s
        d = reduction_for(s)
        margin = int(math.ceil(3.0 * s)) + d
        y0, y1 = _span(r0 + pad, r1 + pad, margin, d, canvas_shape[0])
        x0, x1 = _span(c0 + pad, c1 + pad, margin, d, canvas_shape[1])
        m = (keys[y0:y1, x0:x1] == key).to(image.dtype).unsqueeze(0)
        parts = [img[:, y0:y1, x0:x1] * m, m]
        use_fill = fill_occlusions and s >= 0.5
        if use_fill:
            parts.append(edges[y0:y1, x0:x1].unsqueeze(0) * m)
        blurred = fast_blur(torch.cat(parts, dim=0).unsqueeze(0), s)[0]
        a = blurred[3:4]
        fr, bk = front[:, y0:y1, x0:x1], back[:, y0:y1, x0:x1]
        cover = fr[3:4]
        # the front is a different, farther surface here: lay it over the back, start a new front
        merge = (cover > 1e-6) & _farther(fr[4:5] / cover.clamp_min(1e-6), u)
        if bool(merge.any()):
            opaque = cover.clamp(max=1.0)
            merged = bk * (1 - opaque) + torch.cat([fr[:3] * (opaque / cover.clamp_min(1e-6)), opaque])
            bk = torch.where(merge, merged, bk)
            fr = torch.where(merge, torch.zeros_like(fr), fr)
        if use_fill:
            # Background hidden behind this layer's occluding edges that its blurred edge now shows:
            # continue the back inward by normalised convolution (sigma 2 s reaches ~6 s).
            gap = (blurred[4:5] > 0.01 / s) & (a > 1e-3) & (bk[3:4] < 0.999)
            if bool(gap.any()):
                filled += 1
                support = fast_blur(bk.unsqueeze(0), 2.0 * s, d)[0]
                have = (support[3:4] > 1e-4) & gap
                extended = bk + (1 - bk[3:4]) * support / support[3:4].clamp_min(1e-6)
                bk = torch.where(have, extended, bk)
        front[:, y0:y1, x0:x1] = fr + torch.cat([blurred[:4], a * u])
        back[:, y0:y1, x0:x1] = bk
    cover = front[3:4]
    opaque = cover.clamp(max=1.0)
    colour = back[:3] * (1 - opaque) + front[:3] * (opaque / cover.clamp_min(1e-6))
    coverage = back[3:4] * (1 - opaque) + opaque
    out = colour / coverage.clamp_min(1e-6)
    out = out[:, pad : pad + h, pad : pad + w].clamp(0, 1)
    return out, RenderStats(layers=len(layers), filled_layers=filled)


def layer_keys(sigma_level: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """Layer names ordered by depth: behind the focal plane +level, in front -level (level 0 merged)."""
    return sigma_level * side.to(torch.int64)


@dataclass
class Defocused:
    """A rendering: blurred image 3 x H x W in [0, 1], sigma map 1 x H x W (HR px), lens (None if invariant)."""

    image: torch.Tensor
    sigma: torch.Tensor
    lens: LensParams | None
    stats: RenderStats

    def params(self) -> dict:
        """JSON-ready description of how the blur was made."""
        if self.lens is None:
            return {"space_invariant": True, "sigma": round(float(self.sigma.flatten()[0]), 4)}
        return {"space_invariant": False, **{k: round(v, 4) for k, v in asdict(self.lens).items()}}


def render_space_variant(
    image: torch.Tensor,
    depth_m: torch.Tensor | np.ndarray,
    kernel_size: int,
    rng: np.random.Generator,
    fill_occlusions: bool = True,
) -> Defocused:
    """Defocus ``image`` (3 x H x W) by its depth (H x W metres) with SYNDOF-like random lens settings."""
    depth = depth_m.numpy() if isinstance(depth_m, torch.Tensor) else np.asarray(depth_m)
    if depth.shape != tuple(image.shape[-2:]) or not np.isfinite(depth).all() or float(depth.min()) <= 0:
        raise UsageError(f"depth must be a finite, positive {tuple(image.shape[-2:])} map")
    lens = sample_lens(depth, kernel_size, rng)
    sigma_np, side_np = sigma_from_depth(depth, lens)
    level, sigma_q = quantise_sigma(torch.from_numpy(sigma_np))
    sigma_q = sigma_q.clamp(max=sigma_max_for(kernel_size))  # a level may round up past the maximum
    side = torch.from_numpy(side_np)
    out, stats = render_layers(image, sigma_q, layer_keys(level, side), side, fill_occlusions)
    return Defocused(out, sigma_q.unsqueeze(0), lens, stats)


def render_sigma_map(image: torch.Tensor, sigma: torch.Tensor, fill_occlusions: bool = True) -> Defocused:
    """Defocus ``image`` (3 x H x W) by a given sigma map (H x W or 1 x H x W, HR px) with the layered
    renderer: sigma is quantised to the renderer's levels and every layer lies behind the focal plane (the
    more blurred, the farther), as when re-rendering an augmented sample whose depth is not stored."""
    level, sigma_q = quantise_sigma(sigma.reshape(image.shape[-2:]).float())
    side = torch.ones_like(level, dtype=torch.int8)
    out, stats = render_layers(image, sigma_q, layer_keys(level, side), side, fill_occlusions)
    return Defocused(out, sigma_q.unsqueeze(0), None, stats)


def render_space_invariant(image: torch.Tensor, sigma: float) -> Defocused:
    """Blur the whole image with one Gaussian sigma (HR px); borders renormalised like the layered case."""
    _, h, w = image.shape
    s = round(max(0.0, float(sigma)), 2)  # the 0.01 resolution of the stored maps
    if s < 0.05:
        out = image.clone()
    else:
        d = reduction_for(s)
        pad = int(math.ceil(3.0 * s)) + d
        hh, ww = h + 2 * pad, w + 2 * pad
        hh, ww = math.ceil(hh / d) * d, math.ceil(ww / d) * d
        layer = torch.zeros(1, 4, hh, ww)
        layer[0, 0, pad : pad + h, pad : pad + w] = 1
        layer[0, 1:, pad : pad + h, pad : pad + w] = image
        b = fast_blur(layer, s)[0, :, pad : pad + h, pad : pad + w]
        out = (b[1:] / b[:1].clamp_min(1e-6)).clamp(0, 1)
    return Defocused(out, torch.full((1, h, w), s), None, RenderStats(layers=1, filled_layers=0))


def render_defocus_reference(image: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Direct per-pixel-kernel renderer (slow; for tests on small images).

    Each source pixel q spreads its colour with its own normalised Gaussian of ``sigma[q]`` truncated to
    ``kernel_size``; the result is renormalised by the total weight received (no occlusion handling).
    ``image``: 3 x H x W, ``sigma``: H x W.  Returns 3 x H x W.

    Written out (float64) because no kornia or torch filter spreads each pixel with its own kernel.
    """
    _, h, w = image.shape
    r = kernel_size // 2
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    dist2 = (t.view(-1, 1) ** 2 + t.view(1, -1) ** 2).flatten()  # K*K offsets
    s = sigma.to(torch.float64).clamp_min(1e-3)
    # weights[k, q]: Gaussian of q's own sigma at offset k, normalised over the window
    wts = torch.exp(-dist2.view(-1, 1, 1) / (2 * s * s).unsqueeze(0))
    wts = wts / wts.sum(dim=0, keepdim=True)
    src = torch.cat([torch.ones(1, h, w, dtype=torch.float64), image.to(torch.float64)], dim=0)
    out = torch.zeros(4, h + 2 * r, w + 2 * r, dtype=torch.float64)
    k = 0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out[:, r + dy : r + dy + h, r + dx : r + dx + w] += src * wts[k]
            k += 1
    out = out[:, r : r + h, r : r + w]
    return (out[1:] / out[:1]).to(torch.float32)
