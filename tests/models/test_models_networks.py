"""CMOS, RRDB-SFT and BlindSR: shapes at odd sizes, parameter counts, gradients, batch-1 training,
channels_last, bf16 autocast, the descriptor's tiling rule, and specs as data."""

import math

import pytest
import torch

from cmosx.errors import ModelError, UsageError
from cmosx.models.blind import BlindSR
from cmosx.models.cmos import CMOS
from cmosx.models.descriptor import describe
from cmosx.models.random_init import open_neutral_paths
from cmosx.models.rrdb_sft import RRDBSFT, labels_to_probabilities, maps_to_lr
from cmosx.models.specs import GIA_MODES, SPECS, GIASpec, get_spec, spec_from_dict, spec_to_dict
from cmosx.ops.grid import grid_upsample

TINY = SPECS["tiny"]
NUM_CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _tiny_blind(mode="FCS", pool="window", semantic_input="probabilities", residual="none"):
    from dataclasses import replace

    gia = GIASpec(mode=mode, channel_pool=pool)
    cmos = CMOS(replace(TINY.cmos, gia=gia), NUM_CLASSES)
    sr = RRDBSFT(replace(TINY.sr, gia=gia, semantic_input=semantic_input, residual=residual), NUM_CLASSES)
    return BlindSR(cmos, sr)


def _open_gates(model):
    """Make every learnable path contribute (gates start at 0, flow predictors start at zero)."""
    return open_neutral_paths(model, torch.Generator().manual_seed(0), gate=0.5, flow_std=0.1)


def test_open_neutral_paths_opens_gates_flows_and_batchnorm_reproducibly():
    def opened(seed):
        torch.manual_seed(0)  # the rest of the weights
        model = _tiny_blind()
        g = torch.Generator().manual_seed(seed)
        return open_neutral_paths(model, g, gate=0.5, flow_std=0.1, bn_mean_std=0.1, bn_var_range=(0.5, 2.0))

    model = opened(3)
    params = dict(model.named_parameters())
    gates = [p for n, p in params.items() if n.endswith(("alpha", "beta"))]
    flows = [p for n, p in params.items() if n.endswith("flow.weight")]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert gates and flows and norms
    assert all(bool((p == 0.5).all()) for p in gates)
    assert all(float(p.abs().max()) > 0 for p in flows)
    assert all(bool(((m.running_var >= 0.5) & (m.running_var <= 2.0)).all()) for m in norms)
    assert any(float(m.running_mean.abs().max()) > 0 for m in norms)
    again = opened(3).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())


def test_paper_parameter_counts_match_the_notes():
    spec = SPECS["paper"]
    cmos, sr = CMOS(spec.cmos, 40), RRDBSFT(spec.sr, 40)
    assert abs(_count(cmos) / 15.98e6 - 1) < 0.03
    assert abs(_count(sr) / 8.96e6 - 1) < 0.03
    assert abs(_count(cmos.backbone) / 3.86e6 - 1) < 0.03
    assert abs(_count(cmos.gia_m) / 3.91e6 - 1) < 0.03
    assert len([m for m in cmos.modules() if type(m).__name__ == "GIA"]) == 13


@pytest.mark.parametrize("size", [(1, 7), (5, 3), (37, 53), (1, 1)])
def test_blind_sr_shapes_and_dtypes_at_odd_sizes(size):
    model = _tiny_blind().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    h, w = size
    assert out.sr.shape == (2, 3, 4 * h, 4 * w) and out.sr.dtype == torch.float32
    assert out.maps.blur_lr.shape == out.maps.aux_blur_lr.shape == (2, 1, h, w)
    assert out.maps.logits_lr.shape == out.maps.aux_logits_lr.shape == (2, NUM_CLASSES, h, w)
    assert out.maps.blur_hr().shape == (2, 1, 4 * h, 4 * w)
    assert out.maps.logits_hr().shape == (2, NUM_CLASSES, 4 * h, 4 * w)
    assert torch.isfinite(out.sr).all()


def test_every_parameter_gets_a_gradient_and_batch_one_training_step():
    model = _open_gates(_tiny_blind()).train()
    lr = torch.rand(1, 3, 32, 40)
    out = model(lr)
    maps = out.maps
    loss = out.sr.abs().mean() + maps.blur_lr.abs().mean() + maps.logits_lr.square().mean()
    loss = loss + maps.aux_blur_lr.abs().mean() + maps.aux_logits_lr.square().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    before = [p.detach().clone() for p in model.parameters()]
    torch.optim.Adam(model.parameters(), lr=1e-3).step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("mode", GIA_MODES)
def test_ablation_switches_build_and_run_in_both_networks(mode):
    model = _tiny_blind(mode=mode).train()
    out = model(torch.rand(1, 3, 17, 23))
    out.sr.mean().backward()
    assert out.sr.shape == (1, 3, 68, 92)


def test_authors_semantic_input_option():
    model = _tiny_blind(semantic_input="indices").eval()
    assert model.sr.semantic_embed.in_channels == 1
    with torch.no_grad():
        assert model(torch.rand(1, 3, 9, 11)).sr.shape == (1, 3, 36, 44)


def test_channels_last_and_bf16_autocast_match_fp32():
    model = _tiny_blind().eval()
    lr = torch.rand(1, 3, 30, 41)
    with torch.no_grad():
        ref = model(lr).sr
        cl_model = model.to(memory_format=torch.channels_last)
        cl = cl_model(lr.contiguous(memory_format=torch.channels_last)).sr
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = cl_model(lr.contiguous(memory_format=torch.channels_last)).sr
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(bf).all()
    assert (bf.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def _tiled(run, H, W, tile, halo, align, scale):
    """Run ``run(y0, y1, x0, x1)`` on tiles cornered on the ``align`` grid with ``halo`` and stitch the cores."""
    full = None
    for cy in range(0, H, tile[0]):
        for cx in range(0, W, tile[1]):
            cy1, cx1 = min(cy + tile[0], H), min(cx + tile[1], W)
            y0, x0 = max(0, cy - halo) // align[0] * align[0], max(0, cx - halo) // align[1] * align[1]
            part = run(y0, min(H, cy1 + halo), x0, min(W, cx1 + halo))
            if full is None:
                full = torch.zeros(*part.shape[:2], H * scale, W * scale)
            full[..., cy * scale : cy1 * scale, cx * scale : cx1 * scale] = part[
                ..., (cy - y0) * scale : (cy1 - y0) * scale, (cx - x0) * scale : (cx1 - x0) * scale
            ]
    return full


def _psnr(a, b):
    mse = (a - b).square().mean().item()
    return 10 * math.log10((b.max() - b.min()).item() ** 2 / max(mse, 1e-20))


@pytest.mark.parametrize("residual", ["none", "bilinear"])
def test_descriptor_tiling_rule_gives_untiled_result(residual):
    """Tiles cornered on the alignment grid with the descriptor's halo reproduce the whole image."""
    model = _open_gates(_tiny_blind(residual=residual)).eval()
    desc = describe(TINY, NUM_CLASSES)
    assert desc.multiple_of == 1 and desc.exact_tiling and desc.scale == 4
    H, W = 90, 100
    lr = torch.rand(1, 3, H, W)
    blur, sem = torch.rand(1, 1, H, W) * 5, torch.softmax(torch.randn(1, NUM_CLASSES, H, W), 1)
    with torch.no_grad():
        full = model.sr(lr, blur, sem)
        tiled = _tiled(
            lambda y0, y1, x0, x1: model.sr(lr[..., y0:y1, x0:x1], blur[..., y0:y1, x0:x1], sem[..., y0:y1, x0:x1]),
            H,
            W,
            (40, 40),
            desc.halo_lr,
            desc.align_lr,
            4,
        )
    assert _psnr(tiled, full) >= 45


def test_descriptor_tiling_rule_for_cmos():
    """One tile whose top/left edges lie inside the image: its core (halo dropped) equals the whole run."""
    model = _open_gates(_tiny_blind()).eval()
    desc = describe(TINY, NUM_CLASSES)
    assert desc.cmos_align_lr == (120, 160)
    H, W = 440, 560
    core_y, core_x = 2 * 120 + 40, 2 * 160
    y0, x0 = core_y - desc.cmos_halo_lr, core_x - desc.cmos_halo_lr
    assert y0 % 120 == 0 and x0 % 160 == 0
    lr = torch.rand(1, 3, H, W)
    with torch.no_grad():
        full = model.cmos(lr).blur_lr[..., core_y:, core_x:]
        tile = model.cmos(lr[..., y0:, x0:]).blur_lr[..., core_y - y0 :, core_x - x0 :]
    assert _psnr(tile, full) >= 45


def test_paper_spec_pools_globally_and_lite_per_window():
    desc = describe(SPECS["paper"], 40)
    assert desc.global_pool and desc.exact_tiling and desc.cmos_align_lr == (120, 160)
    assert not describe(SPECS["lite"], 40).global_pool and not describe(SPECS["tiny"], 40).global_pool


def test_specs_round_trip_through_dicts_and_reject_bad_ones():
    for spec in SPECS.values():
        assert spec_from_dict(spec_to_dict(spec)) == spec
    data = spec_to_dict(SPECS["lite"])
    data["sr"]["colour"] = 1
    with pytest.raises(ModelError, match="colour"):
        spec_from_dict(data)
    with pytest.raises(UsageError, match="unknown model spec 'huge'"):
        get_spec("huge")
    assert get_spec("lite") is SPECS["lite"]


def test_grid_aligned_upsample_puts_hr_pixel_4i_on_lr_pixel_i():
    """Direct subsampling of a linear ramp, upsampled again, gives the ramp back (bar the replicated edge)."""
    ramp = torch.arange(40.0).view(1, 1, 40, 1) * 0.3 + torch.arange(48.0).view(1, 1, 1, 48) * 0.1
    up = grid_upsample(ramp[..., ::4, ::4], 4)
    assert up.shape == ramp.shape
    torch.testing.assert_close(up[..., :37, :45], ramp[..., :37, :45])
    assert (up[..., 37:, :] - ramp[..., 37:, :]).abs().max() > 0.1  # the last cell is replicated, not extrapolated
    flat = torch.full((2, 3, 5, 7), 0.25)
    torch.testing.assert_close(grid_upsample(flat, 4), torch.full((2, 3, 20, 28), 0.25))


def test_residual_sr_adds_its_correction_to_the_aligned_upsample():
    model = _tiny_blind(residual="bilinear").eval()
    lr = torch.rand(1, 3, 12, 14)
    blur, sem = torch.rand(1, 1, 12, 14) * 5, torch.softmax(torch.randn(1, NUM_CLASSES, 12, 14), 1)
    with torch.no_grad():
        start = model.sr(lr, blur, sem)
        assert (start - grid_upsample(lr, 4)).abs().mean() < 0.05  # starts near the skip path
        model.sr.upsample.weight.zero_()
        model.sr.upsample.bias.zero_()
        torch.testing.assert_close(model.sr(lr, blur, sem), grid_upsample(lr, 4))


def test_older_specs_without_the_residual_field_load_as_the_paper_network():
    data = spec_to_dict(SPECS["lite"])
    del data["sr"]["residual"]
    assert spec_from_dict(data).sr.residual == "none"
    assert SPECS["lite"].sr.residual == "bilinear" and SPECS["paper"].sr.residual == "none"
    data["sr"]["residual"] = "bicubic"
    with pytest.raises(ModelError, match="residual"):
        spec_from_dict(data)


def test_labels_to_probabilities_and_maps_to_lr():
    labels = torch.tensor([[[0, 2], [255, 1]]])
    probs = labels_to_probabilities(labels, 3)
    assert probs.shape == (1, 3, 2, 2)
    assert probs[0, :, 1, 0].sum() == 0 and probs[0, 2, 0, 1] == 1
    blur = torch.arange(16.0).reshape(1, 1, 4, 4)
    blur_lr, sem_lr = maps_to_lr(blur, labels_to_probabilities(torch.zeros(1, 4, 4, dtype=torch.int64), 3), 4)
    # the 5 x 5 window centred on HR (0, 0), borders replicated: rows and columns 0, 0, 0, 1, 2
    assert blur_lr.item() == pytest.approx(4 * 0.6 + 0.6) and sem_lr[0, 0].item() == 1.0


def test_fold_batchnorm_matches_and_removes_every_batchnorm():
    from cmosx.models.fuse import fold_batchnorm

    model = _open_gates(_tiny_blind()).eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    lr = torch.rand(1, 3, 21, 34)
    with torch.no_grad():
        torch.testing.assert_close(folded(lr).sr, model(lr).sr, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_training_step_channels_last():
    model = _tiny_blind().train().to(memory_format=torch.channels_last)
    lr = torch.rand(1, 3, 32, 40).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(lr)
        loss = out.sr.float().abs().mean() + out.maps.blur_lr.float().abs().mean()
    loss.backward()
    grads = [p.grad for p in model.sr.parameters()]
    assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads)


def _plain_sr_trunk(sr: RRDBSFT, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """The RRDB_SFT trunk written with the unfused formulas (the reference for the fused forward)."""
    import torch.nn.functional as F

    for block in sr.blocks:
        joined = torch.cat([x, prior], dim=1)
        out = x * torch.sigmoid(block.sft.scale(joined)) + block.sft.shift(joined)
        for rdb in block.rdbs:
            feats = [out]
            for conv in rdb.convs:
                feats.append(F.leaky_relu(conv(torch.cat(feats, dim=1)), 0.2))
            out = out + 0.2 * rdb.last(torch.cat(feats, dim=1))
        x = x + 0.2 * out
    return x


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_sr_trunk_and_pointwise_convs_compute_the_unfused_formulas(bf16):
    from cmosx.models.gia import _pointwise

    torch.manual_seed(0)
    sr = RRDBSFT(SPECS["tiny"].sr, 3).eval()
    x, prior = torch.randn(1, 8, 15, 20), torch.randn(1, 8, 15, 20)
    conv = torch.nn.Conv2d(9, 12, 1)
    pooled = torch.randn(2, 9, 1, 1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        fused = x
        for block in sr.blocks:
            fused = block(fused, prior)
        plain = _plain_sr_trunk(sr, x, prior)
        linear, convolved = _pointwise(conv, pooled), conv(pooled)
    tol = 2e-2 if bf16 else 1e-5
    assert not torch.equal(fused, x)
    assert torch.allclose(fused.float(), plain.float(), atol=tol, rtol=tol)
    assert linear.shape == convolved.shape == (2, 12, 1, 1)
    assert torch.allclose(linear.float(), convolved.float(), atol=tol, rtol=tol)
