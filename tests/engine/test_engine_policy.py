"""Device, precision and memory policy (no model needed)."""

import json
import subprocess
import sys
import time

import pytest
import torch

import cmosx.engine.device as device_mod
from cmosx.engine import probe_cache
from cmosx.engine.device import (
    autocast_context,
    candidate_precisions,
    check_precision_supported,
    choose_precision,
    parse_precision,
    resolve_device,
)
from cmosx.engine.memory import (
    OOM_ERRORS,
    MemoryModel,
    budget_bytes,
    fit_memory_model,
    measure_peak_bytes,
    measure_peak_resident_bytes,
    parse_bytes,
)
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


CPU = torch.device("cpu")
BF16 = [torch.bfloat16]


def _fake_run(seconds: dict, noise: dict):
    """run(dtype) sleeping ``seconds[dtype]`` and returning a ramp off by ``noise[dtype]``; records calls."""
    calls = []

    def run(dtype):
        calls.append(dtype)
        time.sleep(seconds[dtype])
        return torch.linspace(0, 1, 1000) + noise.get(dtype, 0.0)

    return run, calls


@pytest.mark.parametrize(
    "t32,t16,noise,expected",
    [
        (0.03, 0.005, 1e-3, torch.bfloat16),  # faster and close: bf16
        (0.005, 0.03, 1e-3, torch.float32),  # slower: fp32
        (0.03, 0.005, 0.1, torch.float32),  # faster but not close (20 dB): fp32
    ],
)
def test_cpu_precision_is_measured_and_cached_on_disk(monkeypatch, t32, t16, noise, expected):
    monkeypatch.delenv("CMOSX_CPU_BF16", raising=False)
    run, calls = _fake_run({torch.float32: t32, torch.bfloat16: t16}, {torch.bfloat16: noise})
    chosen, measured = choose_precision(CPU, "model-a", run, BF16)
    assert chosen is expected and set(measured) == {"speedup_bf16", "psnr_db_bf16"}
    n = len(calls)
    again, measured_again = choose_precision(CPU, "model-a", run, BF16)
    assert again is expected and measured_again == {} and len(calls) == n  # in-process cache: no second probe
    monkeypatch.setattr(device_mod, "_precision_cache", {})  # a new process
    third, measured_third = choose_precision(CPU, "model-a", run, BF16)
    assert third is expected and measured_third == {} and len(calls) == n  # read from the disk cache
    choose_precision(CPU, "model-b", run, BF16)
    assert len(calls) > n  # another model is measured on its own


def test_precision_probe_alternates_so_a_busy_spell_does_not_decide(monkeypatch):
    """On a fake clock: bf16 costs half of fp32, and a busy spell slows a stretch of consecutive calls 10x.
    Timed one precision after the other the spell could fall on all of bf16's calls; alternated, every
    precision gets a calm round and the true ratio (2.0) is measured."""
    import cmosx.ops.timing as timing_mod

    clock = {"now": 0.0, "calls": 0}
    cost = {torch.float32: 1.0, torch.bfloat16: 0.5}

    def run(dtype):
        clock["calls"] += 1
        busy = 3 <= clock["calls"] <= 7  # the spell: the warm-up calls and the first timed rounds
        clock["now"] += cost[dtype] * (10 if busy else 1)
        return torch.linspace(0, 1, 100)

    monkeypatch.setattr(timing_mod.time, "perf_counter", lambda: clock["now"])
    chosen, measured = device_mod.measure_precisions(run, BF16)
    assert chosen is torch.bfloat16 and measured["speedup_bf16"] == pytest.approx(2.0)


def test_precision_cache_file_is_atomic_json_and_can_be_cleared_or_turned_off(tmp_path, monkeypatch):
    monkeypatch.delenv("CMOSX_CPU_BF16", raising=False)
    path = probe_cache.cache_path()
    assert path == tmp_path / "probe-cache.json"  # the test's own cache (conftest)
    run, calls = _fake_run({torch.float32: 0.02, torch.bfloat16: 0.002}, {})
    choose_precision(CPU, "m", run, BF16)
    data = json.loads(path.read_text())
    (entry,) = data["entries"].values()
    assert entry["precision"] == "bf16" and entry["model"] == "m" and "cpu" in entry["machine"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".cmosx-tmp-")]
    assert probe_cache.clear() == (path, 1) and not path.exists()
    path.write_text("{ not json")  # a damaged cache reads as empty and is rewritten
    monkeypatch.setattr(device_mod, "_precision_cache", {})
    n = len(calls)
    assert choose_precision(CPU, "m", run, BF16)[0] is torch.bfloat16 and len(calls) > n
    assert json.loads(path.read_text())["version"] == probe_cache.VERSION
    monkeypatch.setenv("CMOSX_PROBE_CACHE", "off")
    assert probe_cache.cache_path() is None and probe_cache.clear() == (None, 0)


def test_default_cache_lives_in_the_user_cache_dir_and_the_old_variable_still_works(tmp_path, monkeypatch):
    monkeypatch.delenv("CMOSX_PROBE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert probe_cache.cache_path() == tmp_path / "xdg" / "cmosx" / "probes.json"
    monkeypatch.setenv("CMOSX_PRECISION_CACHE", str(tmp_path / "old.json"))
    assert probe_cache.cache_path() == tmp_path / "old.json"
    monkeypatch.setenv("CMOSX_PRECISION_CACHE", "off")
    assert probe_cache.cache_path() is None


def test_cpu_precision_can_be_forced_and_respects_model_safety(monkeypatch):
    run, calls = _fake_run({torch.float32: 0.0, torch.bfloat16: 0.0}, {})
    monkeypatch.setenv("CMOSX_CPU_BF16", "1")
    assert choose_precision(CPU, "k", run, BF16)[0] is torch.bfloat16
    assert choose_precision(CPU, "k", run, [])[0] is torch.float32
    monkeypatch.setenv("CMOSX_CPU_BF16", "0")
    assert choose_precision(CPU, "k", run, BF16)[0] is torch.float32
    assert calls == []
    assert candidate_precisions(CPU, True, True) == [torch.bfloat16]  # never fp16 on the CPU
    assert candidate_precisions(CPU, False, True) == []


@pytest.mark.parametrize(
    "times,expected",
    [
        ({"fp32": 0.02, "bf16": 0.0227, "fp16": 0.03}, torch.float32),  # bf16 0.88x fp32 (an H100, lite): fp32
        ({"fp32": 0.03, "bf16": 0.01, "fp16": 0.005}, torch.float16),  # the fastest good candidate
        ({"fp32": 0.03, "bf16": 0.005, "fp16": 0.01}, torch.bfloat16),
    ],
)
def test_gpu_precision_is_measured_too(monkeypatch, times, expected):
    """The policy on a GPU, with the device mocked: candidates, measurement and the cache are device-agnostic."""
    gpu = torch.device("cuda")
    monkeypatch.setattr(probe_cache, "machine_id", lambda device: "cuda Mock GPU sm90 torch x")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert candidate_precisions(gpu, True, True) == [torch.bfloat16, torch.float16]
    assert candidate_precisions(gpu, True, False) == [torch.bfloat16]
    seconds = {torch.float32: times["fp32"], torch.bfloat16: times["bf16"], torch.float16: times["fp16"]}
    run, calls = _fake_run(seconds, {torch.bfloat16: 1e-3, torch.float16: 1e-4})
    syncs = []
    chosen, measured = choose_precision(gpu, "lite", run, [torch.bfloat16, torch.float16], sync=lambda: syncs.append(1))
    assert chosen is expected and set(measured) == {"speedup_bf16", "psnr_db_bf16", "speedup_fp16", "psnr_db_fp16"}
    assert len(syncs) == len(calls)  # every timed call waits for the device
    monkeypatch.setattr(device_mod, "_precision_cache", {})
    assert choose_precision(gpu, "lite", run, [torch.bfloat16, torch.float16]) == (expected, {})


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


def test_memory_budget_can_be_set_and_bad_values_are_usage_errors(monkeypatch):
    assert parse_bytes("4G") == 4 << 30 and parse_bytes("1500M") == 1500 << 20 and parse_bytes("2.5GiB") == 5 << 29
    assert parse_bytes(str(3 << 20)) == 3 << 20
    monkeypatch.setenv("CMOSX_MEMORY_BUDGET", "3G")
    assert budget_bytes(torch.device("cpu")) == 3 << 30
    for bad in ("lots", "-1G", "0", "12K"):
        monkeypatch.setenv("CMOSX_MEMORY_BUDGET", bad)
        with pytest.raises(UsageError, match="CMOSX_MEMORY_BUDGET"):
            budget_bytes(torch.device("cpu"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs")
def test_memory_model_fits_the_resident_peak_of_two_probe_sizes():
    def probe(rows, cols):  # 40 bytes per pixel live at once (ten float32 planes), nothing fixed
        planes = [torch.ones(rows, cols) for _ in range(10)]
        return sum(p.sum() for p in planes)

    assert measure_peak_resident_bytes(lambda: probe(1000, 1000)) >= 40e6 * 0.95
    model = fit_memory_model(probe, ((500, 500), (1000, 1000)), torch.device("cpu"))
    # at least the live bytes; runs in a row may hold more (freed blocks reused unevenly): measured 40-52
    assert 36 <= model.per_pixel <= 64 and model.peak(2000 * 2000) >= 0.9 * 40 * 2000 * 2000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc policy")
def test_retained_memory_is_reused_without_page_faults():
    """In a fresh process: a 64 MiB tensor like the ones freed before costs page faults only without retaining."""
    code = (
        "import resource, sys, torch\n"
        "from cmosx.engine.memory import retain_freed_memory\n"
        "if sys.argv[1] == '1': assert retain_freed_memory()\n"
        "counts = []\n"
        "for _ in range(10):\n"  # glibc reuses the freed block on some of the later rounds, not always the next
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    torch.ones(16 << 20).sum()\n"
        "    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
        "print(min(counts[1:]))\n"  # the first allocation always faults its pages in
    )
    faults = {}
    for retain in ("0", "1"):
        done = subprocess.run([sys.executable, "-c", code, retain], capture_output=True, text=True, check=True)
        faults[retain] = int(done.stdout.split()[-1])
    pages = (64 << 20) // 4096
    assert faults["0"] > pages // 2 and faults["1"] < pages // 8, faults


def test_cpu_memory_fit_measures_repeated_runs_larger_size_first(monkeypatch):
    """Three runs in a row per measurement, the larger size before the smaller, and on the CPU never
    fewer bytes per pixel than the larger probe's average (a fragmented heap holds more than the slope)."""
    import cmosx.engine.memory as memory_mod

    calls: list[int] = []
    measured: list[list[int]] = []

    def fake_measure(fn):
        start = len(calls)
        fn()
        measured.append(calls[start:])
        side = calls[-1]
        return 3000 * side * side if side == 20 else 5000 * side * side  # slope 2333 < large average 3000

    monkeypatch.setattr(memory_mod, "measure_peak_resident_bytes", fake_measure)
    model = fit_memory_model(lambda r, c: calls.append(r), ((10, 10), (20, 20)), torch.device("cpu"))
    assert calls[0] == 10 and measured == [[20, 20, 20], [10, 10, 10]]
    assert model.per_pixel == pytest.approx(3000) and model.fixed == 0
