"""The gradient-flow audit of the first optimizer step (DESIGN: fixed module graph)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from kizashi.errors import KizashiError
from kizashi.models.optim import check_optimizer_coverage

log = logging.getLogger(__name__)


class GradientFlowError(KizashiError, RuntimeError):
    """A trainable parameter gets no usable gradient, or is not (or twice) in the optimizer."""


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
