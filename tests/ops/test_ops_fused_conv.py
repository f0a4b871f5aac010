"""The fused convolutions (oneDNN post-ops) equal the plain ops, and step aside where they do not apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cmosx.models.fuse import fold_batchnorm
from cmosx.models.random_init import random_model
from cmosx.ops import fused_conv
from cmosx.ops.fused_conv import ConvChain, accumulate_conv_, conv_act, conv_add, fusion_disabled

CL = torch.channels_last


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, bias: bool = True, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias).eval()


def _input(c: int, h: int = 20, w: int = 28, channels_last: bool = True, seed: int = 1) -> torch.Tensor:
    x = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=CL) if channels_last else x


class _Spy:
    """Counts calls of the fused kernels (so a test fails if the fused path silently never runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        spy = self

        class Counted:
            def __init__(self, op) -> None:
                self.op = op

            def __call__(self, *args, **kwargs):
                spy.calls += 1
                return self.op(*args, **kwargs)

            def __getattr__(self, name):
                return Counted(getattr(self.op, name))

        monkeypatch.setattr(fused_conv, "_mkldnn", Counted(torch.ops.mkldnn))


def _both(fn):
    """``fn()`` with fusion on and off (inference mode)."""
    with torch.inference_mode():
        fused = fn()
        with fusion_disabled():
            plain = fn()
    return fused, plain


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("act", ["none", "relu", "leaky_relu"])
def test_conv_act_equals_plain_ops_fp32(act: str, channels_last: bool, monkeypatch) -> None:
    conv, x = _conv(12, 8), _input(12, channels_last=channels_last)
    spy = _Spy(monkeypatch)
    fused, plain = _both(lambda: conv_act(conv, x, act, 0.2))
    assert spy.calls == 1
    expected = conv(x)
    expected = {"none": expected, "relu": F.relu(expected), "leaky_relu": F.leaky_relu(expected, 0.2)}[act]
    torch.testing.assert_close(plain, expected.detach())
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


def test_strided_conv_and_bf16_autocast_match_the_plain_path(monkeypatch) -> None:
    conv, x = _conv(6, 10, stride=2), _input(6, 21, 30)
    spy = _Spy(monkeypatch)
    with torch.autocast("cpu", torch.bfloat16):
        fused, plain = _both(lambda: conv_act(conv, x, "relu"))
    assert spy.calls == 1
    assert fused.dtype == plain.dtype == torch.bfloat16 and fused.shape == plain.shape == (1, 10, 11, 15)
    torch.testing.assert_close(fused.float(), plain.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("relu", [False, True])
def test_conv_add_equals_other_plus_scaled_conv(relu: bool, monkeypatch) -> None:
    conv, x, other = _conv(16, 8), _input(16), _input(8, seed=3)
    before = other.clone()
    spy = _Spy(monkeypatch)
    fused, plain = _both(lambda: conv_add(conv, x, other, scale=0.2, relu=relu))
    assert spy.calls == 1
    expected = other + 0.2 * conv(x).detach()
    torch.testing.assert_close(plain, F.relu(expected) if relu else expected)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(other, before), "conv_add must not change its residual"


def test_accumulate_conv_adds_in_place(monkeypatch) -> None:
    torch.manual_seed(4)
    weight = torch.randn(9, 5, 1, 1)
    x, acc = _input(5), _input(9, seed=5)
    spy = _Spy(monkeypatch)
    with torch.inference_mode():
        fused_acc = acc.clone()
        returned = accumulate_conv_(fused_acc, x, weight)
        with fusion_disabled():
            plain_acc = accumulate_conv_(acc.clone(), x, weight)
    assert spy.calls == 1 and returned.data_ptr() == fused_acc.data_ptr()
    torch.testing.assert_close(plain_acc, acc + F.conv2d(x, weight))
    torch.testing.assert_close(fused_acc, plain_acc, rtol=1e-5, atol=1e-5)


def test_no_fusion_where_gradients_are_needed_or_batchnorm_is_not_folded(monkeypatch) -> None:
    spy = _Spy(monkeypatch)
    conv, x = _conv(4, 4), _input(4)
    out = conv_act(conv, x, "relu")  # grad enabled, trainable weights: plain ops, differentiable
    out.sum().backward()
    assert conv.weight.grad is not None
    frozen = _conv(4, 4).requires_grad_(False)
    x_grad = x.clone().requires_grad_(True)
    conv_add(frozen, x, x_grad).sum().backward()  # the residual needs a gradient
    assert x_grad.grad is not None
    with torch.inference_mode():
        bn = nn.BatchNorm2d(4).eval()
        bn.running_mean.fill_(0.5)
        out = conv_act(conv, x, "relu", norm=bn)
        torch.testing.assert_close(out, F.relu(bn(conv(x))))
    assert spy.calls == 0


def test_conv_chain_keeps_sequential_keys_and_output() -> None:
    torch.manual_seed(6)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.LeakyReLU(0.01), nn.Conv2d(8, 4, 1), nn.ReLU()]
    chain, seq = ConvChain(*layers).eval(), nn.Sequential(*layers).eval()
    assert list(chain.state_dict()) == list(seq.state_dict())
    for bn in (m for m in chain if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
    x = _input(3)
    with torch.inference_mode():
        expected = seq(x)
        torch.testing.assert_close(chain(x), expected)  # BatchNorm present: plain
        folded = fold_batchnorm(chain)
        assert isinstance(folded[1], nn.Identity)
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-5)  # folded: fused


@pytest.mark.parametrize("spec", ["tiny", "lite"])
def test_networks_fused_equal_plain(spec: str, monkeypatch) -> None:
    """Both networks, BatchNorm folded as the engine runs them: fused == plain ops, fp32 and bf16."""
    model = random_model(spec)
    cmos = fold_batchnorm(model.cmos).to(memory_format=CL)
    sr = fold_batchnorm(model.sr).to(memory_format=CL)
    g = torch.Generator().manual_seed(7)
    lr = torch.rand(1, 3, 40, 48, generator=g).contiguous(memory_format=CL)
    blur = torch.rand(1, 1, 40, 48, generator=g).contiguous(memory_format=CL)
    semantic = torch.softmax(torch.randn(1, model.card.num_classes, 40, 48, generator=g), 1).contiguous(
        memory_format=CL
    )
    spy = _Spy(monkeypatch)
    fused, plain = _both(lambda: (cmos(lr).blur_lr, cmos(lr).logits_lr, sr(lr, blur, semantic)))
    assert spy.calls > 20
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    with torch.autocast("cpu", torch.bfloat16):
        fused16, _ = _both(lambda: (sr(lr, blur, semantic),))
    err = (fused16[0].float() - plain[2]).abs().max()
    assert err < 0.05 * float(plain[2].abs().max())


@pytest.mark.parametrize("act", ["none", "relu", "leaky_relu"])
@pytest.mark.parametrize("with_other", [False, True])
def test_dense_conv_equals_conv_of_the_concatenation(act: str, with_other: bool, monkeypatch) -> None:
    pieces = [_input(6, seed=10), _input(3, seed=11), _input(3, seed=12)]
    conv, other = _conv(12, 5, seed=13), _input(5, seed=14)
    kwargs = {"other": other, "scale": 0.2} if with_other else {}
    spy = _Spy(monkeypatch)
    fused, plain = _both(lambda: fused_conv.dense_conv(conv, pieces, act, 0.2, **kwargs))
    assert spy.calls == 3  # one kernel per piece, no concatenation
    expected = conv(torch.cat(pieces, 1)).detach()
    if with_other:
        expected = other + 0.2 * expected
    expected = {"none": expected, "relu": F.relu(expected), "leaky_relu": F.leaky_relu(expected, 0.2)}[act]
    torch.testing.assert_close(plain, expected)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


def test_cast_weights_follow_changes_of_the_parameters() -> None:
    conv, x = _conv(4, 4), _input(4)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        first = conv_act(conv, x).float()
    with torch.no_grad():
        conv.weight.mul_(2.0)  # in place: a cached bf16 copy must not be reused
        conv.bias.mul_(2.0)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        second = conv_act(conv, x).float()
    torch.testing.assert_close(second, 2 * first, rtol=1e-2, atol=1e-2)
