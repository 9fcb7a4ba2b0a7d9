"""`kizashi pretrain`: Stage-1 masked multi-timeframe reconstruction, end to end.

    bars (files, or the synthetic intraday market)
      -> validate_bars (duplicates policy; the reports saved as bars_report.json)
      -> build_timeframes (base + coarser, close-time labels)
      -> windows (config.windows.mode): training anchors before train_end, validation
         anchors in [train_end + purge, val_end), purge = the label horizon + the longest
         window span, and no validation window holds a bar opening before train_end + the
         label horizon (so no training label or input reaches a validation input);
         statistics from the training windows only (stats.json)
      -> Stage1Model (random-init Transformer, or a pretrained LM behind the patch adapter)
      -> Lightning fit: Stage1Module + gradient-flow audit, non-finite guard, gradual
         unfreezing of the LM, the best checkpoint on val/reconstruction
      -> encoder.pt (model config + weights + window statistics), model/ (the same weights
         as a pretrained folder), metrics.csv (one row per epoch: losses, masked
         correlation, LM frozen fraction, seconds), pretrain.json

Several devices (``trainer.devices`` > 1, ``--devices N``): Lightning DDP; each rank trains on
its shard of the shuffled training windows (the effective batch is ``devices x
batch_size``), every rank scores every validation window (the validation metrics are
reduced over the ranks and equal the split's), and only rank 0 writes.

Output directory ``OUT`` (``output.dir``)::

    bars_report.json   per symbol: ValidationReport.to_dict() (kizashi.data.report)
    stats.json         per-timeframe window statistics, the training range, the purge
                       (val_start, purge_minutes, label_horizon_minutes, label_timeframe)
    metrics.csv        epoch, train_loss, val_loss, val_reconstruction, val_consistency,
                       val_masked_corr, lm_frozen_fraction, epoch_seconds
    encoder.pt         {"config": Stage1Config fields, "state_dict": the best weights,
                        "stats": stats.json's content, "timeframes": [...]}
    model/             the same Stage-1 model as a pretrained folder (config.json +
                       model.safetensors; Stage1Model.from_pretrained), its metadata:
                       timeframes, stats (stats.json's content), best_epoch
    pretrain.json      parameter counts, timings, peak memory, best epoch, the split and
                       purge (train_end, val_start, purge_minutes, ...), the config
    checkpoints/       best.ckpt (Lightning)
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from kizashi.atomic import atomic_path, write_csv_atomic, write_json_atomic
from kizashi.config import PretrainConfig, dump_config
from kizashi.datasets.multi_timeframe import (
    MaskConfig,
    collate_windows,
)
from kizashi.datasets.statistics import WindowStats
from kizashi.datasets.workers import ignore_stop_signals
from kizashi.evaluation.pretrain_run import ENCODER_FILE, METRIC_COLUMNS, METRICS_FILE, SUMMARY_FILE
from kizashi.profiling import PeakMemory
from kizashi.training.callbacks import EpochRecorder, GradientFlowAudit, GradualUnfreezing, NonFiniteGuard
from kizashi.training.neural_fit import is_global_zero, multi_device
from kizashi.training.stage1_module import Stage1Module
from kizashi.training.runtime import every_rank_sampler, log_every_n_steps, make_logger, resolve_precision
from kizashi.datasets.stage1_windows import load_bar_series, stage1_timeframes, window_datasets
from kizashi.training.transfer import build_stage1_model, find_lm_adapter

log = logging.getLogger(__name__)

MODEL_DIR = "model"


@dataclass
class PretrainResult:
    out_dir: Path
    metrics: list[dict[str, float]]
    summary: dict[str, Any]


def run_pretraining(config: PretrainConfig, out_dir: str | Path | None = None) -> PretrainResult:
    """Pretrain a Stage-1 model (module docstring); returns the metrics and the summary."""
    started = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else Path(config.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    bars, reports, base = load_bar_series(config)
    writer = is_global_zero()  # under DDP only rank 0 writes
    if writer:
        write_json_atomic(out / "bars_report.json", reports)
    timeframes = stage1_timeframes(config, base)
    w = config.windows
    mask = MaskConfig(ratio=w.mask.ratio, min_span=w.mask.min_span, max_span=w.mask.max_span,
                      synchronized=w.mask.synchronized)
    split = window_datasets(config, bars, base, timeframes, w.seq_len, mask)
    train, val, train_end = split.train, split.val, split.train_end
    stats = WindowStats.fit(train, w.stats_windows, seed=config.seed)
    train.stats = val.stats = stats
    if writer:
        stats.save(out / "stats.json", **split.info(), val_end=str(config.val_end),
                   timeframe_order=timeframes, **train.window_metadata())
    log.info("pretraining on %d symbols, timeframes %s: %d training windows (before %s), %d validation windows "
             "(from %s)", len(bars), timeframes, len(train), train_end, len(val), split.val_start)

    model = build_stage1_model(config, timeframes)
    tcfg, tl = config.trainer, config.transfer_learning
    train_loader = torch.utils.data.DataLoader(train, batch_size=tcfg.batch_size, shuffle=True,
                                               collate_fn=collate_windows, num_workers=tcfg.num_workers,
                                               persistent_workers=tcfg.num_workers > 0, drop_last=len(train) > tcfg.batch_size,
                                               worker_init_fn=ignore_stop_signals)
    distributed = multi_device(tcfg.devices)
    val_loader = torch.utils.data.DataLoader(val, batch_size=tcfg.batch_size, shuffle=False,
                                             sampler=every_rank_sampler(val, distributed),
                                             collate_fn=collate_windows, num_workers=tcfg.num_workers,
                                             persistent_workers=tcfg.num_workers > 0, worker_init_fn=ignore_stop_signals)
    steps_per_epoch = len(train_loader)
    if isinstance(tcfg.limit_train_batches, int):
        steps_per_epoch = min(steps_per_epoch, tcfg.limit_train_batches)
    elif isinstance(tcfg.limit_train_batches, float):
        steps_per_epoch = max(1, int(steps_per_epoch * tcfg.limit_train_batches))
    module = Stage1Module(
        model, {tf: s.price_scale for tf, s in stats.items()}, loss_kind=config.loss.kind,
        huber_delta=config.loss.huber_delta, consistency_weight=config.loss.consistency_weight,
        lr=config.optimizer.lr, weight_decay=config.optimizer.weight_decay,
        lm_learning_rate_factor=tl.lm_learning_rate_factor, warmup_steps=config.optimizer.warmup_steps,
        total_steps=tcfg.max_epochs * steps_per_epoch + 1 if tcfg.one_cycle else None,
    )
    recorder = EpochRecorder()
    best = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val/reconstruction", mode="min",
                           save_top_k=1, save_weights_only=True)
    callbacks: list[L.Callback] = [GradientFlowAudit(), NonFiniteGuard(20), recorder, best]
    if tl.use_pretrained_lm:
        callbacks.append(GradualUnfreezing(tl.freeze_lm_epochs, tl.unfreeze_blocks_per_epoch))
    interactive = sys.stderr.isatty()
    if interactive:
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        max_epochs=tcfg.max_epochs, accelerator=tcfg.accelerator, devices=tcfg.devices,
        strategy="ddp" if distributed else "auto", precision=resolve_precision(tcfg.precision, tcfg.accelerator),
        gradient_clip_val=config.optimizer.grad_clip, logger=make_logger(tcfg.logger, out / "logs", "pretrain"),
        callbacks=callbacks, enable_progress_bar=interactive, enable_model_summary=False,
        limit_train_batches=tcfg.limit_train_batches if tcfg.limit_train_batches is not None else 1.0,
        limit_val_batches=tcfg.limit_val_batches if tcfg.limit_val_batches is not None else 1.0,
        num_sanity_val_steps=0, default_root_dir=str(out),
        log_every_n_steps=log_every_n_steps(len(train_loader), tcfg.limit_train_batches),
    )
    fit_started = time.perf_counter()
    with PeakMemory(cuda=trainer.strategy.root_device.type == "cuda") as memory:
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    fit_seconds = time.perf_counter() - fit_started
    if not trainer.is_global_zero:  # the other ranks trained along; rank 0 writes
        return PretrainResult(out_dir=out, metrics=recorder.rows, summary={})
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    write_csv_atomic(out / METRICS_FILE, recorder.rows, METRIC_COLUMNS)
    stats_json = stats.to_dict()
    with atomic_path(out / ENCODER_FILE) as tmp:
        torch.save({"config": dataclasses.asdict(model.config), "state_dict": model.state_dict(),
                    "stats": stats_json, "timeframes": timeframes}, tmp)
    breakdown = model.parameter_breakdown()
    adapter = find_lm_adapter(model)
    best_row = min(recorder.rows, key=lambda r: r["val_reconstruction"]) if recorder.rows else {}
    model.save_pretrained(out / MODEL_DIR, metadata={"timeframes": timeframes, "stats": stats_json,
                                                     "best_epoch": best_row.get("epoch")})
    summary = {
        "encoder": config.model.name + (":lm" if tl.use_pretrained_lm else ":transformer"),
        "timeframes": timeframes, "base_timeframe": base, "symbols": sorted(bars),
        "n_train_windows": len(train), "n_val_windows": len(val), **split.info(),
        "parameters": sum(p.numel() for p in model.parameters()), "parameter_breakdown": breakdown,
        "fit_seconds": fit_seconds, "seconds": time.perf_counter() - started,
        "lm_parameters": sum(p.numel() for p in adapter.lm_parameters()) if adapter is not None else 0,
        "peak_memory_gib": memory.gib, "peak_memory_kind": memory.kind,
        "best_epoch": best_row.get("epoch"), "best_val_reconstruction": best_row.get("val_reconstruction"),
        "config": dump_config(config),
    }
    write_json_atomic(out / SUMMARY_FILE, summary)
    log.info("pretrained %s in %.1f s: best val reconstruction %s at epoch %s; encoder: %s", summary["encoder"],
             fit_seconds, best_row.get("val_reconstruction"), best_row.get("epoch"), out / ENCODER_FILE)
    return PretrainResult(out_dir=out, metrics=recorder.rows, summary=summary)
