"""`kizashi fit-final --run RUN_DIR`: refit a walk-forward run's LightGBM on every labelled
day of its dataset and save it for ``kizashi predict`` (:mod:`kizashi.training.final_model`).

    run.json (config, dataset, features) + folds.csv (best iteration per fold and horizon)
    -> rounds per horizon = the median of the folds' best iterations (the walk-forward
       chose them on its validation slices; nothing is chosen on test days)
    -> one booster per horizon on every dataset row whose label is known
       (the last h days of an h-day horizon have none yet), the run's seed and parameters
    -> per horizon, the monitoring reference: the final model's scores and the most
       important stock-level features on the run's test days, the walk-forward's daily RankIC
    -> OUT (default RUN_DIR/final): final_model.json + lightgbm_{h}d.txt + monitor_reference_{h}d.json
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from kizashi.config import DataBuildConfig, LightGBMConfig, anchor_paths, config_from_dict
from kizashi.datasets.store import read_metadata, scan_features
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import DAILY, FEATURE_IMPORTANCE, FOLDS, PREDICTIONS, read_run_info
from kizashi.jobs.common import training_labels
from kizashi.monitoring import MonitorReference, MonitorSettings, build_reference
from kizashi.training.final_model import FinalModel, save_final_model
from kizashi.training.lightgbm_baseline import fit_booster

log = logging.getLogger(__name__)

FINAL_DIR = "final"


def final_rounds(folds: pl.DataFrame, horizons: list[int]) -> dict[int, int]:
    """Boosting rounds per horizon: the median (rounded half up, at least 1) of the folds'
    ``best_iteration`` for that horizon (``folds``: a run's folds.csv)."""
    rounds = {}
    for horizon in horizons:
        best = folds.filter(pl.col("horizon") == horizon).get_column("best_iteration").drop_nulls().to_numpy()
        if best.size == 0:
            raise KizashiError(f"folds.csv has no best_iteration for the {horizon}d horizon")
        rounds[horizon] = max(1, int(np.floor(np.median(best) + 0.5)))
    return rounds


def reference_file(horizon: int) -> str:
    return f"monitor_reference_{horizon}d.json"


def _monitor_reference(run: Path, frame: pl.DataFrame, x: np.ndarray, model: FinalModel, horizon: int) -> MonitorReference:
    """What `kizashi monitor` compares new days with, for one horizon: the final model's scores
    and the most important features (walk-forward gain) on the run's test days, and the
    walk-forward's daily out-of-sample RankIC."""
    test_days = pl.read_parquet(run / PREDICTIONS, columns=["date"]).get_column("date").unique()
    on_test_days = frame.get_column("date").is_in(test_days.implode()).to_numpy()
    rows = frame.filter(pl.Series(on_test_days))
    signals = rows.select("date", "code").with_columns(score=pl.Series(model.boosters[horizon].predict(x[on_test_days])))
    importance_file = run / FEATURE_IMPORTANCE
    watched: list[str] = []
    if importance_file.is_file():
        watched = (
            pl.read_csv(importance_file).filter(pl.col("horizon") == horizon)
            .group_by("feature").agg(pl.col("gain").mean()).sort(["gain", "feature"], descending=[True, False])
            .get_column("feature").to_list()
        )
    settings = MonitorSettings()
    watched = _per_stock_features(rows, watched)[: settings.n_top_features]
    daily = pl.read_parquet(run / DAILY).filter(pl.col("horizon") == horizon).get_column("rank_ic")
    return build_reference(
        signals, features=rows.select("date", "code", *watched), feature_names=watched,
        reference_rank_ic=daily, settings=settings,
    )


def _per_stock_features(rows: pl.DataFrame, names: list[str]) -> list[str]:
    """``names`` without the features that take few values per day (market- and sector-level
    ones: a day's PSI over 4 sector values measures nothing): kept are those whose median
    number of distinct values per day is at least half the median number of stocks per day."""
    if not names:
        return []
    per_day = rows.group_by("date").agg(pl.len().alias("_n"), *(pl.col(n).n_unique() for n in names))
    half = per_day.get_column("_n").median() / 2
    return [n for n in names if per_day.get_column(n).median() >= half]


def fit_final(run_dir: str | Path, out_dir: str | Path | None = None) -> tuple[Path, FinalModel]:
    """Refit the LightGBM of the evaluate run ``run_dir`` on all labelled days (module
    docstring); returns the output folder and the model."""
    started = time.perf_counter()
    run = Path(run_dir)
    info = read_run_info(run)
    if info.model != "lightgbm":
        raise KizashiError(
            f"{run}: fit-final refits LightGBM runs of `kizashi evaluate`; this run's model is {info.model!r}"
        )
    if info.control:
        raise KizashiError(f"{run}: a shuffled-target control run has no model worth refitting")
    # Only the model section is needed (and read alone, so runs of older versions refit too).
    lgb_config = config_from_dict(LightGBMConfig, info.config.get("model") or {}, source=f"{run / 'run.json'}: model")
    dataset = Path(info.dataset)
    metadata = read_metadata(dataset)
    rounds = final_rounds(pl.read_csv(run / FOLDS), info.horizons)
    features = list(info.features)
    missing = sorted(set(features) - set(metadata.feature_columns))
    if missing:
        raise KizashiError(f"{dataset}: the run's features are not all in its dataset (e.g. {missing[:5]})")
    frame = scan_features(dataset).sort("date", "code").collect()
    x = frame.select(features).to_numpy().astype(np.float32, copy=False)  # [N, F]
    boosters = {}
    for horizon in info.horizons:
        labels = training_labels(frame, horizon, lgb_config.label)
        known = np.isfinite(labels)
        model_config = lgb_config.model_copy(update={"n_estimators": rounds[horizon]})
        fitted = fit_booster(x[known], labels[known], None, None, features, model_config, info.seed)
        boosters[horizon] = fitted.booster
        log.info("final %dd model: %d rounds on %s labelled rows", horizon, rounds[horizon], f"{int(known.sum()):,}")
    per_day = frame.group_by("date").len().get_column("len")
    model = FinalModel(
        kind="lightgbm",
        horizons=list(info.horizons),
        features=features,
        rounds=rounds,
        label=lgb_config.label,
        data_config=anchor_paths(metadata.config, DataBuildConfig, Path.cwd()),  # older datasets kept cwd paths
        input_hashes=dict(metadata.input_hashes),
        train_first=metadata.date_min,
        train_last=metadata.date_max,
        train_rows=frame.height,
        universe_median=int(per_day.median()),
        run_dir=str(run),
        boosters=boosters,
    )
    references = {
        reference_file(h): _monitor_reference(run, frame, x, model, h).to_json() for h in model.horizons
    }
    out = Path(out_dir) if out_dir is not None else run / FINAL_DIR
    save_final_model(model, out, references)
    log.info("wrote final model %s in %.1fs", out, time.perf_counter() - started)
    return out, model
