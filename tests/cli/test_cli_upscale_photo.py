"""From the model's RGB x4 to a photo upscale: grayscale, alpha (premultiplied), scales 2 and 3."""

import torch
import torch.nn.functional as F

from cmosx.cli._photos import to_grayscale, upscale_photo
from cmosx.io import Photo

H, W = 12, 16


def bilinear_x4(rgb):
    """A linear stand-in for the model (3 x H x W -> 3 x 4H x 4W), enough to check the photo-level algebra."""
    return F.interpolate(rgb[None], scale_factor=4, mode="bilinear", align_corners=False)[0]


def test_grayscale_in_grayscale_out():
    grey = torch.rand(1, H, W, generator=torch.Generator().manual_seed(0))
    out = upscale_photo(Photo(grey, None, 16, "PNG"), bilinear_x4, 4)
    assert out.is_grayscale and out.color.shape == (1, 4 * H, 4 * W) and out.bit_depth == 16
    assert torch.allclose(out.color, bilinear_x4(grey.expand(3, -1, -1))[:1].clamp(0, 1), atol=1e-5)
    assert torch.allclose(to_grayscale(torch.ones(3, 2, 2)), torch.ones(1, 2, 2))


def test_colour_hidden_under_transparent_pixels_does_not_bleed():
    color = torch.zeros(3, H, W)
    color[2, :, : W // 2] = 1.0  # visible half: blue
    color[0, :, W // 2 :] = 1.0  # transparent half: garbage red
    alpha = torch.zeros(1, H, W)
    alpha[:, :, : W // 2] = 1.0
    out = upscale_photo(Photo(color, alpha, 8, "PNG"), bilinear_x4, 4)
    visible = out.alpha[0] > 0.01
    assert visible.any() and (~visible).any()
    assert out.color[0][visible].max() < 1e-4  # no red fringe at the edge
    assert out.color[2][visible].min() > 0.95  # the edge keeps its colour (alpha is resampled separately)
    naive = bilinear_x4(color)
    assert naive[0][visible].max() > 0.1  # what straight-colour upscaling would have done


def test_scales_2_and_3_downscale_the_x4_result():
    color = torch.full((3, H, W), 0.25)
    for scale in (2, 3, 4):
        out = upscale_photo(Photo(color, torch.ones(1, H, W), 8, "PNG"), bilinear_x4, scale)
        assert out.color.shape == (3, scale * H, scale * W) and out.alpha.shape == (1, scale * H, scale * W)
        assert torch.allclose(out.color, torch.full_like(out.color, 0.25), atol=1e-5)
