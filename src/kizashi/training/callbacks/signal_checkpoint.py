"""Save the full training state and stop cleanly on SIGINT / SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"


class SignalCheckpoint(Checkpoint):
    """Save ``dirpath/last.ckpt`` and stop cleanly on SIGINT or SIGTERM.

    While training runs (``on_train_start`` .. ``on_train_end``) the handlers only set a
    flag (a second SIGINT raises ``KeyboardInterrupt``, to force quit); at the end of the
    current training batch (the flag is or-reduced over the ranks under DDP) the full
    training state is saved (model, optimizer, schedulers, loops, callbacks: exactly what
    ``Trainer.fit(ckpt_path=...)`` resumes from, mid-epoch included) and the trainer is told
    to stop. ``interrupted`` / ``signal_name`` then tell the caller what happened. A signal
    that arrives during validation is honoured at the next training batch (or when ``fit``
    returns). These handlers replace Lightning's own SIGTERM handler while training runs,
    so SIGINT and SIGTERM take the same path; the previous handlers come back afterwards.

    ``last.ckpt`` is also rewritten at the end of every validation (and at every epoch end
    when there is no validation), so a run killed without warning loses at most an epoch.
    Being a :class:`~lightning.pytorch.callbacks.Checkpoint`, this callback runs after the
    other callbacks (and after a ``ModelCheckpoint`` listed before it): what it saves
    already holds their end-of-epoch state. The file is written atomically when the trainer
    uses :class:`~kizashi.training.checkpoint_io.AtomicCheckpointIO`.
    """

    def __init__(self, dirpath: str | Path, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.dirpath = Path(dirpath)
        self.signals = tuple(signals)
        self.requested: int | None = None
        self.interrupted = False
        self._previous: dict[int, Any] = {}

    @property
    def path(self) -> Path:
        return self.dirpath / LAST_CHECKPOINT

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.requested).name if self.requested is not None else None

    # -- handlers ----------------------------------------------------------------------

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.requested is None:
            log.warning(
                "received %s: saving a checkpoint at the end of this batch, then stopping "
                "(SIGINT again to quit at once)", signal.Signals(signum).name,
            )
        self.requested = signum

    def _install(self) -> None:
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    # -- saving ------------------------------------------------------------------------

    def save(self, trainer: L.Trainer) -> Path:
        """Write the full training state to ``last.ckpt`` (a collective call under DDP:
        every rank calls it, rank 0 writes)."""
        trainer.save_checkpoint(self.path, weights_only=False)
        return self.path

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.interrupted:
            return
        if not trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False):
            return
        if self.requested is None:  # another rank got the signal
            self.requested = signal.SIGTERM
        self.save(trainer)
        self.interrupted = True
        trainer.should_stop = True
        log.warning(
            "%s: saved %s at optimizer step %d (epoch %d); stopping",
            self.signal_name, self.path, trainer.global_step, trainer.current_epoch,
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.interrupted or trainer.state.fn != TrainerFn.FITTING:
            return
        self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.interrupted and not trainer.val_dataloaders:
            self.save(trainer)
