"""The paper's evaluation metrics (technical notes section 6).

- SR: PSNR and SSIM on the Y channel of BT.601 studio-swing YCbCr (MATLAB ``rgb2ycbcr``),
  ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` for RGB in [0, 1]; ``border`` pixels cropped on
  every side first (default: the scale). SSIM: 11 x 11 Gaussian window, sigma 1.5, constants
  (0.01 L)^2, (0.03 L)^2, computed over the 'valid' region only (no padding), as BasicSR/MATLAB do.
  kornia's ``metrics.ssim`` with ``padding="valid"`` and ``eps=0`` is exactly that definition, so we use it
  (in float64); kornia's ``rgb_to_ycbcr`` is full-range JPEG YCbCr, so the Y conversion is ours.
- Blur maps: sigma / sigma_max, PSNR with peak 1, SSIM on the normalised map.
- Semantics: mIoU from a confusion matrix accumulated over the whole dataset, label 255 ignored.
"""

from __future__ import annotations

import torch
from kornia.metrics import ssim as kornia_ssim
from torch import Tensor

from cmosx.errors import ArgumentError
from cmosx.ops.compare import psnr

IGNORE_INDEX = 255


def rgb_to_y(image: Tensor) -> Tensor:
    """BT.601 studio-swing luma. image: ``... x 3 x H x W`` in [0, 1] -> ``... x 1 x H x W`` in [16/255, 235/255]."""
    if image.shape[-3] != 3:
        raise ArgumentError(f"expected 3 colour channels, got shape {tuple(image.shape)}")
    # Written out: kornia's rgb_to_ycbcr is full-range (JPEG) YCbCr; SR papers report PSNR-Y on MATLAB's
    # studio-swing rgb2ycbcr, whose coefficients these are.
    r, g, b = image.unbind(dim=-3)
    y = (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return y.unsqueeze(-3)


def crop_border(image: Tensor, border: int) -> Tensor:
    """Drop ``border`` pixels on each side of the last two dimensions."""
    if border <= 0:
        return image
    return image[..., border:-border, border:-border]


def _as_batch(image: Tensor) -> Tensor:
    return image.unsqueeze(0) if image.dim() == 3 else image


def ssim(a: Tensor, b: Tensor, peak: float = 1.0) -> float:
    """Mean SSIM over the 'valid' region, 11 x 11 Gaussian window, sigma 1.5. a, b: ``[B x] C x H x W``."""
    a, b = _as_batch(a).double(), _as_batch(b).double()
    if a.shape != b.shape:
        raise ArgumentError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    if min(a.shape[-2:]) < 11:
        raise ArgumentError(f"SSIM needs images of at least 11 x 11 pixels, got {tuple(a.shape[-2:])}")
    ssim_map = kornia_ssim(a, b, window_size=11, max_val=float(peak), eps=0.0, padding="valid")
    return ssim_map.mean().item()


def sr_psnr_ssim_y(sr: Tensor, hr: Tensor, border: int) -> tuple[float, float]:
    """PSNR and SSIM on Y after cropping ``border``. sr, hr: ``3 x H x W`` in [0, 1] (sr is clamped)."""
    sr_y = crop_border(rgb_to_y(sr.clamp(0.0, 1.0)), border)
    hr_y = crop_border(rgb_to_y(hr), border)
    return psnr(sr_y, hr_y), ssim(sr_y, hr_y)


def blur_psnr_ssim(blur: Tensor, target: Tensor, sigma_max: float) -> tuple[float, float]:
    """PSNR/SSIM of a blur map (sigma, HR px) normalised by sigma_max and clamped to [0, 1]. ``1 x H x W``."""
    pred = (blur.double() / sigma_max).clamp(0.0, 1.0)
    true = (target.double() / sigma_max).clamp(0.0, 1.0)
    return psnr(pred, true), ssim(pred, true)


class ConfusionMatrix:
    """Dataset-accumulated confusion matrix for mIoU; label 255 is ignored."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # rows: truth, cols: prediction

    def update(self, prediction: Tensor, labels: Tensor) -> None:
        """prediction, labels: int64 tensors of equal shape (class ids; labels may hold 255)."""
        if prediction.shape != labels.shape:
            raise ArgumentError(f"shape mismatch {tuple(prediction.shape)} vs {tuple(labels.shape)}")
        valid = labels != IGNORE_INDEX
        truth = labels[valid].long()
        pred = prediction[valid].long()
        if truth.numel() and (truth.max() >= self.num_classes or truth.min() < 0):
            raise ArgumentError(f"label out of range [0, {self.num_classes})")
        index = truth * self.num_classes + pred
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def iou_per_class(self) -> Tensor:
        """IoU = TP / (TP + FP + FN) per class; NaN for a class absent from both truth and prediction."""
        tp = self.matrix.diag().double()
        fp = self.matrix.sum(0).double() - tp
        fn = self.matrix.sum(1).double() - tp
        denom = tp + fp + fn
        return torch.where(denom > 0, tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))

    def miou(self) -> float:
        """Mean IoU over the classes that occur (in truth or prediction), in [0, 1]."""
        iou = self.iou_per_class()
        present = ~torch.isnan(iou)
        if not present.any():
            return float("nan")
        return iou[present].mean().item()
