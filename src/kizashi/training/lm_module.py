"""The LightningModule of language-model training: next-token cross-entropy, AdamW and a
warm-up + cosine learning-rate schedule (:class:`~kizashi.training.schedules.WarmupCosine`).
Its metrics rows are recorded by :class:`~kizashi.training.callbacks.LMRecorder`."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from kizashi.models.optim import adamw, param_groups
from kizashi.training.schedules import WarmupCosine, per_step

log = logging.getLogger(__name__)


class LMModule(L.LightningModule):
    """Next-token cross-entropy for ``model(ids [B, T]) -> logits [B, T, V]``; batches are
    ``ids [B, T + 1]``."""

    def __init__(self, model: torch.nn.Module, lr: float, weight_decay: float, warmup_steps: int,
                 total_steps: int | None) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.schedule = WarmupCosine(warmup_steps, total_steps)

    def _loss(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.model(ids[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.shape[0])
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        # every window has T targets, so the mean over windows is the mean over tokens
        self.log("val/loss", self._loss(batch), prog_bar=True, batch_size=batch.shape[0], sync_dist=True)

    def configure_optimizers(self) -> Any:
        optimizer = adamw(param_groups(self.model, self.weight_decay, self.lr), lr=self.lr)
        return per_step(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule))


__all__ = ["LMModule"]
