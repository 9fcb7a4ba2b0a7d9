"""What the jobs share: the dataset a run reads, the run directory it writes, the oracle
reference of a synthetic market and the per-fold rows of ``folds.csv``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kizashi.atomic import atomic_path, write_json_atomic
from kizashi.config import (
    DataBuildConfig,
    EvaluateConfig,
    LongShortConfig,
    MetricsConfig,
    TrainConfig,
    config_source,
)
from kizashi.datasets.store import DatasetMetadata, read_metadata
from kizashi.evaluation.metrics import daily_ic, evaluate_predictions, summarize_ic, summary_table
from kizashi.evaluation.run_dir import (
    DAILY,
    DECILES,
    FEATURE_IMPORTANCE,
    FOLDS,
    PREDICTIONS,
    RUN_INFO,
    SUMMARY_CSV,
    SUMMARY_JSON,
    RunInfo,
)
from kizashi.errors import ConfigError, KizashiError
from kizashi.features.targets import target_rank_name, target_reach, target_return_name
from kizashi.datasets.build import build_dataset, built_from
from kizashi.data.calendar import trading_calendar
from kizashi.splits import Fold, fit_splits_to_calendar, walk_forward_folds

log = logging.getLogger(__name__)

ORACLE_COLUMN = "oracle_return_1d"
SYNTHETIC_CAVEAT = (
    "Synthetic market (kizashi.data.synthetic): the signal is planted and known; the figures "
    "say how much of it a model recovers, nothing about real markets."
)


def resolve_horizons(requested: list[int] | None, built: list[int]) -> list[int]:
    """The horizons a job models: ``requested`` (the job config's ``horizons``; None = every
    horizon the dataset built), checked against the dataset's ``targets.horizons``."""
    horizons = list(requested) if requested is not None else list(built)
    if not horizons:
        raise ConfigError("horizons: empty list (null = every target horizon of the dataset)")
    if len(set(horizons)) != len(horizons):
        raise ConfigError(f"horizons: duplicates in {horizons}")
    missing = sorted(set(horizons) - set(built))
    if missing:
        raise ConfigError(f"horizons: {missing} not built in the dataset (targets.horizons = {list(built)})")
    return horizons


def job_folds(
    config: EvaluateConfig | TrainConfig, calendar: Any, reach: int, *, announce: bool = True
) -> list[Fold]:
    """The walk-forward folds of a job's ``splits`` on ``calendar`` (trading days) with a purge
    of at least ``reach`` days; a calendar too short is a ConfigError naming the job's file.

    With ``splits.fit_to_data`` the folds are first sized to ``calendar``
    (:func:`kizashi.splits.fit_splits_to_calendar`): ``config.splits`` is replaced by the
    sized splits (so the run records them), with one log line."""
    try:
        if config.splits.fit_to_data:
            n_dates = len(trading_calendar(calendar))
            config.splits = fit_splits_to_calendar(n_dates, config.splits, reach).model_copy(
                update={"fit_to_data": False}
            )
            s = config.splits
            log.info(
                "splits sized to the data (%s trading days; the config sets none): %d folds x %d test days, "
                "first fold trains on %s days, validation %d, embargo %d (set `splits` to choose them)",
                f"{n_dates:,}", s.n_folds, s.test_days, f"{s.min_train_days:,}", s.val_days, s.embargo_days,
            )
        folds = walk_forward_folds(calendar, config.splits, reach)
    except ValueError as err:
        raise ConfigError(f"{config_source(config)}: invalid config: key `splits`: {err}") from None
    if announce:
        first = folds[0]
        log.info(
            "walk-forward: %d folds over %s trading days (test %s .. %s; purge %d, embargo %d, %s train)",
            len(folds), f"{len(trading_calendar(calendar)):,}", first.test_dates[0], folds[-1].test_dates[-1],
            first.purge_days, first.embargo_days,
            "expanding" if config.splits.train_days is None else f"rolling {config.splits.train_days}-day",
        )
    return folds


def ensure_dataset(config: EvaluateConfig | TrainConfig) -> Path:
    """The dataset directory of a job's ``data``: reused when the dataset there was built from
    the same dataset settings and inputs (:func:`kizashi.datasets.build.built_from`), built
    otherwise. Before a build, the job's folds are checked on the new calendar."""
    data = config.data
    out = Path(data.output.dir)
    try:
        metadata: DatasetMetadata | None = read_metadata(out)
    except FileNotFoundError:
        metadata = None
    except KizashiError as err:
        log.info("%s; rebuilding", err)
        metadata = None
    if metadata is not None and built_from(metadata, data):
        log.info("reusing dataset %s (built %s)", out, metadata.created_utc)
        return out
    if metadata is not None:
        log.info("dataset %s was built from other settings or inputs: rebuilding", out)
    requested = config.horizons if config.horizons is not None else data.targets.horizons
    reach = target_reach(requested, data.targets.fill_end_days)
    build_dataset(data, out, check_calendar=lambda dates: job_folds(config, dates, reach, announce=False))
    return out


def run_caveats(caveats: list[str], data: DataBuildConfig, metadata: DatasetMetadata) -> list[str]:
    """The data caveats of a run: the config's own, plus what the dataset says of itself."""
    caveats = list(caveats)
    if metadata.source.startswith("synthetic") or data.input.path is None:
        caveats.append(SYNTHETIC_CAVEAT)
    for note in metadata.notes:
        caveats.append(f"Input note: {note}")
    return caveats


def write_run(
    out: str | Path,
    predictions: pl.DataFrame,
    info: RunInfo,
    metrics: MetricsConfig,
    *,
    fold_rows: list[dict[str, Any]],
    cost_bps: float,
    importance: pl.DataFrame | None = None,
) -> dict[int, dict[str, Any]]:
    """Evaluate ``predictions`` (PREDICTION_SCHEMA rows of every fold and horizon) and write
    the run directory ``out`` atomically (see ``kizashi.evaluation.run_dir``); the metrics'
    long-short book pays ``cost_bps`` (the job's ``portfolio.costs.cost_bps``). Returns the
    per-horizon summary. Shared by every model's walk-forward job."""
    predictions = predictions.sort("horizon", "date", "code")
    evaluation = evaluate_predictions(
        predictions,
        n_quantiles=metrics.n_quantiles,
        long_short=LongShortConfig(**metrics.long_short.model_dump(), cost_bps=cost_bps),
        periods_per_year=metrics.periods_per_year,
    )
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        predictions.write_parquet(tmp / PREDICTIONS)
        evaluation.daily.write_parquet(tmp / DAILY)
        write_json_atomic(tmp / SUMMARY_JSON, {str(h): v for h, v in evaluation.summary.items()})
        summary_table(evaluation.summary).write_csv(tmp / SUMMARY_CSV)
        evaluation.deciles.write_csv(tmp / DECILES)
        pl.DataFrame(fold_rows).write_csv(tmp / FOLDS)
        if importance is not None:
            importance.write_csv(tmp / FEATURE_IMPORTANCE)
        write_json_atomic(tmp / RUN_INFO, info.to_dict())
    return evaluation.summary


def fold_row(fold: Fold, horizon: int, best_iteration: int, predictions: pl.DataFrame) -> dict[str, Any]:
    """One ``folds.csv`` row: the fold's date spans, the model's best iteration (or epoch)
    and the test window's mean daily IC / RankIC."""
    daily = daily_ic(predictions)
    parts = {name: getattr(fold, f"{name}_dates") for name in ("train", "val", "test")}
    row: dict[str, Any] = {"fold": fold.index, "horizon": horizon}
    for name, key in (("train", "train"), ("val", "valid"), ("test", "test")):
        part = parts[name]
        row[f"{key}_start"] = str(part[0]) if len(part) else None
        row[f"{key}_end"] = str(part[-1]) if len(part) else None
    row["best_iteration"] = best_iteration
    row["n_test_days"] = len(parts["test"])
    row["ic_mean"] = summarize_ic(daily.get_column("ic"))["mean"]
    row["rank_ic_mean"] = summarize_ic(daily.get_column("rank_ic"))["mean"]
    return row


def oracle_reference(frame: pl.DataFrame, folds: list[Fold], horizons: list[int]) -> dict[str, dict[str, float]]:
    """Mean daily RankIC of the planted signal's oracle on the test days, per horizon."""
    if ORACLE_COLUMN not in frame.columns:
        return {}
    test_dates = np.concatenate([f.test_dates for f in folds])
    in_test = np.isin(frame.get_column("date").to_numpy().astype("datetime64[D]"), test_dates)
    rows = frame.filter(pl.Series(in_test))
    oracle: dict[str, float] = {}
    for h in horizons:
        scored = rows.select(
            "date",
            pl.col(ORACLE_COLUMN).alias("prediction"),
            pl.col(target_return_name(h)).alias("target"),
        )
        value = summarize_ic(daily_ic(scored, by=("date",)).get_column("rank_ic"))["mean"]
        oracle[str(h)] = value if value is not None else float("nan")
    return {"oracle_rank_ic_mean": oracle}


def float_column(frame: pl.DataFrame, name: str) -> np.ndarray:
    """A float64 column as numpy (NaN = null); all-NaN when the frame lacks it."""
    if name not in frame.columns:
        return np.full(frame.height, np.nan)
    return frame.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy()


def training_labels(frame: pl.DataFrame, horizon: int, kind: str) -> np.ndarray:
    """LightGBM's training labels [N] for ``horizon``: the per-day percentile rank of the
    forward return centred on 0 (``kind="rank"``), or the raw forward return."""
    if kind == "rank":
        return float_column(frame, target_rank_name(horizon)) - 0.5
    return float_column(frame, target_return_name(horizon))


__all__ = [
    "ORACLE_COLUMN",
    "SYNTHETIC_CAVEAT",
    "ensure_dataset",
    "float_column",
    "job_folds",
    "training_labels",
    "resolve_horizons",
    "fold_row",
    "oracle_reference",
    "run_caveats",
    "write_run",
]
