"""A training step replayed as a CUDA graph: the forward pass, the loss, the backward pass and
the gradient clipping of one step are recorded once (``torch.cuda.graph``) and replayed for
every later batch of the same shape, so the step costs one graph launch on the host instead
of one Python call and kernel launch per operation (a Phase 2 step is ~1,400 kernels).
The optimizer and learning-rate schedule stay eager (the fused AdamW is a handful of
launches): they read the gradients the replay wrote.

What a model must do to be recorded (PyTorch's CUDA-graph rules): no host synchronization
(``.item()``, ``.cpu()``, data-dependent Python branches), no host-to-device copies from
pageable memory, fixed shapes. Dropout is fine: the default CUDA generator advances its
offset on every replay. The first ``eager_steps`` calls run eagerly on a side stream (the
warm-up CUDA graphs require: Triton compilation and autotuning, cuBLAS workspaces, the
autocast and allocator caches), then the step is recorded and replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from kizashi.training.train_step import TrainingStep

log = logging.getLogger(__name__)


class GraphedTrainingStep(TrainingStep):
    """``step(batch) -> loss``: one training step of ``loss_of`` on ``batch`` (a CUDA tensor of
    a fixed shape, e.g. token ids ``[B, T + 1]``), its gradients clipped to ``grad_clip``
    (global norm; ``None``: no clipping), then ``optimizer.step()`` and ``scheduler.step()``
    (if given); the eager steps also reset the gradients, a replay overwrites them.

    ``loss_of(batch) -> loss`` (a 0-d tensor) is run under ``torch.autocast("cuda", dtype)``
    when ``autocast_dtype`` is given. The first ``eager_steps`` calls are ordinary eager steps
    (on a side stream); the next call records forward, loss, backward and clipping as a CUDA
    graph into static tensors and every call from then on copies its batch into the static
    input and replays the graph. Numerically a replay is the eager step (same kernels, same
    order), up to the nondeterminism the kernels have anyway.

    The returned loss is a fresh detached tensor on the device (no synchronization). A batch
    of another shape, dtype or device than the recorded one raises ``ValueError``. Do not
    reset the gradients yourself (``zero_grad``): after recording, ``param.grad`` are the
    graph's output buffers, overwritten by every replay.
    """

    def __init__(
        self,
        loss_of: Callable[[Tensor], Tensor],
        parameters: Sequence[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        *,
        grad_clip: float | None = None,
        autocast_dtype: torch.dtype | None = None,
        eager_steps: int = 3,
    ) -> None:
        if eager_steps < 1:
            raise ValueError(f"eager_steps must be >= 1 (the warm-up before recording), got {eager_steps}")
        super().__init__(loss_of, parameters, optimizer, scheduler, grad_clip=grad_clip,
                         autocast_dtype=autocast_dtype, device_type="cuda")
        if not torch.cuda.is_available():
            raise RuntimeError("GraphedTrainingStep needs CUDA (CUDA graphs); run the step eagerly on this machine")
        self.eager_steps = eager_steps
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_batch: Tensor | None = None
        self.static_loss: Tensor | None = None
        self.side_stream = torch.cuda.Stream()

    @property
    def recorded(self) -> bool:
        """Whether the step has been recorded (later calls replay it)."""
        return self.graph is not None

    def _optimizer_step(self, reset_gradients: bool = True) -> None:
        # after recording, the gradients are the graph's output buffers: a replay overwrites them
        super()._optimizer_step(reset_gradients=reset_gradients and self.graph is None)

    def _record(self, batch: Tensor) -> None:
        self.static_batch = batch.clone()
        self.optimizer.zero_grad(set_to_none=True)  # backward in the graph allocates (not adds to) the gradients
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_loss = self._forward_backward(self.static_batch)
        missing = sum(p.grad is None for p in self.parameters)
        if missing:
            log.warning("GraphedTrainingStep: %d of %d trainable parameters get no gradient from the loss",
                        missing, len(self.parameters))
        self.graph = graph
        log.info("training step recorded as a CUDA graph (batch %s %s)", tuple(batch.shape), batch.dtype)

    def __call__(self, batch: Tensor) -> Tensor:
        if not batch.is_cuda:
            raise ValueError(f"GraphedTrainingStep: the batch must be a CUDA tensor, got device {batch.device}")
        self.calls += 1
        if self.graph is None and self.calls <= self.eager_steps:
            self.side_stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side_stream):
                loss = self._forward_backward(batch)
                self._optimizer_step()
            torch.cuda.current_stream().wait_stream(self.side_stream)
            return loss
        if self.graph is None:
            torch.cuda.synchronize()
            self._record(batch)
        static = self.static_batch
        assert static is not None and self.static_loss is not None and self.graph is not None
        if batch.shape != static.shape or batch.dtype != static.dtype or batch.device != static.device:
            raise ValueError(
                f"GraphedTrainingStep: recorded for a batch {tuple(static.shape)} {static.dtype} on "
                f"{static.device}, got {tuple(batch.shape)} {batch.dtype} on {batch.device}; "
                "keep the shape fixed (e.g. drop_last=True) or train eagerly")
        if batch.data_ptr() != static.data_ptr():
            static.copy_(batch, non_blocking=True)
        self.graph.replay()
        self._optimizer_step()
        return self.static_loss.clone()


__all__ = ["GraphedTrainingStep"]
