"""`kizashi train`: walk-forward training of a registry model (ATFT-GAT-FAN by default) with
Lightning, written as a run directory that ``kizashi evaluate`` / ``kizashi report`` read.

    dataset (built or reused) -> DayPanelCache -> folds over the cache calendar
      per fold:  feature stats on the fold's training days only
                 -> train loader (shuffled from seed + fold, resumable mid-epoch),
                    validation loader, test loader (one batch = days_per_batch days);
                    with the feature panel on the device (trainer.panel_on_device) the
                    loaders carry indices, targets and graphs, and the module gathers the
                    [N, L, F] windows on the GPU (kizashi.datasets.device_panel)
                 -> model from the registry (n_features / horizons / window from the data)
                 -> Lightning Trainer + callbacks (gradient audit, NaN guard, EMA, OOM
                    recovery, early stopping + best checkpoint on val RankIC@first horizon,
                    signal checkpoint) -> fit
                 -> predict the test days and the validation days (the early-stopping
                    slice, purged from training and from test) in one ``Trainer.predict``
                    with the best checkpoint (its EMA weights when the EMA is on)
                    -> PREDICTION_SCHEMA rows of each; those weights saved as a pretrained
                    folder (checkpoints/fold_{k}/model/)
      -> write_run (metrics, folds.csv, run.json with the oracle reference)
      -> validation_predictions.parquet: every fold's validation-slice rows -> books chosen
         on them fold by fold for every horizon (strategies.csv, strategy_daily.parquet;
         kizashi.portfolio.run_books, ``config.portfolio``), as ``kizashi evaluate`` does

The model, loss, loaders, callbacks, Lightning Trainer and the saving of the predicting
weights come from :mod:`kizashi.training.neural_fit`, which ``kizashi fit-final`` uses too.

Run directory ``OUT`` (``output.dir``)::

    run.json, predictions.parquet, daily.parquet, summary.*, deciles.csv, folds.csv,
    strategies.csv, strategy_daily.parquet (when the run has validation slices)
    validation_predictions.parquet   every fold's predictions of its own validation slice
                            (PREDICTION_SCHEMA, ``fold`` = the fold whose model predicted
                            them; written when at least one fold has validation days): the
                            days the books are chosen on (here and by ``kizashi strategies``)
    checkpoints/fold_{k}/   last.ckpt (latest training state), best.ckpt (best validation
                            RankIC), feature_stats.json, fit.json (written when the fold's
                            fit is complete), predictions.parquet (the fold's test rows),
                            validation_predictions.parquet (the fold's validation-slice rows,
                            predicted by the same weights as its test rows; no rows when the
                            fold has no validation days; both files with the day-panel cache's
                            float32 targets, the run directory's with the dataset's own),
                            model/ (the weights that predicted the test rows, EMA when on, as
                            a pretrained folder: config.json + model.safetensors, loaded by
                            ATFTGATFAN.from_pretrained / kizashi.models.load_pretrained_model;
                            its metadata: fold, best_epoch, horizons, the feature columns in
                            input order, target, ema, feature_stats = ../feature_stats.json)
    logs/fold_{k}/          TensorBoard events (or W&B's files)

Interruption: SIGINT/SIGTERM during training saves ``last.ckpt`` at the next batch boundary
and raises :class:`TrainingInterrupted`; ``run_training(..., resume=True)`` (``kizashi
train --resume``) skips the folds already predicted, predicts folds whose fit is complete,
and continues the others from ``last.ckpt`` (optimizer, schedulers, EMA, early-stopping
state, loop position; the interrupted epoch continues with the days not yet trained, in the
same shuffled order). Without ``resume`` a fold's old checkpoints are removed first.

A predicted fold with validation days but no saved ``validation_predictions.parquet`` (a run
directory written before folds kept their slices) is predicted again on ``--resume``, without
refitting: its test days and validation slice together from its saved ``best.ckpt``, the
checkpoint that predicted its test rows (so those come out the same and the slice comes from
exactly their weights); a forward pass over a few dozen days. When that checkpoint is gone (or
the fit had none), the saved test rows are reused and the fold's slice is left out, with a
warning: a slice from other weights would not be the one the test rows were predicted with.

Multi-GPU: ``trainer.devices > 1`` runs Lightning DDP (``strategy="ddp"``) with no other
change: the training sampler shards each epoch's day order over the ranks, validation and
prediction (test days and validation slice alike) run every day on every rank (the RankIC
sums are reduced; only rank 0 writes).
bf16: ``trainer.precision: auto`` is ``bf16-mixed`` on CUDA (autocast; fp32 weights and
optimizer), ``32-true`` on CPU.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from kizashi.atomic import atomic_path, write_json_atomic
from kizashi.datasets.store import DatasetMetadata, read_metadata, scan_features
from kizashi.config import TrainConfig, dump_config
from kizashi.datasets import (
    DayPanelCache,
    DayPanelDataset,
    DeviceFeaturePanel,
    FeatureStats,
    fold_day_indices,
)
from kizashi.errors import ConfigError, KizashiError
from kizashi.evaluation.run_dir import PREDICTION_SCHEMA, VALIDATION_PREDICTIONS, RunInfo
from kizashi.features.targets import target_return_name
from kizashi.models.losses import LossConfig
from kizashi.portfolio.run_books import write_run_strategies
from kizashi.splits import Fold
from kizashi.training.callbacks import LAST_CHECKPOINT, SignalCheckpoint
from kizashi.training.module import ForecastModule
from kizashi.datasets.samplers import EpochShuffleSampler
from kizashi.training.neural_fit import (
    HorizonTargets,
    build_model,
    build_trainer,
    day_batch_loader,
    feature_panel,
    fit_warnings_filtered,
    forecast_module,
    is_global_zero,
    loss_config,
    save_predicting_weights,
    training_callbacks,
)
from kizashi.training.runtime import (
    TrainingInterrupted,
    checkpoint_position,
    make_logger,
    resolve_precision,
)
from kizashi.jobs.common import (
    ORACLE_COLUMN,
    ensure_dataset,
    job_folds,
    resolve_horizons,
    fold_row,
    oracle_reference,
    run_caveats,
    write_run,
)

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"
BEST_NAME = "best"
FIT_FILE = "fit.json"
FOLD_PREDICTIONS = "predictions.parquet"
FOLD_VALIDATION = VALIDATION_PREDICTIONS  # the fold's validation-slice rows, beside its test rows
MODEL_DIR = "model"
STATS_FILE = "feature_stats.json"
CONFIG_FILE = "config.json"
# Training artefacts kept across write_run (which replaces the run directory as a whole).
KEPT_DIRS = (CHECKPOINTS_DIR, LOGS_DIR)


@dataclass
class FoldResult:
    """What one fold's training did."""

    fold: int
    global_step: int  # optimizer steps
    epochs: int  # epochs started
    best_epoch: int  # 1-based epoch of the checkpoint that predicted the test days
    best_checkpoint: str | None
    resumed: bool
    seconds: float


@dataclass
class TrainingResult:
    run_dir: Path
    info: RunInfo
    summary: dict[int, dict[str, Any]]
    folds: list[FoldResult]
    seconds: float


def _checkpoint_epoch(path: str | Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])


# --------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------


def run_training(
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> TrainingResult:
    """Train, predict and evaluate every selected fold; write the run directory.

    ``resume`` continues an interrupted run in the same ``out_dir`` (see the module
    docstring). ``callbacks`` are added to every fold's trainer (after the built-in ones).
    Raises :class:`TrainingInterrupted` when SIGINT/SIGTERM stopped training.
    """
    started = time.perf_counter()
    dataset_dir = ensure_dataset(config)
    metadata = read_metadata(dataset_dir)
    cache = DayPanelCache(dataset_dir)
    horizons = resolve_horizons(config.horizons, cache.horizons)
    loss = loss_config(config, horizons)
    folds = job_folds(config, cache.dates, metadata.target_reach(horizons))
    selected = _select_folds(folds, config.folds)
    out = Path(out_dir) if out_dir is not None else Path(config.output.dir)
    if is_global_zero():
        _restore_kept(out)
        _check_resume_config(out, config, resume)
    log.info(
        "training %s on %s: %d folds x %d horizons %s, %d features, window %d, %s target%s",
        config.model.name, cache, len(selected), len(horizons), horizons, cache.n_features,
        config.window, config.target, " (resuming)" if resume else "",
    )

    panel = feature_panel(config, cache)
    frames: list[pl.DataFrame] = []
    validation: list[pl.DataFrame] = []
    fold_rows: list[dict[str, Any]] = []
    fold_results: list[FoldResult] = []
    for fold in selected:
        frame, fold_validation, fold_result = _run_fold(
            config, cache, fold, horizons, loss, out, resume, callbacks, panel
        )
        frames.append(frame)
        if fold_validation.height:
            validation.append(fold_validation)
        fold_results.append(fold_result)
        for h in horizons:
            fold_rows.append(fold_row(fold, h, fold_result.best_epoch, frame.filter(pl.col("horizon") == h)))

    predictions = exact_targets(pl.concat(frames), dataset_dir)
    if not is_global_zero():  # under DDP the other ranks trained along; rank 0 writes
        return TrainingResult(run_dir=out, info=RunInfo(model=config.model.name, dataset=str(dataset_dir),
                              horizons=list(horizons), seed=config.seed), summary={}, folds=fold_results,
                              seconds=time.perf_counter() - started)
    info = RunInfo(
        model=config.model.name if config.model.preset is None else f"{config.model.name}:{config.model.preset}",
        dataset=str(dataset_dir),
        horizons=list(horizons),
        seed=config.seed,
        n_folds=len(selected),
        folds=[fold.to_dict() for fold in selected],
        features=list(cache.feature_columns),
        config=dump_config(config),
        caveats=run_caveats(config.caveats, config.data, metadata),
        source=metadata.source,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        references=_oracle(dataset_dir, metadata, selected, horizons),
    )
    summary = _write_run_keeping(out, predictions, info, config, fold_rows)
    if validation:  # what a book is chosen on, never the test days
        with atomic_path(out / VALIDATION_PREDICTIONS) as tmp:
            exact_targets(pl.concat(validation), dataset_dir).write_parquet(tmp)
        write_run_strategies(out, config.portfolio)
    seconds = time.perf_counter() - started
    log.info("wrote run %s in %.1fs", out, seconds)
    return TrainingResult(run_dir=out, info=info, summary=summary, folds=fold_results, seconds=seconds)


def _select_folds(folds: list[Fold], wanted: list[int] | None) -> list[Fold]:
    if wanted is None:
        return folds
    available = [f.index for f in folds]
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ConfigError(f"folds: {unknown} not among the folds {available}")
    return [f for f in folds if f.index in set(wanted)]


def _run_fold(
    config: TrainConfig,
    cache: DayPanelCache,
    fold: Fold,
    horizons: list[int],
    loss: LossConfig,
    out: Path,
    resume: bool,
    extra_callbacks: Sequence[Callback],
    panel: DeviceFeaturePanel | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, FoldResult]:
    """Fit (or continue, or reuse) one fold and predict its test days and its validation
    slice: (test rows, validation-slice rows (none when the fold has no validation days or
    a resumed fold's slice cannot be recovered: module docstring), what the fit did)."""
    started = time.perf_counter()
    fold_dir = fold_checkpoint_dir(out, fold.index)
    fit_file, predictions_file, last = fold_dir / FIT_FILE, fold_dir / FOLD_PREDICTIONS, fold_dir / LAST_CHECKPOINT
    validation_file = fold_dir / FOLD_VALIDATION
    if resume and fit_file.is_file() and predictions_file.is_file():
        fit = json.loads(fit_file.read_text(encoding="utf-8"))
        best_file = _best_checkpoint_file(fit, fold_dir)
        if validation_file.is_file() or len(fold.val_dates) == 0 or best_file is None:
            log.info("fold %d: already trained and predicted (%s), reusing", fold.index, fold_dir)
            if validation_file.is_file():
                validation = pl.read_parquet(validation_file)
            else:
                validation = pl.DataFrame(schema=PREDICTION_SCHEMA)
                if len(fold.val_dates):
                    log.warning(
                        "fold %d: predicted by a run that kept no validation slice, and its best checkpoint is "
                        "gone; its validation slice is left out of %s", fold.index, VALIDATION_PREDICTIONS,
                    )
            return (pl.read_parquet(predictions_file), validation,
                    _fold_result(fold, fit, resumed=True, seconds=0.0))
        log.info(
            "fold %d: predicted by a run that kept no validation slice; predicting its test days and "
            "validation slice again from %s (no refit)", fold.index, best_file,
        )
    if not resume and is_global_zero() and fold_dir.exists() and any(fold_dir.iterdir()):
        log.warning("fold %d: a fresh run (no --resume) removes the previous checkpoints in %s", fold.index, fold_dir)
        shutil.rmtree(fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)

    L.seed_everything(config.seed + fold.index, workers=True, verbose=False)
    stats, sampler, train_loader, val_loader, test_loader = _fold_loaders(
        config, cache, fold, horizons, fold_dir, with_features=panel is None
    )
    module = forecast_module(config, build_model(config, cache.n_features, horizons), horizons, loss)
    if panel is not None:
        module.attach_panel(panel, stats)
    signal_checkpoint = SignalCheckpoint(fold_dir)
    best_checkpoint = (
        ModelCheckpoint(
            dirpath=fold_dir, filename=BEST_NAME, monitor=f"val/rank_ic_{horizons[0]}d", mode="max",
            save_top_k=1, save_last=False, save_on_train_epoch_end=False, auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        if val_loader is not None
        else None
    )
    trainer = build_trainer(
        config, root_dir=fold_dir, logs_dir=out / LOGS_DIR, log_name=f"fold_{fold.index}",
        callbacks=training_callbacks(config, horizons, val_loader is not None),
        checkpoint_callbacks=[*([best_checkpoint] if best_checkpoint is not None else []), signal_checkpoint,
                              *extra_callbacks],
        n_train_batches=len(train_loader),
    )

    fit_done = resume and fit_file.is_file()
    ckpt_path = str(last) if resume and last.is_file() and not fit_done else None
    if fit_done:
        log.info("fold %d: fit already complete, predicting", fold.index)
        fit = json.loads(fit_file.read_text(encoding="utf-8"))
    else:
        if ckpt_path is not None:
            epoch, done = checkpoint_position(ckpt_path)
            sampler.resume_at(epoch, done * config.trainer.days_per_batch)
            log.info("fold %d: resuming from %s (epoch %d, %d batches of it done)", fold.index, ckpt_path, epoch, done)
        with fit_warnings_filtered():
            try:
                trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=False)
            except SIGTERMException:  # a SIGTERM outside our handler's window (Lightning's own)
                signal_checkpoint.requested = signal_checkpoint.requested or signal.SIGTERM
        _raise_if_interrupted(signal_checkpoint, fold, trainer)
        fit = _fit_summary(trainer, best_checkpoint, resumed=ckpt_path is not None)
        if trainer.is_global_zero:
            write_json_atomic(fit_file, fit)

    # the best validation checkpoint (with its EMA); without validation the fit's final
    # state: in memory, or last.ckpt when only the prediction was left to do
    best = fit.get("best_checkpoint")
    predict_from = str(fold_dir / Path(best).name) if best else (str(last) if fit_done and last.is_file() else None)
    test_outputs, val_outputs = _predict(trainer, module, test_loader, val_loader, predict_from)
    frame = _prediction_frame(cache, fold.index, horizons, test_outputs)
    validation = _prediction_frame(cache, fold.index, horizons, val_outputs)
    if trainer.is_global_zero:
        save_predicting_weights(module, trainer, fold_dir / MODEL_DIR, {
            "fold": fold.index, "best_epoch": fit.get("best_epoch"), "best_score": fit.get("best_score"),
            "horizons": list(horizons), "features": list(cache.feature_columns), "target": config.target,
            "ema": config.trainer.ema_decay is not None, "feature_stats": f"../{STATS_FILE}",
        })
        with atomic_path(validation_file) as tmp:
            validation.write_parquet(tmp)
        with atomic_path(predictions_file) as tmp:  # last: its presence marks the fold as predicted
            frame.write_parquet(tmp)
    seconds = time.perf_counter() - started
    result = _fold_result(fold, fit, resumed=ckpt_path is not None, seconds=seconds)
    log.info(
        "fold %d: %d optimizer steps, %d epochs, test days%s predicted by epoch %d%s (%.1fs)",
        fold.index, result.global_step, result.epochs, " and validation slice" if validation.height else "",
        result.best_epoch, " (EMA weights)" if config.trainer.ema_decay is not None else "", seconds,
    )
    return frame, validation, result


def _predict(
    trainer: L.Trainer,
    module: ForecastModule,
    test_loader: DataLoader,
    val_loader: DataLoader | None,
    ckpt_path: str | None,
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """The predicted batches of the test loader and of the validation loader (none without
    one), both from one ``Trainer.predict``: one checkpoint load, one EMA swap, so the two are
    predicted by the same weights."""
    loaders = test_loader if val_loader is None else [test_loader, val_loader]
    with fit_warnings_filtered():
        outputs = trainer.predict(module, loaders, ckpt_path=ckpt_path, return_predictions=True, weights_only=False)
    outputs = list(outputs or [])
    if val_loader is None:
        return outputs, []
    if len(outputs) != 2:
        raise KizashiError(f"prediction returned {len(outputs)} output lists for 2 loaders (test, validation)")
    return list(outputs[0] or []), list(outputs[1] or [])


def _best_checkpoint_file(fit: dict[str, Any], fold_dir: Path) -> Path | None:
    """The fold's saved best checkpoint (``fit.json``'s ``best_checkpoint``, looked up in
    ``fold_dir``), None when the fit had none or the file is gone."""
    best = fit.get("best_checkpoint")
    if not best:
        return None
    path = fold_dir / Path(best).name
    return path if path.is_file() else None


def _fold_loaders(
    config: TrainConfig, cache: DayPanelCache, fold: Fold, horizons: list[int], fold_dir: Path,
    *, with_features: bool = True,
) -> tuple[FeatureStats, EpochShuffleSampler, DataLoader, DataLoader | None, DataLoader]:
    """Feature statistics of the fold's training days (saved beside the checkpoints), the
    day datasets and their loaders: train (resumable shuffle from seed + fold), val, test.
    ``with_features=False``: batches without ``x`` / ``mask`` (a device panel fills them)."""
    days = fold_day_indices(cache, fold)
    stats = FeatureStats.fit(cache, days.train)
    if is_global_zero():
        stats.save(fold_dir / STATS_FILE)
    datasets = {}
    for part in ("train", "val", "test"):
        if len(getattr(days, part)):
            dataset = DayPanelDataset(cache, getattr(days, part), window=config.window, stats=stats,
                                      target=config.target, with_features=with_features)
            if len(dataset):
                datasets[part] = dataset
    if "train" not in datasets or "test" not in datasets:
        raise KizashiError(f"fold {fold.index}: no training or test days with stocks")
    collate = HorizonTargets([cache.horizons.index(h) for h in horizons], centre_ranks=config.target == "rank")
    tcfg = config.trainer
    sampler = EpochShuffleSampler(len(datasets["train"]), seed=config.seed + fold.index)
    train = day_batch_loader(datasets["train"], tcfg.days_per_batch, collate, tcfg.num_workers, sampler, persistent=True)
    val = day_batch_loader(datasets["val"], tcfg.days_per_batch, collate, tcfg.num_workers) if "val" in datasets else None
    test = day_batch_loader(datasets["test"], tcfg.days_per_batch, collate, tcfg.num_workers)
    return stats, sampler, train, val, test


def _raise_if_interrupted(signal_checkpoint: SignalCheckpoint, fold: Fold, trainer: L.Trainer) -> None:
    if signal_checkpoint.requested is None:
        return
    path = signal_checkpoint.path if signal_checkpoint.path.is_file() else None
    raise TrainingInterrupted(
        f"training interrupted by {signal_checkpoint.signal_name} in fold {fold.index} at optimizer step "
        f"{trainer.global_step}; checkpoint: {path or 'none (no training step since the last one)'}; "
        "run again with --resume to continue",
        signal_checkpoint.signal_name,
        path,
    )


def _fit_summary(trainer: L.Trainer, best: ModelCheckpoint | None, resumed: bool) -> dict[str, Any]:
    best_path = best.best_model_path if best is not None and best.best_model_path else None
    if best_path is not None and not Path(best_path).is_file():
        best_path = None
    best_epoch = _checkpoint_epoch(best_path) + 1 if best_path is not None else trainer.current_epoch
    score = best.best_model_score if best is not None else None
    return {
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "best_epoch": int(best_epoch),
        "best_checkpoint": best_path,
        "best_score": float(score) if score is not None else None,
        "resumed": resumed,
    }


def _fold_result(fold: Fold, fit: dict[str, Any], *, resumed: bool, seconds: float) -> FoldResult:
    return FoldResult(
        fold=fold.index,
        global_step=int(fit["global_step"]),
        epochs=int(fit["epochs"]),
        best_epoch=int(fit["best_epoch"]),
        best_checkpoint=fit.get("best_checkpoint"),
        resumed=resumed or bool(fit.get("resumed")),
        seconds=seconds,
    )


def _prediction_frame(
    cache: DayPanelCache, fold_index: int, horizons: list[int], outputs: list[dict[str, torch.Tensor]]
) -> pl.DataFrame:
    """PREDICTION_SCHEMA rows (long, one per stock-day and horizon) of the predicted batches:
    prediction = the point forecast; target = the cache's forward return over the horizon;
    forward_return_1d = the 1-day forward return (NaN when the dataset has no 1d target)."""
    if not outputs:
        return pl.DataFrame(schema=PREDICTION_SCHEMA)
    day = torch.cat([o["day"] for o in outputs]).numpy()
    code = torch.cat([o["code"] for o in outputs]).numpy()
    point = torch.cat([o["point"] for o in outputs]).numpy().astype(np.float64)
    targets = np.asarray(cache.targets[day, code], dtype=np.float64)  # [N, H_cache]
    forward_1d = targets[:, cache.horizons.index(1)] if 1 in cache.horizons else np.full(len(day), np.nan)
    dates = pl.Series("date", cache.dates[day]).cast(pl.Date)
    codes = pl.Series("code", np.asarray(cache.codes, dtype=object)[code], dtype=pl.Utf8)
    frames = []
    for j, h in enumerate(horizons):
        frames.append(
            pl.DataFrame(
                {
                    "date": dates,
                    "code": codes,
                    "fold": np.full(len(day), fold_index, dtype=np.int32),
                    "horizon": np.full(len(day), h, dtype=np.int32),
                    "prediction": point[:, j],
                    "target": targets[:, cache.horizons.index(h)],
                    "forward_return_1d": forward_1d,
                },
                schema=PREDICTION_SCHEMA,
            )
        )
    return pl.concat(frames)


def exact_targets(frame: pl.DataFrame, dataset_dir: Path) -> pl.DataFrame:
    """PREDICTION_SCHEMA rows with ``target`` and ``forward_return_1d`` taken from the
    dataset's own (float64) forward returns where it has them, in place of the day-panel
    cache's float32 copies: the run then carries the same targets as ``kizashi evaluate`` on
    the same dataset (its metrics are computed on the same numbers, and runs of both can be
    ensembled). Rows the dataset has no finite value for keep the cache's."""
    available = set(scan_features(dataset_dir).collect_schema().names())
    horizons = sorted(int(h) for h in frame.get_column("horizon").unique())
    names = {h: target_return_name(h) for h in {*horizons, 1} if target_return_name(h) in available}
    if not names:
        return frame
    exact = scan_features(dataset_dir).select("date", "code", *names.values()).collect()
    joined = frame.join(exact, on=["date", "code"], how="left")

    def finite_or(column: str, fallback: pl.Expr) -> pl.Expr:
        value = pl.col(column).cast(pl.Float64)
        return pl.when(value.is_not_null() & value.is_finite()).then(value).otherwise(fallback)

    target = pl.col("target")
    for h, name in names.items():
        if h in horizons:
            target = pl.when(pl.col("horizon") == h).then(finite_or(name, pl.col("target"))).otherwise(target)
    forward = finite_or(names[1], pl.col("forward_return_1d")) if 1 in names else pl.col("forward_return_1d")
    return joined.with_columns(target=target, forward_return_1d=forward).select(list(PREDICTION_SCHEMA))


def _oracle(dataset_dir: Path, metadata: DatasetMetadata, folds: list[Fold], horizons: list[int]) -> dict[str, Any]:
    if ORACLE_COLUMN not in metadata.oracle_columns:
        return {}
    columns = ["date", ORACLE_COLUMN, *(target_return_name(h) for h in horizons)]
    return oracle_reference(scan_features(dataset_dir).select(columns).collect(), folds, horizons)


# --------------------------------------------------------------------------------------
# the run directory around the training artefacts
# --------------------------------------------------------------------------------------


def _staging(out: Path) -> Path:
    return out.parent / f".{out.name}.training"


def _restore_kept(out: Path) -> None:
    """Move training artefacts set aside by an interrupted ``_write_run_keeping`` back."""
    staging = _staging(out)
    if not staging.is_dir():
        return
    out.mkdir(parents=True, exist_ok=True)
    for child in staging.iterdir():
        target = out / child.name
        if target.exists():
            log.warning("%s: %s exists; leaving %s where it is", out, child.name, child)
            continue
        os.replace(child, target)
    with contextlib.suppress(OSError):
        staging.rmdir()


def _write_run_keeping(
    out: Path, predictions: pl.DataFrame, info: RunInfo, config: TrainConfig, fold_rows: list[dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """``write_run`` replaces ``out`` atomically as a whole; the checkpoints and logs are
    moved aside (renames, no copy) and back so that they survive it."""
    staging = _staging(out)
    staging.mkdir(parents=True, exist_ok=True)
    for name in KEPT_DIRS:
        if (out / name).exists():
            os.replace(out / name, staging / name)
    try:
        return write_run(out, predictions, info, config.metrics, fold_rows=fold_rows,
                         cost_bps=config.portfolio.costs.cost_bps)
    finally:
        _restore_kept(out)


def _check_resume_config(out: Path, config: TrainConfig, resume: bool) -> None:
    """Record the config beside the checkpoints; on resume, warn about what changed."""
    path = out / CHECKPOINTS_DIR / CONFIG_FILE
    current = dump_config(config)
    if resume and path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(saved) | set(current) if k != "output" and saved.get(k) != current.get(k))
        if changed:
            log.warning("resume: config sections changed since the checkpoints were written: %s", ", ".join(changed))
    write_json_atomic(path, current)


def fold_checkpoint_dir(out: str | Path, fold: int) -> Path:
    """Where fold ``fold``'s checkpoints live in run directory ``out``."""
    return Path(out) / CHECKPOINTS_DIR / f"fold_{fold}"


__all__ = [
    "EpochShuffleSampler",
    "FoldResult",
    "HorizonTargets",
    "TrainingInterrupted",
    "TrainingResult",
    "checkpoint_position",
    "fold_checkpoint_dir",
    "make_logger",
    "resolve_precision",
    "run_training",
]
