"""Device, precision and memory policy (no model needed)."""

import time

import pytest
import torch

import cmosx.engine.device as device_mod
from cmosx.engine.device import (
    autocast_context,
    check_precision_supported,
    choose_cpu_precision,
    parse_precision,
    resolve_device,
)
from cmosx.engine.memory import OOM_ERRORS, MemoryModel, budget_bytes, measure_peak_bytes
from cmosx.errors import DeviceError, UsageError


def test_auto_device_prefers_cuda_then_mps_then_cpu():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if device_mod.mps_available() else "cpu")
    assert resolve_device("auto").type == expected
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(UsageError):
        resolve_device("tpu")
    with pytest.raises(UsageError):
        resolve_device("not a device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_missing_cuda_is_a_device_error():
    with pytest.raises(DeviceError):
        resolve_device("cuda")


def test_precision_names_and_support():
    assert parse_precision("auto") is None
    assert parse_precision("BF16") is torch.bfloat16 and parse_precision("float32") is torch.float32
    with pytest.raises(UsageError):
        parse_precision("int8")
    with pytest.raises(DeviceError):
        check_precision_supported(torch.float16, torch.device("cpu"))
    assert autocast_context(torch.device("cpu"), torch.float32).__class__.__name__ == "nullcontext"


def _fake_run(t32, t16, noise):
    calls = []

    def run(dtype):
        calls.append(dtype)
        time.sleep(t32 if dtype == torch.float32 else t16)
        base = torch.linspace(0, 1, 1000)
        return base if dtype == torch.float32 else base + noise

    return run, calls


@pytest.mark.parametrize(
    "t32,t16,noise,expected",
    [
        (0.03, 0.005, 1e-3, torch.bfloat16),  # faster and close: bf16
        (0.005, 0.03, 1e-3, torch.float32),  # slower: fp32
        (0.03, 0.005, 0.1, torch.float32),  # faster but not close (20 dB): fp32
    ],
)
def test_cpu_precision_is_measured_and_cached(monkeypatch, t32, t16, noise, expected):
    monkeypatch.delenv("CMOSX_CPU_BF16", raising=False)
    monkeypatch.setattr(device_mod, "_cpu_precision_cache", {})
    run, calls = _fake_run(t32, t16, noise)
    chosen, measured = choose_cpu_precision(("key",), run, bf16_safe=True)
    assert chosen is expected and set(measured) == {"speedup", "psnr_db"}
    n = len(calls)
    again, measured_again = choose_cpu_precision(("key",), run, bf16_safe=True)
    assert again is expected and measured_again == {} and len(calls) == n  # cached: no second probe


def test_cpu_precision_can_be_forced_and_respects_model_safety(monkeypatch):
    monkeypatch.setattr(device_mod, "_cpu_precision_cache", {})
    run, calls = _fake_run(0.0, 0.0, 0.0)
    monkeypatch.setenv("CMOSX_CPU_BF16", "1")
    assert choose_cpu_precision(("k",), run, bf16_safe=True)[0] is torch.bfloat16
    assert choose_cpu_precision(("k",), run, bf16_safe=False)[0] is torch.float32
    monkeypatch.setenv("CMOSX_CPU_BF16", "0")
    assert choose_cpu_precision(("k",), run, bf16_safe=True)[0] is torch.float32
    assert calls == []


def test_oom_is_recognised_by_type():
    assert issubclass(torch.cuda.OutOfMemoryError, OOM_ERRORS)
    assert not issubclass(RuntimeError, OOM_ERRORS)


def test_peak_memory_of_live_tensors_is_measured():
    n = 1_000_000

    def work():
        a = torch.ones(n)  # 4 MB
        b = a * 2  # 4 MB more while a lives
        del a
        return (b + 1).sum()  # b and b + 1 live together: 8 MB

    peak = measure_peak_bytes(work, torch.device("cpu"))
    assert 8 * n <= peak < 8 * n + 65536


def test_tile_fit_grows_with_budget_and_respects_bounds():
    model = MemoryModel(fixed=1e6, per_pixel=4000.0)
    small = model.tile_for(200e6, batch=1, halo=16, multiple_of=8)
    large = model.tile_for(2e9, batch=1, halo=16, multiple_of=8)
    assert 32 <= small < large <= 2048 and small % 8 == 0
    assert model.tile_for(2e9, batch=4, halo=16, multiple_of=8) < large
    assert model.tile_for(1.0, batch=1, halo=16, multiple_of=8) == 32  # never below the floor
    assert budget_bytes(torch.device("cpu")) > 0
