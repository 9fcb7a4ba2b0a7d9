"""Small pieces the recorder callbacks share: a device-side finite mean of step losses and
the loss a ``training_step`` returned."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class FiniteMean:
    """Mean of the finite values among scalar loss tensors, accumulated on their device, so
    recording a training loss per batch adds no host-device synchronization; ``compute()``
    (one sync) returns NaN when no value was finite."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sum: Tensor | None = None
        self._count: Tensor | None = None

    def add(self, value: Tensor | None) -> None:
        if value is None:
            return
        value = value.detach().float()
        finite = torch.isfinite(value)
        total, count = torch.where(finite, value, torch.zeros_like(value)), finite.float()
        self._sum = total if self._sum is None else self._sum + total
        self._count = count if self._count is None else self._count + count

    def compute(self) -> float:
        if self._count is None or not float(self._count):
            return float("nan")
        return float(self._sum / self._count)


def step_loss(outputs: Any) -> Tensor | None:
    """The loss a ``training_step`` returned (a tensor, or a dict with ``"loss"``)."""
    return outputs["loss"] if isinstance(outputs, dict) else outputs


def mean_over_ranks(value: float, trainer: Any, pl_module: Any) -> float:
    """``value`` averaged over the DDP ranks (each computed it on its shard); itself on one
    process. A collective: every rank must call it at the same point."""
    if trainer.world_size <= 1:
        return value
    return float(trainer.strategy.reduce(torch.tensor(value, device=pl_module.device), reduce_op="mean"))
