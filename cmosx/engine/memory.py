"""Memory policy: how much is free, how much a tile costs (measured), and which errors mean out-of-memory.

Tile size ``auto`` = probe, then fit: run the network on two small tiles, measure the peak memory of
each (CUDA: ``torch.cuda.max_memory_allocated``; elsewhere: the peak of live tensor bytes, tracked by a
dispatch mode), fit ``peak = fixed + per_pixel * input_pixels`` and pick the largest tile whose batch
fits a fraction of the free memory.

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

#: The exception types that mean "the device ran out of memory" (torch.cuda.OutOfMemoryError is an alias).
OOM_ERRORS: tuple[type[BaseException], ...] = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)

# Fractions of the free memory a batch of tiles may use.
GPU_BUDGET_FRACTION = 0.6
CPU_BUDGET_FRACTION = 0.25
CPU_BUDGET_CAP_BYTES = 4 << 30  # larger CPU tiles gain nothing once the halo overhead is small


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


def budget_bytes(device: torch.device) -> int:
    """The memory a batch of tiles may use on ``device``."""
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


def measure_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak extra memory ``fn()`` needs on ``device`` (bytes)."""
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

    def tile_for(self, budget: int, batch: int, halo: int, multiple_of: int, lo: int = 32, hi: int = 2048) -> int:
        """The largest core size (multiple of ``multiple_of``) whose ``batch`` of tiles fits ``budget``."""
        usable = max(budget - self.fixed, 0) / max(self.per_pixel * batch, 1e-9)
        side = int(usable**0.5) - 2 * halo
        side -= side % multiple_of
        return int(min(max(side, lo), hi))


def fit_memory_model(probe: Callable[[], object], pixels: int, device: torch.device) -> MemoryModel:
    """Fit :class:`MemoryModel` from one ``probe()`` run on an input of ``pixels`` pixels.

    The whole peak is attributed to the pixels, which over-estimates the per-pixel cost a little for
    small probes: it errs on the safe side.
    """
    peak = measure_peak_bytes(probe, device)
    return MemoryModel(fixed=0.0, per_pixel=max(peak / float(pixels), 1.0))


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
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
        if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
            return False
        _retained = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False
    return _retained
