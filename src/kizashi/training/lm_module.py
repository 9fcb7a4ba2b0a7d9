"""The Lightning pieces of language-model training: the module (next-token cross-entropy,
AdamW, warm-up + cosine schedule) and the per-validation metrics recorder."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from kizashi.models.optim import param_groups
from kizashi.training.callbacks import FiniteMean, step_loss

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_bits", "tokens_per_second", "elapsed_seconds")


class WarmupCosine:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to
    ``floor`` at ``total`` steps (constant after warm-up when ``total`` is None)."""

    def __init__(self, warmup: int, total: int | None, floor: float = 0.1) -> None:
        self.warmup, self.total, self.floor = max(1, warmup), total, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.total is None or self.total <= self.warmup:
            return 1.0
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


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
        optimizer = torch.optim.AdamW(param_groups(self.model, self.weight_decay, self.lr), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class LMRecorder(L.Callback):
    """One metrics row per validation (see METRIC_COLUMNS). Training time is the wall time
    between validations (the device synchronized at each boundary only), so tokens/s counts
    data loading too and validation not at all."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._loss = FiniteMean()
        self._tokens, self._train_seconds = 0, 0.0
        self._elapsed = 0.0
        self._since = time.perf_counter()

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._since = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._tokens += batch.shape[0] * (batch.shape[1] - 1)
        self._loss.add(step_loss(outputs))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(pl_module)
        self._train_seconds += time.perf_counter() - self._since

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._since = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        val = float(trainer.callback_metrics["val/loss"])
        self._elapsed += self._train_seconds
        self.rows.append({
            "epoch": trainer.current_epoch + 1, "step": trainer.global_step,
            "train_loss": self._loss.compute(), "val_loss": val, "val_bits": val / math.log(2),
            "tokens_per_second": self._tokens / self._train_seconds if self._train_seconds else float("nan"),
            "elapsed_seconds": self._elapsed,
        })
        row = self.rows[-1]
        log.info("step %d (epoch %d): val loss %.4f nats/token (%.3f bits), %.0f tokens/s", row["step"], row["epoch"],
                 val, row["val_bits"], row["tokens_per_second"])
        self._loss.reset()
        self._tokens, self._train_seconds = 0, 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
        self._elapsed = self.rows[-1]["elapsed_seconds"] if self.rows else 0.0


__all__ = ["METRIC_COLUMNS", "LMModule", "LMRecorder", "WarmupCosine"]
