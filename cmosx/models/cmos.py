"""CMOS: joint estimation of a defocus blur map and a semantic map from an LR image (paper Sec. 4.1).

HRNet backbone -> per scale, initial task prediction (ITP) heads for blur and semantics -> GIA_m makes
the two tasks interact at that scale -> GIA_b / GIA_s carry each task to the next finer scale ->
ITP_0 also gives auxiliary (deep-supervision) outputs -> GIA_l at every scale -> per task, the four
scales are upsampled to the finest, concatenated and decoded by two 1x1 convs (computed without the
concatenation: :meth:`FinalHead.forward`). Both maps are predicted
at LR resolution; :class:`CMOSOutput` upsamples them bilinearly to HR size on the
pixel grid of direct subsampling (LR pixel i on HR pixel 4i).

Any input size works: the input is padded (replicate) at the bottom/right to a multiple of 8 and the
outputs are cropped back.

:meth:`CMOS.steps` is the forward as a step generator (:mod:`cmosx.models.gia`): with global channel
pooling each of the 13 GIAs asks for its means over the whole image, at its own scale (1, 1/2, 1/4 or
1/8 of the padded input).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmosx.models.gia import GIA, PoolAnswer, PoolRequest, run_steps
from cmosx.models.hrnet import BasicBlock, HRNetBackbone
from cmosx.models.specs import CMOSSpec
from cmosx.ops.fused_conv import accumulate_conv_
from cmosx.ops.grid import grid_upsample
from cmosx.ops.padding import crop_to, pad_to_multiple

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONE_MULTIPLE = 8  # the backbone halves the resolution three times


@dataclass
class CMOSOutput:
    """CMOS predictions at LR resolution (``h x w`` = input size)."""

    blur_lr: Tensor  # B x 1 x h x w, Gaussian sigma in HR pixels (unconstrained regression)
    logits_lr: Tensor  # B x C x h x w semantic logits
    aux_blur_lr: Tensor  # B x 1 x h x w, deep-supervision output of ITP_0
    aux_logits_lr: Tensor  # B x C x h x w
    scale: int = 4

    def blur_hr(self) -> Tensor:
        """Blur sigma map bilinearly upsampled x scale on the pixel grid (LR i at HR s*i): B x 1 x H x W."""
        return grid_upsample(self.blur_lr, self.scale)

    def logits_hr(self) -> Tensor:
        """Semantic logits bilinearly upsampled x scale on the pixel grid (LR i at HR s*i): B x C x H x W."""
        return grid_upsample(self.logits_lr, self.scale)


def conditions(blur_sigma: Tensor, logits: Tensor, sigma_max: float, blur_scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """The one rule from CMOS output to RRDB-SFT input (training, evaluation and the engine all use it).

    ``blur_sigma``: ``[B x] 1 x h x w`` sigma in HR pixels, multiplied by ``blur_scale`` (how much of the
    defocus to remove; 1 = all) and clamped to ``[0, sigma_max]``. ``logits``: ``[B x] C x h x w``, turned
    into class probabilities (softmax over the class dimension, ``-3``). Returns new tensors
    ``(blur, probabilities)``; the engine calls it per strip of an image to keep memory low.
    """
    blur = blur_sigma * blur_scale if blur_scale != 1.0 else blur_sigma
    return blur.clamp(0.0, sigma_max), torch.softmax(logits, dim=-3)


class TaskHead(nn.Module):
    """Initial task prediction: ``blocks`` residual basic blocks (channels unchanged)."""

    def __init__(self, channels: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[BasicBlock(channels) for _ in range(blocks)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class FinalHead(nn.Module):
    """1x1 conv (concat -> hidden) + BN + ReLU, then 1x1 conv hidden -> outputs.

    ``in_widths`` are the channels of the scales, finest first. :meth:`forward` gives the result of the
    head on their concatenation without building it (see there).
    """

    def __init__(self, in_widths: Sequence[int], hidden: int, out_ch: int) -> None:
        super().__init__()
        self.in_widths = tuple(int(w) for w in in_widths)
        self.body = nn.Sequential(
            nn.Conv2d(sum(self.in_widths), hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)
        )
        self.out = nn.Conv2d(hidden, out_ch, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """The head on the scales bilinearly upsampled (align_corners=False) to the first one and concatenated.

        ``features[i]``: B x in_widths[i] x h_i x w_i, ``features[0]`` at the output size h x w ->
        B x out_ch x h x w. The first conv and the upsampling are both linear and the bilinear weights
        are shared by all channels, so conv(cat(up(f_i))) = sum_i conv_i(up(f_i)) = sum_i up(conv_i(f_i))
        with conv_i the weight columns of scale i: the concatenation is never built, one hidden-width map
        is accumulated at full resolution (in place), and each scale upsamples whichever is narrower, its
        features or their projection to the hidden width (the paper's 270-wide hidden layer: the
        features; the lite heads' 48: the projection of the wider scales). The conv's bias (present once
        BatchNorm is folded into it) is added once, by the finest scale's conv.
        """
        conv, rest = self.body[0], self.body[1:]
        size = features[0].shape[-2:]
        weights = conv.weight.split(self.in_widths, dim=1)
        acc = F.conv2d(features[0], weights[0], conv.bias)  # the bias (folded BatchNorm), added once
        for feature, weight in zip(features[1:], weights[1:], strict=True):
            if feature.shape[1] < conv.out_channels:
                upsampled = F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
                accumulate_conv_(acc, upsampled, weight)
            else:
                projected = F.conv2d(feature, weight)
                acc.add_(F.interpolate(projected, size=size, mode="bilinear", align_corners=False))
        return self.out(rest(acc))


class CMOS(nn.Module):
    """Blur + semantic estimator. forward(lr: B x 3 x h x w in [0, 1]) -> :class:`CMOSOutput`."""

    def __init__(self, spec: CMOSSpec, num_classes: int, scale: int = 4) -> None:
        super().__init__()
        self.spec, self.num_classes, self.scale = spec, num_classes, scale
        widths, gia = spec.widths, spec.gia
        self.backbone = HRNetBackbone(spec)
        self.itp_blur = nn.ModuleList(TaskHead(w, spec.itp_blocks) for w in widths)
        self.itp_seg = nn.ModuleList(TaskHead(w, spec.itp_blocks) for w in widths)
        # index i of gia_m / gia_b / gia_s is the scale it starts from (1..3); index 0 unused
        self.gia_m = nn.ModuleList(
            [nn.Identity()] + [GIA(widths[i], widths[i], spec.groups[i], gia) for i in (1, 2, 3)]
        )
        self.gia_b = nn.ModuleList(
            [nn.Identity()] + [GIA(widths[i], widths[i - 1], spec.groups[i - 1], gia, 1) for i in (1, 2, 3)]
        )
        self.gia_s = nn.ModuleList(
            [nn.Identity()] + [GIA(widths[i], widths[i - 1], spec.groups[i - 1], gia, 1) for i in (1, 2, 3)]
        )
        self.gia_l = nn.ModuleList(GIA(w, w, r, gia) for w, r in zip(widths, spec.groups, strict=True))
        self.aux_blur = nn.Conv2d(widths[0], 1, 1)
        self.aux_seg = nn.Conv2d(widths[0], num_classes, 1)
        total = sum(widths)
        hidden = spec.head_channels or total
        self.head_blur = FinalHead(widths, hidden, 1)
        self.head_seg = FinalHead(widths, hidden, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, lr: Tensor, pooled: Sequence[PoolAnswer] | None = None) -> CMOSOutput:
        """``pooled``: the answers to the global pool requests (whole-image means), for a tile."""
        return run_steps(self.steps(lr), pooled)

    def steps(self, lr: Tensor) -> Generator[PoolRequest, PoolAnswer, CMOSOutput]:
        """:meth:`forward` as steps (see the module docstring)."""
        h, w = lr.shape[-2:]
        x = (lr - self.mean.to(lr.dtype)) / self.std.to(lr.dtype)
        x = pad_to_multiple(x, (BACKBONE_MULTIPLE, BACKBONE_MULTIPLE), "replicate")
        feats = self.backbone(x)

        blur: list[Tensor] = [feats[0]] * 4  # per-scale ITP outputs, filled from coarse to fine
        seg: list[Tensor] = [feats[0]] * 4
        in_blur = in_seg = feats[3]
        for i in (3, 2, 1, 0):
            blur[i], seg[i] = self.itp_blur[i](in_blur), self.itp_seg[i](in_seg)
            if i > 0:
                mixed_blur, mixed_seg = yield from self.gia_m[i].steps(blur[i], seg[i])
                in_blur = yield from self.gia_b[i].steps(mixed_blur, feats[i - 1])
                in_seg = yield from self.gia_s[i].steps(mixed_seg, feats[i - 1])
        aux_blur, aux_seg = self.aux_blur(blur[0]), self.aux_seg(seg[0])

        final_blur, final_seg = [], []  # per-scale final features, each at its own resolution
        for i in range(4):
            fb, fs = yield from self.gia_l[i].steps(blur[i], seg[i])
            final_blur.append(fb)
            final_seg.append(fs)
        del x, feats, blur, seg, in_blur, in_seg, mixed_blur, mixed_seg  # free what the heads do not need
        out_blur = self.head_blur(final_blur)
        del final_blur
        out_seg = self.head_seg(final_seg)
        return CMOSOutput(
            blur_lr=crop_to(out_blur, h, w),
            logits_lr=crop_to(out_seg, h, w),
            aux_blur_lr=crop_to(aux_blur, h, w),
            aux_logits_lr=crop_to(aux_seg, h, w),
            scale=self.scale,
        )
