"""The LightningModule for Stage-1 masked multi-timeframe reconstruction.

    batch (kizashi.datasets.multi_timeframe.collate_windows)
      -> Stage1Model(inputs, masked) -> {tf: [B, T_tf, 4]}
      -> loss = reconstruction (masked positions only)
               + consistency_weight * mean over adjacent timeframe pairs of the grouped
                 consistency (fine aggregated to coarse, in the coarse timeframe's
                 normalized units: log price / the coarse price scale, so the term is of
                 the reconstruction's order)

Async batches (``MultiTimeframeWindows(mode="async")``: no ``groups`` / ``complete``, the
timeframes' windows are not aligned in time) have no consistency term: the loss is the
reconstruction alone and ``consistency`` is logged as 0 (so the logged columns are the same
in both modes). Joint fusion on an async batch raises ``ValueError`` (its time-distance bias
assumes windows ending at the same instant): async windows need ``fusion="separate"``.

Logged per step and epoch: ``train/loss``, ``train/reconstruction``, ``train/consistency``;
per validation epoch: ``val/loss``, ``val/reconstruction``, ``val/consistency`` and
``val/masked_corr`` (Pearson correlation between reconstruction and target over all masked
positions and OHLC channels of all timeframes, pooled). The optimizer is AdamW over
:func:`kizashi.training.transfer.transfer_param_groups` (a pretrained LM at
``lm_learning_rate_factor`` x ``lr``) with an optional linear warm-up, or, given
``total_steps``, a one-cycle schedule (10% warm-up, cosine decay; each group keeps its own
peak learning rate); both from :mod:`kizashi.training.schedules`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor

from kizashi.data.timeframes import timeframe_minutes
from kizashi.models.stage1 import Stage1Model, grouped_consistency, masked_reconstruction_loss
from kizashi.training.schedules import one_cycle, per_step, warmup_cosine
from kizashi.training.transfer import transfer_param_groups

log = logging.getLogger(__name__)


class Stage1Module(L.LightningModule):
    """Train / validate :class:`~kizashi.models.stage1.Stage1Model`.

    ``price_scales``: ``{tf: float}`` the window statistics' price scales (to undo the
    normalization in the consistency loss)."""

    def __init__(
        self,
        model: Stage1Model,
        price_scales: Mapping[str, float],
        *,
        loss_kind: str = "huber",
        huber_delta: float = 1.0,
        consistency_weight: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lm_learning_rate_factor: float = 1.0,
        warmup_steps: int = 0,
        total_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.price_scales = {tf: float(price_scales[tf]) for tf in model.config.timeframes}
        self.loss_kind, self.huber_delta = loss_kind, float(huber_delta)
        self.consistency_weight = float(consistency_weight)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.lm_learning_rate_factor = float(lm_learning_rate_factor)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = total_steps
        ordered = sorted(model.config.timeframes, key=timeframe_minutes)
        self.pairs = list(zip(ordered, ordered[1:]))
        self._val: list[tuple[Tensor, Tensor]] = []

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        if "groups" not in batch and self.model.config.fusion == "joint" and len(self.model.config.timeframes) > 1:
            raise ValueError("an async batch (windows not aligned in time: no 'groups') cannot go through fusion "
                             "'joint', whose time-distance bias assumes windows ending at the same instant; "
                             "use fusion='separate' with mode='async' windows")
        return self.model(batch["inputs"], batch["masked"])

    def losses(self, batch: Mapping[str, Any], outputs: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        outputs = self(batch) if outputs is None else outputs
        outputs = {tf: out.float() for tf, out in outputs.items()}
        reconstruction = masked_reconstruction_loss(outputs, batch["targets"], batch["masked"],
                                                    kind=self.loss_kind, delta=self.huber_delta)
        if self.pairs and self.consistency_weight > 0 and "groups" in batch:
            consistency = torch.stack([
                grouped_consistency(outputs[fine], outputs[coarse], batch["groups"][fine], batch["complete"][coarse],
                                    fine_scale=self.price_scales[fine] / self.price_scales[coarse], coarse_scale=1.0,
                                    kind=self.loss_kind, delta=self.huber_delta)
                for fine, coarse in self.pairs
            ]).mean()
        else:  # one timeframe, weight 0, or an async batch (no groups): logged as 0
            consistency = reconstruction * 0.0
        return {"loss": reconstruction + self.consistency_weight * consistency,
                "reconstruction": reconstruction, "consistency": consistency}

    def _batch_size(self, batch: Mapping[str, Any]) -> int:
        return int(next(iter(batch["inputs"].values())).shape[0])

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        terms = self.losses(batch)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True, on_epoch=True,
                      batch_size=self._batch_size(batch), prog_bar=False)
        return terms["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        outputs = self(batch)
        terms = self.losses(batch, outputs)
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, on_epoch=True, batch_size=self._batch_size(batch),
                      sync_dist=True)
        for tf, out in outputs.items():
            where = batch["masked"][tf]
            self._val.append((out.float()[where].reshape(-1).cpu(), batch["targets"][tf][where].reshape(-1).cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        prediction = torch.cat([p for p, _ in self._val]).double()
        target = torch.cat([t for _, t in self._val]).double()
        corr = torch.corrcoef(torch.stack([prediction, target]))[0, 1] if len(prediction) > 1 else torch.tensor(float("nan"))
        self.log("val/masked_corr", corr.float(), sync_dist=True)
        self._val = []

    def configure_optimizers(self) -> Any:
        groups = transfer_param_groups(self.model, self.lr, self.weight_decay, self.lm_learning_rate_factor)
        optimizer = torch.optim.AdamW(groups, lr=self.lr)
        if self.total_steps is not None:  # one cycle: warm-up over 10%, cosine decay to ~0
            return per_step(optimizer, one_cycle(optimizer, self.total_steps, pct_start=0.1))
        if self.warmup_steps <= 0:
            return optimizer
        return per_step(optimizer, warmup_cosine(optimizer, self.warmup_steps))
