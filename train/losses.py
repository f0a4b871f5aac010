"""Loss functions of the three training stages (technical notes sections 1 and 5).

- estimator: ``w_blur L1(blur) + w_seg CE(logits) + w_aux_blur L1(aux blur) + w_aux_seg CE(aux logits)``;
  predictions are upsampled bilinearly to HR on the subsampling grid (LR pixel i on HR pixel 4i) and
  compared with the HR ground truth, CE ignores 255.
- sr and blind: L1 (the paper's loss) or, with ``--pixel-loss l2``, MSE between the SR output and the HR
  image (MSE is what PSNR measures).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cmosx.errors import UsageError
from cmosx.ops.grid import grid_upsample
from cmosx.train.metrics import IGNORE_INDEX


def upsample_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of a ``B x C x h x w`` LR map to the HR ``size`` (an integer multiple) on the
    pixel grid of direct subsampling: LR pixel ``i`` lands on HR pixel ``s*i`` (:func:`grid_upsample`)."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    scale = size[0] // h
    if size[0] != scale * h or size[1] != scale * w:
        raise UsageError(f"an LR map of {h}x{w} does not upsample to {size[0]}x{size[1]} by a whole scale")
    return grid_upsample(x, scale)


def blur_l1(pred_lr: Tensor, target_hr: Tensor) -> Tensor:
    """L1 between an LR blur prediction (``B x 1 x h x w``, upsampled to HR) and the HR sigma map."""
    return F.l1_loss(upsample_to(pred_lr.float(), target_hr.shape[-2:]), target_hr)


def semantic_ce(logits_lr: Tensor, labels_hr: Tensor) -> Tensor:
    """Cross-entropy of LR logits (upsampled to HR) against ``B x H x W`` labels, 255 ignored.

    Returns 0 (with a gradient path) when every label of the batch is 255.
    """
    logits = upsample_to(logits_lr.float(), labels_hr.shape[-2:])
    if not (labels_hr != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels_hr, ignore_index=IGNORE_INDEX)


def estimator_loss(
    outputs,
    blur_hr: Tensor,
    labels_hr: Tensor,
    *,
    blur_weight: float,
    seg_weight: float,
    aux_blur_weight: float,
    aux_seg_weight: float,
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum over final and auxiliary outputs of a ``CMOSOutput``; terms with weight 0 are skipped."""
    terms: dict[str, Tensor] = {}
    if blur_weight:
        terms["blur"] = blur_weight * blur_l1(outputs.blur_lr, blur_hr)
    if seg_weight:
        terms["seg"] = seg_weight * semantic_ce(outputs.logits_lr, labels_hr)
    if aux_blur_weight:
        terms["aux_blur"] = aux_blur_weight * blur_l1(outputs.aux_blur_lr, blur_hr)
    if aux_seg_weight:
        terms["aux_seg"] = aux_seg_weight * semantic_ce(outputs.aux_logits_lr, labels_hr)
    total = torch.stack(list(terms.values())).sum()
    return total, {name: value.item() for name, value in terms.items()}


PIXEL_LOSSES = ("l1", "l2")


def pixel_loss(sr: Tensor, hr: Tensor, kind: str = "l1") -> Tensor:
    """L1 (``kind="l1"``) or mean squared error (``"l2"``) between the SR output (not clamped) and the HR
    image, both ``B x 3 x H x W`` in [0, 1]."""
    if kind == "l2":
        return F.mse_loss(sr.float(), hr)
    return F.l1_loss(sr.float(), hr)
