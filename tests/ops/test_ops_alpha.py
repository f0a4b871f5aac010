"""Un-premultiplying alpha: the one helper the reader and the photo upscale share."""

import torch

from cmosx.ops.alpha import MIN_ALPHA, unpremultiply


def test_unpremultiply_divides_by_alpha_and_zeroes_transparent_pixels():
    alpha = torch.tensor([[[1.0, 0.5, 0.25, 0.0]]])
    straight = torch.tensor([[[0.2, 0.6, 1.0, 0.7]]]).expand(3, -1, -1)
    out = unpremultiply(straight * alpha, alpha)
    assert out.shape == (3, 1, 4)
    torch.testing.assert_close(out[:, :, :3], straight[:, :, :3])
    assert bool((out[:, :, 3] == 0).all())


def test_unpremultiply_clamps_and_caps_tiny_alpha():
    alpha = torch.tensor([[[0.5, MIN_ALPHA / 10]]])
    color = torch.tensor([[[0.9, MIN_ALPHA / 20]]])  # 0.9 over alpha 0.5 is out of range
    out = unpremultiply(color, alpha)
    assert out[0, 0, 0].item() == 1.0
    assert out[0, 0, 1].item() == torch.tensor(MIN_ALPHA / 20) / torch.tensor(MIN_ALPHA)
