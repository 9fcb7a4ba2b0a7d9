"""One metrics row per training epoch of Stage-1 pretraining."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L

from kizashi.training.callbacks.helpers import FiniteMean, mean_over_ranks, step_loss
from kizashi.training.transfer import find_lm_adapter, fraction_frozen

log = logging.getLogger(__name__)


class EpochRecorder(L.Callback):
    """One metrics row per training epoch (the columns of
    :data:`kizashi.evaluation.pretrain_run.METRIC_COLUMNS`), written at the epoch's end,
    after its validation (the training loss is this epoch's mean, counted here; under DDP the
    mean over the ranks, and only rank 0 logs the row)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._started = time.perf_counter()
        self._loss = FiniteMean()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()
        self._loss.reset()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._loss.add(step_loss(outputs))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        adapter = find_lm_adapter(pl_module)
        self.rows.append({
            "epoch": trainer.current_epoch + 1,
            "train_loss": mean_over_ranks(self._loss.compute(), trainer, pl_module),
            "val_loss": metrics.get("val/loss", float("nan")),
            "val_reconstruction": metrics.get("val/reconstruction", float("nan")),
            "val_consistency": metrics.get("val/consistency", float("nan")),
            "val_masked_corr": metrics.get("val/masked_corr", float("nan")),
            "lm_frozen_fraction": fraction_frozen(adapter.lm_parameters()) if adapter is not None else float("nan"),
            "epoch_seconds": time.perf_counter() - self._started,
        })
        row = self.rows[-1]
        if trainer.is_global_zero:
            log.info("epoch %d: val reconstruction %.4f, masked corr %.4f, consistency %.4f (%.1f s)", row["epoch"],
                     row["val_reconstruction"], row["val_masked_corr"], row["val_consistency"], row["epoch_seconds"])
