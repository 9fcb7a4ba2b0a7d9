"""The supervised side of Stage-1: fine-tune a (pretrained or fresh) Stage-1 encoder to
forecast each window's forward return, so that a user can measure what pretraining buys
(same data, split, seed and head; only the encoder's start differs).

    run_finetune(config, encoder="OUT/encoder.pt" | None, out_dir)
      -> the bars (finer bars resampled up to the encoder's base timeframe, logged)
      -> the purged windows of `kizashi pretrain` (no masking; the pretrained run's
         statistics and timeframes when an encoder is given, else fitted on the training
         range); the label is `forward_return` (config.label: the log return from the
         anchor close to the base close one coarsest bar later by default; see
         kizashi.datasets.multi_timeframe)
      -> Stage1Forecaster (encoder + LayerNorm/MLP head)
      -> Lightning fit on MSE of forward_return / label_scale (label_scale: the standard
         deviation of the training labels); per epoch, over all validation windows: MSE,
         the zero forecast's MSE, IC (Pearson) and rank IC (Spearman) -> finetune_metrics.csv
      -> the weights of the epoch with the best validation rank IC (selection on the
         validation windows only) predict the validation windows, and the test windows
         after val_end + purge when asked for -> predictions.parquet

Output directory ``OUT``::

    finetune_metrics.csv   epoch, train_mse, val_mse, val_zero_mse, val_ic, val_rank_ic,
                           val_labels (finite labels), epoch_seconds (MSEs in label_scale units)
    predictions.parquet    split (val | test), symbol, anchor_time (UTC), forward_return,
                           prediction (in log-return units), of the selected epoch
    finetune.json          label_scale, best_epoch, the split and purge, window counts
    model/                 the forecaster of the selected epoch as a pretrained folder
                           (config.json + model.safetensors; Stage1Forecaster.from_pretrained),
                           its metadata: label_scale (the output times it is in log-return
                           units), best_epoch, timeframes, base_timeframe, stats (the window
                           statistics its inputs are normalized with)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch
from torch import Tensor

from kizashi.atomic import atomic_path, write_csv_atomic, write_json_atomic
from kizashi.config import PretrainConfig
from kizashi.datasets.multi_timeframe import (
    MaskConfig,
    MultiTimeframeWindows,
    collate_windows,
)
from kizashi.datasets.statistics import WindowStats
from kizashi.datasets.workers import ignore_stop_signals
from kizashi.errors import ConfigError
from kizashi.evaluation.metrics import daily_ic
from kizashi.models.optim import param_groups
from kizashi.models.stage1 import Stage1Forecaster
from kizashi.training.callbacks import GradientFlowAudit
from kizashi.training.runtime import log_every_n_steps, resolve_precision
from kizashi.datasets.stage1_windows import load_bar_series, stage1_timeframes, window_datasets
from kizashi.training.transfer import build_stage1_model, load_pretrained

log = logging.getLogger(__name__)

FINETUNE_METRICS = ("epoch", "train_mse", "val_mse", "val_zero_mse", "val_ic", "val_rank_ic", "val_labels",
                    "epoch_seconds")
PREDICTIONS_FILE = "predictions.parquet"
MODEL_DIR = "model"


def correlations(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """``(IC, rank IC)``: Pearson and Spearman (average ranks) correlation of two ``[N]``
    arrays (:func:`kizashi.evaluation.metrics.daily_ic` over one group); NaN with fewer than 3
    values or a constant side."""
    if len(prediction) < 3 or np.ptp(prediction) == 0 or np.ptp(target) == 0:
        return float("nan"), float("nan")
    pairs = pl.DataFrame({"group": 0, "p": np.asarray(prediction, np.float64), "y": np.asarray(target, np.float64)})
    row = daily_ic(pairs, prediction="p", target="y", by=("group",)).row(0, named=True)
    return tuple(float("nan") if row[k] is None else float(row[k]) for k in ("ic", "rank_ic"))


class FineTuneModule(L.LightningModule):
    """MSE on the finite ``forward_return / label_scale`` labels; per epoch, validation MSE,
    the zero forecast's MSE, IC, rank IC and the label count; keeps a copy of the weights of
    the epoch with the best validation rank IC (``best_state``, ``best_epoch``)."""

    def __init__(self, model: Stage1Forecaster, lr: float, weight_decay: float, label_scale: float = 1.0) -> None:
        super().__init__()
        if not label_scale > 0:
            raise ValueError(f"label_scale must be positive, got {label_scale!r}")
        self.model, self.lr, self.weight_decay, self.label_scale = model, lr, weight_decay, float(label_scale)
        self._val: list[tuple[Tensor, Tensor]] = []
        self.rows: list[dict[str, float]] = []
        self._train: list[float] = []
        self._started = time.perf_counter()
        self.best_state: dict[str, Tensor] | None = None
        self.best_epoch: int | None = None
        self._best_rank_ic = -np.inf

    def _loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        prediction = self.model(batch["inputs"]).float()
        target = batch["forward_return"] / self.label_scale
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

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """``[B]`` forecasts in log-return units (the model's output times ``label_scale``)."""
        return self.model(batch["inputs"]).float() * self.label_scale

    def on_train_epoch_end(self) -> None:  # runs after the epoch's validation
        p = torch.cat([a for a, _ in self._val]).numpy() if self._val else np.empty(0)
        y = torch.cat([b for _, b in self._val]).numpy() if self._val else np.empty(0)
        ic, rank_ic = correlations(p, y)
        epoch = self.current_epoch + 1
        self.rows.append({"epoch": epoch, "train_mse": float(np.mean(self._train)) if self._train else float("nan"),
                          "val_mse": float(np.mean((p - y) ** 2)) if len(p) else float("nan"),
                          "val_zero_mse": float(np.mean(y ** 2)) if len(y) else float("nan"),
                          "val_ic": ic, "val_rank_ic": rank_ic, "val_labels": int(len(y)),
                          "epoch_seconds": time.perf_counter() - self._started})
        row = self.rows[-1]
        log.info("fine-tune epoch %d: val MSE %.4f (zero forecast %.4f), IC %+.4f, rank IC %+.4f over %d labels",
                 epoch, row["val_mse"], row["val_zero_mse"], ic, rank_ic, len(y))
        score = rank_ic if np.isfinite(rank_ic) else -np.inf
        if self.best_state is None or score > self._best_rank_ic:
            self._best_rank_ic, self.best_epoch = score, epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(param_groups(self.model, weight_decay=self.weight_decay, lr=self.lr), lr=self.lr)


@dataclass
class FineTuneResult:
    out_dir: Path
    metrics: list[dict[str, float]]
    pretrained: bool
    best_epoch: int | None = None
    label_scale: float = 1.0
    predictions: pl.DataFrame | None = None  # PREDICTIONS_FILE's rows
    summary: dict[str, Any] = field(default_factory=dict)  # finetune.json


def window_frame(dataset: MultiTimeframeWindows, split: str) -> pl.DataFrame:
    """``[N]`` rows ``split, symbol, anchor_time (UTC), forward_return`` of ``dataset``'s
    items, in item order."""
    return pl.DataFrame({
        "split": [split] * len(dataset), "symbol": dataset.item_symbols(),
        "anchor_time": pl.Series(dataset.anchor_times()).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        "forward_return": dataset.labels(),
    })


def run_finetune(
    config: PretrainConfig,
    encoder: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    epochs: int | None = None,
    freeze_encoder: bool = False,
    base_timeframe: str | None = None,
    test: bool = False,
) -> FineTuneResult:
    """Fine-tune on ``forward_return`` (module docstring).

    ``base_timeframe``: resample finer bars up to it (default: the encoder's base; without
    an encoder, the data's own). ``test``: also predict the windows after ``val_end`` +
    purge (needs ``config.val_end``); they are never used for the selection."""
    out = Path(out_dir) if out_dir is not None else Path(config.output.dir) / "finetune"
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    payload = None
    if encoder is not None:
        backbone, payload = load_pretrained(encoder)
        required_base = payload["timeframes"][0]
        if base_timeframe is not None and base_timeframe != required_base:
            raise ConfigError(f"{encoder}: the encoder was pretrained on base timeframe {required_base}; "
                              f"base_timeframe={base_timeframe!r} cannot differ from it")
        base_timeframe = required_base
    bars, _, base = load_bar_series(config, base_timeframe=base_timeframe)
    if payload is not None:
        timeframes = list(payload["timeframes"])
        stats = WindowStats.from_dict(payload["stats"])
        seq_len, seq_lens = backbone.config.seq_len, backbone.config.seq_lens
    else:
        timeframes, seq_len, seq_lens = stage1_timeframes(config, base), config.windows.seq_len, None
        backbone, stats = None, None
    split = window_datasets(config, bars, base, timeframes, seq_len, MaskConfig(ratio=0.0), seq_lens, with_test=test)
    train, val = split.train, split.val
    if stats is None:
        stats = WindowStats.fit(train, config.windows.stats_windows, seed=config.seed)
        backbone = build_stage1_model(config, timeframes)
    datasets = [train, val] + ([split.test] if split.test is not None else [])
    for ds in datasets:
        ds.stats = stats
    train_labels = train.labels()
    train_labels = train_labels[np.isfinite(train_labels)]
    if len(train_labels) < 2:
        raise ConfigError(f"label: {len(train_labels)} training windows have a label (horizon "
                          f"{split.label_horizon}); the data is too short or too gapped for it")
    label_scale = float(np.std(train_labels))
    model = Stage1Forecaster(backbone, freeze_encoder=freeze_encoder)
    module = FineTuneModule(model, config.optimizer.lr, config.optimizer.weight_decay, label_scale=label_scale)
    tcfg = config.trainer

    def loader(ds: MultiTimeframeWindows, shuffle: bool) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(ds, batch_size=tcfg.batch_size, shuffle=shuffle, collate_fn=collate_windows,
                                           num_workers=tcfg.num_workers, persistent_workers=tcfg.num_workers > 0,
                                           worker_init_fn=ignore_stop_signals)

    trainer = L.Trainer(max_epochs=epochs or tcfg.max_epochs, accelerator=tcfg.accelerator, devices=tcfg.devices,
                        precision=resolve_precision(tcfg.precision, tcfg.accelerator), logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[GradientFlowAudit()],
                        gradient_clip_val=config.optimizer.grad_clip,
                        limit_train_batches=tcfg.limit_train_batches if tcfg.limit_train_batches is not None else 1.0,
                        log_every_n_steps=log_every_n_steps(math.ceil(len(train) / tcfg.batch_size),
                                                            tcfg.limit_train_batches))
    trainer.fit(module, loader(train, True), loader(val, False))
    write_csv_atomic(out / "finetune_metrics.csv", module.rows, FINETUNE_METRICS)
    if module.best_state is not None:
        model.load_state_dict(module.best_state)
    log.info("fine-tuning: the weights of epoch %s (best validation rank IC) predict the %s windows", module.best_epoch,
             "validation and test" if split.test is not None else "validation")
    frames = []
    for name, ds in (("val", val), ("test", split.test)):
        if ds is None:
            continue
        predicted = trainer.predict(module, loader(ds, False))
        frames.append(window_frame(ds, name).with_columns(prediction=torch.cat(predicted).double().cpu().numpy()))
    predictions = pl.concat(frames)
    with atomic_path(out / PREDICTIONS_FILE) as tmp:
        predictions.write_parquet(tmp)
    model.save_pretrained(out / MODEL_DIR, metadata={
        "label_scale": label_scale, "best_epoch": module.best_epoch, "selected_on": "val_rank_ic",
        "timeframes": timeframes, "base_timeframe": base, "stats": stats.to_dict(),
        "pretrained_encoder": str(encoder) if encoder is not None else None})
    summary = {"pretrained": encoder is not None, "encoder": str(encoder) if encoder is not None else None,
               "freeze_encoder": freeze_encoder, "base_timeframe": base, "timeframes": timeframes,
               "label_scale": label_scale, "best_epoch": module.best_epoch, "selected_on": "val_rank_ic",
               "n_train_windows": len(train), "n_val_windows": len(val),
               "n_test_windows": len(split.test) if split.test is not None else 0, **split.info()}
    write_json_atomic(out / "finetune.json", summary)
    return FineTuneResult(out_dir=out, metrics=module.rows, pretrained=encoder is not None,
                          best_epoch=module.best_epoch, label_scale=label_scale, predictions=predictions,
                          summary=summary)
