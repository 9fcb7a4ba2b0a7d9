"""Training concerns as Lightning callbacks, one small class each.

    EMACallback         EMA teacher weights, updated after every optimizer step; validation,
                        test and prediction run on them (swapped in and out); saved in
                        checkpoints, so a resumed run continues the same average
    GradientFlowAudit   on the first optimizer step: every trainable parameter has a finite,
                        non-zero gradient and is in the optimizer exactly once, else a
                        GradientFlowError naming the parameters
    NonFiniteGuard      a step with a NaN/Inf loss or gradient is skipped (no update) and
                        counted; training stops with NonFiniteTrainingError after ``limit``
    SignalCheckpoint    SIGINT/SIGTERM -> save ``last.ckpt`` at the next batch boundary and
                        stop cleanly; also keeps ``last.ckpt`` current at every epoch end
    OOMRecovery         CUDA out of memory in a training step -> free memory, run the day
                        batch as 2, 4, ... micro-batches (gradients accumulated) and retry

All of them work with any :class:`~kizashi.training.module.ForecastModule`; ``OOMRecovery``
needs its cooperation (the module asks it to run the step), the others only use Lightning's
hooks.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from kizashi.errors import KizashiError
from kizashi.models.optim import check_optimizer_coverage

log = logging.getLogger(__name__)

T = TypeVar("T")

LAST_CHECKPOINT = "last.ckpt"


class GradientFlowError(KizashiError, RuntimeError):
    """A trainable parameter gets no usable gradient, or is not (or twice) in the optimizer."""


class NonFiniteTrainingError(KizashiError, RuntimeError):
    """Too many training steps had a non-finite loss or gradient."""


# --------------------------------------------------------------------------------------
# EMA teacher
# --------------------------------------------------------------------------------------


class FiniteMean:
    """Mean of the finite values among scalar loss tensors, accumulated on their device, so
    recording a training loss per batch adds no host-device synchronization; ``compute()``
    (one sync) returns NaN when no value was finite."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sum: Tensor | None = None
        self._count: Tensor | None = None

    def add(self, value: Tensor | None) -> None:
        if value is None:
            return
        value = value.detach().float()
        finite = torch.isfinite(value)
        total, count = torch.where(finite, value, torch.zeros_like(value)), finite.float()
        self._sum = total if self._sum is None else self._sum + total
        self._count = count if self._count is None else self._count + count

    def compute(self) -> float:
        if self._count is None or not float(self._count):
            return float("nan")
        return float(self._sum / self._count)


def step_loss(outputs: Any) -> Tensor | None:
    """The loss a ``training_step`` returned (a tensor, or a dict with ``"loss"``)."""
    return outputs["loss"] if isinstance(outputs, dict) else outputs


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


# --------------------------------------------------------------------------------------
# gradient-flow audit
# --------------------------------------------------------------------------------------


def gradient_problems(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
) -> dict[str, list[str]]:
    """Trainable parameters without a gradient, with a non-finite one, or with an all-zero
    one: ``{"no gradient": [...], "non-finite gradient": [...], "all-zero gradient": [...]}``
    (only the non-empty lists)."""
    found: dict[str, list[str]] = {"no gradient": [], "non-finite gradient": [], "all-zero gradient": []}
    trainable = [(n, p) for n, p in named_parameters if p.requires_grad]
    with_grad = [(n, p.grad) for n, p in trainable if p.grad is not None]
    found["no gradient"] = [n for n, p in trainable if p.grad is None]
    if with_grad:
        grads = [g.detach().float() for _, g in with_grad]
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).tolist()
        nonzero = torch.stack([torch.count_nonzero(g) > 0 for g in grads]).tolist()
        found["non-finite gradient"] = [n for (n, _), ok in zip(with_grad, finite) if not ok]
        found["all-zero gradient"] = [n for (n, _), ok, fin in zip(with_grad, nonzero, finite) if fin and not ok]
    return {kind: names for kind, names in found.items() if names}


class GradientFlowAudit(Callback):
    """The trainer's step-1 audit (DESIGN: fixed module graph): after the first backward,
    before the first optimizer step, every trainable parameter must have a finite, non-zero
    gradient and be in the optimizer exactly once; otherwise a :class:`GradientFlowError`
    names the parameters.

    Graph batches: a batch whose days have no edges gives the graph-attention parameters an
    exactly-zero gradient (no message is passed), which says nothing about the model. So
    when the first step's batch has ``edge_index`` with no edges and the *only* problem is
    all-zero gradients, the audit is deferred to the first step whose batch has edges; if
    no batch of the first epoch has any, the audit fails at the epoch's end naming those
    parameters (they can never train on this data). Any other problem (no gradient,
    non-finite gradient, optimizer coverage) fails at once. A step with a non-finite loss is
    not audited (:class:`NonFiniteGuard` skips it); the next one is.

    The audit runs again on the first step after a resume (cheap, and it checks that the
    restored model and optimizer still fit together).
    """

    def __init__(self) -> None:
        self.done = False
        self._deferred: dict[str, list[str]] | None = None
        self._batch_has_edges = True
        self._loss_finite = True

    @staticmethod
    def _has_edges(batch: Any) -> bool:
        if isinstance(batch, dict) and isinstance(batch.get("edge_index"), Tensor):
            return batch["edge_index"].shape[-1] > 0
        return True  # not a graph batch: nothing to defer for

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.done = False
        self._deferred = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.done:
            self._batch_has_edges = self._has_edges(batch)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if not self.done:
            self._loss_finite = bool(torch.isfinite(loss.detach()).all())

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.done:
            return
        step = trainer.global_step + 1
        if not self._loss_finite:
            log.warning("gradient-flow audit: step %d has a non-finite loss; auditing the next step", step)
            return
        problems = gradient_problems(pl_module.named_parameters())
        try:
            check_optimizer_coverage(pl_module, optimizer)
        except ValueError as err:
            problems["optimizer"] = [str(err)]
        if not problems:
            self.done = True
            n_params = sum(1 for p in pl_module.parameters() if p.requires_grad)
            log.info("gradient-flow audit passed at step %d: %d trainable parameter tensors", step, n_params)
            return
        if set(problems) == {"all-zero gradient"} and not self._batch_has_edges:
            if self._deferred is None:
                log.info(
                    "gradient-flow audit: step %d's batch has no graph edges (%d parameters with a zero "
                    "gradient); auditing the first step with edges",
                    step, len(problems["all-zero gradient"]),
                )
            self._deferred = problems
            return
        raise GradientFlowError(self._message(problems, step))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.done and self._deferred is not None:
            raise GradientFlowError(
                self._message(self._deferred, trainer.global_step)
                + "\nno training batch of the first epoch had graph edges: these parameters never train on this data"
            )

    @staticmethod
    def _message(problems: dict[str, list[str]], step: int) -> str:
        lines = [f"gradient-flow audit failed at optimizer step {step}:"]
        for kind, names in problems.items():
            lines.append(f"  {kind}: {names}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# NaN / Inf guard
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# checkpoint on SIGINT / SIGTERM
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# CUDA out-of-memory recovery
# --------------------------------------------------------------------------------------


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
