"""Measuring a callable: its best wall time (alone or in alternation with others) and its FLOPs.

The one timing loop behind ``cmosx bench``, the network benchmark and the ``--precision auto`` probe.
Every timed function is called once first (oneDNN / cuDNN pick their kernels on the first call), then
the best of the timed calls is kept: on a machine shared with other work the minimum is the time least
disturbed by it. ``sync`` waits for queued device work after each call (:func:`device_sync`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from cmosx.ops.fused_conv import fusion_disabled


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA, MPS); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def device_sync(device: torch.device) -> Callable[[], None]:
    """The ``sync`` argument of the timers for ``device``."""
    return lambda: synchronize(device)


def interleaved_best(
    fns: list[Callable[[], object]], sync: Callable[[], None] | None = None, rounds: int = 2
) -> list[float]:
    """Best wall time (seconds) of each function over ``rounds`` rounds, timed in alternation.

    One warm-up call each first. Alternating keeps ratios meaningful on a shared machine: a busy spell
    slows every function of a round, and the best round of each is kept.
    """
    sync = sync or (lambda: None)
    for fn in fns:
        fn()
        sync()
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            sync()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def best_time(fn: Callable[[], object], sync: Callable[[], None] | None = None, repeats: int = 2) -> float:
    """Best wall time (seconds) of ``repeats`` calls of ``fn`` after one warm-up call."""
    return interleaved_best([fn], sync, repeats)[0]


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (2 per multiply-accumulate), as ``torch.utils.flop_counter`` counts them:
    convolutions and matrix products, not elementwise operations. ``fn`` runs with the plain ops (the
    counter does not know the fused kernels of :mod:`cmosx.ops.fused_conv`; same arithmetic)."""
    with fusion_disabled(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
