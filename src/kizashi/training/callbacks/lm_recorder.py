"""One metrics row per validation of language-model training."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch

from kizashi.training.callbacks.helpers import FiniteMean, step_loss

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_bits", "tokens_per_second", "elapsed_seconds")


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
