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
      -> encoder.pt (model config + weights + window statistics), metrics.csv (one row per
         epoch: losses, masked correlation, LM frozen fraction, seconds), pretrain.json

Output directory ``OUT`` (``output.dir``)::

    bars_report.json   per symbol: BarReport.to_dict()
    stats.json         per-timeframe window statistics, the training range, the purge
                       (val_start, purge_minutes, label_horizon_minutes, label_timeframe)
    metrics.csv        epoch, train_loss, val_loss, val_reconstruction, val_consistency,
                       val_masked_corr, lm_frozen_fraction, epoch_seconds
    encoder.pt         {"config": Stage1Config fields, "state_dict": the best weights,
                        "stats": stats.json's content, "timeframes": [...]}
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
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import polars as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from kizashi.atomic import atomic_path, write_csv_atomic, write_json_atomic
from kizashi.config import PretrainConfig, dump_config
from kizashi.data.bars import (
    BAR_COLUMNS,
    INVALID_RANGE,
    OPEN_TIME,
    TIMESTAMP,
    build_timeframes,
    read_bars,
    resample_bars,
    validate_bars,
)
from kizashi.data.synthetic_intraday import SyntheticBarsConfig, generate_bars
from kizashi.data.timeframes import DEFAULT_TIMEFRAMES, coarser_timeframes, timeframe_minutes, timeframe_name
from kizashi.datasets.multi_timeframe import (
    LabelConfig,
    MaskConfig,
    MultiTimeframeWindows,
    collate_windows,
    fit_window_stats,
    label_horizon,
    save_window_stats,
)
from kizashi.datasets.workers import ignore_stop_signals
from kizashi.errors import ConfigError, KizashiError
from kizashi.evaluation.pretrain_run import ENCODER_FILE, METRIC_COLUMNS, METRICS_FILE, SUMMARY_FILE
from kizashi.models import create_model
from kizashi.models.stage1 import Stage1Model
from kizashi.profiling import PeakMemory
from kizashi.training.callbacks import FiniteMean, GradientFlowAudit, NonFiniteGuard, step_loss
from kizashi.training.stage1_module import Stage1Module
from kizashi.training.train import make_logger, resolve_precision
from kizashi.training.transfer import GradualUnfreezing, find_lm_adapter, fraction_frozen

log = logging.getLogger(__name__)



@dataclass
class PretrainResult:
    out_dir: Path
    metrics: list[dict[str, float]]
    summary: dict[str, Any]


def load_bar_series(
    config: PretrainConfig, base_timeframe: str | None = None
) -> tuple[dict[str, pl.DataFrame], dict[str, Any], str]:
    """Validated base bars per symbol, their reports (as dicts) and the common base timeframe.

    ``base_timeframe`` (e.g. a pretrained encoder's base): a symbol whose bars are finer
    (``m15`` or ``m1`` data for an ``m30`` encoder) is resampled up to it
    (:func:`coarsen_base_bars`, logged); bars coarser than it, or not dividing it, are a
    :class:`ConfigError`."""
    data = config.data
    raw: dict[str, pl.DataFrame] = {}
    sources: dict[str, str] = {}
    if data.paths:
        for path in data.paths:
            symbol = Path(path).stem
            if symbol in raw:
                raise ConfigError(f"data.paths: two files named {symbol!r}")
            raw[symbol], sources[symbol] = read_bars(path), str(path)
    else:
        s = data.synthetic
        raw = generate_bars(SyntheticBarsConfig(symbols=tuple(s.symbols), timeframe=s.timeframe, n_days=s.n_days,
                                                seed=s.seed, session=s.session))
        sources = {symbol: f"data.synthetic ({symbol})" for symbol in raw}
    bars, reports, bases = {}, {}, set()
    for symbol, frame in raw.items():
        validated, report = validate_bars(frame, source=symbol, duplicates=data.duplicates)
        bars[symbol], reports[symbol] = validated, report.to_dict()
        base = report.base_timeframe
        if base_timeframe is not None and timeframe_minutes(base) != timeframe_minutes(base_timeframe):
            finer = timeframe_minutes(base) < timeframe_minutes(base_timeframe)
            if not finer or timeframe_minutes(base_timeframe) % timeframe_minutes(base):
                raise ConfigError(
                    f"{sources[symbol]}: the bars' base timeframe is {base}, which cannot be resampled to the "
                    f"required base {base_timeframe} (only finer data that divides it can: a model pretrained on "
                    f"{base_timeframe} bars cannot read {base} bars)")
            bars[symbol] = coarsen_base_bars(validated, base, base_timeframe)
            log.info("%s: base timeframe %s resampled up to %s (the required base): %d -> %d bars", sources[symbol],
                     base, base_timeframe, validated.height, bars[symbol].height)
            reports[symbol]["resampled_to"] = base_timeframe
            base = timeframe_name(timeframe_minutes(base_timeframe))
        bases.add(base)
    if len(bases) != 1:
        raise KizashiError(f"the symbols have different base timeframes {sorted(bases)}; pretrain them separately")
    return bars, reports, bases.pop()


def coarsen_base_bars(bars: pl.DataFrame, base: str, target: str) -> pl.DataFrame:
    """Validated ``base`` bars (open-time ``timestamp``) resampled to ``target`` bars in the
    same layout (open-time ``timestamp``, OHLCV, ``invalid_range``), so that they are the
    base bars of :func:`build_timeframes`. A bucket with missing base bars is kept (its
    close is the last base bar's); a bucket holding an invalid bar is flagged invalid."""
    coarse = resample_bars(bars, base, target)
    return coarse.select(pl.col(OPEN_TIME).alias(TIMESTAMP), *BAR_COLUMNS[1:], INVALID_RANGE)


def _timeframes(config: PretrainConfig, base: str) -> list[str]:
    if config.timeframes is None:
        return [base, *coarser_timeframes(base, DEFAULT_TIMEFRAMES)]
    chosen = sorted(config.timeframes, key=timeframe_minutes)
    if chosen[0] != base:
        raise ConfigError(f"timeframes: the finest must be the data's base timeframe {base}, got {chosen}")
    return chosen


def _train_end(config: PretrainConfig, series: dict[str, dict[str, pl.DataFrame]], base: str) -> np.datetime64:
    if config.train_end is not None:
        return np.datetime64(config.train_end, "us")
    closes = np.concatenate([frames[base]["timestamp"].dt.epoch("us").to_numpy() for frames in series.values()])
    return np.datetime64(int(np.quantile(closes, 0.8)), "us")


class WindowSplit(NamedTuple):
    """Training and validation windows (and test windows when asked for), purged.

    ``purge`` = ``label_horizon`` + ``longest_window`` (the longest timeframe window's span,
    ``(T_tf + 1) x duration(tf)``: its bars plus the one in progress at the anchor).
    Validation anchors lie in ``[val_start, val_end)`` with ``val_start = train_end + purge``,
    and no validation window holds a bar that opens before ``train_end + label_horizon``;
    test anchors (if any) likewise after ``val_end``."""

    train: MultiTimeframeWindows
    val: MultiTimeframeWindows
    train_end: np.datetime64
    val_start: np.datetime64
    label_horizon: np.timedelta64
    longest_window: np.timedelta64
    test: MultiTimeframeWindows | None = None
    test_start: np.datetime64 | None = None

    @property
    def purge(self) -> np.timedelta64:
        return self.label_horizon + self.longest_window

    def info(self) -> dict[str, Any]:
        """The split and purge, JSON-ready (stats.json, pretrain.json)."""
        minutes = lambda delta: int(delta // np.timedelta64(1, "m"))  # noqa: E731
        out = {"train_end": str(self.train_end), "val_start": str(self.val_start),
               "purge_minutes": minutes(self.purge), "label_horizon_minutes": minutes(self.label_horizon),
               "longest_window_minutes": minutes(self.longest_window), "label_timeframe": self.train.label_timeframe,
               "label_bars": self.train.label.bars}
        if self.test_start is not None:
            out["test_start"] = str(self.test_start)
        return out


def label_config(config: PretrainConfig, timeframes: list[str]) -> tuple[LabelConfig, np.timedelta64]:
    """The label settings (``config.label``) and the horizon, checked against the
    timeframes: a :class:`ConfigError` naming the key when the horizon is not whole base
    bars."""
    label = LabelConfig(timeframe=config.label.timeframe, bars=config.label.bars)
    try:
        _, horizon_us = label_horizon(label, timeframes)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return label, np.timedelta64(horizon_us, "us")


def window_datasets(
    config: PretrainConfig,
    bars: dict[str, pl.DataFrame],
    base: str,
    timeframes: list[str],
    seq_len: int,
    mask: MaskConfig,
    seq_lens: dict[str, int] | None = None,
    *,
    with_test: bool = False,
) -> WindowSplit:
    """The timeframes built from ``bars`` and the purged windows (``config.windows.mode``):
    training windows ending before ``train_end``, validation windows in
    ``[train_end + purge, val_end)`` (:class:`WindowSplit`; no statistics set yet).
    ``with_test``: also the windows after ``val_end + purge`` to the data's end (needs
    ``val_end``). Shared by pretraining and fine-tuning, so both split alike. ``seq_lens``
    (async) defaults to ``config.windows.seq_lens``."""
    series = {symbol: build_timeframes(frame, base, timeframes[1:]) for symbol, frame in bars.items()}
    train_end = _train_end(config, series, base)
    val_end = np.datetime64(config.val_end, "us") if config.val_end is not None else None
    if with_test and val_end is None:
        raise ConfigError("val_end: test windows follow the validation range, which needs an end (val_end)")
    w = config.windows
    label, horizon = label_config(config, timeframes)
    shape: dict[str, Any] = {"mode": w.mode, "label": label}
    if w.mode == "async":
        shape["seq_lens"] = seq_lens if seq_lens is not None else w.seq_lens
    lengths = {tf: (shape.get("seq_lens") or {}).get(tf, seq_len) for tf in timeframes}
    longest = max((lengths[tf] + 1) * timeframe_minutes(tf) for tf in timeframes)
    longest_window = np.timedelta64(longest, "m").astype("timedelta64[us]")
    purge = horizon + longest_window

    def later(start: np.datetime64, end: np.datetime64 | None, seed: int) -> MultiTimeframeWindows:
        return MultiTimeframeWindows(series, timeframes, seq_len, time_range=(start + purge, end), mask=mask,
                                     anchor_stride=w.val_anchor_stride, seed=seed, earliest_input=start + horizon,
                                     **shape)

    try:
        train = MultiTimeframeWindows(series, timeframes, seq_len, time_range=(None, train_end), mask=mask,
                                      anchor_stride=w.anchor_stride, seed=config.seed, **shape,
                                      **({"strides": w.strides} if w.mode == "async" else {}))
        val = later(train_end, val_end, config.seed + 1)
        test = later(val_end, None, config.seed + 2) if with_test else None
    except ValueError as err:
        raise ConfigError(f"windows: {err} (validation windows start after the purge of {_duration(purge)} = label "
                          f"horizon {_duration(horizon)} + longest window {_duration(longest_window)})") from None
    split = WindowSplit(train, val, train_end, train_end + purge, horizon, longest_window, test,
                        val_end + purge if with_test else None)
    log.info("purge: validation windows start at %s (train_end %s + label horizon %s + longest window %s) and hold "
             "no bar opening before %s; %d training, %d validation windows%s", split.val_start, train_end,
             _duration(horizon), _duration(longest_window), train_end + horizon, len(train), len(val),
             f", {len(test)} test windows from {split.test_start}" if test is not None else "")
    return split


def _duration(delta: np.timedelta64) -> str:
    """``np.timedelta64`` as ``datetime.timedelta`` text (``1 day, 4:00:00``)."""
    return str(delta.astype("timedelta64[us]").item())


class EpochRecorder(L.Callback):
    """One metrics row per training epoch (see METRIC_COLUMNS), written at the epoch's end,
    after its validation (the training loss is this epoch's mean, counted here)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._started = time.perf_counter()
        self._loss = FiniteMean()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()
        self._loss.reset()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._loss.add(step_loss(outputs))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        adapter = find_lm_adapter(pl_module)
        self.rows.append({
            "epoch": trainer.current_epoch + 1,
            "train_loss": self._loss.compute(),
            "val_loss": metrics.get("val/loss", float("nan")),
            "val_reconstruction": metrics.get("val/reconstruction", float("nan")),
            "val_consistency": metrics.get("val/consistency", float("nan")),
            "val_masked_corr": metrics.get("val/masked_corr", float("nan")),
            "lm_frozen_fraction": fraction_frozen(adapter.lm_parameters()) if adapter is not None else float("nan"),
            "epoch_seconds": time.perf_counter() - self._started,
        })
        row = self.rows[-1]
        log.info("epoch %d: val reconstruction %.4f, masked corr %.4f, consistency %.4f (%.1f s)", row["epoch"],
                 row["val_reconstruction"], row["val_masked_corr"], row["val_consistency"], row["epoch_seconds"])


def build_stage1_model(config: PretrainConfig, timeframes: list[str]) -> Stage1Model:
    spec, tl, w = config.model, config.transfer_learning, config.windows
    overrides = {**spec.overrides, "timeframes": tuple(timeframes), "seq_len": w.seq_len}
    if w.mode == "async":
        if overrides.get("fusion") != "separate" and len(timeframes) > 1:
            raise ConfigError("windows.mode: async windows are not aligned in time; set model.overrides.fusion: separate")
        overrides["seq_lens"] = dict(w.seq_lens) if w.seq_lens else None
    if tl.use_pretrained_lm:
        overrides.update(encoder="lm", lm_name_or_path=tl.lm_name_or_path, patch_len=tl.patch_len,
                         lm_layers=tl.lm_layers, lm_pretrained=tl.lm_weights == "pretrained")
    try:
        return create_model(spec.name, spec.preset, **overrides)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from None


def run_pretraining(config: PretrainConfig, out_dir: str | Path | None = None) -> PretrainResult:
    """Pretrain a Stage-1 model (module docstring); returns the metrics and the summary."""
    started = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else Path(config.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    bars, reports, base = load_bar_series(config)
    write_json_atomic(out / "bars_report.json", reports)
    timeframes = _timeframes(config, base)
    w = config.windows
    mask = MaskConfig(ratio=w.mask.ratio, min_span=w.mask.min_span, max_span=w.mask.max_span,
                      synchronized=w.mask.synchronized)
    split = window_datasets(config, bars, base, timeframes, w.seq_len, mask)
    train, val, train_end = split.train, split.val, split.train_end
    stats = fit_window_stats(train, w.stats_windows, seed=config.seed)
    train.stats = val.stats = stats
    save_window_stats(stats, out / "stats.json", **split.info(), val_end=str(config.val_end),
                      timeframe_order=timeframes, **train.window_metadata())
    log.info("pretraining on %d symbols, timeframes %s: %d training windows (before %s), %d validation windows "
             "(from %s)", len(bars), timeframes, len(train), train_end, len(val), split.val_start)

    model = build_stage1_model(config, timeframes)
    tcfg, tl = config.trainer, config.transfer_learning
    train_loader = torch.utils.data.DataLoader(train, batch_size=tcfg.batch_size, shuffle=True,
                                               collate_fn=collate_windows, num_workers=tcfg.num_workers,
                                               persistent_workers=tcfg.num_workers > 0, drop_last=len(train) > tcfg.batch_size,
                                               worker_init_fn=ignore_stop_signals)
    val_loader = torch.utils.data.DataLoader(val, batch_size=tcfg.batch_size, shuffle=False,
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
        precision=resolve_precision(tcfg.precision, tcfg.accelerator),
        gradient_clip_val=config.optimizer.grad_clip, logger=make_logger(tcfg.logger, out / "logs", "pretrain"),
        callbacks=callbacks, enable_progress_bar=interactive, enable_model_summary=False,
        limit_train_batches=tcfg.limit_train_batches if tcfg.limit_train_batches is not None else 1.0,
        limit_val_batches=tcfg.limit_val_batches if tcfg.limit_val_batches is not None else 1.0,
        num_sanity_val_steps=0, default_root_dir=str(out),
    )
    fit_started = time.perf_counter()
    with PeakMemory(cuda=trainer.strategy.root_device.type == "cuda") as memory:
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    fit_seconds = time.perf_counter() - fit_started
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    write_csv_atomic(out / METRICS_FILE, recorder.rows, METRIC_COLUMNS)
    stats_json = {tf: dataclasses.asdict(s) for tf, s in stats.items()}
    with atomic_path(out / ENCODER_FILE) as tmp:
        torch.save({"config": dataclasses.asdict(model.config), "state_dict": model.state_dict(),
                    "stats": stats_json, "timeframes": timeframes}, tmp)
    breakdown = model.parameter_breakdown()
    adapter = find_lm_adapter(model)
    best_row = min(recorder.rows, key=lambda r: r["val_reconstruction"]) if recorder.rows else {}
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


def load_pretrained(path: str | Path) -> tuple[Stage1Model, dict[str, Any]]:
    """The model saved by :func:`run_pretraining` (``encoder.pt``) and the saved payload."""
    from kizashi.models.stage1 import Stage1Config

    payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    model = Stage1Model(Stage1Config(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model, payload
