"""Measurements behind ``cmosx bench``: speed, FLOP rate against the device's conv peak, memory, tiling cost.

- **Reference convolution**: :func:`conv_probe` / :func:`conv_rate`, one channels-last convolution,
  the yardstick of ``bench pipeline`` (the conv peak) and ``bench networks`` (the reference line).

- **Conv peak**: the best FLOP rate of a few representative channels-last convolutions
  (:data:`PEAK_SHAPES`), each timed after a warm-up, once per device and precision in a process, and
  never below a rate any network reaches in the same run (:func:`raise_peaks`), so no fraction of the
  peak exceeds 100 %.
- **SR stage**: RRDB-SFT on one tile; FLOPs counted by :func:`cmosx.ops.timing.count_flops`
  (convolutions and matrix products), divided by the measured time -> GFLOP/s and fraction of peak.
  Every time is :mod:`cmosx.ops.timing`'s best of a few calls after a warm-up.
- **Pipeline**: :class:`~cmosx.engine.pipeline.Upscaler` on a synthetic photo, tiled (the given tile)
  and untiled (one tile) -> output megapixels/s and the tiled / untiled time ratio.
- **Peak memory**: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the process's peak resident
  set (``VmHWM`` from /proc/self/status, reset through /proc/self/clear_refs before each case where
  Linux allows it, else ``resource.getrusage``'s lifetime maximum).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cmosx.engine.device import autocast_context
from cmosx.engine.pipeline import Upscaler
from cmosx.errors import EngineError
from cmosx.models.random_init import random_model
from cmosx.ops.compare import psnr
from cmosx.ops.timing import best_time, count_flops, device_sync, interleaved_best


def synthetic_photo(height: int, width: int, seed: int = 0) -> Tensor:
    """A smooth-plus-texture ``3 x H x W`` image in [0, 1] (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(height // 16, 2), max(width // 16, 2), generator=g)
    base = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    texture = torch.rand(1, 3, height, width, generator=g) * 0.2
    return (0.8 * base + texture).clamp(0, 1)[0]


# Representative convolutions of the networks (in, out channels, kernel): the SR trunk and dense blocks,
# the CMOS branches and heads. The peak is the best of them, so no network can beat it by using a shape
# the probe left out.
PEAK_SHAPES: tuple[tuple[int, int, int], ...] = ((64, 64, 3), (32, 32, 3), (96, 32, 3), (128, 64, 3), (64, 256, 1))

_peak_cache: dict[tuple[str, str], float] = {}


def conv_probe(
    device: torch.device,
    dtype: torch.dtype,
    shape: tuple[int, int, int] = (64, 64, 3),
    size: tuple[int, int] | None = None,
) -> tuple[Callable[[], Tensor], int]:
    """One channels-last convolution ``(in, out, kernel)`` in ``dtype`` and its FLOPs per call.

    ``size`` (height, width): one map of that size, one convolution per call. Default: sized so the
    device is busy (CPU: a 192 x 192 map, larger than the caches; GPU: 10 convolutions of a batch of 8
    maps of 512 x 512 per call), else a GPU would measure its launch latency.
    """
    cin, cout, kernel = shape
    if size is not None:
        batch, (height, width), calls = 1, size, 1
    else:
        batch, calls = (1, 1) if device.type == "cpu" else (8, 10)
        height = width = 192 if device.type == "cpu" else 512
    conv = torch.nn.Conv2d(cin, cout, kernel, padding=kernel // 2).to(device, memory_format=torch.channels_last)
    conv = conv.eval()
    x = torch.rand(batch, cin, height, width, device=device).contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), autocast_context(device, dtype):
            for _ in range(calls):
                out = conv(x)
        return out

    return run, 2 * cin * cout * kernel * kernel * height * width * batch * calls


def conv_rate(
    device: torch.device,
    dtype: torch.dtype,
    shape: tuple[int, int, int] = (64, 64, 3),
    size: tuple[int, int] | None = None,
    repeats: int = 3,
) -> tuple[float, float]:
    """(seconds, GFLOP/s) of :func:`conv_probe`: the best of ``repeats`` calls after a warm-up."""
    run, flops = conv_probe(device, dtype, shape, size)
    seconds = best_time(run, device_sync(device), repeats)
    return seconds, flops / seconds / 1e9


def conv_peak_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 3) -> float:
    """The device's practical peak GFLOP/s in ``dtype``: the best :func:`conv_rate` of :data:`PEAK_SHAPES`.
    Measured once per device and precision in a process."""
    key = (str(device), str(dtype))
    if key not in _peak_cache:
        _peak_cache[key] = max(conv_rate(device, dtype, shape, repeats=repeats)[1] for shape in PEAK_SHAPES)
    return _peak_cache[key]


def raise_peaks(results: list[BenchResult]) -> None:
    """No rate above the peak: each (device, precision)'s peak becomes at least every rate measured in the run."""
    groups: dict[tuple[str, str], float] = {}
    for r in results:
        key = (r.device, r.precision)
        groups[key] = max(groups.get(key, 0.0), r.conv_peak_gflops, r.sr_gflops, r.pipeline_gflops)
    for r in results:
        r.conv_peak_gflops = groups[(r.device, r.precision)]
        r.sr_fraction_of_peak = r.sr_gflops / r.conv_peak_gflops


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory window; False when only the lifetime peak can be read."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_memory_bytes(device: torch.device) -> int:
    """Peak device memory (CUDA) or peak resident set of this process (CPU) since the last reset."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(_status_kib("VmHWM") * 1024)


@dataclass
class BenchResult:
    """One benchmark case."""

    spec: str
    device: str
    precision: str
    channels_last: bool
    size: str  # LR input, H x W
    tile: int
    tile_batch: int
    output_mp_per_s: float
    tiled_over_untiled: float
    sr_gflops: float  # achieved by RRDB-SFT on one tile
    pipeline_gflops: float  # counted FLOPs of the whole tiled pipeline / its time
    conv_peak_gflops: float
    sr_fraction_of_peak: float
    peak_memory_mb: float
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def bench_case(
    model,
    device: str,
    precision: str,
    channels_last: bool,
    height: int,
    width: int,
    tile: int,
    overlap: int = 16,
    repeats: int = 2,
    tile_batch: int | str = "auto",
) -> tuple[BenchResult, Tensor]:
    """Benchmark one (model, device, precision, format) case; returns the result and the tiled output."""
    overlap = min(overlap, tile // 4)
    tiled = Upscaler(
        model, device, precision, tile=tile, overlap=overlap, tile_batch=tile_batch, channels_last=channels_last
    )
    whole = max(height, width, 2 * overlap)
    untiled = Upscaler(
        model, device, precision, tile=whole, cmos_tile=whole, overlap=overlap, channels_last=channels_last
    )
    dev, dtype = tiled.device, tiled.precision
    photo = synthetic_photo(height, width)

    reset_peak_memory(dev)
    output = tiled.upscale(photo).image
    peak_mem = peak_memory_bytes(dev)
    t_tiled, t_untiled = interleaved_best(
        [lambda: tiled.upscale(photo), lambda: untiled.upscale(photo)], device_sync(dev), repeats
    )
    pipeline_flops = count_flops(lambda: tiled.upscale(photo))

    # The SR stage alone on one tile of the benchmark's tile size (its input window with halo), timed
    # in alternation with the conv peak probe.
    side_r = min(height, tile + 2 * tiled.halo)
    side_c = min(width, tile + 2 * tiled.halo)
    lr, blur, semantic = tiled._probe_inputs(side_r, side_c)
    sr_flops = count_flops(lambda: tiled._run_sr(lr, blur, semantic, dtype))
    t_sr = best_time(lambda: tiled._run_sr(lr, blur, semantic, dtype), device_sync(dev), repeats + 2)
    sr_gflops = sr_flops / t_sr / 1e9
    pipeline_gflops = pipeline_flops / t_tiled / 1e9
    peak = max(conv_peak_gflops(dev, dtype), sr_gflops, pipeline_gflops)
    result = BenchResult(
        spec=model.card.spec.name,
        device=str(dev),
        precision=str(dtype).replace("torch.", ""),
        channels_last=channels_last,
        size=f"{height}x{width}",
        tile=tile,
        tile_batch=tiled.tile_batch,
        output_mp_per_s=height * width * model.descriptor.scale**2 / t_tiled / 1e6,
        tiled_over_untiled=t_tiled / t_untiled,
        sr_gflops=sr_gflops,
        pipeline_gflops=pipeline_gflops,
        conv_peak_gflops=peak,
        sr_fraction_of_peak=sr_gflops / peak,
        peak_memory_mb=peak_mem / 2**20,
        seconds=t_tiled,
    )
    return result, output


def peak_rss_case(
    spec_name: str, height: int, width: int, tile: int, cmos_tile: int, precision: str = "fp32"
) -> dict[str, float]:
    """Upscale one synthetic photo in this process and report its memory (run it in a fresh process).

    Returns MiB: ``rss_before`` (model and photo ready), ``peak_rss`` (the process's lifetime peak,
    VmHWM), ``output`` (the result's image + maps buffers), and the run's seconds.
    """
    from cmosx.engine.memory import retain_freed_memory

    retain_freed_memory()  # as `cmosx upscale` does on the CPU
    model = random_model(spec_name)
    engine = Upscaler(model, "cpu", precision, tile=tile, cmos_tile=cmos_tile, tile_batch=1)
    photo = synthetic_photo(height, width)
    before = _status_kib("VmRSS") / 1024
    t0 = time.perf_counter()
    result = engine.upscale(photo)
    seconds = time.perf_counter() - t0
    output = sum(t.numel() * t.element_size() for t in (result.image, result.blur_lr, result.semantic_lr))
    return {
        "height": height,
        "width": width,
        "rss_before_mb": before,
        "peak_rss_mb": _status_kib("VmHWM") / 1024,
        "output_mb": output / 2**20,
        "image_buffer_mb": result.image.numel() * 4 / 2**20,
        "seconds": seconds,
    }


def _status_kib(field_name: str) -> float:
    """A ``kB`` field of /proc/self/status (Linux); falls back to ru_maxrss for the peak."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak_rss_subprocess(
    spec_name: str, height: int, width: int, tile: int, cmos_tile: int, precision: str = "fp32"
) -> dict[str, float]:
    """:func:`peak_rss_case` in a fresh Python process, so each size has its own peak."""
    import json
    import subprocess
    import sys

    code = (
        "import json; from cmosx.engine.bench import peak_rss_case; "
        f"print(json.dumps(peak_rss_case({spec_name!r}, {height}, {width}, {tile}, {cmos_tile}, {precision!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise EngineError(f"peak-memory run {height}x{width} failed: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_outputs(a: Tensor, b: Tensor) -> float:
    """PSNR (dB) between two outputs in [0, 1]."""
    return psnr(a, b)
