"""The engine on CUDA: tiling, the auto policy, memory holding only tiles, a real out-of-memory recovered."""

import pytest
import torch

from cmosx.engine.bench import synthetic_photo
from cmosx.engine.pipeline import Upscaler
from cmosx.models.random_init import random_model
from cmosx.ops.compare import psnr

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def lite():
    return random_model("lite", num_classes=8, seed=2)


def test_cuda_tiled_equals_untiled_and_agrees_with_the_cpu(lite):
    image = synthetic_photo(150, 211, seed=4)
    cpu = Upscaler(lite, "cpu", "fp32", tile=4096, cmos_tile=4096).upscale(image)
    untiled = Upscaler(lite, "cuda", "fp32", tile=4096, cmos_tile=4096).upscale(image)
    tiled = Upscaler(lite, "cuda", "fp32", tile=64, tile_batch=4, cmos_tile=4096).upscale(image)
    assert tiled.image.device.type == "cpu"
    assert psnr(tiled.image, untiled.image) >= 45
    assert psnr(tiled.blur_lr, untiled.blur_lr, peak=5.0) >= 45
    assert psnr(untiled.image, cpu.image) >= 45  # TF32 convolutions stay close to the CPU's fp32


def test_cmos_tiles_with_halo_match_the_global_estimate(lite):
    # Wider than one CMOS tile window (160 core + 2 x 160 halo on the 160-column grid): real CMOS tiling.
    # (On the GPU because it is too slow for the CPU test budget.)
    image = synthetic_photo(200, 1400, seed=3)
    reference = Upscaler(lite, "cuda", "fp32", tile=4096, cmos_tile=4096).estimate_maps(image)
    engine = Upscaler(lite, "cuda", "fp32", tile=128, cmos_tile=160)
    maps = engine.estimate_maps(image)
    assert engine.stats.cmos_tiles > 4
    assert psnr(maps.blur_lr, reference.blur_lr, peak=5.0) >= 45
    assert torch.allclose(maps.semantic_lr, reference.semantic_lr, atol=1e-4)


def test_cuda_auto_policy_uses_bf16_batches_and_stays_close_to_fp32(lite):
    engine = Upscaler(lite)  # all auto
    assert engine.device.type == "cuda" and engine.precision == torch.bfloat16 and engine.tile_batch >= 1
    image = synthetic_photo(120, 160, seed=6)
    fast = engine.upscale(image).image
    exact = Upscaler(lite, "cuda", "fp32", tile=engine.tile, cmos_tile=engine.cmos_tile).upscale(image).image
    assert psnr(fast, exact) >= 35


def test_cuda_memory_holds_only_tiles(lite):
    peaks = []
    # Both photos are larger than one CMOS window (160 + 2 x 160 halo, aligned): same tile shapes.
    for h, w in ((640, 800), (1280, 1600)):
        engine = Upscaler(lite, "cuda", "bf16", tile=128, cmos_tile=160, tile_batch=4)
        image = synthetic_photo(h, w, seed=1)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        engine.upscale(image)
        peaks.append(torch.cuda.max_memory_allocated())
    assert peaks[1] <= peaks[0] * 1.1 + (16 << 20), peaks  # 4x the pixels, same device memory


def test_a_real_cuda_out_of_memory_is_recovered_by_smaller_tiles(lite, monkeypatch):
    image = synthetic_photo(300, 400, seed=8)
    reference = Upscaler(lite, "cuda", "fp32", tile=100, cmos_tile=480, tile_batch=1).upscale(image).image
    original = Upscaler._run_sr
    total = torch.cuda.get_device_properties(0).total_memory
    big_tiles = []

    def tight_memory(self, lr, blur, semantic, dtype):
        # Large SR tiles get only 32 MiB beyond what is allocated: the allocator itself raises OOM.
        big = lr.shape[-1] * lr.shape[-2] > 200 * 200
        big_tiles.append(big)
        torch.cuda.empty_cache()
        limit = (torch.cuda.memory_allocated() + (32 << 20)) / total if big else 1.0
        torch.cuda.set_per_process_memory_fraction(min(limit, 1.0))
        try:
            return original(self, lr, blur, semantic, dtype)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)

    monkeypatch.setattr(Upscaler, "_run_sr", tight_memory)
    out = Upscaler(lite, "cuda", "fp32", tile=400, cmos_tile=480, tile_batch=1).upscale(image).image
    assert big_tiles[0] and not big_tiles[-1]  # the big tile failed, smaller ones replaced it
    assert psnr(out, reference) >= 45
