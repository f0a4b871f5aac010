"""Benchmark of the model specs on this machine: forward time, FLOPs, achieved GFLOP/s, bf16 error,
and the receptive-field (halo) probe behind :mod:`cmosx.models.descriptor`.

``cmosx bench networks`` prints them (add ``--halo`` for the halo probe, ``--spec tiny`` to pick specs);
the functions here return plain rows and print nothing. Times and FLOPs come from :mod:`cmosx.ops.timing`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cmosx.models.cmos import CMOS
from cmosx.models.random_init import probe_weights
from cmosx.models.rrdb_sft import RRDBSFT
from cmosx.models.specs import SPECS
from cmosx.ops.timing import best_time, count_flops

MEGAPIXELS_12_LR = 750 * 1000  # LR pixels of a 12-megapixel x4 output (3000 x 4000)


@dataclass
class BenchRow:
    name: str  # e.g. "lite/cmos"
    gflop: float  # forward FLOPs (2 per multiply-accumulate) / 1e9
    seconds_fp32: float  # contiguous (NCHW) layout
    seconds_cl: float  # channels_last
    seconds_bf16: float  # channels_last under torch.autocast(bfloat16)
    bf16_max_abs_diff: float  # vs the fp32 output

    @property
    def gflops_cl(self) -> float:
        return self.gflop / self.seconds_cl


def _bench_pair(name: str, forward: Callable[[bool], torch.Tensor], repeats: int) -> BenchRow:
    with torch.no_grad():
        gflop = count_flops(lambda: forward(False)) / 1e9
        seconds_fp32 = best_time(lambda: forward(False), repeats=repeats)
        seconds_cl = best_time(lambda: forward(True), repeats=repeats)
        reference = forward(True).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            seconds_bf16 = best_time(lambda: forward(True), repeats=repeats)
            low = forward(True).float()
    diff = float((low - reference).abs().max())
    return BenchRow(name, gflop, seconds_fp32, seconds_cl, seconds_bf16, diff)


def benchmark_spec(spec_name: str, height: int = 120, width: int = 160, num_classes: int = 40, repeats: int = 3):
    """Rows for CMOS and RRDB-SFT of a spec (random weights, eval mode) on a ``height x width`` LR input."""
    spec = SPECS[spec_name]
    torch.manual_seed(0)
    cmos = CMOS(spec.cmos, num_classes).eval()
    sr = RRDBSFT(spec.sr, num_classes).eval()
    lr = torch.rand(1, 3, height, width)
    blur = torch.rand(1, 1, height, width) * 5
    semantic = torch.softmax(torch.randn(1, num_classes, height, width), dim=1)
    layouts = {
        False: (cmos, sr, lr, blur, semantic),
        True: tuple(t.to(memory_format=torch.channels_last) for t in (cmos, sr, lr, blur, semantic)),
    }

    def run_cmos(channels_last: bool) -> torch.Tensor:
        net, _, x, _, _ = layouts[channels_last]
        return net(x).blur_lr

    def run_sr(channels_last: bool) -> torch.Tensor:
        _, net, x, b, s = layouts[channels_last]
        return net(x, b, s)

    return [_bench_pair(f"{spec_name}/cmos", run_cmos, repeats), _bench_pair(f"{spec_name}/sr", run_sr, repeats)]


def influence_radius(
    forward: Callable[..., torch.Tensor], channels: list[int], height: int, width: int, thresholds=(1e-2, 1e-3, 1e-4)
) -> dict[float, int]:
    """Largest Chebyshev distance (LR px) from the centre where |d output(centre) / d input| exceeds each
    threshold times its maximum. ``forward`` takes one ``1 x c x H x W`` tensor per entry of ``channels``."""
    inputs = [torch.rand(1, c, height, width, requires_grad=True) for c in channels]
    out = forward(*inputs)
    scale = out.shape[-1] // width
    cy, cx = height // 2, width // 2
    out[..., cy * scale : (cy + 1) * scale, cx * scale : (cx + 1) * scale].abs().sum().backward()
    influence = sum(x.grad.abs().sum(dim=1)[0] for x in inputs)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    distance = torch.maximum((ys - cy).abs(), (xs - cx).abs())
    peak = influence.max()
    return {t: int(distance[influence > t * peak].max()) for t in thresholds}


def measure_halos(spec_name: str, height: int = 360, width: int = 480, num_classes: int = 12) -> dict[str, dict]:
    """Influence radii of both networks of a spec with :func:`probe_weights`."""
    spec = SPECS[spec_name]
    torch.manual_seed(0)
    cmos = probe_weights(CMOS(spec.cmos, num_classes))
    sr = probe_weights(RRDBSFT(spec.sr, num_classes))
    sr_radius = influence_radius(
        lambda x, b, s: sr(x, b * 5, torch.softmax(3 * s, dim=1)), [3, 1, num_classes], height, width
    )

    def cmos_out(x: torch.Tensor) -> torch.Tensor:
        maps = cmos(x)
        return torch.cat([maps.blur_lr, maps.logits_lr], dim=1)

    return {"sr": sr_radius, "cmos": influence_radius(cmos_out, [3], height, width)}
