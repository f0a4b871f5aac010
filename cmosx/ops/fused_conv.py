"""Convolutions with the activation or residual sum after them fused in (oneDNN post-ops), for CPU inference.

Outside the convolutions, a network on the CPU spends much of its time on passes over whole feature
maps: a LeakyReLU after each dense-block conv, residual additions, ReLUs after HRNet blocks. oneDNN
applies these inside the convolution, while its output is still in cache ("post-ops"); PyTorch exposes
that as ``torch.ops.mkldnn._convolution_pointwise`` (the kernels its own compiler calls). Measured on a
2-core Xeon with AMX, bf16 channels-last at 240 x 320, best of 7: a 3x3 conv 96 -> 32 with LeakyReLU
3.5 -> 2.8 ms, a 3x3 conv 192 -> 64 plus a residual 13.5 -> 9.5 ms, an HRNet basic block 2.3 -> 1.7 ms.

Each function here computes exactly what its docstring says with plain PyTorch ops, and takes the fused
kernel only when it applies: no autograd (inference or ``torch.no_grad``), a CPU tensor, float32 or
bfloat16 (the autocast type when autocast is on, as ``F.conv2d`` would use), a plain zero-padded 2-D
convolution, and fusion not switched off (:func:`fusion_disabled`). Whatever needs gradients (training)
runs the plain ops; both paths agree to float rounding (tested). The kernels are PyTorch internals
(underscored names): where a PyTorch build lacks them, the plain ops run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_FUSABLE_DTYPES = (torch.float32, torch.bfloat16)
_mkldnn = torch.ops.mkldnn  # the fused kernels; one name, so a test can count the calls
_HAVE_KERNELS = all(hasattr(_mkldnn, name) for name in ("_convolution_pointwise", "_convolution_pointwise_"))
_state = threading.local()


@contextlib.contextmanager
def fusion_disabled() -> Iterator[None]:
    """Run the plain ops inside this block (for benchmarks and tests comparing both paths)."""
    previous = getattr(_state, "disabled", False)
    _state.disabled = True
    try:
        yield
    finally:
        _state.disabled = previous


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The type ``F.conv2d`` would compute ``x`` in: autocast's on the CPU when it is on, else ``x``'s."""
    if torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return x.dtype


def _fusable_input(x: Tensor, *others: Tensor) -> torch.dtype | None:
    """The dtype to run a fused kernel on ``x`` (and ``others``: weights, residuals) in, or None when the
    plain ops must run."""
    if getattr(_state, "disabled", False) or x.device.type != "cpu" or x.dim() != 4:
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, *others)):
        return None  # the fused kernels have no backward
    if not (_HAVE_KERNELS and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return None
    dtype = _compute_dtype(x)
    return dtype if dtype in _FUSABLE_DTYPES else None


def _fusable(conv: nn.Conv2d, x: Tensor, norm: nn.Module | None, *others: Tensor) -> torch.dtype | None:
    """The dtype to run ``conv``'s fused kernel in, or None when the plain ops must run."""
    if norm is not None and not isinstance(norm, nn.Identity):
        return None  # a BatchNorm between the conv and the rest (not folded: training)
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    return _fusable_input(x, *[p for p in conv.parameters(recurse=False)], *others)


def _stamp(t: Tensor) -> tuple[int, int]:
    """Changes when ``t`` is changed in place or replaced (an inference tensor has no version counter)."""
    return (-1 if t.is_inference() else t._version), t.data_ptr()


def _weights(
    conv: nn.Conv2d, dtype: torch.dtype, scale: float, split: tuple[int, ...] | None = None
) -> tuple[list[Tensor], Tensor | None]:
    """``conv``'s weight times ``scale`` in ``dtype`` (split along the input channels into ``split``
    parts, each contiguous), and its bias likewise. Kept on the module (a plain attribute, not in the
    state dict) while the parameters are unchanged: casting every call cost about 7 % of CMOS's time."""
    bias = conv.bias
    stamp = tuple(_stamp(t) for t in (conv.weight, bias) if t is not None)
    key = (dtype, scale, split)
    cache = conv.__dict__.setdefault("_fused_weights", {})
    hit = cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    with torch.no_grad():
        weight = conv.weight * scale if scale != 1.0 else conv.weight
        parts = weight.split(list(split), dim=1) if split is not None else [weight]
        weights = [part.to(dtype).contiguous() for part in parts]
        if bias is not None:
            bias = (bias * scale if scale != 1.0 else bias).to(dtype)
    cache[key] = (stamp, (weights, bias))
    return weights, bias


def _geometry(conv: nn.Conv2d) -> tuple[list[int], list[int], list[int], int]:
    return list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups


def _plain(conv: nn.Conv2d, x: Tensor, norm: nn.Module | None) -> Tensor:
    return conv(x) if norm is None else norm(conv(x))


def _activate_(out: Tensor, act: str, slope: float) -> Tensor:
    """``act`` applied to ``out`` in place (a tensor the caller owns)."""
    if act == "relu":
        return F.relu(out, inplace=True)
    return F.leaky_relu(out, slope, inplace=True) if act == "leaky_relu" else out


def conv_act(
    conv: nn.Conv2d, x: Tensor, act: str = "none", slope: float = 0.2, norm: nn.Module | None = None
) -> Tensor:
    """``act(norm(conv(x)))``; ``act``: ``"none"``, ``"relu"`` or ``"leaky_relu"`` (negative ``slope``).

    x: ``B x C_in x H x W`` -> ``B x C_out x H' x W'``, a new tensor. ``norm``: the BatchNorm after the
    conv, or ``nn.Identity`` once folded into it, or None; fused only without one.
    """
    dtype = _fusable(conv, x, norm)
    if dtype is None:
        return _activate_(_plain(conv, x, norm), act, slope)
    (weight,), bias = _weights(conv, dtype, 1.0)
    scalars = [slope] if act == "leaky_relu" else []
    return _mkldnn._convolution_pointwise(x.to(dtype), weight, bias, *_geometry(conv), act, scalars, "")


def conv_add(
    conv: nn.Conv2d,
    x: Tensor,
    other: Tensor,
    scale: float = 1.0,
    relu: bool = False,
    norm: nn.Module | None = None,
) -> Tensor:
    """``other + scale * norm(conv(x))``, then ReLU when ``relu``; a new tensor (``other`` is not changed).

    ``other`` has the shape of ``conv(x)``; ``norm`` as in :func:`conv_act`.
    """
    dtype = _fusable(conv, x, norm, other)
    if dtype is None:
        out = _plain(conv, x, norm)
        out = torch.add(other, out, alpha=scale) if scale != 1.0 else other + out
        return F.relu(out, inplace=True) if relu else out
    (weight,), bias = _weights(conv, dtype, scale)
    return _mkldnn._convolution_pointwise.binary(
        x.to(dtype), other.to(dtype), weight, bias, *_geometry(conv), "add", 1.0, "relu" if relu else None, [], None
    )


def dense_conv(
    conv: nn.Conv2d,
    pieces: list[Tensor],
    act: str = "none",
    slope: float = 0.2,
    other: Tensor | None = None,
    scale: float = 1.0,
) -> Tensor:
    """``act(conv(torch.cat(pieces, 1)))``, or with ``other``: ``other + scale * conv(cat(pieces))``
    (then ``act``); a new tensor. The convolution of a dense block's growing concatenation.

    Fused, the concatenation is never built: conv(cat(p_j)) = sum_j conv_j(p_j) with conv_j the weight's
    input channels of piece j, so the first piece's conv writes the output (with the bias, or added to
    ``other``) and each further piece's conv adds into it inside the kernel; ``act`` is one pass at the
    end. The sum is rounded to the compute type after each piece (bf16: a few units in the last place
    more than one conv). Paper-spec dense block, bf16 at 240 x 320 on a 2-core Xeon with AMX: 27-31 ms
    with the concatenations, 19-22 ms without.
    """
    dtype = _fusable(conv, pieces[0], None, *pieces[1:], *([] if other is None else [other]))
    if dtype is None or len(pieces) == 1:
        joined = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
        if other is None:
            return conv_act(conv, joined, act, slope)
        return _activate_(conv_add(conv, joined, other, scale), act, slope)
    weights, bias = _weights(conv, dtype, scale, tuple(p.shape[1] for p in pieces))
    geometry = _geometry(conv)
    first = pieces[0].to(dtype)
    if other is None:
        out = _mkldnn._convolution_pointwise(first, weights[0], bias, *geometry, "none", [], "")
    else:
        out = _mkldnn._convolution_pointwise.binary(
            first, other.to(dtype), weights[0], bias, *geometry, "add", 1.0, None, [], None
        )
    for piece, weight in zip(pieces[1:], weights[1:], strict=True):
        _mkldnn._convolution_pointwise_.binary(
            out, piece.to(dtype), weight, None, *geometry, "add", 1.0, None, [], None
        )
    return _activate_(out, act, slope)


def accumulate_conv_(acc: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """``acc += F.conv2d(x, weight)`` in place (stride 1, no padding, no bias: a 1x1 projection); returns
    ``acc``. x: ``B x C_in x H x W``, weight: ``C_out x C_in x 1 x 1``, acc: ``B x C_out x H x W``."""
    dtype = _fusable_input(x, weight, acc)
    layout_ok = acc.is_contiguous() or acc.is_contiguous(memory_format=torch.channels_last)
    if dtype is None or acc.dtype != dtype or not layout_ok:
        return acc.add_(F.conv2d(x, weight))
    return _mkldnn._convolution_pointwise_.binary(
        acc, x.to(dtype), weight.to(dtype), None, [0, 0], [1, 1], [1, 1], 1, "add", 1.0, None, [], None
    )


class ConvChain(nn.Sequential):
    """An ``nn.Sequential`` of convolutions, BatchNorms and (Leaky)ReLUs whose forward runs each
    convolution together with the activation right after it (:func:`conv_act`), once BatchNorm has been
    folded into the convolution (the engine's copies) or where there is none. Same parameters and
    state-dict keys as the ``nn.Sequential`` it replaces; same output.
    """

    def forward(self, x: Tensor) -> Tensor:
        layers, k = list(self), 0
        while k < len(layers):
            layer = layers[k]
            if not isinstance(layer, nn.Conv2d):
                x, k = layer(x), k + 1
                continue
            k += 1
            norm = None
            if k < len(layers) and isinstance(layers[k], (nn.BatchNorm2d, nn.Identity)):
                norm, k = layers[k], k + 1
            act, slope = "none", 0.0
            if k < len(layers) and isinstance(layers[k], (nn.ReLU, nn.LeakyReLU)):
                act = "relu" if isinstance(layers[k], nn.ReLU) else "leaky_relu"
                slope, k = getattr(layers[k], "negative_slope", 0.0), k + 1
            x = conv_act(layer, x, act, slope, norm)
        return x
