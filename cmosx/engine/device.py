"""Device and precision policy.

- Device ``auto`` picks CUDA, then Apple MPS, then the CPU. A named device that is not there is a
  :class:`~cmosx.errors.DeviceError`.
- Precision ``auto``:
  * CUDA: bfloat16 when the GPU supports it and the model says bf16 is safe, else float16 when the
    model says fp16 is safe, else float32.
  * MPS: float16 when the model says fp16 is safe, else float32.
  * CPU: float32, unless bfloat16 is *measured* faster and close enough on this machine. Half
    precision is slower than fp32 on many CPUs and crashes some ops, so we never assume: the first
    ``Upscaler`` of a process times one small tile both ways (:func:`choose_cpu_precision`) and the
    answer is cached for the rest of the process, keyed by model and shape. ``CMOSX_CPU_BF16=0/1``
    skips the probe and forces the answer (for reproducible runs and tests).
- Reduced precision runs under ``torch.autocast`` (convolutions and matmuls in bf16/fp16, the rest in
  fp32); the pipeline redoes in float32 any tile whose output holds NaN or Inf.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor

from cmosx.errors import DeviceError, UsageError

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}

# bf16 on the CPU must be at least this much faster, and this close to fp32 (PSNR of the probe output).
CPU_BF16_MIN_SPEEDUP = 1.15
CPU_BF16_MIN_PSNR_DB = 40.0

_cpu_precision_cache: dict[tuple, torch.dtype] = {}


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


def default_precision(device: torch.device, bf16_safe: bool, fp16_safe: bool) -> torch.dtype | None:
    """The ``auto`` precision for GPUs; None on the CPU, where it must be measured."""
    if device.type == "cuda":
        if bf16_safe and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if fp16_safe:
            return torch.float16
        return torch.float32
    if device.type == "mps":
        return torch.float16 if fp16_safe else torch.float32
    return None


def autocast_context(device: torch.device, dtype: torch.dtype):
    """``torch.autocast`` for reduced precision, a no-op context for float32."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def psnr(a: Tensor, b: Tensor, peak: float = 1.0) -> float:
    """PSNR in dB between two tensors of equal shape (inf when identical)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    if mse == 0:
        return float("inf")
    return 10.0 * torch.log10(torch.tensor(peak**2 / mse)).item()


def _time_call(fn: Callable[[], Tensor], repeats: int = 1) -> tuple[float, Tensor]:
    out = fn()  # warm-up (oneDNN picks kernels on the first call)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def choose_cpu_precision(
    key: tuple, run: Callable[[torch.dtype], Tensor], bf16_safe: bool
) -> tuple[torch.dtype, dict[str, float]]:
    """Decide fp32 or bf16 on the CPU by timing ``run(dtype)`` (one small tile) both ways.

    Cached per ``key`` for the life of the process. Returns the dtype and the measurement
    (empty when the answer came from the cache or from ``CMOSX_CPU_BF16``).
    """
    forced = os.environ.get("CMOSX_CPU_BF16")
    if forced in ("0", "1"):
        return (torch.bfloat16 if forced == "1" and bf16_safe else torch.float32), {}
    if not bf16_safe:
        return torch.float32, {}
    if key in _cpu_precision_cache:
        return _cpu_precision_cache[key], {}
    t32, out32 = _time_call(lambda: run(torch.float32))
    try:
        t16, out16 = _time_call(lambda: run(torch.bfloat16))
    except (RuntimeError, NotImplementedError):  # an op without a bf16 CPU kernel: stay in fp32
        _cpu_precision_cache[key] = torch.float32
        return torch.float32, {}
    finite = bool(torch.isfinite(out16).all())
    quality = psnr(out16.float().clamp(0, 1), out32.float().clamp(0, 1)) if finite else 0.0
    speedup = t32 / t16
    choice = torch.bfloat16 if (speedup >= CPU_BF16_MIN_SPEEDUP and quality >= CPU_BF16_MIN_PSNR_DB) else torch.float32
    _cpu_precision_cache[key] = choice
    return choice, {"speedup": speedup, "psnr_db": quality}
