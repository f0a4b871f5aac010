"""LR and HR maps meet on the grid of direct subsampling: LR pixel i on HR pixel s*i."""

import pytest
import torch

from cmosx.models.cmos import CMOSOutput
from cmosx.ops.grid import grid_downsample, grid_upsample
from cmosx.train.losses import upsample_to


def _ramp(h: int, w: int) -> torch.Tensor:
    y = torch.arange(h, dtype=torch.float32).view(h, 1)
    x = torch.arange(w, dtype=torch.float32).view(1, w)
    return (3 * y + x).expand(h, w).reshape(1, 1, h, w).clone()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_upsample_puts_lr_pixel_i_on_hr_pixel_si(scale):
    hr = _ramp(8 * scale, 12 * scale)
    up = grid_upsample(hr[..., ::scale, ::scale], scale)
    assert up.shape == hr.shape
    torch.testing.assert_close(up[..., ::scale, ::scale], hr[..., ::scale, ::scale])
    # a linear ramp is reproduced exactly up to the last LR pixel (beyond it: replicated)
    inner = (8 - 1) * scale + 1, (12 - 1) * scale + 1
    torch.testing.assert_close(up[..., : inner[0], : inner[1]], hr[..., : inner[0], : inner[1]])


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downsample_is_centred_on_the_grid(scale):
    hr = _ramp(8 * scale, 12 * scale)
    lr = grid_downsample(hr, scale)
    assert lr.shape[-2:] == (8, 12)
    # a centred mean of a linear ramp equals its centre value away from the replicated borders
    torch.testing.assert_close(lr[..., 1:, 1:], hr[..., ::scale, ::scale][..., 1:, 1:])


def test_cmos_output_and_loss_upsample_on_the_grid():
    lr_map = torch.rand(2, 1, 6, 5)
    out = CMOSOutput(lr_map, torch.rand(2, 3, 6, 5), lr_map, torch.rand(2, 3, 6, 5), scale=4)
    torch.testing.assert_close(out.blur_hr()[..., ::4, ::4], lr_map)
    torch.testing.assert_close(out.logits_hr()[..., ::4, ::4], out.logits_lr)
    torch.testing.assert_close(upsample_to(lr_map, (24, 20))[..., ::4, ::4], lr_map)
