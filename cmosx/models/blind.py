"""Blind SR: CMOS estimates the blur and semantic maps, RRDB-SFT upscales the LR image with them."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from cmosx.models.cmos import CMOS, CMOSOutput, conditions
from cmosx.models.rrdb_sft import RRDBSFT


@dataclass
class BlindSROutput:
    sr: Tensor  # B x 3 x (scale h) x (scale w), not clamped
    maps: CMOSOutput  # the CMOS estimates the SR network was conditioned on


class BlindSR(nn.Module):
    """forward(lr: B x 3 x h x w in [0, 1]) -> :class:`BlindSROutput`: a model's two networks chained, untiled.

    The estimates become RRDB-SFT's conditions by :func:`cmosx.models.cmos.conditions` (sigma clamped to
    ``[0, sigma_max]``, softmax probabilities), as in training and in the engine.
    """

    def __init__(self, cmos: CMOS, sr: RRDBSFT, sigma_max: float = 5.0) -> None:
        super().__init__()
        self.cmos, self.sr, self.sigma_max = cmos, sr, sigma_max

    def forward(self, lr: Tensor) -> BlindSROutput:
        maps = self.cmos(lr)
        blur, semantic = conditions(maps.blur_lr, maps.logits_lr, self.sigma_max)
        return BlindSROutput(sr=self.sr(lr, blur, semantic), maps=maps)
