"""HRNet-W18-small-v2 style backbone with a stride-1 stem.

Branches sit at 1, 1/2, 1/4 and 1/8 of the input (the stock HRNet stem has stride 4). Input height
and width must be multiples of 8 (CMOS pads before calling). Sizes come from :class:`CMOSSpec`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from cmosx.models.specs import CMOSSpec
from cmosx.ops.fused_conv import ConvChain, conv_act, conv_add


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus identity, then ReLU (channels unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(channels, channels), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = conv3x3(channels, channels), nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        out = conv_act(self.conv1, x, "relu", norm=self.bn1)
        return conv_add(self.conv2, out, x, relu=True, norm=self.bn2)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 expansion) residual block; a 1x1 projection when channels change."""

    def __init__(self, in_ch: int, planes: int) -> None:
        super().__init__()
        out_ch = 4 * planes
        self.conv1, self.bn1 = nn.Conv2d(in_ch, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)
        self.project = (
            ConvChain(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)) if in_ch != out_ch else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = conv_act(self.conv1, x, "relu", norm=self.bn1)
        out = conv_act(self.conv2, out, "relu", norm=self.bn2)
        identity = x if self.project is None else self.project(x)
        return conv_add(self.conv3, out, identity, relu=True, norm=self.bn3)


def _down_path(in_ch: int, out_ch: int, steps: int) -> nn.Sequential:
    """``steps`` stride-2 3x3 conv+BN; ReLU between them; the last one maps to ``out_ch`` without ReLU."""
    layers: list[nn.Module] = []
    for step in range(steps):
        last = step == steps - 1
        layers += [conv3x3(in_ch, out_ch if last else in_ch, stride=2), nn.BatchNorm2d(out_ch if last else in_ch)]
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return ConvChain(*layers)


class HRModule(nn.Module):
    """Parallel branches of basic blocks followed by all-to-all sum fusion."""

    def __init__(self, widths: tuple[int, ...], blocks: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(w) for _ in range(blocks)]) for w in widths)
        self.fuse = nn.ModuleList()
        for i, w_i in enumerate(widths):
            row = nn.ModuleList()
            for j, w_j in enumerate(widths):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:  # coarser -> finer: 1x1 conv + BN, then bilinear upsampling in forward
                    row.append(ConvChain(nn.Conv2d(w_j, w_i, 1, bias=False), nn.BatchNorm2d(w_i)))
                else:  # finer -> coarser: stride-2 convs
                    row.append(_down_path(w_j, w_i, i - j))
            self.fuse.append(row)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        outs = []
        for i, row in enumerate(self.fuse):
            size = xs[i].shape[-2:]
            total = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                y = layer(xs[j])
                if j > i:
                    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
                # the first sum is a new tensor (the other rows read xs[i]); the later ones add in place
                total = total + y if total is xs[i] else total.add_(y)
            outs.append(F.relu(total, inplace=total is not xs[i]))
        return outs


class HRNetBackbone(nn.Module):
    """forward(x: B x 3 x H x W, H and W multiples of 8) -> 4 maps, ``widths[i]`` ch at 1/2**i size."""

    def __init__(self, spec: CMOSSpec) -> None:
        super().__init__()
        stem = spec.stem_channels
        self.stem = ConvChain(
            conv3x3(3, stem),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
            conv3x3(stem, stem),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        stage1_out = 4 * spec.stage1_planes
        self.stage1 = nn.Sequential(
            *[Bottleneck(stem if b == 0 else stage1_out, spec.stage1_planes) for b in range(spec.stage1_blocks)]
        )
        widths = spec.widths
        # transitions: stage 1 -> branches 0, 1; then each new branch from the previous coarsest one
        self.transition1 = nn.ModuleList(
            [
                ConvChain(conv3x3(stage1_out, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)),
                ConvChain(conv3x3(stage1_out, widths[1], 2), nn.BatchNorm2d(widths[1]), nn.ReLU(inplace=True)),
            ]
        )
        self.new_branch = nn.ModuleList(
            ConvChain(conv3x3(widths[k - 1], widths[k], 2), nn.BatchNorm2d(widths[k]), nn.ReLU(inplace=True))
            for k in (2, 3)
        )
        self.stages = nn.ModuleList(
            nn.Sequential(*[HRModule(widths[: n + 2], spec.branch_blocks) for _ in range(count)])
            for n, count in enumerate(spec.modules)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stage1(self.stem(x))
        xs = [t(x) for t in self.transition1]
        xs = self.stages[0](xs)
        for new, stage in zip(self.new_branch, self.stages[1:], strict=True):
            xs = stage(xs + [new(xs[-1])])
        return xs
