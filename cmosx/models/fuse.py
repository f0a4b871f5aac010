"""Inference-only speed-up: fold every eval-mode BatchNorm into the convolution before it.

``fold_batchnorm(net)`` returns a copy whose ``Conv2d -> BatchNorm2d`` pairs (inside ``nn.Sequential``
containers and the residual blocks' ``convN``/``bnN`` attributes) became one biased convolution, which
removes a full pass over every feature map. Outputs match the original to float rounding; the copy is
for inference only (BatchNorm statistics no longer update) and cannot be saved as a model.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _fold_sequential(seq: nn.Sequential) -> None:
    layers = list(seq)
    for k in range(len(layers) - 1):
        conv, bn = layers[k], layers[k + 1]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            seq[k] = fuse_conv_bn_eval(conv, bn)
            seq[k + 1] = nn.Identity()


def _fold_attributes(module: nn.Module) -> None:
    for index in range(1, 4):
        conv, bn = getattr(module, f"conv{index}", None), getattr(module, f"bn{index}", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, f"conv{index}", fuse_conv_bn_eval(conv, bn))
            setattr(module, f"bn{index}", nn.Identity())


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` with BatchNorm layers folded into the preceding convolutions."""
    folded = copy.deepcopy(net).eval()
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
        else:
            _fold_attributes(module)
    return folded
