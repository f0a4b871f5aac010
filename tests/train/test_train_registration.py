"""Cubic-spline shifting and grid upsampling, and registration recovering known sub-pixel shifts."""

import torch
import torch.nn.functional as F

from cmosx.train.registration import register
from cmosx.train.spline import cardinal_cubic, grid_cubic_upsample, shift_images


def _blobs(h: int, w: int, dx: float = 0.0, dy: float = 0.0, step: float = 1.0) -> torch.Tensor:
    """A smooth analytic RGB scene (Gaussian blobs, sigma 2-8 px) sampled at ``(x*step - dx, y*step - dy)``.

    ``dx, dy`` move the picture right / down by that many pixels of the ``step = 1`` grid.
    """
    g = torch.Generator().manual_seed(0)
    n = 40
    cx, cy = torch.rand(n, generator=g) * 200, torch.rand(n, generator=g) * 160
    sigma, colour = 2 + 6 * torch.rand(n, generator=g), torch.rand(n, 3, generator=g)
    y = torch.arange(h, dtype=torch.float64)[:, None] * step - dy
    x = torch.arange(w, dtype=torch.float64)[None] * step - dx
    image = torch.full((3, h, w), 0.2, dtype=torch.float64)
    for k in range(n):
        blob = torch.exp(-((x - cx[k]) ** 2 + (y - cy[k]) ** 2) / (2 * sigma[k] ** 2))
        image += 0.3 * colour[k][:, None, None] * blob
    return image.clamp(0, 1).float()


def test_the_kernel_interpolates_and_reproduces_cubics():
    values = cardinal_cubic(torch.tensor([0.0, 1.0, -1.0, 2.0, 5.0]))
    assert torch.allclose(values, torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64), atol=1e-12)
    t = torch.arange(60, dtype=torch.float64)

    def cubic(v):
        return 1e-3 * v**3 - 0.05 * v**2 + v + 2

    moved = shift_images(cubic(t)[None].expand(4, 60), [0.3, -1.7], [0.0])  # Y x X x 4 x 60
    assert torch.allclose(moved[0, 0, 1, 20:40], cubic(t[20:40] - 0.3), atol=1e-4)
    assert torch.allclose(moved[0, 1, 1, 20:40], cubic(t[20:40] + 1.7), atol=1e-4)


def test_grid_upsampling_keeps_lr_pixel_i_on_hr_pixel_4i():
    hr = _blobs(64, 80)
    lr = hr[:, ::4, ::4]
    up = grid_cubic_upsample(lr, 4)
    assert up.shape == hr.shape
    assert torch.allclose(up[:, ::4, ::4], lr, atol=1e-5)  # the spline passes through every LR pixel
    inner = (slice(None), slice(8, -8), slice(8, -8))
    pixel_centre = F.interpolate(lr[None], scale_factor=4, mode="bicubic", align_corners=False)[0]
    assert (up - hr)[inner].abs().mean() < 0.25 * (pixel_centre - hr)[inner].abs().mean()


def test_registration_recovers_known_shifts_within_a_tenth_of_a_pixel():
    truth = _blobs(160, 200)
    for dx, dy in [(1.3, -0.7), (-2.45, 3.1), (0.12, -0.04), (0.0, 0.0)]:
        reg = register(_blobs(160, 200, dx, dy), truth, border=4)
        # the moved picture realigns when moved back
        assert abs(reg.dx + dx) < 0.1 and abs(reg.dy + dy) < 0.1, (dx, dy, reg)
        assert reg.gain_db > 20 if (dx, dy) != (0.0, 0.0) else reg.gain_db == 0.0


def test_pixel_centre_bicubic_sits_one_and_a_half_hr_pixels_off_the_subsampling_grid():
    truth = _blobs(160, 200)
    lr = truth[:, ::4, ::4]
    bicubic = F.interpolate(lr[None], scale_factor=4, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    reg = register(bicubic, truth, border=4)
    assert abs(reg.dx + 1.5) < 0.1 and abs(reg.dy + 1.5) < 0.1, reg
    aligned = register(grid_cubic_upsample(lr, 4).clamp(0, 1), truth, border=4)
    assert abs(aligned.dx) < 0.1 and abs(aligned.dy) < 0.1, aligned


def test_a_flat_image_registers_at_zero():
    flat = torch.full((3, 48, 48), 0.5)
    reg = register(flat, flat.clone(), border=4)
    assert (reg.dx, reg.dy, reg.gain_db) == (0.0, 0.0, 0.0)
