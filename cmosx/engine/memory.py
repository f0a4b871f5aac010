"""Memory policy: how much is free, how much a tile costs (measured), and which errors mean out-of-memory.

Tile size ``auto`` = probe, then fit: run the network on two small tiles, measure the peak memory of
each (CUDA: ``torch.cuda.max_memory_allocated``; CPU on Linux: the growth of the process's resident
high-water mark, which sees oneDNN's buffers too; elsewhere: the peak of live tensor bytes, tracked by
a dispatch mode), fit ``peak = fixed + per_pixel * input_pixels`` and pick tiles whose working set fits
the memory budget (:func:`budget_bytes`: ``$CMOSX_MEMORY_BUDGET`` or a share of the free memory).

Out-of-memory is recognised by exception type only (:data:`OOM_ERRORS`), never by message text. On
the CPU PyTorch reports a failed allocation as a plain ``RuntimeError``, so there we do not retry; we
keep the working set small up front instead (tiles sized from ``MemAvailable``).
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cmosx.errors import UsageError

#: The exception types that mean "the device ran out of memory" (torch.cuda.OutOfMemoryError is an alias).
OOM_ERRORS: tuple[type[BaseException], ...] = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)

# Fractions of the free memory a batch of tiles may use.
GPU_BUDGET_FRACTION = 0.6
CPU_BUDGET_FRACTION = 0.5
# The CPU default: the lite CMOS needs about 2 KB per LR pixel of tile and a 160-px halo; at 8 GiB a 6 MP
# photo's estimate computes 1.6x its pixels (halos), at 4 GiB 2.2x.
CPU_BUDGET_CAP_BYTES = 8 << 30
CPU_PROBE_REPEATS = 3  # runs in a row per resident-memory probe (a steady state of fragmentation)
BUDGET_ENV_VAR = "CMOSX_MEMORY_BUDGET"  # bytes a tile's working set may use, e.g. 2G, 1500M (overrides the rest)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def free_memory_bytes(device: torch.device) -> int:
    """Bytes free for this process on ``device`` (CPU: ``MemAvailable`` from /proc/meminfo)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def parse_bytes(text: str) -> int:
    """``"4G"``, ``"1500M"``, ``"2.5g"``, ``"800000000"`` -> bytes (binary units); UsageError when malformed."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    try:
        number = float(value[: len(value) - len(unit)])
    except ValueError:
        number = -1.0
    if not (number > 0 and number * _UNITS[unit] >= 1 << 20):
        raise UsageError(f"{BUDGET_ENV_VAR}={text!r}: expected a size of at least 1M such as 4G or 1500M")
    return int(number * _UNITS[unit])


def budget_bytes(device: torch.device) -> int:
    """The memory one batch of tiles (its whole working set) may use on ``device``.

    ``$CMOSX_MEMORY_BUDGET`` when set; else on the CPU half of ``MemAvailable``, at most 8 GiB, and on
    GPUs 60 % of the free memory. The process's peak is about this budget plus the output buffers
    (12 bytes per output pixel for the x4 float image, 44 bytes per input pixel for photo and maps).
    """
    override = os.environ.get(BUDGET_ENV_VAR, "").strip()
    if override:
        return parse_bytes(override)
    free = free_memory_bytes(device)
    if device.type == "cpu":
        return int(min(free * CPU_BUDGET_FRACTION, CPU_BUDGET_CAP_BYTES))
    return int(free * GPU_BUDGET_FRACTION)


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of live tensor storages created inside the mode and their peak."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor) and item.device.type != "meta":
                storage = item.untyped_storage()
                key = storage.data_ptr()
                if key in self._seen or key == 0:
                    continue
                self._seen.add(key)
                nbytes = storage.nbytes()
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._release, key, nbytes)
        return out


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _trim_heap() -> None:
    """Hand free heap pages back to the kernel (glibc ``malloc_trim``), so that reusing them shows in RSS."""
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
        if trim is not None:
            trim(0)
    except OSError:
        pass


def measure_peak_resident_bytes(fn: Callable[[], object]) -> int | None:
    """Growth of the process's peak resident memory while ``fn()`` runs (bytes); None where not measurable.

    Linux only: free heap pages are trimmed, the high-water mark is reset (``/proc/self/clear_refs``),
    and ``VmHWM - VmRSS`` before is what ``fn`` touched at its peak: tensors, oneDNN's reorder buffers
    and scratch space, allocator slack. Other threads of the process must be idle.
    """
    gc.collect()
    _trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        base = _status_bytes("VmRSS")
        result = fn()
        peak = _status_bytes("VmHWM") - base
    except OSError:
        return None
    del result
    return max(int(peak), 0)


def measure_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak extra tensor memory ``fn()`` needs on ``device`` (bytes; CPU: live tensor storages only)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del result
        return int(peak)
    tracker = _LiveBytes()
    with tracker:
        result = fn()
    del result
    return int(tracker.peak)


@dataclass(frozen=True)
class MemoryModel:
    """``peak bytes = fixed + per_pixel * input pixels`` for one tile (fitted from two probes)."""

    fixed: float
    per_pixel: float

    def peak(self, pixels: float, batch: int = 1) -> float:
        """Predicted working set (bytes) of ``batch`` tiles of ``pixels`` input pixels each."""
        return self.fixed + self.per_pixel * pixels * batch

    def tile_for(self, budget: int, batch: int, halo: int, multiple_of: int, lo: int = 32, hi: int = 2048) -> int:
        """The largest core size (multiple of ``multiple_of``) whose ``batch`` of tiles fits ``budget``."""
        usable = max(budget - self.fixed, 0) / max(self.per_pixel * batch, 1e-9)
        side = int(usable**0.5) - 2 * halo
        side -= side % multiple_of
        return int(min(max(side, lo), hi))


def _repeated(run: Callable[[], object], times: int) -> object:
    """``run()`` ``times`` times in a row (each result dropped before the next run); the last result."""
    for _ in range(max(times, 1) - 1):
        run()
    return run()


def fit_memory_model(
    probe: Callable[[int, int], object],
    sizes: tuple[tuple[int, int], tuple[int, int]],
    device: torch.device,
    repeats: int = CPU_PROBE_REPEATS,
) -> MemoryModel:
    """Fit :class:`MemoryModel` from ``probe(rows, cols)`` runs on two input sizes (small, larger).

    The small size runs once first as a warm-up (one-time allocations are not per-tile costs); then the
    larger size is measured, then the small one (buffers the larger run leaves, such as oneDNN's scratch
    space, lower the small figure and so raise the slope: the safe side). ``per_pixel`` is the slope;
    ``fixed`` is what is left of the larger probe's peak, at least 0.

    On the CPU the peak is the growth of the resident high-water mark where measurable
    (:func:`measure_peak_resident_bytes`), else the live tensor bytes, over ``repeats`` runs in a row, and
    ``per_pixel`` is at least the larger probe's average (no fixed part). With freed memory retained
    (:func:`retain_freed_memory`) a tile's resident need is not its live working set: freed blocks of
    other sizes fragment the heap, so tile after tile the process holds about twice the live bytes (the
    lite SR network, bf16, 2-core Xeon: 1.14 KB per pixel live, 2.35-2.48 KB resident on 512-2048 px
    tiles). A single run measured 1.3-3.7 KB depending on the pages the process already held; three runs
    in a row measure 2.5-2.8 KB. Elsewhere (an allocator's exact peak) ``per_pixel`` is at least half the
    larger probe's average, a guard against noise.
    """
    resident = device.type == "cpu"

    def measure(rows: int, cols: int) -> float:
        run = lambda: probe(rows, cols)  # noqa: E731
        if resident:
            peak = measure_peak_resident_bytes(lambda: _repeated(run, repeats))
            if peak is not None:
                return float(peak)
        return float(measure_peak_bytes(run, device))

    (r0, c0), (r1, c1) = sizes
    small, large = r0 * c0, r1 * c1
    if large <= small:
        raise ValueError(f"memory probe sizes must grow: {sizes}")
    probe(r0, c0)  # warm-up
    peak_large = measure(r1, c1)  # first: buffers kept from it (oneDNN scratch) then lower the small one
    peak_small = measure(r0, c0)
    floor = (1.0 if resident else 0.5) * peak_large / large
    per_pixel = max((peak_large - peak_small) / (large - small), floor, 1.0)
    fixed = max(peak_large - per_pixel * large, 0.0)
    return MemoryModel(fixed=fixed, per_pixel=per_pixel)


def release_cached(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error so the retry starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_retained = False


def _mallopt():
    """glibc's ``mallopt`` (ctypes), or None where the C library is not glibc."""
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    mallopt = getattr(libc, "mallopt", None)
    return mallopt if mallopt is not None and hasattr(libc, "gnu_get_libc_version") else None


def retain_freed_memory() -> bool:
    """Keep freed CPU memory in this process for reuse instead of returning it to the kernel (glibc only).

    By default glibc serves every allocation above 32 MiB with a fresh ``mmap`` and unmaps it when freed,
    so each large activation of every tile is page-faulted (and zeroed by the kernel) again: on multi-MB
    feature maps that was up to half of the CPU time of an upscale. With ``mmap`` off and trimming off,
    freed blocks go back to malloc's heap and the next tile reuses them. The process's resident memory
    then stays at its peak working set (the tile budget plus the output buffers) instead of shrinking
    between tiles. Process-wide and idempotent; returns False where it does not apply (not glibc).
    """
    global _retained
    if _retained:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    _retained = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _retained
