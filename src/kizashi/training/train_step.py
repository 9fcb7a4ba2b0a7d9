"""One eager training step outside Lightning, for loops that time or replay it (the LM
benchmarks, :class:`~kizashi.training.cuda_graph.GraphedTrainingStep`): the loss under
autocast, backward, gradient clipping, the optimizer and learning-rate schedule steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


class TrainingStep:
    """``step(batch) -> loss``: ``loss_of(batch)`` (a 0-d tensor; run under
    ``torch.autocast(device_type, dtype)`` when ``autocast_dtype`` is given), backward, the
    gradients clipped to ``grad_clip`` (global norm; ``None``: no clipping),
    ``optimizer.step()``, the gradients reset (``set_to_none``), then ``scheduler.step()`` (if
    given). ``batch`` is whatever ``loss_of`` takes (e.g. token ids ``[B, T + 1]`` on the
    model's device). Returns the loss detached, without a host synchronization."""

    def __init__(
        self,
        loss_of: Callable[[Tensor], Tensor],
        parameters: Sequence[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        grad_clip: float | None = None,
        autocast_dtype: torch.dtype | None = None,
        device_type: str = "cuda",
    ) -> None:
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {grad_clip}")
        self.parameters = [p for p in parameters if p.requires_grad]
        if not self.parameters:
            raise ValueError(f"{type(self).__name__}: no trainable parameters")
        self.loss_of, self.optimizer, self.scheduler = loss_of, optimizer, scheduler
        self.grad_clip, self.autocast_dtype, self.device_type = grad_clip, autocast_dtype, device_type

    def _forward_backward(self, batch: Tensor) -> Tensor:
        with torch.autocast(self.device_type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            loss = self.loss_of(batch)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        return loss.detach()

    def _optimizer_step(self, reset_gradients: bool = True) -> None:
        self.optimizer.step()
        if reset_gradients:
            self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()

    def __call__(self, batch: Tensor) -> Tensor:
        loss = self._forward_backward(batch)
        self._optimizer_step()
        return loss


__all__ = ["TrainingStep"]
