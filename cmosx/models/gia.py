"""GIA: Grouping Interactive Attention between any two feature maps (paper Sec. 4.2).

``GIA(x1, x2)`` first aligns ``x1`` to ``x2`` (channels and resolution) with a learned flow field
(SFNet style, ``grid_sample``), then lets the two features adjust each other in two parallel streams:

- channel stream: pooled channel vectors, grouped into ``r`` groups, an ``r x r`` affinity, an MLP and
  a gate ``sigmoid(A_o + beta * A_a)`` with ``beta`` initialised to 0;
- spatial stream: windows of 15 x 20 pixels, the ``N x N`` affinity of each window pair reduced by a
  1x1 conv ``N -> 1``, a gate ``sigmoid(M_o + alpha * M_a)`` with ``alpha`` initialised to 0.

The outputs ``out_k = CB3x3(concat[channel_k, spatial_k])`` are returned as a pair or summed.

Ours (differences from the authors' code, see the technical notes):
- the pooled channel vector goes through a biased 1x1 conv instead of conv + BatchNorm, so training at
  batch size 1 works (BatchNorm on a 1 x 1 map has one value per channel);
- ``N -> 1`` reduction of the affinity is computed as ``<w1_i, sum_j a_j w2_j>``, which equals the
  1x1 conv over the ``N x N`` matrix exactly but costs O(N C) instead of O(N^2 C);
- ``channel_pool="window"`` averages per window instead of globally, so outputs stay local (tiling).

Global pooling as steps. With ``channel_pool="global"`` the channel stream needs the mean of two
feature maps over the whole image. The networks are therefore also written as *step generators*
(``steps(...)``): each global pool yields a :data:`PoolRequest` (its two ``B x C x h x w`` feature maps)
and is sent back their means (``B x C x 1 x 1`` each, or ``1 x C x 1 x 1`` shared by the batch).
:func:`run_steps` answers with the maps' own means (the plain forward) or with given means, which is
how the engine runs tiles of one photo with the whole photo's statistics
(:mod:`cmosx.engine.global_pool`); :func:`count_pool_requests` says how many requests a network makes.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmosx.errors import ArgumentError
from cmosx.models.specs import GIASpec
from cmosx.ops.fused_conv import ConvChain
from cmosx.ops.padding import crop_to, pad_to_multiple
from cmosx.ops.windows import window_merge, window_split

PoolRequest = tuple[Tensor, ...]
"""Feature maps ``B x C x h x w`` whose means over the whole image a global channel pool needs."""
PoolAnswer = tuple[Tensor, ...]
"""Their means, ``B x C x 1 x 1`` or ``1 x C x 1 x 1`` each (any dtype and device: cast on use)."""
Steps = Generator[PoolRequest, PoolAnswer, Tensor]


def local_means(request: PoolRequest) -> PoolAnswer:
    """Each map's own mean over its height and width: the answer of an untiled run."""
    return tuple(f.mean(dim=(2, 3), keepdim=True) for f in request)


def run_steps(steps: Generator[PoolRequest, PoolAnswer, object], pooled: Sequence[PoolAnswer] | None = None):
    """Drive a step generator to its result: the k-th pool request gets ``pooled[k]`` when given, else
    :func:`local_means` of its own maps (then this equals the plain forward)."""
    k = 0
    try:
        request = next(steps)
        while True:
            if pooled is not None and k >= len(pooled):
                raise ArgumentError(f"the network made more pool requests than the {len(pooled)} answers given")
            answer = local_means(request) if pooled is None else pooled[k]
            k += 1
            request = steps.send(answer)
    except StopIteration as done:
        result = done.value
    if pooled is not None and k != len(pooled):
        raise ArgumentError(f"the network made {k} pool requests but {len(pooled)} answers were given")
    return result


def count_pool_requests(net: nn.Module) -> int:
    """How many pool requests one forward of ``net`` makes (its global channel pools)."""
    return sum(1 for m in net.modules() if isinstance(m, ChannelStream) and m.pool == "global")


def conv_bn(in_ch: int, out_ch: int, kernel: int, act: bool) -> ConvChain:
    """CBL (conv without bias + BatchNorm + LeakyReLU 0.01) when ``act``, else CB."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.LeakyReLU(0.01, inplace=True))
    return ConvChain(*layers)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FlowAlign(nn.Module):
    """Warp ``x1`` (``c_l`` ch) onto the grid of ``x2`` (``c_h`` ch) with a learned flow; out: ``c_h`` ch.

    The flow is in pixels of ``x2``'s grid; its predictor starts at zero, so an untrained module
    is a plain bilinear resize followed by a 3x3 conv.
    """

    def __init__(self, c_l: int, c_h: int) -> None:
        super().__init__()
        self.down_l = nn.Conv2d(c_l, c_h, 1, bias=False)
        self.down_h = nn.Conv2d(c_h, c_h, 1, bias=False)
        self.flow = nn.Conv2d(2 * c_h, 2, 3, padding=1, bias=False)
        nn.init.zeros_(self.flow.weight)
        self.out = conv_bn(c_l, c_h, 3, act=False)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        size = (x2.shape[-2], x2.shape[-1])
        low = _resize(self.down_l(x1), size)
        flow = self.flow(torch.cat([self.down_h(x2), low], dim=1))  # B x 2 x h x w
        return self.out(warp(x1, flow))


def warp(x: Tensor, flow: Tensor) -> Tensor:
    """Sample ``x`` (any size) at the pixel centres of ``flow``'s grid shifted by ``flow`` (pixels).

    With zero flow this is exactly bilinear resizing with ``align_corners=False``. Borders replicate.
    """
    B, _, h, w = flow.shape
    ys = (torch.arange(h, device=flow.device, dtype=torch.float32) + 0.5) * (2.0 / h) - 1.0
    xs = (torch.arange(w, device=flow.device, dtype=torch.float32) + 0.5) * (2.0 / w) - 1.0
    base_y, base_x = torch.meshgrid(ys, xs, indexing="ij")
    scale = torch.tensor([2.0 / w, 2.0 / h], device=flow.device, dtype=torch.float32)
    grid = torch.stack([base_x, base_y], dim=-1).unsqueeze(0) + flow.float().permute(0, 2, 3, 1) * scale
    out = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)  # grid_sample returns NCHW on the CPU
    return out


class ResizeAlign(nn.Module):
    """Alignment of the ``none`` ablation: a 1x1 projection (if channels differ) and a bilinear resize."""

    def __init__(self, c_l: int, c_h: int) -> None:
        super().__init__()
        self.proj = conv_bn(c_l, c_h, 1, act=False) if c_l != c_h else nn.Identity()

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return _resize(self.proj(x1), (x2.shape[-2], x2.shape[-1]))


def _window_gate_to_pixels(gate: Tensor, window: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """``B x C x nh x nw`` per-window values -> ``B x C x H x W`` (each window filled, then cropped)."""
    B, C, nh, nw = gate.shape
    wh, ww = window
    full = gate[:, :, :, None, :, None].expand(B, C, nh, wh, nw, ww).reshape(B, C, nh * wh, nw * ww)
    return crop_to(full, *size)


def _pointwise(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A 1x1 ``conv`` of ``x``; on a 1 x 1 map (global pooling) as a matrix product, which skips the
    convolution setup that dominates at that size."""
    if x.shape[-2:] != (1, 1):
        return conv(x)
    return F.linear(x.flatten(1), conv.weight.flatten(1), conv.bias)[:, :, None, None]


class ChannelStream(nn.Module):
    """Channel grouping interaction for a pair of ``C``-channel maps with ``r`` groups."""

    def __init__(self, channels: int, groups: int, pool: str, window: tuple[int, int]) -> None:
        super().__init__()
        self.groups, self.pool, self.window = groups, pool, window
        self.feat = nn.ModuleList([conv_bn(channels, channels, 3, act=True) for _ in range(2)])
        self.own = nn.ModuleList([nn.Conv2d(channels, channels, 1) for _ in range(2)])
        self.mlp = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(groups * groups, channels, 1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(channels, channels, 1),
                    nn.ReLU(inplace=True),
                )
                for _ in range(2)
            ]
        )
        self.beta = nn.Parameter(torch.zeros(2))
        self.out = nn.ModuleList([conv_bn(channels, channels, 3, act=False) for _ in range(2)])

    def _window_pooled(self, feat: Tensor) -> Tensor:
        padded = pad_to_multiple(feat, self.window, "reflect")
        return F.avg_pool2d(padded, self.window, self.window)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        return run_steps(self.steps(x1, x2))

    def steps(self, x1: Tensor, x2: Tensor) -> Generator[PoolRequest, PoolAnswer, tuple[Tensor, Tensor]]:
        """:meth:`forward` as steps: a global pool yields both feature maps for their means."""
        feats = [self.feat[0](x1), self.feat[1](x2)]
        if self.pool == "global":
            answer = yield (feats[0], feats[1])
            pooled = [p.to(device=f.device, dtype=f.dtype) for p, f in zip(answer, feats, strict=True)]
        else:
            pooled = [self._window_pooled(f) for f in feats]
        own = [_pointwise(self.own[k], pooled[k]) for k in range(2)]  # B x C x nh x nw
        B, C, nh, nw = own[0].shape
        r = self.groups
        g1 = own[0].reshape(B, r, C // r, nh, nw)
        g2 = own[1].reshape(B, r, C // r, nh, nw)
        fuse = torch.einsum("bidhw,bjdhw->bijhw", g2, g1)  # B x r x r x nh x nw (G2 G1^T)
        fused = [fuse.reshape(B, r * r, nh, nw), fuse.transpose(1, 2).reshape(B, r * r, nh, nw)]
        outs = []
        for k in range(2):
            mlp = _pointwise(self.mlp[k][2], _pointwise(self.mlp[k][0], fused[k]).relu_()).relu_()
            gate = torch.sigmoid(own[k] + self.beta[k] * mlp)
            if self.pool == "window":
                gate = _window_gate_to_pixels(gate, self.window, (feats[k].shape[-2], feats[k].shape[-1]))
            outs.append(self.out[k](feats[k] * gate))
        return outs[0], outs[1]


class SpatialStream(nn.Module):
    """Spatial grouping interaction: per-window ``N x N`` affinities (N = wh * ww pixels)."""

    def __init__(self, channels: int, window: tuple[int, int]) -> None:
        super().__init__()
        self.window = window
        n = window[0] * window[1]
        self.feat = nn.ModuleList([conv_bn(channels, channels, 3, act=True) for _ in range(2)])
        self.win = nn.ModuleList([conv_bn(channels, channels, 3, act=True) for _ in range(2)])
        self.own = nn.ModuleList([nn.Conv2d(channels, 1, 1) for _ in range(2)])
        self.reduce = nn.ModuleList([nn.Conv2d(n, 1, 1) for _ in range(2)])  # N -> 1 over the affinity
        self.alpha = nn.Parameter(torch.zeros(2))
        self.smooth = nn.ModuleList([conv_bn(channels, channels, 3, act=False) for _ in range(2)])

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        B, _, H, W = x1.shape
        feats = [self.feat[0](x1), self.feat[1](x2)]
        padded = [pad_to_multiple(f, self.window, "reflect") for f in feats]
        Hp, Wp = padded[0].shape[-2:]
        windows = [window_split(p, self.window) for p in padded]  # Bn x C x wh x ww
        w = [self.win[k](windows[k]).flatten(2) for k in range(2)]  # Bn x C x N
        # adjusting maps: M_a^1[i] = sum_j a_j <w1_i, w2_j>, M_a^2[j] = sum_i c_i <w1_i, w2_j>
        adjust = []
        for k in range(2):
            other = w[1 - k]
            weight = self.reduce[k].weight.reshape(-1).to(other.dtype)  # N
            pooled = torch.einsum("bcn,n->bc", other, weight)
            adjust.append(torch.einsum("bcn,bc->bn", w[k], pooled) + self.reduce[k].bias.to(other.dtype))
        outs = []
        for k in range(2):
            m_own = self.own[k](windows[k])  # Bn x 1 x wh x ww
            m_adj = adjust[k].reshape(m_own.shape)
            gated = windows[k] * torch.sigmoid(m_own + self.alpha[k] * m_adj)
            merged = crop_to(window_merge(gated, B, Hp, Wp), H, W)
            outs.append(self.smooth[k](merged))
        return outs[0], outs[1]


class GIA(nn.Module):
    """Grouping Interactive Attention of ``x1`` (``in1`` ch, any size) and ``x2`` (``in2`` ch).

    forward(x1, x2) -> (out1, out2), both ``B x in2 x H2 x W2``, or their sum when ``num_outputs == 1``.
    """

    def __init__(self, in1: int, in2: int, groups: int, spec: GIASpec, num_outputs: int = 2) -> None:
        super().__init__()
        if num_outputs not in (1, 2):
            raise ArgumentError("num_outputs must be 1 or 2")
        self.mode, self.num_outputs = spec.mode, num_outputs
        c = in2
        self.align: nn.Module = ResizeAlign(in1, c) if spec.mode == "none" else FlowAlign(in1, c)
        self.channel = ChannelStream(c, groups, spec.channel_pool, spec.window) if "C" in spec.mode else None
        self.spatial = SpatialStream(c, spec.window) if "S" in spec.mode else None
        # one output conv per input; the plain concat of none / F needs only one when the outputs are summed
        n_out = num_outputs if self.channel is None else 2
        self.out = nn.ModuleList([conv_bn(2 * c, c, 3, act=False) for _ in range(n_out)])

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return run_steps(self.steps(x1, x2))

    def steps(self, x1: Tensor, x2: Tensor) -> Generator[PoolRequest, PoolAnswer, Tensor | tuple[Tensor, Tensor]]:
        """:meth:`forward` as steps (one pool request when the channel stream pools globally)."""
        a1 = self.align(x1, x2)
        if self.channel is None:  # none / F: plain concat + conv of the aligned pair
            joined = torch.cat([a1, x2], dim=1)
            outs = [conv(joined) for conv in self.out]
            return outs[0] if self.num_outputs == 1 else (outs[0], outs[1])
        c1, c2 = yield from self.channel.steps(a1, x2)
        s1, s2 = self.spatial(a1, x2) if self.spatial is not None else (a1, x2)
        out1 = self.out[0](torch.cat([c1, s1], dim=1))
        out2 = self.out[1](torch.cat([c2, s2], dim=1))
        return out1 + out2 if self.num_outputs == 1 else (out1, out2)
