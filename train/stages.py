"""The three training stages as modules whose ``forward(batch)`` returns the loss.

- :class:`EstimatorStage`: CMOS trained with L1(blur) + CE(semantics) on final and auxiliary outputs.
- :class:`SRStage`: RRDB-SFT fed the ground-truth maps (area-downsampled to LR), L1 (or L2) on pixels.
- :class:`BlindStage`: a frozen CMOS (eval mode, no grad) feeds its estimates to RRDB-SFT, L1 (or L2) on pixels,
  turned into conditions by :func:`cmosx.models.cmos.conditions` as the engine does.

Each holds its networks as ``self.cmos`` / ``self.sr``, so a stage's ``state_dict`` has keys ``cmos.*`` and
``sr.*`` (what checkpoints and exports read). Returning the loss from ``forward`` lets DDP wrap the stage.

Conditioning switches (the same code path for ablations): ``use_blur=False`` and ``use_semantics=False``
feed all-zero maps, so the prior becomes a learned constant (``--unconditioned`` = blur-unaware baseline;
``--no-semantics-in-sr``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cmosx.models.cmos import conditions
from cmosx.train import losses

ESTIMATOR_PARTS = ("blur", "seg", "aux_blur", "aux_seg")


def part_names(stage: str, pixel_loss: str = "l1") -> tuple[str, ...]:
    """Names of the loss terms a stage reports (the metrics.jsonl keys)."""
    return ESTIMATOR_PARTS if stage == "estimator" else (pixel_loss,)


def condition(blur_lr: Tensor, semantic_lr: Tensor, use_blur: bool, use_semantics: bool) -> tuple[Tensor, Tensor]:
    """Zero the maps an ablation switches off."""
    if not use_blur:
        blur_lr = torch.zeros_like(blur_lr)
    if not use_semantics:
        semantic_lr = torch.zeros_like(semantic_lr)
    return blur_lr, semantic_lr


class EstimatorStage(nn.Module):
    def __init__(self, cmos: nn.Module, weights: dict[str, float]) -> None:
        super().__init__()
        self.cmos = cmos
        self.weights = dict(weights)

    def forward(self, lr: Tensor, hr: Tensor, blur: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        out = self.cmos(lr)
        total, parts = losses.estimator_loss(
            out,
            blur,
            labels,
            blur_weight=self.weights["blur"],
            seg_weight=self.weights["seg"],
            aux_blur_weight=self.weights["aux_blur"],
            aux_seg_weight=self.weights["aux_seg"],
        )
        vector = torch.tensor([parts.get(name, 0.0) for name in ESTIMATOR_PARTS])
        return total, vector


class SRStage(nn.Module):
    def __init__(
        self, sr: nn.Module, num_classes: int, scale: int, use_blur: bool, use_semantics: bool, pixel_loss: str = "l1"
    ) -> None:
        super().__init__()
        self.sr = sr
        self.num_classes, self.scale, self.pixel_loss = num_classes, scale, pixel_loss
        self.use_blur, self.use_semantics = use_blur, use_semantics

    def forward(self, lr: Tensor, hr: Tensor, blur: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        from cmosx.models.rrdb_sft import labels_to_probabilities, maps_to_lr

        probs = labels_to_probabilities(labels, self.num_classes).to(hr.dtype)
        blur_lr, semantic_lr = maps_to_lr(blur, probs, self.scale)
        blur_lr, semantic_lr = condition(blur_lr, semantic_lr, self.use_blur, self.use_semantics)
        fmt = torch.channels_last if lr.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = self.sr(lr, blur_lr.contiguous(memory_format=fmt), semantic_lr.contiguous(memory_format=fmt))
        loss = losses.pixel_loss(out, hr, self.pixel_loss)
        return loss, loss.detach().reshape(1).float().cpu()


class BlindStage(nn.Module):
    def __init__(
        self,
        cmos: nn.Module,
        sr: nn.Module,
        sigma_max: float,
        use_blur: bool,
        use_semantics: bool,
        pixel_loss: str = "l1",
    ) -> None:
        super().__init__()
        self.cmos, self.sr, self.pixel_loss = cmos, sr, pixel_loss
        self.sigma_max = sigma_max
        self.use_blur, self.use_semantics = use_blur, use_semantics
        for p in self.cmos.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> BlindStage:
        super().train(mode)
        self.cmos.eval()  # frozen estimator: always eval mode (batch-norm statistics untouched)
        return self

    def forward(self, lr: Tensor, hr: Tensor, blur: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            maps = self.cmos(lr)
            blur_lr, semantic_lr = conditions(maps.blur_lr.float(), maps.logits_lr.float(), self.sigma_max)
        blur_lr, semantic_lr = condition(blur_lr, semantic_lr, self.use_blur, self.use_semantics)
        fmt = torch.channels_last if lr.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = self.sr(lr, blur_lr.contiguous(memory_format=fmt), semantic_lr.contiguous(memory_format=fmt))
        loss = losses.pixel_loss(out, hr, self.pixel_loss)
        return loss, loss.detach().reshape(1).float().cpu()
