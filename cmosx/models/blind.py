"""Blind SR: CMOS estimates the blur and semantic maps, RRDB-SFT upscales the LR image with them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cmosx.models.cmos import CMOS, CMOSOutput
from cmosx.models.rrdb_sft import RRDBSFT


@dataclass
class BlindSROutput:
    sr: Tensor  # B x 3 x (scale h) x (scale w), not clamped
    maps: CMOSOutput  # the CMOS estimates the SR network was conditioned on


class BlindSR(nn.Module):
    """forward(lr: B x 3 x h x w in [0, 1]) -> :class:`BlindSROutput`.

    The estimated sigma is clamped to ``[0, sigma_max]`` and the logits turned into probabilities
    (softmax) before conditioning RRDB-SFT, matching what it sees in training.
    """

    def __init__(self, cmos: CMOS, sr: RRDBSFT, sigma_max: float = 5.0) -> None:
        super().__init__()
        self.cmos, self.sr, self.sigma_max = cmos, sr, sigma_max

    def conditions(self, maps: CMOSOutput) -> tuple[Tensor, Tensor]:
        """(blur_lr clamped to [0, sigma_max], semantic probabilities) from CMOS estimates."""
        return maps.blur_lr.clamp(0.0, self.sigma_max), torch.softmax(maps.logits_lr, dim=1)

    def forward(self, lr: Tensor) -> BlindSROutput:
        maps = self.cmos(lr)
        blur, semantic = self.conditions(maps)
        return BlindSROutput(sr=self.sr(lr, blur, semantic), maps=maps)
