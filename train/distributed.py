"""Multi-process training through ``torchrun`` and PyTorch DDP (no process management of our own).

``torchrun --nproc-per-node N -m cmosx train ...`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the
rendezvous variables; :func:`init_from_env` joins the process group (NCCL on CUDA, gloo on CPU) and
:func:`wrap` wraps the trained module in ``DistributedDataParallel``. Without those variables everything
here is a no-op, so single-process runs take the same code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from cmosx.engine.device import resolve_device
from cmosx.launch import launch_from_environment


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``; ``device`` is the one it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """The training device: "auto" -> ``cuda:<local_rank>`` when CUDA is present, else the CPU (training does
    not pick MPS by itself); a named one is checked by :func:`cmosx.engine.device.resolve_device`
    (UsageError for an unknown name, DeviceError for one this machine lacks)."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return resolve_device(device)


def init_from_env(device: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment variables (if any)."""
    launch = launch_from_environment()
    world_size, rank, local_rank = launch.world_size, launch.rank, launch.local_rank or 0
    chosen = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def wrap(module: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP-wrap ``module`` when running distributed; otherwise return it unchanged."""
    if not ctx.enabled:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of ``value`` over all ranks (for logging); the value itself when not distributed."""
    if not ctx.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (batch-norm statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step each rank holds its own
    statistics; this makes the final state identical everywhere (rank 0's is what gets saved).
    """
    if not ctx.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shutdown_env() -> None:
    """Leave the process group if this process joined one (a clean exit under torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
