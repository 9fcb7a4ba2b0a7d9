"""Gradual unfreezing of a pretrained language-model encoder, on Lightning's
:class:`~lightning.pytorch.callbacks.BaseFinetuning`."""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn

from kizashi.training.transfer import apply_unfreezing, find_lm_adapter, fraction_frozen, unfrozen_blocks

log = logging.getLogger(__name__)


class GradualUnfreezing(BaseFinetuning):
    """Freeze the LM for ``freeze_epochs`` epochs, then unfreeze it (all at once, or
    ``blocks_per_epoch`` blocks per epoch from the top; see
    :func:`~kizashi.training.transfer.unfrozen_blocks`). Logs ``transfer/lm_frozen_fraction``.
    Does nothing for a model without an LM adapter.

    The LM's parameters are in the optimizer from the start, frozen ones included
    (:func:`~kizashi.training.transfer.transfer_param_groups`, at the LM's learning-rate
    factor), so unfreezing only sets ``requires_grad`` and adds no parameter group. The
    state is a function of the epoch number only: ``freeze_before_training`` applies epoch
    0's, ``finetune_function`` (at every epoch start) the epoch's, so a resumed run
    continues the same schedule.
    """

    def __init__(self, freeze_epochs: int, blocks_per_epoch: int | None = None) -> None:
        if freeze_epochs < 0:
            raise ValueError(f"freeze_epochs must be >= 0, got {freeze_epochs}")
        if blocks_per_epoch is not None and blocks_per_epoch < 1:
            raise ValueError(f"blocks_per_epoch must be >= 1 or None, got {blocks_per_epoch}")
        super().__init__()
        self.freeze_epochs = int(freeze_epochs)
        self.blocks_per_epoch = blocks_per_epoch
        self.frozen_fraction: float | None = None

    def _apply(self, epoch: int, pl_module: nn.Module) -> None:
        adapter = find_lm_adapter(pl_module)
        if adapter is None:
            return
        n_blocks = len(adapter.lm_blocks())
        n = unfrozen_blocks(epoch, self.freeze_epochs, n_blocks, self.blocks_per_epoch)
        apply_unfreezing(adapter, n)
        fraction = fraction_frozen(adapter.lm_parameters())
        if fraction != self.frozen_fraction:
            log.info("epoch %d: language model %.0f%% frozen (%d of %d blocks trainable)",
                     epoch, 100 * fraction, n, n_blocks)
        self.frozen_fraction = fraction

    def freeze_before_training(self, pl_module: nn.Module) -> None:
        self._apply(0, pl_module)

    def finetune_function(self, pl_module: nn.Module, epoch: int, optimizer: torch.optim.Optimizer | None) -> None:
        self._apply(epoch, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self.frozen_fraction is not None and getattr(trainer, "logger", None):
            pl_module.log("transfer/lm_frozen_fraction", self.frozen_fraction, on_step=False, on_epoch=True)
