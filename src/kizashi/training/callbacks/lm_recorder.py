"""One metrics row per validation of language-model training, and its wall-clock budget."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from kizashi.training.callbacks.helpers import FiniteMean, mean_over_ranks, step_loss

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_bits", "tokens_per_second", "elapsed_seconds",
                  "val_tokens", "val_seconds")

VALIDATIONS_RESERVED = 2
"""With a deadline, training continues past a batch only while one more batch and this many
validations still fit: a periodic one may start right after the current batch, and
Lightning validates once more when training is stopped."""


class LMRecorder(L.Callback):
    """One metrics row per validation (see METRIC_COLUMNS); ``epoch`` is the (1-based) epoch of
    the last training batch before it, also for the validation the LM job runs after ``fit``
    (when Lightning's epoch counter has already moved past the last epoch). Training time is
    the wall time between validations (the device synchronized at each boundary only), so tokens/s counts
    data loading too and validation not at all. ``val_tokens`` are the target tokens the
    validation scored, ``val_seconds`` its wall time (checkpoint writing at its end not
    included).

    ``deadline`` (a ``time.perf_counter()`` instant, None = none) is a wall-clock budget:
    after each training batch training stops (``trainer.should_stop``) unless one more batch
    (as long as the last one) plus ``VALIDATIONS_RESERVED`` validations plus ``margin``
    seconds still fit before it; after a validation, unless one batch plus one validation
    plus ``margin`` fit. A validation's cost is the larger of ``val_seconds_estimate`` (e.g.
    measured before training) and the longest validation so far, measured from its start to
    the next training batch, so the checkpoints written at its end count. ``stopped_by_deadline``
    tells whether the budget ended training.

    Under DDP every rank keeps the rows: the training loss is the mean over the ranks and
    tokens/s counts every rank's tokens (a deadline is for one process only: the ranks would
    stop after different batches)."""

    def __init__(self, deadline: float | None = None, val_seconds_estimate: float = 0.0, margin: float = 0.0) -> None:
        self.rows: list[dict[str, float]] = []
        self._loss = FiniteMean()
        self._tokens, self._train_seconds = 0, 0.0
        self._elapsed = 0.0
        self._since = time.perf_counter()
        self.deadline, self.margin = deadline, margin
        self.val_cost = val_seconds_estimate
        self.stopped_by_deadline = False
        self._batch_started = self._batch_seconds = 0.0
        self._val_started: float | None = None
        self._val_tokens = 0
        self._epoch: int | None = None  # 1-based epoch of the last training batch

    @staticmethod
    def _sync(pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def _stop_unless(self, trainer: L.Trainer, seconds_needed: float) -> None:
        if self.deadline is None or trainer.should_stop:
            return
        if time.perf_counter() + seconds_needed + self.margin >= self.deadline:
            trainer.should_stop = True
            self.stopped_by_deadline = True
            log.info("wall-clock budget: stopping training at step %d (%.1f s left; one validation takes ~%.2f s)",
                     trainer.global_step, self.deadline - time.perf_counter(), self.val_cost)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._since = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._val_started is not None:  # the validation before this batch, its checkpoints included
            self.val_cost = max(self.val_cost, now - self._val_started)
            self._val_started = None
        self._batch_started = now

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._tokens += batch.shape[0] * (batch.shape[1] - 1)
        self._loss.add(step_loss(outputs))
        self._epoch = trainer.current_epoch + 1
        if self.deadline is not None:
            self._sync(pl_module)
            self._batch_seconds = time.perf_counter() - self._batch_started
            self._stop_unless(trainer, self._batch_seconds + VALIDATIONS_RESERVED * self.val_cost)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(pl_module)
        now = time.perf_counter()
        self._train_seconds += now - self._since
        self._val_started, self._val_tokens = now, 0

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._val_tokens += batch.shape[0] * (batch.shape[1] - 1)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._since = time.perf_counter()
        if trainer.state.fn == TrainerFn.FITTING:
            self._stop_unless(trainer, self._batch_seconds + self.val_cost)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        self._sync(pl_module)
        val = float(trainer.callback_metrics["val/loss"])  # reduced over the ranks (sync_dist)
        train_loss = mean_over_ranks(self._loss.compute(), trainer, pl_module)
        tokens = self._tokens * trainer.world_size  # every rank trained on its shard of the batches
        val_seconds = time.perf_counter() - (self._val_started if self._val_started is not None else self._since)
        self.val_cost = max(self.val_cost, val_seconds)
        self._elapsed += self._train_seconds
        self.rows.append({
            "epoch": self._epoch if self._epoch is not None else trainer.current_epoch + 1,
            "step": trainer.global_step,
            "train_loss": train_loss, "val_loss": val, "val_bits": val / math.log(2),
            "tokens_per_second": tokens / self._train_seconds if self._train_seconds else float("nan"),
            "elapsed_seconds": self._elapsed, "val_tokens": self._val_tokens, "val_seconds": val_seconds,
        })
        row = self.rows[-1]
        if trainer.is_global_zero:
            log.info("step %d (epoch %d): val loss %.4f nats/token (%.3f bits) over %d tokens, %.0f tokens/s",
                     row["step"], row["epoch"], val, row["val_bits"], row["val_tokens"], row["tokens_per_second"])
        self._loss.reset()
        self._tokens, self._train_seconds = 0, 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
        self._elapsed = self.rows[-1]["elapsed_seconds"] if self.rows else 0.0
