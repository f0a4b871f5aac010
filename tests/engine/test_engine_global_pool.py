"""Exact tiling with global channel pooling (the paper spec's GIA): the step protocol and the engine pass."""

import dataclasses

import pytest
import torch

from cmosx.engine.bench import synthetic_photo
from cmosx.engine.global_pool import global_pool_means, partition_cells
from cmosx.engine.pipeline import Upscaler
from cmosx.engine.tiles import plan_axis, plan_grid
from cmosx.errors import ArgumentError
from cmosx.models.card import ModelCard
from cmosx.models.cmos import CMOS
from cmosx.models.descriptor import ModelDescriptor, describe
from cmosx.models.gia import count_pool_requests, local_means, run_steps
from cmosx.models.model import Model
from cmosx.models.specs import SPECS, GIASpec
from cmosx.models.weights_io import build_networks
from cmosx.ops.compare import psnr

pytestmark = pytest.mark.usefixtures("one_thread")

# the tiny sizes with the paper's global channel pooling and a small window (so small halos suffice)
GLOBAL = GIASpec(mode="FCS", window=(3, 4), channel_pool="global")
TINY_GLOBAL = dataclasses.replace(
    SPECS["tiny"],
    name="tiny-global",
    cmos=dataclasses.replace(SPECS["tiny"].cmos, gia=GLOBAL),
    sr=dataclasses.replace(SPECS["tiny"].sr, gia=GLOBAL),
)


@dataclasses.dataclass
class _ModelWithDescriptor(Model):
    """A :class:`Model` whose tiling descriptor is given (here: a halo fitted to this small network)."""

    given_descriptor: ModelDescriptor | None = None

    @property
    def descriptor(self) -> ModelDescriptor:
        return self.given_descriptor


@pytest.fixture(scope="module")
def model():
    """Seeded random networks with open gates (beta, alpha 0.5), a small random flow and convolutions that
    keep activations at unit scale through depth (so the pooled means visibly matter)."""
    card = ModelCard(name="tiny-global", spec=TINY_GLOBAL, num_classes=5, class_names=[f"c{i}" for i in range(5)])
    torch.manual_seed(3)
    cmos, sr = build_networks(card)
    g = torch.Generator().manual_seed(4)
    for net in (cmos, sr):
        for conv in (m for m in net.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.weight.data.copy_(torch.randn(conv.weight.shape, generator=g) / conv.weight[0].numel() ** 0.5)
        for name, param in net.named_parameters():
            if name.endswith(("alpha", "beta")):
                param.data.fill_(0.5)
            elif name.endswith("flow.weight"):
                param.data.copy_(torch.randn(param.shape, generator=g) * 0.01)
    desc = dataclasses.replace(describe(TINY_GLOBAL, 5), cmos_halo_lr=64)  # enough for this network
    return _ModelWithDescriptor(card=card, cmos=cmos.eval(), sr=sr.eval(), source="random", given_descriptor=desc)


def test_steps_equal_forward_and_count_the_global_pools(model):
    assert count_pool_requests(model.cmos) == 13 and count_pool_requests(model.sr) == 1
    assert count_pool_requests(CMOS(SPECS["tiny"].cmos, 3)) == 0  # window pooling asks for nothing
    lr = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        plain = model.cmos(lr)
        requests = []
        steps = model.cmos.steps(lr)
        request = next(steps)
        try:
            while True:
                requests.append(request)
                request = steps.send(local_means(request))
        except StopIteration as done:
            stepped = done.value
    assert len(requests) == 13 and torch.equal(stepped.blur_lr, plain.blur_lr)
    # the requests come at the GIAs' scales: 1/8 first (GIA_m of the coarsest scale), then finer ones
    sizes = [tuple(r[0].shape[-2:]) for r in requests]
    assert sizes[0] == (3, 4) and set(sizes) == {(3, 4), (6, 8), (12, 16), (24, 32)}
    answers = [local_means(r) for r in requests]
    with torch.no_grad():
        assert torch.equal(model.cmos(lr, pooled=answers).logits_lr, plain.logits_lr)
        with pytest.raises(ArgumentError, match="answers"):
            model.cmos(lr, pooled=answers[:-1])
        with pytest.raises(ArgumentError, match="14 answers"):
            run_steps(model.cmos.steps(lr), answers + answers[:1])


def test_given_means_replace_the_tiles_own(model):
    lr, blur, sem = torch.rand(1, 3, 12, 16), torch.rand(1, 1, 12, 16), torch.rand(1, 5, 12, 16)
    with torch.no_grad():
        own = model.sr(lr, blur, sem)
        shifted = [tuple(m + 1 for m in local_means(r)) for r in _requests(model.sr.steps(lr, blur, sem))]
        assert not torch.allclose(model.sr(lr, blur, sem, pooled=shifted), own)


def _requests(steps):
    request = next(steps)
    steps.close()
    return [request]


@pytest.mark.parametrize("length,tile,overlap", [(100, 30, 4), (64, 64, 0), (97, 20, 8)])
def test_cells_partition_the_axis_inside_the_cores(length, tile, overlap):
    plan = plan_axis(length, tile, overlap, halo=5)
    cells = partition_cells(plan)
    assert cells[0][0] == 0 and cells[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(cells, cells[1:], strict=False))
    assert all(s.start <= a < b <= s.stop for (a, b), s in zip(cells, plan.spans, strict=True))


def test_tiled_means_equal_the_whole_images(model):
    lr = torch.rand(3, 216, 288)
    lr[:, :100, :150] *= 0.2
    grid = plan_grid(216, 288, 72, 8, 64, (24, 32))
    assert len(grid) > 1 and grid.cols.spans[0].in_size < 288
    with torch.no_grad():
        means = global_pool_means(lambda xs: model.cmos.steps(xs[0]), [lr], grid, 13)
        whole = [local_means(r) for r in _all_requests(model.cmos.steps(lr[None]))]
    for got, want in zip(means, whole, strict=True):
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and torch.allclose(g, w, atol=1e-5)


def _all_requests(steps):
    out = []
    try:
        request = next(steps)
        while True:
            out.append(request)
            request = steps.send(local_means(request))
    except StopIteration:
        return out


def test_tiled_pipeline_equals_untiled_with_global_pooling(model):
    image = synthetic_photo(200, 260, seed=5)  # larger than one tile window of either stage
    image[:, :120, :150] *= 0.2  # a dark corner: tiles' own means differ from the photo's
    reference = Upscaler(model, device="cpu", precision="fp32", tile=4096, cmos_tile=4096).upscale(image)
    engine = Upscaler(model, device="cpu", precision="fp32", tile=32, cmos_tile=48, overlap=4)
    calls = []
    original = engine._run_cmos
    engine._run_cmos = lambda lr, *rest: calls.append(lr.shape) or original(lr, *rest)
    tiled = engine.upscale(image)
    assert engine.stats.cmos_tiles > 1 and engine.stats.sr_tiles > 1
    assert all(s[-1] < 260 for s in calls)  # CMOS saw slices of the photo, not all of it
    # float32 rounding apart (the networks' activations are of unit scale here)
    assert (tiled.image - reference.image).abs().max() < 3e-5 and psnr(tiled.image, reference.image) > 100
    assert (tiled.blur_lr - reference.blur_lr).abs().max() < 1e-5
    assert (tiled.semantic_lr - reference.semantic_lr).abs().max() < 1e-5
    # without the whole photo's means the same tiles give a visibly different estimate
    engine._global_means = lambda *args: None
    approximate = engine.estimate_maps(image)
    assert (approximate.blur_lr - reference.blur_lr).abs().max() > 1e-4


def test_the_evaluation_wrapper_of_a_globally_pooling_sr_takes_means_and_steps(model):
    from cmosx.train.eval_engine import ConditionedSR

    wrapped = ConditionedSR(model.sr, use_blur=False, use_semantics=True)
    lr, blur, sem = torch.rand(1, 3, 12, 16), torch.rand(1, 1, 12, 16) + 1, torch.rand(1, 5, 12, 16)
    with torch.no_grad():
        plain = wrapped(lr, blur, sem)
        answers = [local_means(r) for r in _all_requests(wrapped.steps(lr, blur, sem))]
        assert len(answers) == 1 and torch.equal(wrapped(lr, blur, sem, pooled=answers), plain)
        assert torch.equal(plain, model.sr(lr, torch.zeros_like(blur), sem))  # blur switched off
