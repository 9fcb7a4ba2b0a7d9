"""Learning-rate schedules of the training modules, stepped once per optimizer step.

    WarmupCosine   a factor of each group's base learning rate: linear warm-up over
                   ``warmup_steps``, then constant, or a cosine decay to ``floor`` at
                   ``total_steps``. ForecastModule and Stage1Module use the warm-up alone
                   (``total_steps=None``), LMModule the warm-up and the decay.
    one_cycle      torch's ``OneCycleLR`` (Stage1Module given ``total_steps``): not a factor
                   of the step like ``WarmupCosine``: its warm-up is a cosine from peak / 25,
                   it decays to peak / 2.5e5, and it also cycles AdamW's ``beta1`` between
                   0.95 and 0.85, opposite to the learning rate.
    per_step       the Lightning ``configure_optimizers`` dict of an optimizer and a
                   scheduler stepped at every optimizer step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR


class WarmupCosine:
    """Learning-rate factor of optimizer step ``step`` (0-based):
    ``(step + 1) / warmup_steps`` during the warm-up (the first step already moves the
    weights), then 1 when ``total_steps`` is None (or not after the warm-up), else
    ``floor + (1 - floor) * (1 + cos(pi * progress)) / 2`` with ``progress`` going from 0 at
    the warm-up's end to 1 at ``total_steps`` (and staying 1 after it)."""

    def __init__(self, warmup_steps: int, total_steps: int | None = None, floor: float = 0.1) -> None:
        self.warmup = max(1, int(warmup_steps))
        self.total = total_steps
        self.floor = float(floor)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.total is None or self.total <= self.warmup:
            return 1.0
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int | None = None, floor: float = 0.1
) -> LambdaLR:
    """A ``LambdaLR`` over :class:`WarmupCosine` (every group keeps its own base rate)."""
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, floor))


def one_cycle(optimizer: torch.optim.Optimizer, total_steps: int, pct_start: float = 0.1) -> OneCycleLR:
    """torch's one-cycle schedule over ``total_steps``, warm-up over ``pct_start`` of them,
    with each group's current learning rate as its peak."""
    max_lr = [group["lr"] for group in optimizer.param_groups]
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start)


def per_step(optimizer: torch.optim.Optimizer, scheduler: LRScheduler) -> dict[str, Any]:
    """``configure_optimizers``' answer for ``scheduler`` stepped at every optimizer step."""
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


__all__ = ["WarmupCosine", "one_cycle", "per_step", "warmup_cosine"]
