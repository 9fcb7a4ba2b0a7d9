"""The LightningModule that trains a registry forecaster on day-panel batches.

    batch (kizashi.datasets.day_panel.collate_days; y / y_mask already cut to the model's
    horizons, see kizashi.training.neural_fit.HorizonTargets)
      -> model(batch) -> point [N, H], quantiles [N, H, Q]
      -> ForecastLoss(point, quantiles, y [N, H], y_mask [N, H], batch_day [N])

``ForecastModule`` wraps any model of :func:`kizashi.models.create_model` whose forward
takes such a batch and returns ``point`` and ``quantiles``. It owns the loss, AdamW over
:func:`kizashi.models.optim.param_groups` (no weight decay on norms/biases, per-module lr
factors) with an optional linear warm-up (:class:`~kizashi.training.schedules.WarmupCosine`
without decay), and validation RankIC per horizon. Everything else (EMA, gradient audit,
NaN guard, signal checkpoints, OOM recovery) is a callback
(``kizashi.training.callbacks``); gradient clipping and bf16 autocast are the Trainer's.

Features on the device: after :meth:`ForecastModule.attach_panel`, batches without ``x``
(``DayPanelDataset(with_features=False)``) get ``x`` / ``mask`` gathered from a
:class:`~kizashi.datasets.device_panel.DeviceFeaturePanel` on the batch's device, in
``on_after_batch_transfer`` (before any step, callback or micro-batch split sees them).

Micro-batches: ``training_step`` can run a day batch as ``k`` micro-batches of whole days
(what :class:`~kizashi.training.callbacks.OOMRecovery` asks for after an out-of-memory
error). Each micro-batch's forward runs under activation checkpointing, so only one
micro-batch's activations are alive at a time (during the backward's recomputation); the
outputs are concatenated and the loss is the full batch's loss. The gradient is therefore
the full batch's (up to float summation order): the per-day rank term and the per-horizon
masked means see the whole batch, and a day's graph never spans two micro-batches. The
recomputation replays the same dropout masks (checkpointing restores the RNG state).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from kizashi.datasets.statistics import FeatureStats
from kizashi.datasets.device_panel import DeviceFeaturePanel
from kizashi.evaluation.metrics import daily_ic
from kizashi.models.losses import ForecastLoss, LossConfig
from kizashi.models.optim import param_groups
from kizashi.training.schedules import per_step, warmup_cosine

log = logging.getLogger(__name__)

# Per-node tensors of a day batch (sliced by node ranges when a batch is split).
NODE_KEYS = ("x", "mask", "y", "y_mask", "codes", "node_day")


def split_day_batch(batch: Mapping[str, Any], n_parts: int) -> list[dict[str, Any]]:
    """Split a collated day batch into ``n_parts`` (at most one per day) batches of whole,
    consecutive days, in order: concatenating the parts' nodes gives the batch's nodes.

    Node tensors (``x``, ``mask``, ``y``, ``y_mask``, ``codes``, ``node_day``) are sliced (views), edges
    are kept within their day's part and re-indexed, ``batch_day`` / ``node_ptr`` / ``days``
    are rebased. Other keys are passed through unchanged.
    """
    days = list(batch["days"])
    n_days = len(days)
    n_parts = max(1, min(int(n_parts), n_days))
    if n_parts == 1:
        return [dict(batch)]
    bounds = np.linspace(0, n_days, n_parts + 1).round().astype(int)
    node_ptr = batch["node_ptr"].tolist()
    edge_index, edge_attr = batch.get("edge_index"), batch.get("edge_attr")
    parts = []
    for first, stop in zip(bounds[:-1], bounds[1:]):
        lo, hi = node_ptr[first], node_ptr[stop]
        part = dict(batch)
        for key in NODE_KEYS:
            if key in batch:
                part[key] = batch[key][lo:hi]
        part["batch_day"] = batch["batch_day"][lo:hi] - int(first)
        part["node_ptr"] = batch["node_ptr"][first : stop + 1] - lo
        part["days"] = days[first:stop]
        if edge_index is not None:
            keep = (edge_index[0] >= lo) & (edge_index[0] < hi)
            part["edge_index"] = edge_index[:, keep] - lo
            if edge_attr is not None:
                part["edge_attr"] = edge_attr[keep]
        parts.append(part)
    return parts


class ForecastModule(L.LightningModule):
    """Train / validate / predict a multi-horizon forecaster on day-panel batches.

    Args:
        model: a registry model; ``forward(batch)`` -> ``{"point": [N, H], "quantiles": [N, H, Q], ...}``.
        horizons: the H forecast horizons (days), in the model's output order.
        loss: weights of the loss terms (:class:`~kizashi.models.losses.LossConfig`).
        lr, weight_decay, lr_factors: AdamW over :func:`~kizashi.models.optim.param_groups`.
        warmup_steps: linear learning-rate warm-up over this many optimizer steps (0 = none).
        quantile_levels: the Q levels of ``quantiles`` (default: ``model.config.quantiles``).

    Logged: ``train/loss`` (+ ``train/huber``, ``train/pinball``, ``train/rank``) per step
    and epoch; ``val/loss`` and ``val/rank_ic_{h}d`` (mean over validation days of the
    day's Spearman correlation between prediction and target) per epoch.
    ``predict_step`` returns ``{"day": [N], "code": [N], "point": [N, H]}`` on the CPU.
    """

    def __init__(
        self,
        model: nn.Module,
        horizons: Sequence[int],
        loss: LossConfig | None = None,
        *,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_factors: Mapping[str, float] | None = None,
        warmup_steps: int = 0,
        quantile_levels: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.horizons = tuple(int(h) for h in horizons)
        if quantile_levels is None:
            quantile_levels = getattr(getattr(model, "config", None), "quantiles", None)
        if quantile_levels is None:
            raise ValueError("quantile_levels: the model has no config.quantiles; pass them")
        self.loss_fn = ForecastLoss(loss or LossConfig(), quantile_levels)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.lr_factors = dict(lr_factors or {})
        self.warmup_steps = int(warmup_steps)
        self.oom_recovery: Any = None  # an OOMRecovery callback attaches itself here
        self._step_batch: Mapping[str, Any] | None = None
        self._step_splits = 1
        self._val_parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        self.panel: DeviceFeaturePanel | None = None
        self.panel_stats: FeatureStats | None = None

    def attach_panel(self, panel: DeviceFeaturePanel, stats: FeatureStats | None) -> None:
        """Gather ``x`` / ``mask`` of feature-less batches from ``panel``, standardized with
        ``stats`` (the fold's training statistics)."""
        self.panel, self.panel_stats = panel, stats

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, Mapping) and "x" not in batch and "node_day" in batch:
            if self.panel is None:
                raise RuntimeError("a batch without features: attach_panel(...) first")
            x, mask = self.panel.gather(batch["node_day"], batch["codes"], self.panel_stats)
            batch = {**batch, "x": x, "mask": mask}
        return batch

    # -- forward -----------------------------------------------------------------------

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return self.model(batch)

    def _checkpointed_forward(self, part: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        outputs = self.model(part)
        return outputs["point"], outputs["quantiles"]

    def forecast(self, batch: Mapping[str, Any], splits: int = 1) -> dict[str, Tensor]:
        """Model outputs for ``batch``, computed as ``splits`` micro-batches of whole days
        (each under activation checkpointing when gradients are on) and concatenated."""
        if splits <= 1:
            return self.model(batch)
        parts = split_day_batch(batch, splits)
        points, quantiles = [], []
        for part in parts:
            if torch.is_grad_enabled():
                point, quantile = checkpoint(self._checkpointed_forward, part, use_reentrant=False)
            else:
                point, quantile = self._checkpointed_forward(part)
            points.append(point)
            quantiles.append(quantile)
        return {"point": torch.cat(points), "quantiles": torch.cat(quantiles)}

    def loss_terms(self, batch: Mapping[str, Any], splits: int = 1) -> dict[str, Tensor]:
        """The loss terms of ``batch`` (per-day grouping from ``batch_day``)."""
        outputs = self.forecast(batch, splits)
        # the loss in float32 also under bf16 autocast (the model's outputs may be bf16)
        outputs = {"point": outputs["point"].float(), "quantiles": outputs["quantiles"].float()}
        return self.loss_fn(outputs, batch["y"], batch["y_mask"], batch["batch_day"])

    # -- training ----------------------------------------------------------------------

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        n_days = len(batch["days"])
        self._step_batch = batch
        if self.oom_recovery is None:
            self._step_splits = 1
            terms = self.loss_terms(batch)
        else:
            def attempt(splits: int) -> dict[str, Tensor]:
                self._step_splits = splits
                return self.loss_terms(batch, splits)

            terms = self.oom_recovery.run(attempt, n_days)
        self.log("train/loss", terms["loss"].detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=n_days)
        for name in ("huber", "pinball", "rank"):
            if name in terms:
                self.log(f"train/{name}", terms[name].detach(), on_step=False, on_epoch=True, batch_size=n_days)
        return terms["loss"]

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's backward; with OOM recovery on, an out-of-memory error here is
        retried by recomputing the batch's loss as more micro-batches."""
        recovery, batch = self.oom_recovery, self._step_batch
        if recovery is None or batch is None:
            super().backward(loss, *args, **kwargs)
            return
        first_splits = self._step_splits
        pending: list[Tensor | None] = [loss]

        def attempt(splits: int) -> None:
            if splits != first_splits:  # a retry: fresh gradients and a fresh, smaller graph
                pending[0] = None
                self.zero_grad(set_to_none=True)
                pending[0] = self.loss_terms(batch, splits)["loss"]
            current = pending[0]
            assert current is not None
            L.LightningModule.backward(self, current, *args, **kwargs)

        recovery.run(attempt, len(batch["days"]))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._step_batch = None

    # -- validation --------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val_parts = []

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        outputs = self.model(batch)
        outputs = {"point": outputs["point"].float(), "quantiles": outputs["quantiles"].float()}
        terms = self.loss_fn(outputs, batch["y"], batch["y_mask"], batch["batch_day"])
        n_days = len(batch["days"])
        self.log("val/loss", terms["loss"], on_step=False, on_epoch=True, batch_size=n_days, sync_dist=True)
        day = torch.as_tensor(batch["days"], dtype=torch.int64)[batch["batch_day"].cpu()]
        self._val_parts.append(
            (day, outputs["point"].detach().float().cpu(), batch["y"].detach().float().cpu(), batch["y_mask"].cpu())
        )

    def on_validation_epoch_end(self) -> None:
        sums = torch.zeros(len(self.horizons), dtype=torch.float64)
        counts = torch.zeros(len(self.horizons), dtype=torch.float64)
        if self._val_parts:
            day = torch.cat([p[0] for p in self._val_parts]).numpy()
            point = torch.cat([p[1] for p in self._val_parts]).numpy()
            target = torch.cat([p[2] for p in self._val_parts]).numpy()
            valid = torch.cat([p[3] for p in self._val_parts]).numpy()
            sums, counts = daily_rank_ic_sums(day, point, np.where(valid, target, np.nan))
            sums, counts = torch.from_numpy(sums), torch.from_numpy(counts)
        self._val_parts = []
        # days are whole per rank, so summing per-day values and counts over ranks is exact
        sums = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum")
        counts = self.trainer.strategy.reduce(counts.to(self.device), reduce_op="sum")
        means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, math.nan))
        for h, value in zip(self.horizons, means):
            self.log(f"val/rank_ic_{h}d", value.float(), on_step=False, on_epoch=True)
        if not self.trainer.sanity_checking:
            log.info(
                "epoch %d (step %d): validation RankIC %s",
                self.current_epoch, self.global_step,
                ", ".join(f"{h}d {v:+.4f}" for h, v in zip(self.horizons, means.tolist())),
            )

    # -- prediction --------------------------------------------------------------------

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        outputs = self.model(batch)
        day = torch.as_tensor(batch["days"], dtype=torch.int64)[batch["batch_day"].cpu()]
        return {"day": day, "code": batch["codes"].cpu(), "point": outputs["point"].detach().float().cpu()}

    # -- optimizer ---------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        groups = param_groups(self.model, self.weight_decay, self.lr, self.lr_factors)
        optimizer = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        if self.warmup_steps <= 0:
            return optimizer
        return per_step(optimizer, warmup_cosine(optimizer, self.warmup_steps))


def daily_rank_ic_sums(day: np.ndarray, prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per horizon, the sum over days of the day's RankIC and the number of days that have
    one (``kizashi.evaluation.metrics.daily_ic``: Spearman with average ranks; a day needs
    two valid pairs and no constant side). ``day`` [N] ints, ``prediction`` / ``target``
    [N, H] (NaN = invalid) -> two float64 arrays [H]."""
    n_horizons = prediction.shape[1]
    frame = pl.DataFrame(
        {
            "horizon": np.repeat(np.arange(n_horizons, dtype=np.int32), len(day)),
            "date": np.tile(np.asarray(day, dtype=np.int64), n_horizons),
            "prediction": prediction.T.reshape(-1).astype(np.float64),
            "target": target.T.reshape(-1).astype(np.float64),
        }
    )
    per_day = daily_ic(frame, by=("horizon", "date")).drop_nulls("rank_ic").filter(pl.col("rank_ic").is_finite())
    totals = per_day.group_by("horizon").agg(pl.col("rank_ic").sum().alias("sum"), pl.len().alias("n"))
    sums = np.zeros(n_horizons, dtype=np.float64)
    counts = np.zeros(n_horizons, dtype=np.float64)
    for h, total, n in totals.iter_rows():
        sums[h], counts[h] = total, n
    return sums, counts
