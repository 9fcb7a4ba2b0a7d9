"""`kizashi fit-final --run RUN_DIR`: refit a walk-forward run's model on every labelled day
of its dataset and save it for ``kizashi predict`` (:mod:`kizashi.training.final_model`).
Two kinds of runs: LightGBM runs of ``kizashi evaluate`` and ATFT-GAT-FAN runs of
``kizashi train``. The walk-forward chose how long to train on its validation slices;
nothing is chosen on test days.

LightGBM::

    run.json (config, dataset, features) + folds.csv (best iteration per fold and horizon)
    -> rounds per horizon = the median of the folds' best iterations
    -> one booster per horizon on every dataset row whose label is known
       (the last h days of an h-day horizon have none yet), the run's seed and parameters
    -> per horizon, the monitoring reference: the final model's scores and the most
       important stock-level features (walk-forward gain) on the run's test days, the
       walk-forward's daily RankIC
    -> OUT (default RUN_DIR/final): final_model.json + lightgbm_{h}d.txt + monitor_reference_{h}d.json

ATFT-GAT-FAN::

    run.json (TrainConfig, dataset, horizons, features) + folds.csv (best epoch per fold)
    -> epochs = the median of the folds' best epochs (rounded half up, at least 1)
    -> training days = every day of the dataset's day-panel cache with a known target of the
       longest modelled horizon (no validation, no test); FeatureStats fitted on them
    -> the run's model, loss, optimizer, trainer settings and seed (kizashi.training.neural_fit,
       as ``kizashi train`` fits a fold), on one device (trainer.devices is set to 1), for
       ``epochs`` epochs; TensorBoard logs under RUN_DIR/logs/final
    -> the weights that predict (the EMA's when the EMA is on), scored through the cache on
       the run's test days (batches of trainer.days_per_batch days): per horizon, the
       monitoring reference, its watched features ranked by the network's mean
       variable-selection weight on those days, the walk-forward's daily RankIC
    -> OUT: final_model.json + model/ (pretrained folder) + feature_stats.json +
       monitor_reference_{h}d.json
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch

from kizashi.config import DataBuildConfig, LightGBMConfig, TrainConfig, anchor_paths, config_from_dict, dump_config
from kizashi.datasets import DayPanelCache, DayPanelDataset, FeatureStats
from kizashi.datasets.samplers import EpochShuffleSampler
from kizashi.datasets.store import read_metadata, scan_features
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import DAILY, FEATURE_IMPORTANCE, FOLDS, PREDICTIONS, RunInfo, read_run_info
from kizashi.jobs.common import training_labels
from kizashi.monitoring import MonitorReference, MonitorSettings, build_reference
from kizashi.training.final_model import ATFT, LIGHTGBM, FinalModel, save_final_model
from kizashi.training.lightgbm_baseline import fit_booster
from kizashi.training.neural_fit import (
    HorizonTargets,
    build_model,
    build_trainer,
    day_batch_loader,
    feature_panel,
    fit_warnings_filtered,
    forecast_module,
    loss_config,
    predicting_weights,
    training_callbacks,
)

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


def final_epochs(folds: pl.DataFrame) -> int:
    """Training epochs of a final neural model: the median (rounded half up, at least 1) of
    the folds' best epochs (``folds``: a train run's folds.csv, one ``best_iteration`` per
    fold repeated on each horizon's row)."""
    best = folds.group_by("fold").agg(pl.col("best_iteration").drop_nulls().first()).get_column("best_iteration")
    best = best.drop_nulls().to_numpy()
    if best.size == 0:
        raise KizashiError("folds.csv has no best_iteration (best epoch) for any fold")
    return max(1, int(np.floor(np.median(best) + 0.5)))


def labelled_days(cache: DayPanelCache, horizons: list[int], target: str) -> np.ndarray:
    """[K] int64 day indices of ``cache`` on which some stock has a known ``target``
    ("return" or "rank") at the longest of ``horizons``: the days a final model trains on
    (the last days of the data have no label yet)."""
    values = cache.targets if target == "return" else cache.target_ranks
    if values is None:
        raise KizashiError(f"{cache.cache_dir}: the day-panel cache has no rank targets (target: rank)")
    column = cache.horizons.index(max(horizons))
    known = np.isfinite(np.asarray(values[:, :, column])).any(axis=1)
    return np.flatnonzero(known).astype(np.int64)


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
    return _reference(run, signals, rows, watched, horizon)


def _reference(run: Path, signals: pl.DataFrame, rows: pl.DataFrame, ranked: list[str], horizon: int) -> MonitorReference:
    """The reference of ``signals`` (``date, code, score`` on the run's test days) watching
    the stock-level ones of ``ranked`` (most important first; values from ``rows``), with the
    walk-forward's daily RankIC of ``horizon``."""
    settings = MonitorSettings()
    watched = _per_stock_features(rows, ranked)[: settings.n_top_features]
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


def fit_final(
    run_dir: str | Path, out_dir: str | Path | None = None, *, accelerator: str | None = None
) -> tuple[Path, FinalModel]:
    """Refit the model of the walk-forward run ``run_dir`` (a LightGBM run of ``kizashi
    evaluate`` or an ATFT-GAT-FAN run of ``kizashi train``) on all labelled days (module
    docstring); returns the output folder and the model. ``accelerator`` replaces the train
    run's ``trainer.accelerator`` for an ATFT-GAT-FAN refit ("cpu", "gpu", "auto")."""
    run = Path(run_dir)
    info = read_run_info(run)
    if info.model.split(":")[0] == ATFT:
        return _fit_final_atft(run, info, out_dir, accelerator)
    if info.model != LIGHTGBM:
        raise KizashiError(
            f"{run}: fit-final refits LightGBM runs of `kizashi evaluate` and ATFT-GAT-FAN runs of "
            f"`kizashi train`; this run's model is {info.model!r}"
        )
    return _fit_final_lightgbm(run, info, out_dir)


def _fit_final_lightgbm(run: Path, info: RunInfo, out_dir: str | Path | None) -> tuple[Path, FinalModel]:
    started = time.perf_counter()
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
        kind=LIGHTGBM,
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


def _fit_final_atft(
    run: Path, info: RunInfo, out_dir: str | Path | None, accelerator: str | None
) -> tuple[Path, FinalModel]:
    started = time.perf_counter()
    config = config_from_dict(TrainConfig, info.config, source=f"{run / 'run.json'}: config")
    trainer_settings: dict[str, Any] = {"devices": 1}
    if accelerator is not None:
        trainer_settings["accelerator"] = accelerator
    config = config.model_copy(update={"trainer": config.trainer.model_copy(update=trainer_settings)})
    dataset_dir = Path(info.dataset)
    metadata = read_metadata(dataset_dir)
    cache = DayPanelCache(dataset_dir)
    if list(cache.feature_columns) != list(info.features):
        raise KizashiError(f"{dataset_dir}: its features differ from the run's (the dataset was rebuilt since?)")
    horizons = list(info.horizons)
    epochs = final_epochs(pl.read_csv(run / FOLDS))
    days = labelled_days(cache, horizons, config.target)
    if len(days) == 0:
        raise KizashiError(f"{dataset_dir}: no day with a known {max(horizons)}d target to train on")

    L.seed_everything(config.seed, workers=True, verbose=False)
    stats = FeatureStats.fit(cache, days)
    panel = feature_panel(config, cache)
    train_set = DayPanelDataset(cache, days, window=config.window, stats=stats, target=config.target,
                                with_features=panel is None)
    tcfg = config.trainer
    collate = HorizonTargets([cache.horizons.index(h) for h in horizons], centre_ranks=config.target == "rank")
    sampler = EpochShuffleSampler(len(train_set), seed=config.seed)
    loader = day_batch_loader(train_set, tcfg.days_per_batch, collate, tcfg.num_workers, sampler, persistent=True)
    module = forecast_module(config, build_model(config, cache.n_features, horizons), horizons,
                             loss_config(config, horizons))
    if panel is not None:
        module.attach_panel(panel, stats)
    logs = run / "logs"
    trainer = build_trainer(
        config, root_dir=logs / "final", logs_dir=logs, log_name="final",
        callbacks=training_callbacks(config, horizons, with_validation=False), checkpoint_callbacks=[],
        n_train_batches=len(loader), max_epochs=epochs, enable_checkpointing=False,
    )
    log.info("final %s: %d epochs (median best epoch of %s) on %d labelled days %s .. %s",
             info.model, epochs, run / FOLDS, len(train_set), cache.dates[days[0]], cache.dates[days[-1]])
    with fit_warnings_filtered(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
        trainer.fit(module, loader)
    device = trainer.strategy.root_device
    with predicting_weights(module, trainer) as weights:
        network = copy.deepcopy(weights).eval()

    alive = np.asarray(cache.alive)
    model = FinalModel(
        kind=ATFT,
        horizons=horizons,
        features=list(cache.feature_columns),
        rounds={},
        label=config.target,
        data_config=anchor_paths(metadata.config, DataBuildConfig, Path.cwd()),
        input_hashes=dict(metadata.input_hashes),
        train_first=metadata.date_min,
        train_last=metadata.date_max,
        train_rows=int(alive[days].sum()),
        universe_median=int(np.median(alive.sum(axis=1))),
        run_dir=str(run),
        window=config.window,
        epochs=epochs,
        train_days=len(train_set),
        labelled_last=str(cache.dates[days[-1]]),
        train_config=dump_config(config),
        network=network,
        feature_stats=stats,
    )
    references = {reference_file(h): ref.to_json() for h, ref in _atft_references(run, dataset_dir, cache, model,
                                                                                   device).items()}
    model.network = network.cpu()
    out = Path(out_dir) if out_dir is not None else run / FINAL_DIR
    save_final_model(model, out, references)
    log.info("wrote final model %s in %.1fs", out, time.perf_counter() - started)
    return out, model


def _atft_references(
    run: Path, dataset_dir: Path, cache: DayPanelCache, model: FinalModel, device: torch.device
) -> dict[int, MonitorReference]:
    """Per horizon, what `kizashi monitor` compares new days with: the final network's
    scores on the run's test days (through the cache), the features it weighs most there
    (mean variable-selection weight), the walk-forward's daily RankIC."""
    test_days = pl.read_parquet(run / PREDICTIONS, columns=["date"]).get_column("date").unique().sort()
    scored = model.score_days(cache, cache.day_indices(test_days.to_numpy()), device, feature_weights=True)
    ranked: list[str] = []
    if scored.feature_weight is not None:
        order = sorted(range(len(model.features)), key=lambda j: (-scored.feature_weight[j], model.features[j]))
        ranked = [model.features[j] for j in order]
    rows = (
        scan_features(dataset_dir).filter(pl.col("date").is_in(test_days.implode()))
        .select("date", "code", *ranked).collect()
    )
    return {
        h: _reference(run, scored.keys.with_columns(score=pl.Series(scored.scores[h])), rows, ranked, h)
        for h in model.horizons
    }
