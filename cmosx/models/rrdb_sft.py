"""RRDB-SFT: x4 super-resolution conditioned on a blur map and a semantic map (paper Sec. 5).

The blur sigma map and the semantic map (both at LR resolution) are embedded and fused by one GIA into
a prior ``p`` that every RRDB_SFT block reuses through its SFT layer (``feat * scale(p) + shift(p)``).

Ours (see the technical notes, section 4): the prior is computed at LR resolution (the authors compute
it at HR and downsample), and the semantic map enters as class probabilities through a 1x1 embedding;
``semantic_input="indices"`` reproduces the authors' single float channel of class indices.
``residual="bilinear"`` (the lite spec) adds the output to a grid-aligned bilinear upsampling of the LR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmosx.models.gia import GIA
from cmosx.models.specs import SRSpec


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
            feats.append(F.leaky_relu(conv(torch.cat(feats, dim=1)), 0.2))
        return x + 0.2 * self.last(torch.cat(feats, dim=1))


class SFTLayer(nn.Module):
    """Spatial feature transform: ``feat * sigmoid(scale([feat, p])) + shift([feat, p])``."""

    def __init__(self, nf: int, hidden: int) -> None:
        super().__init__()
        self.scale = nn.Sequential(_conv(2 * nf, hidden), nn.LeakyReLU(0.2, inplace=True), _conv(hidden, nf))
        self.shift = nn.Sequential(_conv(2 * nf, hidden), nn.LeakyReLU(0.2, inplace=True), _conv(hidden, nf))

    def forward(self, feat: Tensor, prior: Tensor) -> Tensor:
        joined = torch.cat([feat, prior], dim=1)
        return feat * torch.sigmoid(self.scale(joined)) + self.shift(joined)


class RRDBSFTBlock(nn.Module):
    """SFT, then three residual dense blocks, then ``0.2 * out + in``."""

    def __init__(self, nf: int, gc: int, hidden: int) -> None:
        super().__init__()
        self.sft = SFTLayer(nf, hidden)
        self.rdbs = nn.Sequential(*[ResidualDenseBlock(nf, gc) for _ in range(3)])

    def forward(self, x: Tensor, prior: Tensor) -> Tensor:
        return x + 0.2 * self.rdbs(self.sft(x, prior))


def grid_aligned_upsample(lr: Tensor, scale: int, mode: str = "bilinear") -> Tensor:
    """``B x C x h x w`` -> ``B x C x sh x sw`` bilinear, with HR pixel ``s*i`` exactly on LR pixel ``i``.

    This is the sampling grid of the training LR (direct subsampling keeps every ``s``-th HR pixel
    from 0), so the skip path is already in register with the target. The last row and column are
    extended by replication. ``mode="bicubic"`` interpolates on the same grid (it may overshoot).
    """
    h, w = lr.shape[-2:]
    padded = F.pad(lr, (0, 1, 0, 1), mode="replicate")
    up = F.interpolate(padded, size=(h * scale + 1, w * scale + 1), mode=mode, align_corners=True)
    return up[..., : h * scale, : w * scale]


def labels_to_probabilities(labels: Tensor, num_classes: int) -> Tensor:
    """``B x H x W`` int64 labels (255 = ignore) -> ``B x C x H x W`` one-hot float, all-zero at ignore."""
    valid = (labels >= 0) & (labels < num_classes)
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).to(torch.float32)
    return onehot * valid.unsqueeze(1).to(torch.float32)


def maps_to_lr(blur_hr: Tensor, semantic_hr: Tensor, scale: int) -> tuple[Tensor, Tensor]:
    """Area-downsample HR maps by ``scale``: blur ``B x 1 x H x W`` and probabilities ``B x C x H x W``.

    H and W must be multiples of ``scale``. Averaging keeps sigma in HR pixels and probabilities summing
    to the fraction of non-ignored HR pixels.
    """
    if blur_hr.shape[-1] % scale or blur_hr.shape[-2] % scale:
        raise ValueError(f"maps_to_lr: HR size {tuple(blur_hr.shape[-2:])} is not a multiple of {scale}")
    return F.avg_pool2d(blur_hr, scale), F.avg_pool2d(semantic_hr, scale)


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

    def make_prior(self, blur_lr: Tensor, semantic_lr: Tensor) -> Tensor:
        """The fused condition ``B x nf x h x w`` shared by every block."""
        if self.spec.semantic_input == "indices":
            semantic_lr = semantic_lr.argmax(dim=1, keepdim=True).to(blur_lr.dtype)
        blur = self.blur_embed(blur_lr * self.spec.blur_scale)
        return self.prior(blur, self.semantic_embed(semantic_lr))

    def forward(self, lr: Tensor, blur_lr: Tensor, semantic_lr: Tensor) -> Tensor:
        prior = self.make_prior(blur_lr, semantic_lr)
        fea = self.conv_first(lr)
        trunk = fea
        for block in self.blocks:
            trunk = block(trunk, prior)
        fea = fea + self.trunk_conv(trunk)
        out = F.pixel_shuffle(self.upsample(fea), self.scale)
        if self.spec.residual == "bilinear":
            out = out + grid_aligned_upsample(lr, self.scale).to(out.dtype)
        return out
