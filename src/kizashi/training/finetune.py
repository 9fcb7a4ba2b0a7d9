"""The supervised side of Stage-1: fine-tune a (pretrained or fresh) Stage-1 encoder to
forecast the coarsest timeframe's next-bar return, so that a user can measure what
pretraining buys (same data, split, seed and head; only the encoder's start differs).

    run_finetune(config, encoder="OUT/encoder.pt" | None, out_dir)
      -> the windows of `kizashi pretrain` (no masking; the pretrained run's statistics and
         timeframes when an encoder is given, else fitted on the training range)
      -> Stage1Forecaster (encoder + LayerNorm/MLP head on the coarsest timeframe's last bar)
      -> Lightning fit on MSE; per epoch: validation MSE, IC (Pearson) and rank IC
         (Spearman) over all validation windows -> finetune_metrics.csv
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from kizashi.atomic import write_csv_atomic
from kizashi.config import PretrainConfig
from kizashi.datasets.multi_timeframe import (
    MaskConfig,
    TimeframeStats,
    collate_windows,
    fit_window_stats,
)
from kizashi.errors import ConfigError
from kizashi.models.optim import param_groups
from kizashi.models.stage1 import Stage1Forecaster
from kizashi.training.callbacks import GradientFlowAudit
from kizashi.training.pretrain import (
    _timeframes,
    build_stage1_model,
    load_bar_series,
    load_pretrained,
    window_datasets,
)

log = logging.getLogger(__name__)

FINETUNE_METRICS = ("epoch", "train_mse", "val_mse", "val_ic", "val_rank_ic", "epoch_seconds")


class FineTuneModule(L.LightningModule):
    """MSE on the finite ``next_return`` labels; validation MSE / IC / rank IC per epoch."""

    def __init__(self, model: Stage1Forecaster, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.model, self.lr, self.weight_decay = model, lr, weight_decay
        self._val: list[tuple[Tensor, Tensor]] = []
        self.rows: list[dict[str, float]] = []
        self._train: list[float] = []
        self._started = time.perf_counter()

    def _loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        prediction = self.model(batch["inputs"]).float()
        target = batch["next_return"]
        known = torch.isfinite(target)
        loss = (prediction[known] - target[known]).square().mean() if known.any() else prediction.sum() * 0.0
        return loss, prediction[known].detach(), target[known]

    def on_train_epoch_start(self) -> None:
        self._train, self._started = [], time.perf_counter()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, _, _ = self._loss(batch)
        self._train.append(float(loss.detach()))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        _, prediction, target = self._loss(batch)
        self._val.append((prediction.cpu().double(), target.cpu().double()))

    def on_train_epoch_end(self) -> None:
        p = torch.cat([a for a, _ in self._val]).numpy() if self._val else np.empty(0)
        y = torch.cat([b for _, b in self._val]).numpy() if self._val else np.empty(0)
        ic = float(np.corrcoef(p, y)[0, 1]) if len(p) > 2 and p.std() > 0 else float("nan")
        rank = lambda v: np.argsort(np.argsort(v)).astype(float)  # noqa: E731  (no ties in floats)
        rank_ic = float(np.corrcoef(rank(p), rank(y))[0, 1]) if len(p) > 2 and p.std() > 0 else float("nan")
        self.rows.append({"epoch": self.current_epoch + 1, "train_mse": float(np.mean(self._train)) if self._train else float("nan"),
                          "val_mse": float(np.mean((p - y) ** 2)) if len(p) else float("nan"),
                          "val_ic": ic, "val_rank_ic": rank_ic, "epoch_seconds": time.perf_counter() - self._started})
        row = self.rows[-1]
        log.info("fine-tune epoch %d: val MSE %.4f, IC %+.4f, rank IC %+.4f", row["epoch"], row["val_mse"], ic, rank_ic)

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(param_groups(self.model, weight_decay=self.weight_decay, lr=self.lr), lr=self.lr)


@dataclass
class FineTuneResult:
    out_dir: Path
    metrics: list[dict[str, float]]
    pretrained: bool


def run_finetune(
    config: PretrainConfig,
    encoder: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    epochs: int | None = None,
    freeze_encoder: bool = False,
) -> FineTuneResult:
    """Fine-tune on the next-bar return of the coarsest timeframe (module docstring)."""
    out = Path(out_dir) if out_dir is not None else Path(config.output.dir) / "finetune"
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    bars, _, base = load_bar_series(config)
    if encoder is not None:
        backbone, payload = load_pretrained(encoder)
        timeframes = list(payload["timeframes"])
        if timeframes[0] != base:
            raise ConfigError(f"the encoder was pretrained on base timeframe {timeframes[0]}, the data's is {base}")
        stats = {tf: TimeframeStats(**values) for tf, values in payload["stats"].items()}
        seq_len, seq_lens = backbone.config.seq_len, backbone.config.seq_lens
    else:
        timeframes, seq_len, seq_lens = _timeframes(config, base), config.windows.seq_len, None
        backbone, stats = None, None
    train, val, _ = window_datasets(config, bars, base, timeframes, seq_len, MaskConfig(ratio=0.0), seq_lens)
    if stats is None:
        stats = fit_window_stats(train, config.windows.stats_windows, seed=config.seed)
        backbone = build_stage1_model(config, timeframes)
    train.stats = val.stats = stats
    model = Stage1Forecaster(backbone, freeze_encoder=freeze_encoder)
    module = FineTuneModule(model, config.optimizer.lr, config.optimizer.weight_decay)
    tcfg = config.trainer
    loaders = [torch.utils.data.DataLoader(ds, batch_size=tcfg.batch_size, shuffle=shuffle, collate_fn=collate_windows,
                                           num_workers=tcfg.num_workers) for ds, shuffle in ((train, True), (val, False))]
    trainer = L.Trainer(max_epochs=epochs or tcfg.max_epochs, accelerator=tcfg.accelerator, devices=tcfg.devices,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[GradientFlowAudit()],
                        gradient_clip_val=config.optimizer.grad_clip,
                        limit_train_batches=tcfg.limit_train_batches if tcfg.limit_train_batches is not None else 1.0)
    trainer.fit(module, *loaders)
    write_csv_atomic(out / "finetune_metrics.csv", module.rows, FINETUNE_METRICS)
    return FineTuneResult(out_dir=out, metrics=module.rows, pretrained=encoder is not None)
