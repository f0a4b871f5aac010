"""Device and precision policy.

- Device ``auto`` picks CUDA, then Apple MPS, then the CPU. A named device that is not there is a
  :class:`~cmosx.errors.DeviceError`.
- Precision ``auto`` is *measured* on every device, never assumed (bf16 was 0.88x fp32 for the lite
  spec on an H100, and slower than fp32 on many CPUs): :func:`choose_precision` times one SR tile in
  fp32 and in each reduced precision the device runs and the model declares safe (CPU: bf16; CUDA: bf16
  where supported, fp16; MPS: fp16), and keeps the fastest that is at least ``MIN_SPEEDUP`` faster than
  fp32 and within ``MIN_PSNR_DB`` of its output; else fp32. The answer is cached per machine and model
  on disk (:mod:`cmosx.engine.probe_cache`; ``cmosx bench clear-cache`` clears it) and
  in the process. ``CMOSX_CPU_BF16=0/1`` skips the probe on the CPU and forces the answer.
- Reduced precision runs under ``torch.autocast`` (convolutions and matmuls in bf16/fp16, the rest in
  fp32); the pipeline redoes in float32 any tile whose output holds NaN or Inf.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor

from cmosx.errors import DeviceError, UsageError
from cmosx.ops.compare import psnr
from cmosx.ops.timing import interleaved_best

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}

# A reduced precision must be at least this much faster than fp32, and this close (PSNR of the probe output).
MIN_SPEEDUP = 1.15
MIN_PSNR_DB = 40.0
PROBE_ROUNDS = 5  # alternated timing rounds of the precision probe (best round of each kept)

_precision_cache: dict[str, torch.dtype] = {}  # this process's decisions, by probe_cache key


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda > mps > cpu; an explicit device is checked for availability."""
    if isinstance(name, torch.device):
        name = str(name)
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{name}' requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type == "mps":
        if not mps_available():
            raise DeviceError(f"device '{name}' requested but Apple MPS is not available on this machine")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device '{name}' (use auto, cpu, cuda, cuda:N or mps)")
    return device


def parse_precision(name: str | torch.dtype) -> torch.dtype | None:
    """A precision name -> dtype; ``auto`` -> None (decided per device)."""
    if isinstance(name, torch.dtype):
        if name not in PRECISIONS.values():
            raise UsageError(f"unsupported precision {name}")
        return name
    key = name.strip().lower()
    if key == "auto":
        return None
    if key not in PRECISIONS:
        raise UsageError(f"unknown precision '{name}' (use auto, fp32, bf16 or fp16)")
    return PRECISIONS[key]


def check_precision_supported(dtype: torch.dtype, device: torch.device) -> None:
    """Raise :class:`DeviceError` for a precision the device cannot run."""
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"bf16 requested but {torch.cuda.get_device_name(device)} does not support it")
    if device.type == "cpu" and dtype == torch.float16:
        raise DeviceError("fp16 is not supported on the CPU (use fp32 or bf16)")


def candidate_precisions(device: torch.device, bf16_safe: bool, fp16_safe: bool) -> list[torch.dtype]:
    """The reduced precisions ``auto`` may pick on ``device`` for a model (fp32 is always the fallback)."""
    found = []
    if bf16_safe and (device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())):
        found.append(torch.bfloat16)
    if fp16_safe and device.type in ("cuda", "mps"):
        found.append(torch.float16)
    return found


def autocast_context(device: torch.device, dtype: torch.dtype):
    """``torch.autocast`` for reduced precision, a no-op context for float32."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def precision_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bf16" (the names of ``--precision``)."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def measure_precisions(
    run: Callable[[torch.dtype], Tensor],
    candidates: list[torch.dtype],
    sync: Callable[[], None] = lambda: None,
    rounds: int = PROBE_ROUNDS,
) -> tuple[torch.dtype, dict[str, float]]:
    """Time ``run(dtype)`` (one small tile) in fp32 and each candidate; the fastest good enough one wins.

    The precisions are timed in alternation over ``rounds`` rounds and the best round of each is kept
    (:func:`~cmosx.ops.timing.interleaved_best`), so a busy spell on a shared machine slows all of them
    alike instead of deciding the answer (timed one after the other under a load average of 4-9 on a
    2-core Xeon with AMX, bf16 once measured 0.79x fp32 and fp32 was cached; alternated it is 1.6-1.8x).
    Returns the dtype and the measurement: ``speedup_<name>`` (fp32 time / its time) and ``psnr_db_<name>``
    against the fp32 output, per candidate; a candidate that raises (no kernel for an op) is skipped.
    """
    outputs: dict[torch.dtype, Tensor] = {torch.float32: run(torch.float32)}
    sync()
    for dtype in candidates:
        try:
            outputs[dtype] = run(dtype)
            sync()
        except (RuntimeError, NotImplementedError):
            continue
    dtypes = list(outputs)
    times = dict(zip(dtypes, interleaved_best([lambda d=d: run(d) for d in dtypes], sync, rounds), strict=True))
    reference = outputs[torch.float32].float().clamp(0, 1)
    choice, fastest, measured = torch.float32, times[torch.float32] / MIN_SPEEDUP, {}
    for dtype in dtypes[1:]:
        out = outputs[dtype]
        finite = bool(torch.isfinite(out).all())
        quality = psnr(out.float().clamp(0, 1), reference) if finite else 0.0
        name = precision_name(dtype)
        measured[f"speedup_{name}"] = times[torch.float32] / times[dtype]
        measured[f"psnr_db_{name}"] = quality
        if quality >= MIN_PSNR_DB and times[dtype] <= fastest:
            choice, fastest = dtype, times[dtype]
    return choice, measured


def choose_precision(
    device: torch.device,
    model_id: str,
    run: Callable[[torch.dtype], Tensor],
    candidates: list[torch.dtype],
    sync: Callable[[], None] = lambda: None,
) -> tuple[torch.dtype, dict[str, float]]:
    """The ``auto`` precision for a model on ``device``: from the caches, else measured and cached.

    ``model_id`` names the networks' shapes and weights (see ``Upscaler``); ``run(dtype)`` runs one probe
    tile. Returns the dtype and the measurement (empty when the answer came from a cache or from
    ``CMOSX_CPU_BF16``).
    """
    from cmosx.engine import probe_cache

    forced = os.environ.get("CMOSX_CPU_BF16")
    if device.type == "cpu" and forced in ("0", "1"):
        return (torch.bfloat16 if forced == "1" and torch.bfloat16 in candidates else torch.float32), {}
    if not candidates:
        return torch.float32, {}
    key, machine, model = probe_cache.cache_key(device, model_id)
    if key in _precision_cache:
        return _precision_cache[key], {}
    stored = probe_cache.load(key)
    if stored is not None and (PRECISIONS[stored] in candidates or stored == "fp32"):
        _precision_cache[key] = PRECISIONS[stored]
        return PRECISIONS[stored], {}
    choice, measured = measure_precisions(run, candidates, sync)
    _precision_cache[key] = choice
    probe_cache.store(key, precision_name(choice), machine, model, measured)
    return choice, measured
