"""What the jobs share: the dataset a run reads, the run directory it writes, the oracle
reference of a synthetic market and the per-fold rows of ``folds.csv``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kizashi.atomic import atomic_path, write_json_atomic
from kizashi.config import DataBuildConfig, MetricsConfig, dump_config
from kizashi.datasets.store import DatasetMetadata, read_metadata
from kizashi.evaluation.metrics import daily_ic, evaluate_predictions, summary_table
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
from kizashi.features.targets import target_return_name
from kizashi.datasets.build import build_dataset
from kizashi.splits import Fold

log = logging.getLogger(__name__)

ORACLE_COLUMN = "oracle_return_1d"
SYNTHETIC_CAVEAT = (
    "Synthetic market (kizashi.data.synthetic): the signal is planted and known; the figures "
    "say how much of it a model recovers, nothing about real markets."
)


def ensure_dataset(config: DataBuildConfig) -> Path:
    """The dataset directory of ``config``: reused when a dataset built from the same config
    is there, (re)built otherwise."""
    out = Path(config.output.dir)
    try:
        metadata = read_metadata(out)
    except FileNotFoundError:
        metadata = None
    if metadata is not None and metadata.config == dump_config(config):
        log.info("reusing dataset %s (built %s)", out, metadata.created_utc)
        return out
    if metadata is not None:
        log.info("dataset %s was built from another config: rebuilding", out)
    build_dataset(config, out)
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
    importance: pl.DataFrame | None = None,
) -> dict[int, dict[str, Any]]:
    """Evaluate ``predictions`` (PREDICTION_SCHEMA rows of every fold and horizon) and write
    the run directory ``out`` atomically (see ``kizashi.evaluation.run_dir``). Returns the
    per-horizon summary. Shared by every model's walk-forward job."""
    predictions = predictions.sort("horizon", "date", "code")
    evaluation = evaluate_predictions(
        predictions,
        n_quantiles=metrics.n_quantiles,
        long_short=metrics.long_short,
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
    row["ic_mean"] = daily.get_column("ic").mean()
    row["rank_ic_mean"] = daily.get_column("rank_ic").mean()
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
        value = daily_ic(scored, by=("date",)).get_column("rank_ic").mean()
        oracle[str(h)] = float(value) if value is not None else float("nan")
    return {"oracle_rank_ic_mean": oracle}


__all__ = [
    "ORACLE_COLUMN",
    "SYNTHETIC_CAVEAT",
    "ensure_dataset",
    "fold_row",
    "oracle_reference",
    "run_caveats",
    "write_run",
]
