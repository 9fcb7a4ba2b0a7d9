"""Skip optimizer steps with a NaN/Inf loss or gradient; stop after too many."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from kizashi.errors import KizashiError

log = logging.getLogger(__name__)


class NonFiniteTrainingError(KizashiError, RuntimeError):
    """Too many training steps had a non-finite loss or gradient."""


class NonFiniteGuard(Callback):
    """Skip optimizer steps whose loss or gradients are not finite; stop after ``limit``.

    A skipped step gets no update at all: the gradients are set to ``None`` before the
    optimizer step, so AdamW leaves those parameters (and their moments) untouched; the
    learning-rate schedule and the step counter move on. Each skip is logged (warning and
    ``train/nonfinite_skipped``); the ``limit``-th raises :class:`NonFiniteTrainingError`.
    The count is saved in checkpoints, so it survives a resume.
    """

    def __init__(self, limit: int = 20) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = int(limit)
        self.skipped = 0
        self._loss: Tensor | None = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        self._loss = loss.detach()  # checked with the gradients: one host sync per step

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        loss, self._loss = self._loss, None
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        checks = [torch.isfinite(loss).all()] if loss is not None else []
        if grads:
            checks.append(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
        if not checks or bool(torch.stack(checks).all()):
            return
        optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        what = "loss" if loss is not None and not bool(torch.isfinite(loss).all()) else "gradient"
        log.warning(
            "non-finite %s at optimizer step %d: step skipped (%d of at most %d)",
            what, trainer.global_step + 1, self.skipped, self.limit,
        )
        pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False)
        if self.skipped >= self.limit:
            raise NonFiniteTrainingError(
                f"training stopped: {self.skipped} optimizer steps had a non-finite loss or gradient "
                f"(limit trainer.nan_guard_limit = {self.limit}; the last at step {trainer.global_step + 1}). "
                "Check the inputs for NaN/Inf, lower the learning rate, or clip gradients."
            )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
