"""RRDB-SFT: x4 super-resolution conditioned on a blur map and a semantic map (paper Sec. 5).

The blur sigma map and the semantic map (both at LR resolution) are embedded and fused by one GIA into
a prior ``p`` that every RRDB_SFT block reuses through its SFT layer (``feat * scale(p) + shift(p)``).

Ours (see the technical notes, section 4): the prior is computed at LR resolution (the authors compute
it at HR and downsample), and the semantic map enters as class probabilities through a 1x1 embedding;
``semantic_input="indices"`` reproduces the authors' single float channel of class indices.
``residual="bilinear"`` (the lite spec) adds the output to a grid-aligned bilinear upsampling of the LR.
:meth:`RRDBSFT.steps` is the forward as a step generator (:mod:`cmosx.models.gia`): a prior GIA with a
global channel pool asks for its means over the whole image before the trunk runs.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmosx.models.gia import GIA, PoolAnswer, PoolRequest, run_steps
from cmosx.models.specs import SRSpec
from cmosx.ops.fused_conv import ConvChain, conv_add, dense_conv
from cmosx.ops.grid import grid_downsample, grid_upsample


def _conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs (growth ``gc``), LeakyReLU 0.2, output scaled by 0.2 plus input."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(nf + k * gc, gc) for k in range(4))
        self.last = _conv(nf + 4 * gc, nf)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(dense_conv(conv, feats, "leaky_relu", 0.2))  # lrelu(conv(cat(feats)))
        return dense_conv(self.last, feats, other=x, scale=0.2)  # x + 0.2 * last(cat(feats))


class SFTLayer(nn.Module):
    """Spatial feature transform: ``feat * sigmoid(scale([feat, p])) + shift([feat, p])``."""

    def __init__(self, nf: int, hidden: int) -> None:
        super().__init__()
        self.scale = ConvChain(_conv(2 * nf, hidden), nn.LeakyReLU(0.2, inplace=True), _conv(hidden, nf))
        self.shift = ConvChain(_conv(2 * nf, hidden), nn.LeakyReLU(0.2, inplace=True), _conv(hidden, nf))

    def forward(self, feat: Tensor, prior: Tensor) -> Tensor:
        joined = torch.cat([feat, prior], dim=1)
        return torch.addcmul(self.shift(joined), feat, torch.sigmoid_(self.scale(joined)))  # one pass


class RRDBSFTBlock(nn.Module):
    """SFT, then three residual dense blocks, then ``0.2 * out + in``."""

    def __init__(self, nf: int, gc: int, hidden: int) -> None:
        super().__init__()
        self.sft = SFTLayer(nf, hidden)
        self.rdbs = nn.Sequential(*[ResidualDenseBlock(nf, gc) for _ in range(3)])

    def forward(self, x: Tensor, prior: Tensor) -> Tensor:
        return torch.add(x, self.rdbs(self.sft(x, prior)), alpha=0.2)


def labels_to_probabilities(labels: Tensor, num_classes: int) -> Tensor:
    """``B x H x W`` int64 labels (255 = ignore) -> ``B x C x H x W`` one-hot float, all-zero at ignore."""
    valid = (labels >= 0) & (labels < num_classes)
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).to(torch.float32)
    return onehot * valid.unsqueeze(1).to(torch.float32)


def maps_to_lr(blur_hr: Tensor, semantic_hr: Tensor, scale: int) -> tuple[Tensor, Tensor]:
    """HR maps -> LR maps on the subsampling grid (:func:`cmosx.ops.grid.grid_downsample`): blur
    ``B x 1 x H x W`` (sigma in HR px) and probabilities ``B x C x H x W``; H and W multiples of ``scale``."""
    return grid_downsample(blur_hr, scale), grid_downsample(semantic_hr, scale)


class RRDBSFT(nn.Module):
    """forward(lr, blur_lr, semantic_lr) -> SR image ``B x 3 x (scale h) x (scale w)`` (not clamped).

    lr: B x 3 x h x w in [0, 1]; blur_lr: B x 1 x h x w sigma in HR px; semantic_lr: B x C x h x w
    class probabilities.
    """

    def __init__(self, spec: SRSpec, num_classes: int, scale: int = 4) -> None:
        super().__init__()
        self.spec, self.num_classes, self.scale = spec, num_classes, scale
        nf = spec.nf
        self.blur_embed = _conv(1, nf)
        if spec.semantic_input == "probabilities":
            self.semantic_embed: nn.Module = nn.Conv2d(num_classes, nf, 1)
        else:  # the authors' input: one float channel holding the class index
            self.semantic_embed = _conv(1, nf)
        self.prior = GIA(nf, nf, spec.groups, spec.gia, num_outputs=1)
        self.conv_first = _conv(3, nf)
        self.blocks = nn.ModuleList(RRDBSFTBlock(nf, spec.gc, spec.sft_hidden) for _ in range(spec.nb))
        self.trunk_conv = _conv(nf, nf)
        self.upsample = _conv(nf, 3 * scale * scale)
        if spec.residual == "bilinear":  # start close to the skip path: a small correction
            with torch.no_grad():
                self.upsample.weight.mul_(0.1)
                self.upsample.bias.zero_()

    def prior_steps(self, blur_lr: Tensor, semantic_lr: Tensor) -> Generator[PoolRequest, PoolAnswer, Tensor]:
        """The fused condition ``B x nf x h x w`` shared by every block, as steps."""
        if self.spec.semantic_input == "indices":
            semantic_lr = semantic_lr.argmax(dim=1, keepdim=True).to(blur_lr.dtype)
        blur = self.blur_embed(blur_lr * self.spec.blur_scale)
        return (yield from self.prior.steps(blur, self.semantic_embed(semantic_lr)))

    def make_prior(self, blur_lr: Tensor, semantic_lr: Tensor, pooled: Sequence[PoolAnswer] | None = None) -> Tensor:
        """The fused condition ``B x nf x h x w`` shared by every block (``pooled`` as in :meth:`forward`)."""
        return run_steps(self.prior_steps(blur_lr, semantic_lr), pooled)

    def forward(
        self, lr: Tensor, blur_lr: Tensor, semantic_lr: Tensor, pooled: Sequence[PoolAnswer] | None = None
    ) -> Tensor:
        """``pooled``: the answers to the global pool requests (whole-image means), for a tile."""
        return run_steps(self.steps(lr, blur_lr, semantic_lr), pooled)

    def steps(self, lr: Tensor, blur_lr: Tensor, semantic_lr: Tensor) -> Generator[PoolRequest, PoolAnswer, Tensor]:
        """:meth:`forward` as steps (see the module docstring)."""
        prior = yield from self.prior_steps(blur_lr, semantic_lr)
        fea = self.conv_first(lr)
        trunk = fea
        for block in self.blocks:
            trunk = block(trunk, prior)
        fea = conv_add(self.trunk_conv, trunk, fea)
        out = F.pixel_shuffle(self.upsample(fea), self.scale)
        if self.spec.residual == "bilinear":
            out = out + grid_upsample(lr, self.scale).to(out.dtype)
        return out
