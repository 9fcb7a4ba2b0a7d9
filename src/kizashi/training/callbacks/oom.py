"""Retry a training step that runs out of GPU memory as smaller micro-batches."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import TypeVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

T = TypeVar("T")


class OOMRecovery(Callback):
    """Retry a training step that runs out of GPU memory with smaller micro-batches.

    The module runs its step through :meth:`run`: on ``torch.cuda.OutOfMemoryError``
    (forward or backward) the failed step's memory is released (``gc`` + the CUDA cache),
    the day batch is split into twice as many micro-batches (whole days each, so every
    day's graph stays intact) and the step is retried; gradients accumulate over the
    micro-batches, and the loss is the full batch's (same gradient as the full batch, see
    ``ForecastModule``). The smaller micro-batch is kept for the rest of the fit. A batch
    already split into single days that still runs out of memory re-raises the error.

    Active on CUDA by default (``enabled=None``); ``enabled=True`` forces it on (tests on
    CPU with a simulated OOM). Off under multi-device training: ranks would disagree on the
    number of micro-batches and so on the collective calls.
    """

    def __init__(self, enabled: bool | None = None, max_splits: int = 1024) -> None:
        self.enabled = enabled
        self.max_splits = int(max_splits)
        self.splits = 1
        self.retries = 0

    def active_for(self, trainer: L.Trainer) -> bool:
        active = self.enabled if self.enabled is not None else trainer.strategy.root_device.type == "cuda"
        if active and trainer.world_size > 1:
            log.info("OOM recovery is off under multi-device training")
            return False
        return bool(active)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if hasattr(pl_module, "oom_recovery"):
            pl_module.oom_recovery = self if self.active_for(trainer) else None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "oom_recovery", None) is self:
            pl_module.oom_recovery = None

    @staticmethod
    def release_memory() -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def run(self, attempt: Callable[[int], T], n_days: int) -> T:
        """``attempt(splits)`` with the current number of micro-batches (at most
        ``n_days``), retried with twice as many after each out-of-memory error."""
        while True:
            splits = max(1, min(self.splits, n_days))
            try:
                return attempt(splits)
            except torch.cuda.OutOfMemoryError:
                if splits >= min(n_days, self.max_splits):
                    log.error("CUDA out of memory with %d micro-batch(es) of %d day(s): giving up", splits, n_days)
                    raise
            # outside the except block: the failed attempt's frames (and tensors) are gone
            self.release_memory()
            self.splits = min(splits * 2, n_days, self.max_splits)
            self.retries += 1
            log.warning(
                "CUDA out of memory: retrying the step as %d micro-batches of the %d-day batch (retry %d)",
                self.splits, n_days, self.retries,
            )
