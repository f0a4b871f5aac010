"""The Upscaler on a seeded random-weight tiny model: tiled == untiled, maps, OOM, NaN fallback, progress."""

import pytest
import torch
import torch.nn.functional as F

from cmosx.engine.bench import synthetic_photo
from cmosx.engine.pipeline import Upscaler
from cmosx.errors import InputImageError, UsageError
from cmosx.models.random_init import random_model
from cmosx.ops.compare import psnr

SIGMA_MAX = 5.0


@pytest.fixture(scope="module")
def tiny():
    return random_model("tiny", num_classes=6, seed=7)


def make(model, **kwargs):
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("precision", "fp32")
    kwargs.setdefault("cmos_tile", 4096)
    return Upscaler(model, **kwargs)


def untiled(model, image, **kwargs):
    return make(model, tile=4096, **kwargs).upscale(image)


def test_untiled_pipeline_equals_the_chained_networks(tiny):
    image = synthetic_photo(120, 160, seed=1)  # already on the alignment grid: no padding anywhere
    image[0, 0, 0] = 1.5  # out of range: clamped for the networks, but the caller's tensor is left alone
    engine = make(tiny, tile=4096)
    result = engine.upscale(image)
    assert image[0, 0, 0] == 1.5
    # the engine frames the photo with replicated pixels (one alignment cell) and crops the frame off
    framed = engine._frame(image.clamp(0, 1))
    assert framed.shape[-2:] == (120 + 2 * engine.sr_align[0], 160 + 2 * engine.sr_align[1])
    # the engine runs a copy of CMOS with its (randomised) BatchNorms folded; the model keeps its own
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in engine.cmos.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in tiny.cmos.modules())
    with torch.inference_mode():
        direct = tiny.blind_sr()(framed[None])
    assert result.image.shape == (3, 480, 640)
    # the framed photo is no longer on CMOS's 8-pixel grid: the engine pads it (replicate) where CMOS would
    # pad internally, so the maps agree closely rather than bit for bit
    assert psnr(result.image, engine._unframe(direct.sr[0].clamp(0, 1), 4)) >= 60
    assert psnr(result.blur_lr, engine._unframe(direct.maps.blur_lr[0].clamp(0, SIGMA_MAX)), peak=SIGMA_MAX) >= 60
    expected = engine._unframe(torch.softmax(direct.maps.logits_lr[0], 0))
    assert torch.allclose(result.semantic_lr, expected, atol=1e-3)


@pytest.mark.parametrize("h,w", [(1, 1), (1, 97), (83, 1), (7, 5), (97, 181)])
def test_tiled_equals_untiled_for_odd_thin_and_tiny_images(tiny, h, w):
    image = synthetic_photo(h, w, seed=h * w)
    reference = untiled(tiny, image)
    seen = []
    engine = make(tiny, tile=64, overlap=16, tile_batch=3)
    original = engine._run_sr
    engine._run_sr = lambda lr, *rest: seen.append(lr.shape) or original(lr, *rest)
    out = engine.upscale(image)
    if h * w > 10000:  # larger than one tile window: the network saw slices, not the whole photo
        assert engine.stats.sr_tiles > 1 and all(s[-1] < w or s[-2] < h for s in seen)
    assert out.image.shape == (3, 4 * h, 4 * w) and out.blur_lr.shape == (1, h, w)
    assert psnr(out.image, reference.image) >= 45
    assert psnr(out.blur_lr, reference.blur_lr, peak=SIGMA_MAX) >= 45
    assert out.semantic_lr.shape == (6, h, w)


def test_constant_image_stays_constant_through_padding_tiles_and_blending(tiny, monkeypatch):
    # An identity-like SR network (nearest x4): any darkening would come from the engine.
    def nearest(self, lr, blur, semantic, dtype):
        return F.interpolate(lr, scale_factor=4, mode="nearest")

    monkeypatch.setattr(Upscaler, "_run_sr", nearest)
    image = torch.full((3, 61, 87), 0.6)
    out = make(tiny, tile=32, overlap=8).upscale(image).image
    assert torch.allclose(out, torch.full_like(out, 0.6), atol=1e-6)


def test_constant_image_through_the_model_has_no_tile_seams(tiny):
    image = torch.full((3, 75, 100), 0.5)
    reference = untiled(tiny, image).image
    out = make(tiny, tile=32, overlap=8).upscale(image).image
    assert psnr(out, reference) >= 45 and float((out - reference).abs().max()) < 1e-4


def test_out_of_memory_on_a_second_row_tile_is_recovered(tiny, monkeypatch):
    image = synthetic_photo(100, 140, seed=5)
    reference = make(tiny, tile=48, overlap=8, tile_batch=1).upscale(image).image
    original = Upscaler._run_sr
    state = {"raised": 0}

    def flaky(self, lr, blur, semantic, dtype):
        if lr.shape[-2] >= 48 and state["raised"] == 0 and state.setdefault("calls", 0) >= 5:
            state["raised"] += 1
            raise torch.OutOfMemoryError("injected")
        state["calls"] += 1
        return original(self, lr, blur, semantic, dtype)

    monkeypatch.setattr(Upscaler, "_run_sr", flaky)
    out = make(tiny, tile=48, overlap=8, tile_batch=1).upscale(image).image
    assert state["raised"] == 1
    assert psnr(out, reference) >= 45


def test_non_finite_reduced_precision_tiles_are_redone_in_fp32(tiny, monkeypatch):
    image = synthetic_photo(40, 90, seed=9)
    reference = make(tiny, tile=48, overlap=8).upscale(image).image
    original = Upscaler._run_sr

    def overflowing(self, lr, blur, semantic, dtype):
        out = original(self, lr, blur, semantic, torch.float32).clone()
        if dtype != torch.float32:
            out[-1] = float("inf")  # only the last tile of each batch overflows
        return out

    monkeypatch.setattr(Upscaler, "_run_sr", overflowing)
    engine = make(tiny, precision="bf16", tile=48, overlap=8, tile_batch=2)
    out = engine.upscale(image).image
    n = engine.stats.sr_tiles
    assert n >= 3 and engine.stats.redone_fp32 == (n + 1) // 2  # one per batch of two, not the whole batch
    assert torch.isfinite(out).all() and psnr(out, reference) >= 45


def test_progress_is_monotonic_over_both_stages(tiny):
    seen = []
    make(tiny, tile=32, overlap=8).upscale(synthetic_photo(50, 70), progress=lambda d, t: seen.append((d, t)))
    total = seen[-1][1]
    assert seen[-1] == (total, total) and total > 2
    assert all(t == total for _, t in seen)
    assert all(b[0] > a[0] for a, b in zip(seen, seen[1:], strict=False))


def test_blur_scale_and_override_condition_the_sr_network(tiny):
    image = synthetic_photo(30, 40, seed=11)
    given = torch.full((1, 30, 40), 2.0)
    engine = make(tiny, tile=4096, blur_scale=1.5)
    result = engine.upscale(image, blur_override=given)
    assert torch.allclose(result.blur_lr, torch.full_like(given, 3.0))
    hr_map = torch.full((1, 120, 160), 2.0)  # an HR-size map is area-downsampled
    again = make(tiny, tile=4096, blur_scale=1.5).upscale(image, blur_override=hr_map)
    assert torch.allclose(again.image, result.image)
    framed_semantic = engine._estimate_maps_framed(engine._frame(image), None).semantic_lr
    with torch.inference_mode():
        sr = tiny.sr(engine._frame(image)[None], engine._frame(result.blur_lr)[None], framed_semantic[None])
    assert psnr(result.image, engine._unframe(sr[0].clamp(0, 1), 4)) >= 45
    scaled = make(tiny, tile=4096, blur_scale=100.0).estimate_maps(image)
    assert float(scaled.blur_lr.max()) <= SIGMA_MAX  # clamped to the trained range
    with pytest.raises(UsageError):
        make(tiny, tile=4096).upscale(image, blur_override=torch.ones(1, 10, 10))


def test_bad_inputs_and_settings_are_clear_errors(tiny):
    with pytest.raises(InputImageError):
        make(tiny, tile=64).upscale(torch.rand(4, 10, 10))
    with pytest.raises(UsageError):
        make(tiny, tile=64, overlap=40)
    with pytest.raises(UsageError):
        make(tiny, tile="big")
    with pytest.raises(UsageError):
        make(tiny, tile=64, blur_scale=-1.0)


def test_auto_settings_measure_precision_and_fit_the_tile_on_the_cpu(tiny, monkeypatch):
    import cmosx.engine.device as device_mod

    monkeypatch.delenv("CMOSX_CPU_BF16", raising=False)
    engine = Upscaler(tiny)  # everything auto
    assert engine.device.type == "cpu" or torch.cuda.is_available()
    if engine.device.type == "cpu":
        assert engine.precision in (torch.float32, torch.bfloat16)
        assert set(engine.stats.precision_probe) == {"speedup_bf16", "psnr_db_bf16"}
        assert engine.tile_batch == 1
        # a second engine (as in a second process: the in-process cache emptied) reads the disk cache
        monkeypatch.setattr(device_mod, "_precision_cache", {})
        again = Upscaler(tiny)
        assert again.precision == engine.precision and again.stats.precision_probe == {}
    assert 64 <= engine.tile <= 2048 and engine.cmos_tile is None  # CMOS tiles are planned per photo


def test_the_engines_strip_wise_conditions_equal_conditions_on_the_whole_map(tiny):
    """``_maps_from_estimate`` converts a map taller than one strip in place by :func:`conditions`."""
    from cmosx.models.cmos import conditions

    raw = torch.randn(1 + 6, 600, 7, generator=torch.Generator().manual_seed(5)) * 4
    expected = conditions(raw[None, :1], raw[None, 1:], SIGMA_MAX, blur_scale=0.7)
    out = make(tiny, tile=64, blur_scale=0.7)._maps_from_estimate(raw.clone(), None, (600, 7))
    torch.testing.assert_close(out[:1], expected[0][0], rtol=0, atol=0)
    torch.testing.assert_close(out[1:], expected[1][0])  # float32 tolerance: strided vs contiguous softmax


def test_memory_probes_are_cached_on_disk_cleared_and_survive_a_damaged_file(tiny, monkeypatch):
    import json

    import cmosx.engine.pipeline as pipeline_mod
    from cmosx.engine import probe_cache

    fits = []
    real_fit = pipeline_mod.fit_memory_model
    monkeypatch.setattr(pipeline_mod, "fit_memory_model", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    monkeypatch.setattr(pipeline_mod, "_memory_models", {})
    monkeypatch.setenv("CMOSX_MEMORY_BUDGET", "1G")  # the same budget for every engine: the same fitted tile
    first = make(tiny, tile="auto", cmos_tile="auto")
    assert len(fits) == 2  # the SR and the CMOS memory models
    entries = json.loads(probe_cache.cache_path().read_text())["entries"].values()
    memory = [e for e in entries if e.get("kind") == "memory"]
    assert len(memory) == 2 and all(e["per_pixel"] > 0 and e["fixed"] >= 0 for e in memory)

    monkeypatch.setattr(pipeline_mod, "_memory_models", {})  # a second process, same machine and model
    second = make(tiny, tile="auto", cmos_tile="auto")
    assert len(fits) == 2 and second.tile == first.tile  # read from the disk cache: no probe

    path, count = probe_cache.clear()
    assert count == 2 and not path.exists()  # the precision was given (fp32): only the two memory models
    monkeypatch.setattr(pipeline_mod, "_memory_models", {})
    make(tiny, tile="auto", cmos_tile="auto")
    assert len(fits) == 4  # cleared: measured again

    path.write_text("{ not json")
    monkeypatch.setattr(pipeline_mod, "_memory_models", {})
    again = make(tiny, tile="auto", cmos_tile="auto")  # no crash: the damaged file reads as empty
    assert again.tile >= 64 and len(fits) == 6
    assert len(json.loads(path.read_text())["entries"]) == 2  # and is rewritten
    for entry in ({"kind": "memory", "fixed": -1.0, "per_pixel": 5.0}, {"kind": "memory", "per_pixel": "x"}, []):
        assert pipeline_mod._memory_model_from(entry) is None  # a damaged entry is probed again


def test_cmos_tiles_planned_within_the_memory_budget(tiny, monkeypatch):
    import cmosx.engine.pipeline as pipeline_mod

    engine = make(tiny, cmos_tile="auto")
    memory = engine._cmos_memory()
    monkeypatch.setattr(pipeline_mod, "budget_bytes", lambda device: memory.peak(1200 * 1600))
    tile = engine._cmos_tiling(2400, 3200, (2400, 3200))
    grid = pipeline_mod.TiledRunner.count_tiles(2400, 3200, tile, engine.overlap, engine.cmos_halo, engine.cmos_align)
    assert grid > 1 and engine._cmos_tiling(480, 640, (480, 640)) == (480, 640)  # a small photo: one tile


def test_memory_models_of_an_older_probe_are_not_reused(tiny, monkeypatch):
    """A cache entry written under an older probe version (its figures were too low) is measured again."""
    import json

    import cmosx.engine.pipeline as pipeline_mod
    from cmosx.engine import probe_cache

    fits = []
    real_fit = pipeline_mod.fit_memory_model
    monkeypatch.setattr(pipeline_mod, "fit_memory_model", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    monkeypatch.setattr(pipeline_mod, "_memory_models", {})
    make(tiny, tile="auto", cmos_tile="auto")
    assert len(fits) == 2
    monkeypatch.setattr(pipeline_mod, "MEMORY_PROBE_VERSION", pipeline_mod.MEMORY_PROBE_VERSION + 1)
    monkeypatch.setattr(pipeline_mod, "_memory_models", {})
    make(tiny, tile="auto", cmos_tile="auto")
    assert len(fits) == 4  # the entries of the previous version were not read
    entries = json.loads(probe_cache.cache_path().read_text())["entries"].values()
    assert sum(e.get("kind") == "memory" for e in entries) == 4
