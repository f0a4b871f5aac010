"""Metrics against values computed by hand on tiny images."""

import math

import numpy as np
import pytest
import torch

from cmosx.train.metrics import (
    ConfusionMatrix,
    blur_psnr_ssim,
    crop_border,
    psnr,
    rgb_to_y,
    sr_psnr_ssim_y,
    ssim,
)


def test_y_is_studio_swing_bt601():
    white = torch.ones(3, 1, 1)
    black = torch.zeros(3, 1, 1)
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    assert rgb_to_y(white).item() == pytest.approx(235.0 / 255.0, abs=1e-5)  # 16 + 219
    assert rgb_to_y(black).item() == pytest.approx(16.0 / 255.0)
    assert rgb_to_y(red).item() == pytest.approx((16.0 + 65.481) / 255.0)


def test_psnr_by_hand_and_border_crop():
    hr = torch.zeros(3, 20, 20)
    sr = hr.clone()
    sr[0] = 0.1  # Y differs by 65.481 * 0.1 / 255 everywhere
    diff = 65.481 * 0.1 / 255.0
    expected = 20.0 * math.log10(1.0 / diff)
    got = psnr(rgb_to_y(sr), rgb_to_y(hr))
    assert got == pytest.approx(expected, abs=1e-6)
    assert sr_psnr_ssim_y(sr, hr, border=4)[0] == pytest.approx(expected, abs=1e-6)
    # A difference confined to the 4-pixel border disappears with border=4.
    sr2 = hr.clone()
    sr2[:, :4, :] = 1.0
    assert psnr(crop_border(rgb_to_y(sr2), 4), crop_border(rgb_to_y(hr), 4)) == math.inf
    # Half the pixels of a 2x2 map differ by 0.5: mse = 0.125 -> 10 log10(8).
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.5, 0.0], [0.5, 0.0]])
    assert psnr(a, b) == pytest.approx(10.0 * math.log10(8.0))


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM written out window by window (MATLAB/BasicSR definition, valid region only)."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    w = np.outer(g, g)
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx = (w * px * px).sum() - mx * mx
            vy = (w * py * py).sum() - my * my
            cxy = (w * px * py).sum() - mx * my
            values.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_window_by_window_definition():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 14, 13, generator=gen, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(1, 1, 14, 13, generator=gen, dtype=torch.float64)).clamp(0, 1)
    expected = _ssim_reference(x[0, 0].numpy(), y[0, 0].numpy())
    assert ssim(x, y) == pytest.approx(expected, abs=1e-9)


def test_ssim_of_flat_images_by_hand():
    # Flat images a and b: variances 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.2, 0.6
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim(torch.full((1, 16, 16), a), torch.full((1, 16, 16), b))
    assert got == pytest.approx(expected, rel=1e-6)
    assert ssim(torch.full((1, 16, 16), a), torch.full((1, 16, 16), a)) == pytest.approx(1.0)


def test_sr_metrics_on_identical_images():
    hr = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(1))
    p, s = sr_psnr_ssim_y(hr, hr, border=4)
    assert p == math.inf and s == pytest.approx(1.0)


def test_blur_metrics_normalise_by_sigma_max():
    target = torch.zeros(1, 16, 16)
    pred = torch.full((1, 16, 16), 0.5)  # 0.5 / sigma_max 5 = 0.1 everywhere -> 20 dB
    p, _ = blur_psnr_ssim(pred, target, sigma_max=5.0)
    assert p == pytest.approx(20.0)
    p15, _ = blur_psnr_ssim(pred * 3, target, sigma_max=15.0)
    assert p15 == pytest.approx(20.0)


def test_miou_by_hand_accumulates_and_ignores_255():
    cm = ConfusionMatrix(3)
    labels = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    cm.update(pred, labels)
    # class 0: TP 1, FP 0, FN 1 -> 1/2; class 1: TP 2, FP 1, FN 0 -> 2/3; class 2: TP 1 -> 1.
    assert cm.miou() == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    cm.update(torch.tensor([2]), torch.tensor([0]))  # second image: class 0 -> FN 2; class 2 FP 1
    # class 0: 1 / 3; class 1: 2 / 3; class 2: 1 / 2
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 0.5) / 3)
