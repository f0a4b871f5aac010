"""GIA: window split/merge, the O(N C) affinity reduction, ablation modes, odd sizes, batch 1."""

import pytest
import torch

from cmosx.models.gia import GIA, SpatialStream, warp
from cmosx.models.specs import GIA_MODES, GIASpec
from cmosx.ops.padding import pad_to_multiple
from cmosx.ops.windows import window_merge, window_split

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape", [(1, 3, 15, 20), (2, 5, 30, 60), (1, 1, 45, 40)])
def test_window_merge_is_exact_inverse_of_split(shape):
    x = torch.randn(shape)
    windows = window_split(x, (15, 20))
    assert windows.shape[1:] == (shape[1], 15, 20)
    assert torch.equal(window_merge(windows, shape[0], shape[2], shape[3]), x)


def test_windows_are_row_major_blocks():
    x = torch.randn(2, 3, 30, 60)
    windows = window_split(x, (15, 20))  # 2 x 3 windows per image
    assert windows.shape == (12, 3, 15, 20)
    assert torch.equal(windows[4], x[0, :, 15:30, 20:40])
    assert torch.equal(windows[6 + 2], x[1, :, 0:15, 40:60])


def test_window_split_rejects_sizes_that_are_not_multiples():
    with pytest.raises(ValueError, match="not a multiple"):
        window_split(torch.zeros(1, 1, 16, 20), (15, 20))


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (5, 3), (16, 21), (37, 53)])
def test_pad_to_multiple_any_size(size):
    x = torch.rand(1, 2, *size)
    padded = pad_to_multiple(x, (15, 20), "reflect")
    assert padded.shape[-2] % 15 == 0 and padded.shape[-1] % 20 == 0
    assert torch.equal(padded[..., : size[0], : size[1]], x)


def test_affinity_reduction_equals_explicit_nxn_matrix():
    torch.manual_seed(1)
    stream = SpatialStream(4, (3, 4)).eval()
    w1, w2 = torch.randn(6, 4, 12), torch.randn(6, 4, 12)  # windows x C x N
    a = stream.reduce[0].weight.reshape(-1)
    fuse = torch.einsum("bci,bcj->bij", w1, w2)  # N x N affinity per window
    explicit1 = torch.einsum("bij,j->bi", fuse, a) + stream.reduce[0].bias
    pooled = torch.einsum("bcn,n->bc", w2, a)
    fast1 = torch.einsum("bcn,bc->bn", w1, pooled) + stream.reduce[0].bias
    torch.testing.assert_close(fast1, explicit1, rtol=1e-5, atol=1e-5)
    c = stream.reduce[1].weight.reshape(-1)
    explicit2 = torch.einsum("bij,i->bj", fuse, c) + stream.reduce[1].bias
    fast2 = torch.einsum("bcn,bc->bn", w2, torch.einsum("bcn,n->bc", w1, c)) + stream.reduce[1].bias
    torch.testing.assert_close(fast2, explicit2, rtol=1e-5, atol=1e-5)


def test_zero_flow_warp_is_bilinear_resize():
    x = torch.rand(1, 3, 5, 7)
    flow = torch.zeros(1, 2, 10, 14)
    expected = torch.nn.functional.interpolate(x, size=(10, 14), mode="bilinear", align_corners=False)
    torch.testing.assert_close(warp(x, flow), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", GIA_MODES)
@pytest.mark.parametrize("pool", ["global", "window"])
def test_ablation_modes_build_and_run_with_batch_one_training(mode, pool):
    gia = GIA(6, 4, 2, GIASpec(mode=mode, channel_pool=pool)).train()
    x1, x2 = torch.rand(1, 6, 8, 11), torch.rand(1, 4, 17, 23)  # different size, not window multiples
    out1, out2 = gia(x1, x2)
    assert out1.shape == out2.shape == (1, 4, 17, 23)
    (out1.square().mean() + out2.mean()).backward()
    summed = GIA(4, 4, 2, GIASpec(mode=mode), num_outputs=1)(torch.rand(2, 4, 9, 9), torch.rand(2, 4, 9, 9))
    assert summed.shape == (2, 4, 9, 9)


def test_gates_start_closed_and_are_learnable():
    gia = GIA(4, 4, 2, GIASpec())
    assert torch.equal(gia.channel.beta.detach(), torch.zeros(2))
    assert torch.equal(gia.spatial.alpha.detach(), torch.zeros(2))
    names = {name for name, _ in gia.named_parameters()}
    assert {"channel.beta", "spatial.alpha"} <= names
