"""Tile geometry, overlap blending and the tiled runner, on local operators with a known receptive field."""

import pytest
import torch
from torch import nn

from cmosx.engine.blend import axis_weight_sum, ramp
from cmosx.engine.runner import TiledRunner, crop_core, window_input
from cmosx.engine.tiles import padded_size, plan_axis, plan_fitting_tiles, plan_grid
from cmosx.errors import DeviceError, UsageError

OOM = torch.OutOfMemoryError


@pytest.mark.parametrize(
    "length,tile,overlap,halo,m",
    [
        (1, 64, 16, 8, 1),
        (65, 64, 16, 8, 1),
        (1000, 64, 16, 20, 8),
        (129, 16, 4, 3, 1),
        (96, 32, 8, 0, 8),
        (77, 7, 3, 2, 1),
    ],
)
def test_axis_plan_covers_evenly_with_aligned_windows(length, tile, overlap, halo, m):
    length = padded_size(length, m)
    plan = plan_axis(length, tile, overlap, halo, m)
    spans = plan.spans
    assert spans[0].start == 0 and spans[-1].stop == length
    sizes = {s.size for s in spans}
    assert len(sizes) == 1 and max(sizes) <= max(tile, 1)  # one core size: no thin last tile
    assert len({s.in_size for s in spans}) == 1  # one input shape: tiles batch together
    for a, b in zip(spans, spans[1:], strict=False):
        assert b.start > a.start and a.stop - b.start >= overlap  # no gap, at least `overlap` shared
    for s in spans:
        assert s.in_start % m == 0 and s.in_size % m == 0
        assert s.in_start <= max(s.start - halo, 0) and s.in_stop >= min(s.stop + halo, length)
        assert s.in_start >= 0 and s.in_stop <= length
    if length > tile:  # the count is minimal: one tile fewer could not cover the axis
        n = len(spans)
        assert n == 1 or (n - 1) * tile - (n - 2) * overlap < length


def test_axis_plan_rejects_bad_arguments():
    with pytest.raises(UsageError):
        plan_axis(100, 64, 40, 0)  # overlap more than half the tile
    with pytest.raises(UsageError):
        plan_axis(100, 64, 16, 0, multiple_of=8)  # length not padded


def test_raised_cosine_windows_sum_to_one():
    r = ramp(13)
    assert torch.allclose(r + r.flip(0), torch.ones(13, dtype=torch.float64))
    for scale in (1, 4):
        plan = plan_axis(300, 64, 16, 8)
        total = axis_weight_sum(plan, scale)
        assert total.shape == (300 * scale,)
        assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


class LocalNet(nn.Module):
    """A fixed conv stack (stride 2 inside, x2 output): receptive radius < 12 input pixels."""

    multiple_of, scale, radius = 2, 2, 12

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.Upsample(scale_factor=4, mode="nearest"),
            nn.Conv2d(8, 3, 3, padding=1),
        )
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3

    @torch.inference_mode()
    def forward(self, x):
        return self.body(x)


def local_compute(net, image, scale, calls=None):
    def compute(windows):
        if calls is not None:
            calls.append(windows)
        batch = torch.stack([window_input(image, w) for w in windows])
        out = net(batch)
        return [crop_core(o, w, scale) for o, w in zip(out, windows, strict=True)]

    return compute


def run_tiled(net, image, tile, overlap=4, batch=2, compute=None, progress=None):
    _, h, w = image.shape
    compute = compute or local_compute(net, image, net.scale)
    runner = TiledRunner(compute, 3, net.scale, torch.device("cpu"), min_tile=4)
    return runner.run(h, w, tile, overlap, net.radius, net.multiple_of, batch, progress)


@pytest.mark.parametrize("h,w,tile", [(2, 2, 8), (2, 64, 8), (50, 34, 16), (66, 98, 64), (64, 2, 12)])
def test_tiled_equals_untiled_for_a_local_operator(h, w, tile):
    net = LocalNet()
    image = torch.rand(3, h, w)
    untiled = net(image[None])[0]
    tiled = run_tiled(net, image, tile)
    assert tiled.shape == untiled.shape
    assert torch.allclose(tiled, untiled, atol=1e-5), (tiled - untiled).abs().max()


def test_constant_image_stays_constant_at_tile_and_image_borders():
    image = torch.full((3, 70, 90), 0.7)

    class Identity(nn.Module):  # nearest x4: any darkening would come from the blending
        multiple_of, scale, radius = 1, 4, 0

        def forward(self, x):
            return nn.functional.interpolate(x, scale_factor=4, mode="nearest")

    out = run_tiled(Identity(), image, tile=16, overlap=8)
    assert out.shape == (3, 280, 360)
    assert torch.allclose(out, torch.full_like(out, 0.7), atol=1e-6)


def test_progress_reports_each_tile_monotonically_to_total():
    net, image, seen = LocalNet(), torch.rand(3, 40, 60), []
    run_tiled(net, image, tile=16, batch=3, progress=lambda d, t: seen.append((d, t)))
    total = seen[0][1]
    assert seen[0] == (0, total) and seen[-1] == (total, total) and total == 3 * 5
    assert all(b[0] > a[0] for a, b in zip(seen, seen[1:], strict=False)) and {t for _, t in seen} == {total}


def test_out_of_memory_in_second_row_is_recovered_by_splitting_that_tile():
    net, image = LocalNet(), torch.rand(3, 52, 76)  # not square: a mixed-up x/y re-split would show
    reference = run_tiled(net, image, tile=24, batch=1)
    inner = local_compute(net, image, net.scale)
    state = {"failed": 0}

    def flaky(windows):
        (row, col), *_ = windows
        if row.start > 0 and col.start > 0 and row.size >= 20 and state["failed"] < 1:  # a 2nd-row tile
            state["failed"] += 1
            raise OOM("injected")
        return inner(windows)

    out = run_tiled(net, image, tile=24, batch=1, compute=flaky)
    assert state["failed"] == 1
    assert torch.allclose(out, reference, atol=1e-5)


def test_out_of_memory_halves_the_batch_first():
    net, image, calls = LocalNet(), torch.rand(3, 48, 48), []
    inner = local_compute(net, image, net.scale, calls)

    def batch_limited(windows):
        if len(windows) > 2:
            raise OOM("injected")
        return inner(windows)

    runner = TiledRunner(batch_limited, 3, net.scale, torch.device("cpu"), min_tile=4)
    out = runner.run(48, 48, 16, 4, net.radius, net.multiple_of, batch=8)
    assert runner.batch_used == 2 and all(len(c) <= 2 for c in calls)
    assert torch.allclose(out, net(image[None])[0], atol=1e-5)


def test_other_errors_propagate_and_persistent_oom_is_a_device_error():
    net, image = LocalNet(), torch.rand(3, 32, 32)

    def broken(windows):
        raise ValueError("bad tile")

    with pytest.raises(ValueError):
        run_tiled(net, image, tile=16, compute=broken)

    def always_oom(windows):
        raise OOM("injected")

    with pytest.raises(DeviceError):
        run_tiled(net, image, tile=16, compute=always_oom)


def _computed(height, width, tile, overlap, halo, m, limit):
    grid = plan_grid(height, width, tile, overlap, halo, m)
    rows = sum(s.in_size for s in grid.rows.spans if s.start < limit[0])
    cols = sum(s.in_size for s in grid.cols.spans if s.start < limit[1])
    return rows * cols, grid


@pytest.mark.parametrize("height,width,budget", [(2040, 3040, 3.0e6), (3120, 4160, 4.0e6), (1080, 800, 1e9)])
def test_fitting_tiles_compute_the_fewest_pixels_within_the_budget(height, width, budget):
    overlap, halo, m, limit = 16, 160, (120, 160), (height - 30, width - 40)
    fits = lambda r, c: r * c <= budget  # noqa: E731
    tile = plan_fitting_tiles(height, width, overlap, halo, m, fits, limit)
    pixels, grid = _computed(height, width, tile, overlap, halo, m, limit)
    assert all(fits(r.in_size, c.in_size) for r in grid.rows.spans for c in grid.cols.spans)
    # no square tile that fits computes fewer pixels (tiles need not be square: strips when a row fits)
    for square in range(2 * overlap, max(height, width) + 1, 8):
        other, other_grid = _computed(height, width, square, overlap, halo, m, limit)
        if fits(other_grid.rows.spans[0].in_size, other_grid.cols.spans[0].in_size):
            assert pixels <= other
    if budget >= height * width:
        assert len(grid) == 1 and pixels == height * width  # the whole photo in one tile: no halo at all


def test_fitting_tiles_fall_back_to_the_smallest_when_nothing_fits():
    tile = plan_fitting_tiles(960, 1280, 16, 40, 8, lambda r, c: False)
    assert max(tile) < 64  # the most tiles the alignment allows
