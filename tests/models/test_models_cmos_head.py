"""CMOS's final heads decode the four scales without the full-resolution concatenation
(:meth:`FinalHead.forward`): equal to the concat formula in fp32, with BatchNorm folded, in
training (gradients), and for the bundled model on an example photo."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cmosx.io.reader import read_image
from cmosx.models.cmos import CMOS, FinalHead
from cmosx.models.fuse import fold_batchnorm
from cmosx.models.hub import resolve_model
from cmosx.models.random_init import open_neutral_paths
from cmosx.models.specs import SPECS

pytestmark = pytest.mark.usefixtures("one_thread")

# the repository's example photo, found from this file wherever the tests directory nests it
EXAMPLE = next(p for p in Path(__file__).resolve().parents if (p / "examples").is_dir()) / "examples/photos/chelsea.png"


def concat_head(head: FinalHead, features: list[torch.Tensor]) -> torch.Tensor:
    """The reference formula: every scale upsampled to the first, concatenated, then the head."""
    size = features[0].shape[-2:]
    ups = [features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]]
    return head.out(head.body(torch.cat(ups, dim=1)))


def _features(widths, size, generator):
    h, w = size
    return [torch.randn(2, c, -(-h // 2**i), -(-w // 2**i), generator=generator) * 3 for i, c in enumerate(widths)]


def _lively_head(widths, hidden, out_ch, generator) -> FinalHead:
    head = FinalHead(widths, hidden, out_ch)
    open_neutral_paths(head, generator, gate=0.5, flow_std=0.0, bn_mean_std=0.3, bn_var_range=(0.5, 2.0))
    with torch.no_grad():
        head.body[1].weight.uniform_(0.5, 1.5, generator=generator)
        head.body[1].bias.normal_(0.0, 0.3, generator=generator)
    return head.eval()


def _close(new: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> None:
    scale = ref.abs().max().item()
    assert scale > 0.1, "the head's output is degenerate; the comparison would prove nothing"
    assert (new - ref).abs().max().item() <= rel * scale


@pytest.mark.parametrize("spec_name", ["lite", "paper"])
@pytest.mark.parametrize("size", [(40, 56), (37, 61)])
def test_head_equals_concat_formula(spec_name, size):
    spec = SPECS[spec_name].cmos
    widths = spec.widths
    hidden = spec.head_channels or sum(widths)
    g = torch.Generator().manual_seed(7)
    for out_ch in (1, 6):
        head = _lively_head(widths, hidden, out_ch, g)
        feats = _features(widths, size, g)
        with torch.no_grad():
            ref = concat_head(head, feats)
            new = head(feats)
            assert new.shape == ref.shape == (2, out_ch, *size)
            _close(new, ref)
            folded = fold_batchnorm(head)
            assert folded.body[0].bias is not None  # BatchNorm folded into a biased conv: bias added once
            _close(folded(feats), ref)


def test_head_gradients_match_concat_formula():
    widths = SPECS["lite"].cmos.widths
    g = torch.Generator().manual_seed(3)
    head = FinalHead(widths, 48, 3).train()
    feats = _features(widths, (24, 32), g)
    grads = []
    for formula in (concat_head, FinalHead.forward):
        head.zero_grad()
        inputs = [f.clone().requires_grad_(True) for f in feats]
        formula(head, inputs).square().mean().backward()
        grads.append([p.grad.clone() for p in head.parameters()] + [x.grad.clone() for x in inputs])
    for new, ref in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(new, ref, rtol=1e-4, atol=1e-6)


def test_state_dict_keys_unchanged():
    widths = SPECS["lite"].cmos.widths
    keys = set(FinalHead(widths, 48, 1).state_dict())
    assert keys == {
        "body.0.weight",
        "body.1.weight",
        "body.1.bias",
        "body.1.running_mean",
        "body.1.running_var",
        "body.1.num_batches_tracked",
        "out.weight",
        "out.bias",
    }


@pytest.fixture(scope="module")
def bundled_cmos():
    return resolve_model(None).cmos.eval()


def _example_crop() -> torch.Tensor:
    color = read_image(EXAMPLE).color[:3]
    assert color.shape[-2] >= 240 and color.shape[-1] >= 320
    return color[None, :, :240, :320].contiguous()


def _reference_forward(cmos: CMOS, lr: torch.Tensor):
    """The whole CMOS forward with its heads switched to the concat formula."""
    original = FinalHead.forward
    FinalHead.forward = concat_head
    try:
        return cmos(lr)
    finally:
        FinalHead.forward = original


@pytest.mark.parametrize("folded", [False, True], ids=["plain", "bn-folded"])
def test_bundled_model_estimate_matches_concat_formula(bundled_cmos, folded):
    net = fold_batchnorm(bundled_cmos) if folded else bundled_cmos
    lr = _example_crop()
    with torch.no_grad():
        ref = _reference_forward(net, lr)
        new = net(lr)
    assert new.blur_lr.shape == (1, 1, 240, 320)
    _close(new.blur_lr, ref.blur_lr)
    _close(new.logits_lr, ref.logits_lr)
