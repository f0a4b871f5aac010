"""Defocus renderer: layered vs per-pixel reference, sigma ranges, occlusion handling, fast blur."""

import math

import numpy as np
import pytest
import torch
from kornia.filters import get_gaussian_kernel1d

from cmosx.train.data.defocus import (
    fast_blur,
    gaussian_blur,
    gaussian_kernel_1d,
    layer_keys,
    level_sigma,
    quantise_sigma,
    reduction_for,
    render_defocus_reference,
    render_layers,
    render_space_invariant,
    render_space_variant,
    sigma_max_for,
)
from cmosx.train.data.scenes import make_scene
from cmosx.train.data.textures import dead_leaves

pytestmark = pytest.mark.usefixtures("one_thread")


def _texture(h, w, seed=0):
    return dead_leaves(h, w, np.random.default_rng(seed), count=80, rmax=12)


def _impulse_sigma(response: torch.Tensor) -> float:
    """Std of a 2-D impulse response along x (1 x 1 x H x W)."""
    r = response[0, 0].double()
    r = r / r.sum()
    x = torch.arange(r.shape[1], dtype=torch.float64)
    px = r.sum(0)
    mean = (px * x).sum()
    return float(torch.sqrt((px * (x - mean) ** 2).sum()))


def test_sigma_max_per_kernel_size():
    assert sigma_max_for(21) == 5.0
    assert sigma_max_for(61) == 15.0


def test_kernel_is_kornias_gaussian_to_one_ulp():
    """The renderer writes its kernel out (bit-exact stored datasets); it is kornia's Gaussian for every sigma
    the renderer blurs with: each quantisation level up to 15 and fast_blur's residual at reduced resolution."""
    levels = level_sigma(torch.arange(1, int(quantise_sigma(torch.tensor(15.0))[0]) + 2)).tolist()
    residuals = [math.sqrt(max(s * s - reduction_for(s) ** 2 / 4.0, 0.0)) / reduction_for(s) for s in levels]
    for sigma in [s for s in levels + residuals if s >= 0.05]:
        ours = gaussian_kernel_1d(sigma)
        theirs = get_gaussian_kernel1d(ours.numel(), sigma).reshape(-1)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1.2e-7)


@pytest.mark.parametrize("sigma", [0.8, 2.5, 4.0, 7.0, 13.0])
def test_fast_blur_matches_gaussian_width(sigma):
    size = 2 * math.ceil(4 * sigma) + 1
    size = size + (-size) % 12  # a multiple of any reduction factor used here
    x = torch.zeros(1, 1, size, size)
    x[0, 0, size // 2, size // 2] = 1.0
    measured = _impulse_sigma(fast_blur(x, sigma))
    assert measured == pytest.approx(sigma, rel=0.06)
    assert float(fast_blur(x, sigma).sum()) == pytest.approx(1.0, abs=0.02)


def test_layered_matches_per_pixel_reference_on_smooth_depth():
    h, w = 56, 72
    image = _texture(h, w)
    # a smooth sigma ramp (a slanted plane behind the focal plane), quantised as the renderer does
    ramp = torch.linspace(0.3, 3.0, w).view(1, w).expand(h, w)
    level, sigma = quantise_sigma(ramp)
    keys = layer_keys(level, torch.ones_like(level))
    ours, stats = render_layers(image, sigma, keys, torch.ones(h, w), fill_occlusions=True)
    reference = render_defocus_reference(image, sigma, kernel_size=21)
    assert stats.layers > 10
    err = (ours - reference).abs()
    assert float(err.mean()) < 0.01
    assert float(err.max()) < 0.08
    # and it is really blurred: far from the sharp input
    assert float((ours - image).abs().mean()) > 5 * float(err.mean())


def test_constant_image_stays_constant_through_occlusions():
    """Normalised compositing and the occlusion fill must not darken or brighten anything (no halos)."""
    h, w = 64, 80
    image = torch.full((3, h, w), 0.6)
    depth = np.full((h, w), 20.0, dtype=np.float32)
    depth[20:44, 25:55] = 1.0  # near box in front of a far wall
    for kernel in (21, 61):
        out = render_space_variant(image, depth, kernel, np.random.default_rng(1)).image
        assert float((out - 0.6).abs().max()) < 1e-3


def test_blurred_near_edge_turns_translucent_without_dark_band():
    """A blurred bright near object over a sharp dark background: the background shows through the
    object's blurred edge (occlusion fill) and no pixel is darker than the background."""
    h, w = 48, 96
    image = torch.zeros(3, h, w)
    image[:, :, 48:] = 1.0  # near object on the right, bright
    sigma = torch.zeros(h, w)
    sigma[:, 48:] = 4.0
    side = torch.ones(h, w)
    side[:, 48:] = -1  # in front of the focal plane
    level, sq = quantise_sigma(sigma)
    keys = layer_keys(level, side.long())
    filled, stats = render_layers(image, sq, keys, side, fill_occlusions=True)
    plain, _ = render_layers(image, sq, keys, side, fill_occlusions=False)
    row = filled[0, h // 2]
    assert stats.filled_layers == 1
    assert float(filled.min()) >= -1e-6
    # inside the object near its edge the dark background now shows through
    assert float(row[50]) < 0.85
    assert float(plain[0, h // 2, 50]) > 0.99
    # profile rises monotonically across the edge
    assert bool((row[40:60].diff() >= -1e-4).all())


def test_object_cut_into_many_layers_stays_opaque():
    """A near sphere spans many thin layers: they must add up to one opaque surface (the sharp wall behind
    may show only in the blurred rim), with the same soft edge as a flat disc."""
    h = w = 96
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    rho = ((yy - 48) ** 2 + (xx - 48) ** 2).sqrt() / 30
    disc = rho <= 1
    image = torch.ones(3, h, w)
    image[:, disc] = 0.1
    side = torch.where(disc, -1, 1)
    sphere = torch.where(disc, 3.5 + 1.5 * (1 - rho.clamp(max=1) ** 2).sqrt(), torch.tensor(0.0))
    level, sq = quantise_sigma(sphere)
    out, stats = render_layers(image, sq, layer_keys(level, side), side)
    assert stats.layers > 8
    row = out[0, 48]
    assert float(row[48]) == pytest.approx(0.1, abs=0.01)  # centre: only the ball
    assert float(row[30]) < 0.16  # 12 px inside the rim: (nearly) opaque
    assert 0.3 < float(row[18]) < 0.7  # at the silhouette: half wall, half ball
    assert float(row[5]) > 0.9


@pytest.mark.parametrize("kernel", [21, 61])
def test_space_variant_sigma_range_and_map(kernel):
    scene = make_scene(96, 128, np.random.default_rng(3))
    result = render_space_variant(scene.image, scene.depth, kernel, np.random.default_rng(4))
    smax = sigma_max_for(kernel)
    assert result.sigma.shape == (1, 96, 128)
    assert float(result.sigma.min()) >= 0.0
    assert float(result.sigma.max()) <= smax + 1e-6
    assert float(result.sigma.max()) >= 0.97 * smax  # the f-number makes the largest CoC the kernel size
    assert result.image.shape == scene.image.shape
    assert float(result.image.min()) >= 0.0 and float(result.image.max()) <= 1.0
    params = result.params()
    assert params["space_invariant"] is False and params["max_coc"] == kernel


def test_space_invariant_is_one_gaussian():
    image = _texture(40, 48, seed=2)
    result = render_space_invariant(image, 1.5)
    assert torch.allclose(result.sigma, torch.full((1, 40, 48), 1.5))
    expected = gaussian_blur(image.unsqueeze(0), 1.5)[0]
    inner = (slice(None), slice(6, -6), slice(6, -6))
    assert torch.allclose(result.image[inner], expected[inner], atol=1e-4)
