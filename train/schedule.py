"""Learning-rate schedule: linear warm-up, then cosine decay (paper section 4.1)."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr before optimizer step ``step`` (0-based).

    Warm-up: ``(step + 1) / warmup_steps`` for ``step < warmup_steps``; then cosine from 1 down to
    ``min_ratio`` at ``total_steps``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR with :func:`warmup_cosine_factor`; its state_dict is plain numbers (checkpoint-friendly)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
        self.total_steps, self.warmup_steps, self.min_ratio = total_steps, warmup_steps, min_ratio
        super().__init__(optimizer, lr_lambda=self._factor)

    def _factor(self, step: int) -> float:
        return warmup_cosine_factor(step, self.total_steps, self.warmup_steps, self.min_ratio)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.pop("lr_lambdas", None)  # bound method, rebuilt from the constructor arguments
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        state["lr_lambdas"] = [None] * len(self.lr_lambdas)
        super().load_state_dict(state)
