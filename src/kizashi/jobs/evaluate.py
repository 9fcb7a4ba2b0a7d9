"""The walk-forward runner: for each fold and horizon fit, predict the test window, collect;
then evaluate every prediction and write a run directory (``kizashi.evaluation.run_dir``).

    dataset (built or reused) -> folds (kizashi.splits, purge + embargo) ->
      per (fold, horizon): fit on train, early-stop on validation, predict test ->
      predictions.parquet -> metrics (kizashi.evaluation) -> summary / daily / deciles /
      folds / feature importance

The shuffled-target control (``control=True``) permutes the training and validation labels
among the stocks of each day (test targets stay real): whatever the model then "finds" is
noise, so its out-of-sample RankIC must be close to zero.

A synthetic dataset carries the planted signal's oracle (``oracle_return_1d``); its RankIC
on the same test days is recorded in ``run.json`` (``references``) as the ceiling.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kizashi.datasets.store import DatasetMetadata, read_metadata, scan_features
from kizashi.config import EvaluateConfig, dump_config
from kizashi.errors import ConfigError, KizashiError
from kizashi.evaluation.run_dir import (
    PREDICTION_SCHEMA,
    RunInfo,
)
from kizashi.features.targets import target_rank_name, target_return_name
from kizashi.log import progress
from kizashi.jobs.common import (
    ORACLE_COLUMN,
    ensure_dataset,
    fold_row,
    job_folds,
    oracle_reference,
    resolve_horizons,
    run_caveats,
    write_run,
)
from kizashi.training.lightgbm_baseline import fit_booster

log = logging.getLogger(__name__)

@dataclass
class WalkForwardResult:
    run_dir: Path
    info: RunInfo
    summary: dict[int, dict[str, Any]]
    seconds: float


def _day_shuffled(labels: np.ndarray, day: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``labels`` [N] permuted among the rows of each day (``day`` [N] integer ids)."""
    by_day = np.lexsort((np.arange(len(day)), day))
    shuffled_by_day = np.lexsort((rng.random(len(day)), day))
    out = np.empty_like(labels)
    out[by_day] = labels[shuffled_by_day]
    return out


def _resolve_columns(config: EvaluateConfig, metadata: DatasetMetadata) -> tuple[list[str], list[int]]:
    available = metadata.feature_columns
    features = config.features or list(available)
    if config.signal is not None:
        features = [config.signal.feature]  # the one-feature baseline reads nothing else
    unknown = sorted(set(features) - set(available))
    if unknown:
        raise ConfigError(f"features: not in the dataset: {', '.join(unknown[:10])} (see `kizashi data columns`)")
    return features, resolve_horizons(config.horizons, metadata.horizons)


def _load_frame(dataset_dir: Path, features: list[str], horizons: list[int], metadata: DatasetMetadata) -> pl.DataFrame:
    wanted = ["date", "code", *features]
    for h in sorted(set(horizons) | {1}):
        for name in (target_return_name(h), target_rank_name(h)):
            if name in metadata.target_columns and name not in wanted:
                wanted.append(name)
    if ORACLE_COLUMN in metadata.oracle_columns:
        wanted.append(ORACLE_COLUMN)
    return scan_features(dataset_dir).select(wanted).sort("date", "code").collect()


def run_walk_forward(
    config: EvaluateConfig, *, control: bool = False, out_dir: str | Path | None = None
) -> WalkForwardResult:
    """Fit, predict and evaluate every (fold, horizon); write the run directory."""
    started = time.perf_counter()
    dataset_dir = ensure_dataset(config)
    metadata = read_metadata(dataset_dir)
    features, horizons = _resolve_columns(config, metadata)
    frame = _load_frame(dataset_dir, features, horizons, metadata)
    calendar = frame.get_column("date").unique().sort()
    folds = job_folds(config, calendar, metadata.target_reach(horizons))
    log.info(
        "walk-forward: %d rows x %d features, %d folds x %d horizons%s",
        frame.height, len(features), len(folds), len(horizons), " (shuffled-target control)" if control else "",
    )

    x = frame.select(features).to_numpy().astype(np.float32, copy=False)  # [N, F], NaN = missing
    dates = frame.get_column("date").to_numpy().astype("datetime64[D]")
    day = frame.get_column("date").rank("dense").to_numpy().astype(np.int64)
    rng = np.random.default_rng(config.seed)
    forward_1d = _column(frame, target_return_name(1))
    labels_by_horizon = {h: _labels(frame, h, config.model.label) for h in horizons}
    targets_by_horizon = {h: _column(frame, target_return_name(h)) for h in horizons}
    # Row masks of each fold's parts, shared by its horizons: [N] bool each.
    parts = {f.index: tuple(np.isin(dates, d) for d in (f.train_dates, f.val_dates, f.test_dates)) for f in folds}

    predictions, importance, fold_rows = [], [], []
    tasks = [(fold, h) for fold in folds for h in horizons]
    for fold, horizon in progress(tasks, "walk-forward fits"):
        labels = labels_by_horizon[horizon]
        if control:  # a fresh within-day permutation for every fit
            labels = _day_shuffled(labels, day, rng)
        in_train, in_valid, test = parts[fold.index]
        train = in_train & np.isfinite(labels)
        valid = in_valid & np.isfinite(labels)
        if not train.any() or not test.any():
            raise KizashiError(f"fold {fold.index}: no training or test rows for horizon {horizon}d")
        if config.signal is not None:
            fitted = SignalModel(features.index(config.signal.feature), config.signal.sign)
        else:
            fitted = fit_booster(
                x[train], labels[train], x[valid] if valid.any() else None, labels[valid] if valid.any() else None,
                features, config.model, config.seed + fold.index, valid_day=day[valid],
            )
        predictions.append(
            pl.DataFrame(
                {
                    "date": frame.get_column("date").filter(test),
                    "code": frame.get_column("code").filter(test),
                    "fold": np.full(int(test.sum()), fold.index, dtype=np.int32),
                    "horizon": np.full(int(test.sum()), horizon, dtype=np.int32),
                    "prediction": fitted.predict(x[test]),
                    "target": targets_by_horizon[horizon][test],
                    "forward_return_1d": forward_1d[test],
                },
                schema=PREDICTION_SCHEMA,
            )
        )
        if fitted.importance_gain is not None:
            importance.append(
                pl.DataFrame(
                    {
                        "fold": fold.index,
                        "horizon": horizon,
                        "feature": features,
                        "gain": fitted.importance_gain,
                        "split": fitted.importance_split,
                    }
                )
            )
        fold_rows.append(fold_row(fold, horizon, fitted.best_iteration, predictions[-1]))
        log.info(
            "fold %d, %dd: %d train / %d valid / %d test rows, best iteration %d, test RankIC %.4f",
            fold.index, horizon, int(train.sum()), int(valid.sum()), int(test.sum()),
            fitted.best_iteration, fold_rows[-1]["rank_ic_mean"] or float("nan"),
        )

    info = RunInfo(
        model=_model_name(config),
        dataset=str(dataset_dir),
        horizons=list(horizons),
        seed=config.seed,
        control=control,
        n_folds=len(folds),
        folds=[fold.to_dict() for fold in folds],
        features=features,
        config=dump_config(config),
        caveats=run_caveats(config.caveats, config.data, metadata),
        source=metadata.source,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        references=oracle_reference(frame, folds, horizons),
    )
    out = Path(out_dir) if out_dir is not None else Path(config.output.dir)
    summary = write_run(
        out,
        pl.concat(predictions),
        info,
        config.metrics,
        fold_rows=fold_rows,
        importance=pl.concat(importance) if importance else None,
    )
    seconds = time.perf_counter() - started
    log.info("wrote run %s in %.1fs", out, seconds)
    return WalkForwardResult(run_dir=out, info=info, summary=summary, seconds=seconds)


@dataclass
class SignalModel:
    """The one-feature baseline: ``sign`` x feature column ``index`` (nothing is fitted)."""

    index: int
    sign: int
    best_iteration: int = 0
    importance_gain: None = None
    importance_split: None = None

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``features`` [N, F] -> [N] float64."""
        return self.sign * features[:, self.index].astype(np.float64)


def _model_name(config: EvaluateConfig) -> str:
    if config.signal is None:
        return "lightgbm"
    return f"signal: {'-' if config.signal.sign < 0 else '+'}{config.signal.feature}"


def _column(frame: pl.DataFrame, name: str) -> np.ndarray:
    """A float64 column as numpy (NaN = null); all-NaN when the dataset lacks it."""
    if name not in frame.columns:
        return np.full(frame.height, np.nan)
    return frame.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy()


def _labels(frame: pl.DataFrame, horizon: int, kind: str) -> np.ndarray:
    """Training labels [N] for ``horizon``: the centred per-day rank, or the raw return."""
    if kind == "rank":
        return _column(frame, target_rank_name(horizon)) - 0.5
    return _column(frame, target_return_name(horizon))
