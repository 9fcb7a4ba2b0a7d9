"""The walk-forward runner: for each fold and horizon fit, predict the test window, collect;
then evaluate every prediction and write a run directory (``kizashi.evaluation.run_dir``).

    dataset (built or reused) -> folds (kizashi.splits, purge + embargo) ->
      per (fold, horizon): fit on train, early-stop on validation, predict test ->
      predictions.parquet -> metrics (kizashi.evaluation) -> summary / daily / deciles /
      folds / feature importance

The shuffled-target control (``control=True``) permutes the training and validation labels
among the stocks of each day (test targets stay real): whatever the model then "finds" is
noise, so its out-of-sample RankIC must be close to zero.

Each fit's permutation is drawn from its own generator seeded by ``(seed, fold, horizon)``, so
a fit's labels do not depend on which fits ran before it (a resumed control run equals an
uninterrupted one).

A synthetic dataset carries the planted signal's oracle (``oracle_return_1d``); its RankIC
on the same test days is recorded in ``run.json`` (``references``) as the ceiling.

Resume state. As each (fold, horizon) fit finishes it is saved atomically (one directory,
swapped in whole) in the run directory ``OUT``::

    OUT/fits/state.json              {"status": "running" | "complete", ...}
    OUT/fits/fold_{k}_h{h}/fit.json  fingerprint, best iteration, the folds.csv row
                          predictions.parquet  the fit's test rows (PREDICTION_SCHEMA)
                          importance.parquet   gain / split per feature (LightGBM only)
                          validation.parquet   the fit's validation-slice rows (PREDICTION_SCHEMA)

The run directory also gets ``validation_predictions.parquet``: every fit's predictions of
its own validation slice (the early-stopping days, purged from training and from test), the
days a book is chosen on without reading the test days: the run ends with that choice,
fold by fold, for every horizon (``strategies.csv``, ``strategy_daily.parquet``;
:mod:`kizashi.portfolio.run_books`, ``config.portfolio``), except for a control run.

``run_walk_forward(..., resume=True)`` (``kizashi evaluate --resume``) reuses every stored
fit whose fingerprint equals the current one and fits the others; the run directory it then
writes is identical to an uninterrupted run's (same predictions, metrics, folds.csv, feature
importance; only ``run.json``'s ``created`` differs). The fingerprint is what decides a fit:
the config without the keys that do not (``output``, ``metrics``, ``portfolio``, ``caveats``; ``data``,
``splits``, ``horizons`` and ``features`` are recorded in resolved form instead: the
dataset's key (build settings + input hashes), the fold's dates, the horizon, the feature
list), plus the control flag. A stored fit whose fingerprint differs is refused with an
error naming the run directory and the differing keys: it was made for another experiment,
and discarding it silently under ``--resume`` could throw away hours of work that the user
meant to keep (run without ``resume`` to start afresh, or write to another ``--out``).
Without ``resume`` a previous ``fits/`` is removed first.

``fits/`` stays in the finished run directory (like ``kizashi train``'s ``checkpoints/``):
``resume`` on a finished run refits nothing, so a change of ``metrics`` re-evaluates in
seconds, and a change of ``portfolio`` re-chooses the books. ``fits/state.json`` says ``running`` from the start of a run until its run
directory is written (a killed run leaves it so: the other files in ``OUT``, if any, are
then the previous run's), ``complete`` after. While ``write_run`` replaces ``OUT``,
``fits/`` waits beside it as ``.{OUT name}.fits/`` and is put back by the next run if the
process dies there.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kizashi import __version__
from kizashi.atomic import atomic_path, restore_interrupted_output, write_json_atomic
from kizashi.datasets.store import DatasetMetadata, read_metadata, scan_features
from kizashi.config import DATASET_NEUTRAL_KEYS, EvaluateConfig, dump_config
from kizashi.errors import ConfigError, KizashiError
from kizashi.evaluation.run_dir import (
    PREDICTION_SCHEMA,
    VALIDATION_PREDICTIONS,
    RunInfo,
)
from kizashi.features.targets import target_rank_name, target_return_name
from kizashi.log import progress
from kizashi.jobs.common import (
    ORACLE_COLUMN,
    ensure_dataset,
    float_column,
    fold_row,
    job_folds,
    oracle_reference,
    resolve_horizons,
    run_caveats,
    training_labels,
    write_run,
)
from kizashi.portfolio.run_books import write_run_strategies
from kizashi.splits import Fold
from kizashi.training.lightgbm_baseline import fit_booster

log = logging.getLogger(__name__)

FITS_DIR = "fits"
FIT_FILE = "fit.json"
FIT_PREDICTIONS = "predictions.parquet"
FIT_IMPORTANCE = "importance.parquet"
FIT_VALIDATION = "validation.parquet"
STATE_FILE = "state.json"
#: Version of the stored fits' layout and fingerprint (a stored fit of another is refused).
FIT_FORMAT = 1
#: Config keys left out of a fit's fingerprint: they do not change a fit (output, metrics,
#: portfolio, caveats, data_config), or the fingerprint holds what they resolve to (data -> the
#: dataset's key, splits / horizons -> the fold's dates and the horizon, features -> the list).
FIT_NEUTRAL_KEYS = ("output", "metrics", "portfolio", "caveats", "data_config", "data", "splits", "horizons", "features")


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


@dataclass
class _Fit:
    """One finished (fold, horizon) fit: what the run directory needs of it."""

    fold: int
    horizon: int
    predictions: pl.DataFrame  # PREDICTION_SCHEMA rows of the fold's test days
    validation: pl.DataFrame | None  # PREDICTION_SCHEMA rows of its validation slice (early stopping)
    importance: pl.DataFrame | None  # fold, horizon, feature, gain, split (LightGBM only)
    fold_row: dict[str, Any]  # its folds.csv row
    best_iteration: int


def run_walk_forward(
    config: EvaluateConfig,
    *,
    control: bool = False,
    out_dir: str | Path | None = None,
    resume: bool = False,
) -> WalkForwardResult:
    """Fit, predict and evaluate every (fold, horizon); write the run directory.

    ``resume`` reuses the fits an interrupted (or finished) run saved in ``out_dir/fits`` and
    fits the rest (see the module docstring); a stored fit made with other settings is a
    :class:`KizashiError`.
    """
    started = time.perf_counter()
    dataset_dir = ensure_dataset(config)
    metadata = read_metadata(dataset_dir)
    features, horizons = _resolve_columns(config, metadata)
    frame = _load_frame(dataset_dir, features, horizons, metadata)
    calendar = frame.get_column("date").unique().sort()
    folds = job_folds(config, calendar, metadata.target_reach(horizons))
    out = Path(out_dir) if out_dir is not None else Path(config.output.dir)
    tasks = [(fold, h) for fold in folds for h in horizons]
    fingerprints = {
        (fold.index, h): _fit_fingerprint(config, metadata, features, fold, h, control) for fold, h in tasks
    }
    fits = _prepare_fits(out, fingerprints, resume, control)
    log.info(
        "walk-forward: %d rows x %d features, %d folds x %d horizons%s",
        frame.height, len(features), len(folds), len(horizons), " (shuffled-target control)" if control else "",
    )
    if fits:
        names = [f"fold {k} {h}d" for k, h in fits]
        shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
        log.info(
            "resume: reusing %d finished fits from %s (%s); %d to fit",
            len(fits), out / FITS_DIR, shown, len(tasks) - len(fits),
        )

    todo = [(fold, h) for fold, h in tasks if (fold.index, h) not in fits]
    if todo:
        try:
            positions = {(fold.index, h): i for i, (fold, h) in enumerate(tasks)}
            _fit_all(config, frame, features, todo, positions, control, fingerprints, out, fits)
        except BaseException:  # a kill (KeyboardInterrupt) or an error: say what is kept
            if fits:
                log.warning(
                    "walk-forward stopped after %d of %d fits; the finished ones are saved in %s "
                    "(run again with --resume to continue from them)", len(fits), len(tasks), out / FITS_DIR,
                )
            raise
    ordered = [fits[(fold.index, h)] for fold, h in tasks]
    importance = [fit.importance for fit in ordered if fit.importance is not None]

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
    summary = _write_run_keeping_fits(
        out,
        pl.concat([fit.predictions for fit in ordered]),
        info,
        config,
        [fit.fold_row for fit in ordered],
        pl.concat(importance) if importance else None,
    )
    validation = [fit.validation for fit in ordered if fit.validation is not None]
    if validation:  # what a book is chosen on, never the test days
        with atomic_path(out / VALIDATION_PREDICTIONS) as tmp:
            pl.concat(validation).write_parquet(tmp)
        if not control:
            write_run_strategies(out, config.portfolio)
    _finish_fits(out, fingerprints)
    seconds = time.perf_counter() - started
    log.info("wrote run %s in %.1fs", out, seconds)
    return WalkForwardResult(run_dir=out, info=info, summary=summary, seconds=seconds)


def _fit_all(
    config: EvaluateConfig,
    frame: pl.DataFrame,
    features: list[str],
    todo: list[tuple[Fold, int]],
    positions: dict[tuple[int, int], int],
    control: bool,
    fingerprints: dict[tuple[int, int], dict[str, Any]],
    out: Path,
    fits: dict[tuple[int, int], _Fit],
) -> None:
    """Fit, predict and save each (fold, horizon) of ``todo``, adding it to ``fits``;
    ``positions`` gives each (fold, horizon)'s place in the run's full task list."""
    x = frame.select(features).to_numpy().astype(np.float32, copy=False)  # [N, F], NaN = missing
    dates = frame.get_column("date").to_numpy().astype("datetime64[D]")
    day = frame.get_column("date").rank("dense").to_numpy().astype(np.int64)
    forward_1d = float_column(frame, target_return_name(1))
    horizons = sorted({h for _, h in todo})
    labels_by_horizon = {h: training_labels(frame, h, config.model.label) for h in horizons}
    targets_by_horizon = {h: float_column(frame, target_return_name(h)) for h in horizons}
    # Row masks of each fold's parts, shared by its horizons: [N] bool each.
    parts = {f.index: tuple(np.isin(dates, d) for d in (f.train_dates, f.val_dates, f.test_dates)) for f, _ in todo}

    for fold, horizon in progress(todo, "walk-forward fits"):
        fit_started = time.perf_counter()
        labels = labels_by_horizon[horizon]
        if control:  # a within-day permutation of its own for every fit
            rng = _control_rng(config.seed, positions[(fold.index, horizon)], len(day))
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
        def prediction_rows(rows: np.ndarray) -> pl.DataFrame:
            """PREDICTION_SCHEMA rows of the frame rows ``rows`` [N] bool."""
            return pl.DataFrame(
                {
                    "date": frame.get_column("date").filter(rows),
                    "code": frame.get_column("code").filter(rows),
                    "fold": np.full(int(rows.sum()), fold.index, dtype=np.int32),
                    "horizon": np.full(int(rows.sum()), horizon, dtype=np.int32),
                    "prediction": fitted.predict(x[rows]),
                    "target": targets_by_horizon[horizon][rows],
                    "forward_return_1d": forward_1d[rows],
                },
                schema=PREDICTION_SCHEMA,
            )

        predictions = prediction_rows(test)
        importance = None
        if fitted.importance_gain is not None:
            importance = pl.DataFrame(
                {
                    "fold": fold.index,
                    "horizon": horizon,
                    "feature": features,
                    "gain": fitted.importance_gain,
                    "split": fitted.importance_split,
                }
            )
        fit = _Fit(
            fold=fold.index,
            horizon=horizon,
            predictions=predictions,
            validation=prediction_rows(in_valid) if in_valid.any() else None,
            importance=importance,
            fold_row=fold_row(fold, horizon, fitted.best_iteration, predictions),
            best_iteration=fitted.best_iteration,
        )
        rows = {"train": int(train.sum()), "valid": int(valid.sum()), "test": int(test.sum())}
        _save_fit(out, fit, fingerprints[(fold.index, horizon)], rows, time.perf_counter() - fit_started)
        fits[(fold.index, horizon)] = fit
        log.info(
            "fold %d, %dd: %d train / %d valid / %d test rows, best iteration %d, test RankIC %.4f",
            fold.index, horizon, rows["train"], rows["valid"], rows["test"],
            fitted.best_iteration, fit.fold_row["rank_ic_mean"] or float("nan"),
        )


def _control_rng(seed: int, position: int, n_rows: int) -> np.random.Generator:
    """The shuffled-target control's generator for the fit at ``position`` in the run's task
    list (folds x horizons, in order): ``default_rng(seed)`` advanced past the ``n_rows``
    draws of each earlier fit, so it is the generator an uninterrupted run reaches there,
    whichever fits a resumed run skips (a negative seed is taken modulo 2**64)."""
    rng = np.random.default_rng(seed % 2**64)
    rng.bit_generator.advance(position * n_rows)
    return rng


# --------------------------------------------------------------------------------------
# the fits saved in the run directory (resume state)
# --------------------------------------------------------------------------------------


def fit_dir(out: str | Path, fold: int, horizon: int) -> Path:
    """Where the fit of ``fold`` at ``horizon`` is saved in run directory ``out``."""
    return Path(out) / FITS_DIR / f"fold_{fold}_h{horizon}"


def _fit_fingerprint(
    config: EvaluateConfig, metadata: DatasetMetadata, features: list[str], fold: Fold, horizon: int, control: bool
) -> dict[str, Any]:
    """What decides one fit's result (see the module docstring), JSON-normalized."""
    fingerprint = {
        "format": FIT_FORMAT,
        "config": {k: v for k, v in dump_config(config).items() if k not in FIT_NEUTRAL_KEYS},
        "dataset": {
            "config": {k: v for k, v in metadata.config.items() if k not in DATASET_NEUTRAL_KEYS},
            "input_hashes": metadata.input_hashes,
        },
        "features": list(features),
        "fold": fold.to_dict(),
        "horizon": int(horizon),
        "control": bool(control),
    }
    return json.loads(json.dumps(fingerprint, default=str))


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """The dotted keys at which two JSON values differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(saved) | set(current), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in current:
                out.append(path)
            else:
                out.extend(_differences(saved[key], current[key], path))
        return out
    return [] if saved == current else [prefix or "(the whole fingerprint)"]


def _staged_fits(out: Path) -> Path:
    """Where ``fits/`` waits while ``write_run`` replaces the run directory."""
    return out.parent / f".{out.name}.{FITS_DIR}"


def _restore_staged_fits(out: Path, *, left_by_a_kill: bool = True) -> None:
    """Put ``fits/`` back into ``out`` from beside it: after ``write_run``, or at the start of
    a run when a run killed inside ``write_run`` left it there."""
    staged = _staged_fits(out)
    if not staged.is_dir():
        return
    if (out / FITS_DIR).exists():
        log.warning("%s: %s exists; removing the older copy %s", out, FITS_DIR, staged)
        shutil.rmtree(staged)
        return
    out.mkdir(parents=True, exist_ok=True)
    os.replace(staged, out / FITS_DIR)
    if left_by_a_kill:
        log.info("%s: restored %s, set aside by a run that stopped while writing", out, out / FITS_DIR)


def _prepare_fits(
    out: Path, fingerprints: dict[tuple[int, int], dict[str, Any]], resume: bool, control: bool
) -> dict[tuple[int, int], _Fit]:
    """The stored fits to reuse (``resume``; a differing fingerprint is an error), or none
    (a fresh run: a previous ``fits/`` is removed). Marks ``fits/`` as running."""
    restore_interrupted_output(out)
    _restore_staged_fits(out)
    folder = out / FITS_DIR
    found: dict[tuple[int, int], _Fit] = {}
    if not resume:
        if folder.exists() and any(folder.iterdir()):
            log.warning("%s: a fresh run (no --resume) removes the previous fits in %s", out, folder)
            shutil.rmtree(folder)
    elif not folder.is_dir():
        log.info("resume: no saved fits in %s; fitting everything", folder)
    else:
        for (fold, horizon), fingerprint in fingerprints.items():
            stored = _load_fit(out, fold, horizon, fingerprint)
            if stored is not None:
                found[(fold, horizon)] = stored
    write_json_atomic(folder / STATE_FILE, {
        "status": "running",
        "control": control,
        "n_fits": len(fingerprints),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kizashi_version": __version__,
    })
    return found


def _load_fit(out: Path, fold: int, horizon: int, fingerprint: dict[str, Any]) -> _Fit | None:
    """The stored fit of (fold, horizon), None when there is none (or it cannot be read);
    :class:`KizashiError` when it was made with other settings."""
    folder = fit_dir(out, fold, horizon)
    if not (folder / FIT_FILE).is_file():
        return None
    try:
        stored = json.loads((folder / FIT_FILE).read_text(encoding="utf-8"))
        predictions = pl.read_parquet(folder / FIT_PREDICTIONS)
        validation = pl.read_parquet(folder / FIT_VALIDATION) if (folder / FIT_VALIDATION).is_file() else None
        importance = pl.read_parquet(folder / FIT_IMPORTANCE) if (folder / FIT_IMPORTANCE).is_file() else None
        saved = stored["fingerprint"]
        row, best = stored["fold_row"], int(stored["best_iteration"])
    except (OSError, ValueError, KeyError, TypeError, pl.exceptions.PolarsError) as err:
        log.warning("resume: the saved fit %s cannot be read (%s); fitting it again", folder, err)
        return None
    differing = _differences(saved, fingerprint)
    if differing:
        shown = ", ".join(differing[:8]) + (f" and {len(differing) - 8} more" if len(differing) > 8 else "")
        raise KizashiError(
            f"{out}: cannot resume: the saved fit of fold {fold}, {horizon}d ({folder}) was made with other "
            f"settings (differing: {shown}); run without --resume to start afresh (the saved fits are "
            "removed), or write to another --out"
        )
    return _Fit(fold=fold, horizon=horizon, predictions=predictions, validation=validation, importance=importance,
                fold_row=row, best_iteration=best)


def _save_fit(out: Path, fit: _Fit, fingerprint: dict[str, Any], rows: dict[str, int], seconds: float) -> None:
    """Save one finished fit as one directory, swapped in whole (a kill leaves it or nothing)."""
    with atomic_path(fit_dir(out, fit.fold, fit.horizon)) as tmp:
        tmp.mkdir()
        fit.predictions.write_parquet(tmp / FIT_PREDICTIONS)
        if fit.validation is not None:
            fit.validation.write_parquet(tmp / FIT_VALIDATION)
        if fit.importance is not None:
            fit.importance.write_parquet(tmp / FIT_IMPORTANCE)
        record = {
            "fold": fit.fold,
            "horizon": fit.horizon,
            "best_iteration": fit.best_iteration,
            "rows": rows,
            "seconds": round(seconds, 3),
            "fold_row": fit.fold_row,
            "fingerprint": fingerprint,
        }
        (tmp / FIT_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


def _write_run_keeping_fits(
    out: Path,
    predictions: pl.DataFrame,
    info: RunInfo,
    config: EvaluateConfig,
    fold_rows: list[dict[str, Any]],
    importance: pl.DataFrame | None,
) -> dict[int, dict[str, Any]]:
    """``write_run`` replaces ``out`` as a whole: ``fits/`` is moved aside (a rename) and back."""
    staged = _staged_fits(out)
    if (out / FITS_DIR).is_dir():
        os.replace(out / FITS_DIR, staged)
    try:
        return write_run(out, predictions, info, config.metrics, fold_rows=fold_rows, importance=importance,
                         cost_bps=config.portfolio.costs.cost_bps)
    finally:
        _restore_staged_fits(out, left_by_a_kill=False)


def _finish_fits(out: Path, fingerprints: dict[tuple[int, int], dict[str, Any]]) -> None:
    """After the run directory is written: drop saved fits that are not this run's, mark
    ``fits/`` complete."""
    folder = out / FITS_DIR
    wanted = {fit_dir(out, fold, h).name for fold, h in fingerprints}
    for entry in sorted(folder.glob("fold_*_h*")):
        if entry.is_dir() and entry.name not in wanted:
            log.info("removed %s: a saved fit that is not part of this run", entry)
            shutil.rmtree(entry)
    state_path = folder / STATE_FILE
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    state.update(status="complete", finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    write_json_atomic(state_path, state)


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


