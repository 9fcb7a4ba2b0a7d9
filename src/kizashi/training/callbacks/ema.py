"""The EMA teacher: an exponential moving average of the module's parameters, used for
validation, test and prediction."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from kizashi.errors import KizashiError

log = logging.getLogger(__name__)


class EMACallback(Callback):
    """Exponential moving average of the module's parameters (the "EMA teacher").

    After every optimizer step ``ema = d * ema + (1 - d) * param`` with
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the usual warm-up, so that
    the average of a short run is not dominated by the initial weights; ``warmup=False``
    uses ``decay`` from the first step). Validation, test and prediction run on the EMA
    weights: they are swapped in at the start of the loop and the live weights swapped back
    at its end (also when the loop fails), so checkpoints hold the live weights in
    ``state_dict`` and the EMA in this callback's state, and a resumed run continues the
    same average. Buffers are not averaged.

    Not Lightning's ``EMAWeightAveraging`` / ``WeightAveraging`` (Lightning 2.6), which
    differs in what this callback guarantees (checked by
    ``tests/training/test_trainer.py::test_ema_callback_does_what_lightning_weight_averaging_does_not``):

    * its first update copies the live weights (``AveragedModel`` with ``n_averaged == 0``),
      so there is no warm-up from the initial weights and the average of a short run is
      not the one above;
    * its checkpoints hold the average in ``state_dict`` and the live weights under
      ``current_model_state``; here ``state_dict`` keeps the live weights, which is what
      resuming, ``best.ckpt`` / ``last.ckpt`` readers and ``Trainer.predict(ckpt_path=...)``
      (with this callback swapping the EMA in) rely on;
    * it swaps only around validation epochs and copies the average into the module at
      ``on_train_end``, so the live weights are lost after ``fit``; test and prediction are
      never swapped, and outside ``fit`` it has no average at all (a checkpoint's EMA state
      cannot be restored for ``test`` / ``predict``).
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        self.updates = 0
        self.ema: dict[str, Tensor] | None = None
        self._loaded: dict[str, Tensor] | None = None
        self._backup: dict[str, Tensor] | None = None
        self._last_step = -1

    # -- state -------------------------------------------------------------------------

    @staticmethod
    def _parameters(pl_module: L.LightningModule) -> dict[str, Tensor]:
        return {name: p for name, p in pl_module.named_parameters() if p.is_floating_point()}

    def _ensure(self, pl_module: L.LightningModule) -> bool:
        """Materialize the EMA on the module's device (from a checkpoint when one was
        loaded); returns whether an EMA exists."""
        if self._loaded is not None:
            params = self._parameters(pl_module)
            missing = sorted(set(params) - set(self._loaded))
            if missing:
                raise KizashiError(f"EMA state in the checkpoint lacks parameters {missing[:5]}")
            self.ema = {n: self._loaded[n].to(p.device, p.dtype).clone() for n, p in params.items()}
            self._loaded = None
        return self.ema is not None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._ensure(pl_module):
            self.ema = {n: p.detach().clone() for n, p in self._parameters(pl_module).items()}
            self.updates = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, pl_module: L.LightningModule) -> None:
        assert self.ema is not None
        params = self._parameters(pl_module)
        names = list(self.ema)
        torch._foreach_lerp_(
            [self.ema[n] for n in names], [params[n].detach() for n in names], 1.0 - self.current_decay()
        )
        self.updates += 1

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # one update per optimizer step (not per micro-batch under gradient accumulation)
        if trainer.global_step > self._last_step and self.ema is not None:
            self._last_step = trainer.global_step
            self.update(pl_module)

    # -- swapping ----------------------------------------------------------------------

    @torch.no_grad()
    def swap_in(self, pl_module: L.LightningModule) -> None:
        """Put the EMA weights into the module (the live ones are kept aside)."""
        if self._backup is not None or not self._ensure(pl_module):
            return
        assert self.ema is not None
        params = self._parameters(pl_module)
        self._backup = {n: params[n].detach().clone() for n in self.ema}
        for name, value in self.ema.items():
            params[name].copy_(value)

    @torch.no_grad()
    def swap_out(self, pl_module: L.LightningModule) -> None:
        """Restore the live weights."""
        if self._backup is None:
            return
        params = self._parameters(pl_module)
        for name, value in self._backup.items():
            params[name].copy_(value)
        self._backup = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.swap_in(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.swap_out(pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.swap_in(pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.swap_out(pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.swap_in(pl_module)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.swap_out(pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.swap_out(pl_module)

    # -- checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        ema = self.ema if self.ema is not None else self._loaded
        return {
            "decay": self.decay,
            "updates": self.updates,
            "ema": {n: t.detach().cpu() for n, t in ema.items()} if ema is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = int(state_dict.get("updates", 0))
        if state_dict.get("decay") not in (None, self.decay):
            log.info("EMA: the checkpoint's decay %s is replaced by %s", state_dict["decay"], self.decay)
        if state_dict.get("ema") is not None:
            self._loaded = dict(state_dict["ema"])
            self.ema = None
