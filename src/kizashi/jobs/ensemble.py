"""`kizashi ensemble RUN_DIR... --out DIR`: one run directory from the per-day rank average of
several runs' predictions (e.g. LightGBM + ATFT-GAT-FAN, several seeds).

    member run directories -> predictions.parquet of each (horizons of every member) ->
      inner join on (date, code, horizon) -> checks (same folds, fold column, targets) ->
      per (date, horizon): each member's prediction as a percentile rank in (0, 1] ->
      (weighted) mean of the ranks = the ensemble prediction -> write_run (summary, daily,
      deciles, folds, run.json), so ``kizashi report`` / ``compare`` read it like any run
    -> validation_predictions.parquet of each member (when every member has one) -> the
      same combination per (fold, date, horizon) -> the ensemble's validation slices -> books
      chosen on them fold by fold (strategies.csv, strategy_daily.parquet), as an evaluate
      or train run ends, so ``kizashi strategies`` treats the ensemble as any run

Combining. Members are combined on the (date, code, horizon) rows that every member has
(an inner join); how many rows each member loses to the join is logged and recorded as a
caveat. On each (date, horizon) a member's prediction becomes ``rank / n``: its average rank
(ties share the mean of their ranks, 1 = lowest) among that day's common rows with a finite
prediction, over ``n``, the number of them. The ensemble prediction is the weighted mean of
the members' ranks (weights normalized to sum to 1; equal by default). A row on which any
member's prediction is missing (null / NaN / inf) gets a null ensemble prediction (counted
and logged; the metrics skip it, as they skip any missing prediction). Ranks make models with
different output scales (a LightGBM rank score, a neural return forecast) comparable and
keep one member's outliers from dominating.

What must agree. The members must be evaluations of the same dataset on the same folds:

* the shuffled-target control flag (controls are combined only with controls: an ensemble
  of controls is itself a control);
* ``run.json``'s ``folds`` (the train / validation / test spans of every fold): the first
  difference is named;
* the ``fold`` column of every common row (so it is the first member's, and the same as
  every other member's);
* ``target`` and ``forward_return_1d`` of every common row, to :data:`TARGET_TOLERANCE`
  (both missing counts as equal): the labels are the dataset's, not the model's.

Any disagreement is a :class:`KizashiError` naming the runs and an example row; so is a
set of members without a common horizon or a common row.

The ensemble's ``run.json``: model ``ensemble(<member models>)``; the horizons common to all
members (the others are logged); the first member's folds and seed; the union of the members'
features; the caveats of every member, de-duplicated, plus the ensemble's own (rows lost to
the join; member choice and weights chosen after seeing the test results are fitted to the
test windows); the references on which all members that record them agree; ``config``
records each member (run directory, model, seed, weight), the combination, the metrics
settings (the first member's ``metrics``; members that differ are logged) and the portfolio
settings (the first member's ``portfolio``, read as ``kizashi strategies`` reads a run's; members
that differ are logged): their ``costs.cost_bps`` is the cost of the metrics' long-short book
and of the books chosen on the validation slices. ``folds.csv`` has
one row per (fold, horizon) with the fold's spans from ``run.json``, ``best_iteration`` 0 (an
ensemble fits nothing; 0 as for the one-feature signal baseline, so the column stays an
integer column) and the ensemble's mean daily IC / RankIC on the fold's test days.
Model-specific files of the members (``feature_importance.csv``, ``fits/``, ``checkpoints/``)
have no ensemble counterpart and are not written.

Validation slices. ``validation_predictions.parquet`` (each fold's predictions of its own
validation slice: ``kizashi evaluate`` and ``kizashi train`` write it) is combined like the
test rows, with the fold in the key: members are joined on (fold, date, code, horizon) at the
common horizons (rows lost to the join are logged), and on each (fold, date, horizon) a
member's prediction becomes its percentile rank among that day's common rows of the fold; the
ensemble prediction is the same weighted mean (null where a member's prediction is missing),
with the first member's labels, checked equal to every member's as for the test rows (a
difference is a :class:`KizashiError`). The file is written only when every member has one
and the members' slices agree with the folds: the same (fold, horizon) pairs in every member,
each fold's rows inside its validation days (``run.json`` ``folds``, the same for all members);
otherwise no slice is written and one log line says why (``kizashi strategies`` then refuses
the ensemble, naming the missing file). With slices, the ensemble ends with the books chosen
on them (:func:`kizashi.portfolio.run_books.write_run_strategies`; not for an ensemble of
controls, as ``kizashi evaluate`` does not choose books for a control run).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kizashi.atomic import atomic_path
from kizashi.config import MetricsConfig, PortfolioSettings, config_from_dict, dump_config
from kizashi.errors import KizashiError
from kizashi.evaluation.metrics import daily_ic, summarize_ic
from kizashi.evaluation.run_dir import (
    PREDICTION_SCHEMA,
    PREDICTIONS,
    RUN_INFO,
    VALIDATION_PREDICTIONS,
    RunInfo,
    read_run_info,
    require_columns,
    require_run_dir,
)
from kizashi.jobs.common import write_run
from kizashi.portfolio.run_books import run_portfolio_settings, write_run_strategies

log = logging.getLogger(__name__)

#: Largest absolute difference of ``target`` / ``forward_return_1d`` between members on a row.
TARGET_TOLERANCE = 1e-9
#: How the members' predictions are combined (recorded in ``run.json``'s config).
COMBINE = "mean of per-day percentile ranks (average rank of ties / n)"
KEY = ("date", "code", "horizon")
#: The key of a validation-slice row: slices of different folds may share days.
VALIDATION_KEY = ("fold", "date", "code", "horizon")
LABEL_COLUMNS = ("target", "forward_return_1d")
SELECTION_CAVEAT = (
    "Ensemble: if its members or weights were chosen after looking at their test-window results, "
    "the ensemble is fitted to those test windows and its figures are optimistic."
)


@dataclass
class EnsembleResult:
    """What ``kizashi ensemble`` wrote (the fields the CLI's run summary reads)."""

    run_dir: Path
    info: RunInfo
    summary: dict[int, dict[str, Any]]
    seconds: float


@dataclass
class _Member:
    run: Path
    info: RunInfo
    weight: float


def run_ensemble(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    weights: Sequence[float] | None = None,
) -> EnsembleResult:
    """Combine the predictions of ``run_dirs`` by their per-day rank average and write the run
    directory ``out_dir`` (see the module docstring).

    Args:
        run_dirs: two or more run directories (``kizashi evaluate`` / ``train`` outputs, or
            ensembles); the same directory may appear twice (it then counts twice).
        out_dir: the ensemble's run directory, replaced atomically as a whole; it must not be
            (or contain) a member.
        weights: one non-negative weight per run directory (normalized to sum to 1); None =
            equal weights.

    Raises:
        KizashiError: a member is not a complete run directory, or the members do not agree
            (control flag, folds, fold column, targets), or share no horizon or row; bad
            ``weights``; ``out_dir`` would overwrite a member.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    members = _members(run_dirs, out, weights)
    _check_control(members)
    _check_folds(members)
    horizons = _common_horizons(members)
    joined, lost = _join(members, horizons)
    _check_agreement(members, joined)
    predictions = _ensemble_predictions(members, joined)
    validation = _ensemble_validation(members, horizons)

    first = members[0]
    metrics = _metrics(members)
    portfolio = _portfolio(members)
    fold_rows = [
        _fold_row(fold, h, predictions.filter((pl.col("fold") == fold["index"]) & (pl.col("horizon") == h)))
        for fold in first.info.folds
        for h in horizons
    ]
    info = RunInfo(
        model="ensemble(" + ", ".join(m.info.model for m in members) + ")",
        dataset=", ".join(_unique(m.info.dataset for m in members)),
        horizons=horizons,
        seed=first.info.seed,
        control=first.info.control,
        n_folds=first.info.n_folds,
        folds=first.info.folds,
        features=_unique(f for m in members for f in m.info.features),
        config={
            "ensemble": {
                "members": [
                    {"run_dir": str(m.run), "model": m.info.model, "seed": m.info.seed, "weight": m.weight}
                    for m in members
                ],
                "weights": [m.weight for m in members],
                "combine": COMBINE,
            },
            "metrics": dump_config(metrics),
            "portfolio": dump_config(portfolio),
            "output": {"dir": str(out)},
        },
        caveats=_caveats(members, joined.height, lost),
        source=", ".join(_unique(m.info.source for m in members if m.info.source)),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        references=_references(members, horizons),
    )
    summary = write_run(out, predictions, info, metrics, fold_rows=fold_rows, cost_bps=portfolio.costs.cost_bps)
    if validation is not None:  # what a book is chosen on, never the test days
        with atomic_path(out / VALIDATION_PREDICTIONS) as tmp:
            validation.write_parquet(tmp)
        if not info.control:
            write_run_strategies(out, portfolio)
    seconds = time.perf_counter() - started
    log.info(
        "wrote ensemble run %s (%d members, %s rows) in %.1fs", out, len(members), f"{predictions.height:,}", seconds
    )
    return EnsembleResult(run_dir=out, info=info, summary=summary, seconds=seconds)


# --------------------------------------------------------------------------------------
# members and what must agree between them
# --------------------------------------------------------------------------------------


def _members(run_dirs: Sequence[str | Path], out: Path, weights: Sequence[float] | None) -> list[_Member]:
    runs = [require_run_dir(r) for r in run_dirs]
    if len(runs) < 2:
        raise KizashiError(f"ensemble: needs at least two run directories, got {len(runs)} ({_names(runs)})")
    if weights is None:
        weights = [1.0] * len(runs)
    weights = [float(w) for w in weights]
    if len(weights) != len(runs):
        raise KizashiError(f"ensemble: {len(weights)} weights for {len(runs)} run directories ({_names(runs)})")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise KizashiError(f"ensemble: weights must be finite, non-negative and not all zero, got {weights}")
    total = sum(weights)
    target = out.resolve()
    for run in runs:
        if run.resolve() == target or target in run.resolve().parents:
            raise KizashiError(f"ensemble: --out {out} would overwrite the member run {run}; write elsewhere")
    seen: set[Path] = set()
    for run in runs:
        if run.resolve() in seen:
            log.warning("ensemble: %s is given more than once: it counts once per mention", run)
        seen.add(run.resolve())
    return [_Member(run, read_run_info(run), w / total) for run, w in zip(runs, weights)]


def _check_control(members: list[_Member]) -> None:
    controls = [m.run for m in members if m.info.control]
    if controls and len(controls) < len(members):
        real = [m.run for m in members if not m.info.control]
        raise KizashiError(
            f"ensemble: {_names(controls)} {'is a' if len(controls) == 1 else 'are'} shuffled-target control "
            f"run{'s' if len(controls) > 1 else ''} (run.json control=true), {_names(real)} "
            f"{'is' if len(real) == 1 else 'are'} not: a control is combined only with controls"
        )


def _check_folds(members: list[_Member]) -> None:
    first = members[0]
    for member in members[1:]:
        difference = _fold_difference(first.info.folds, member.info.folds)
        if difference:
            raise KizashiError(
                f"ensemble: {member.run} and {first.run} were evaluated on different folds ({RUN_INFO} `folds`: "
                f"{difference}); an ensemble needs the same walk-forward folds"
            )


def _fold_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str | None:
    """The first difference of two ``run.json`` fold lists (first run's value first), or None."""
    if len(a) != len(b):
        return f"{len(a)} folds vs {len(b)}"
    for fa, fb in zip(a, b):
        for key in sorted(set(fa) | set(fb)):
            if fa.get(key) != fb.get(key):
                return f"fold {fa.get('index', '?')} {key}: {fa.get(key)} vs {fb.get(key)}"
    return None


def _common_horizons(members: list[_Member]) -> list[int]:
    horizons = [h for h in members[0].info.horizons if all(h in m.info.horizons for m in members)]
    for member in members:
        others = sorted(set(member.info.horizons) - set(horizons))
        if others:
            log.info("ensemble: %s: horizon(s) %s not in every member, left out", member.run, others)
    if not horizons:
        shown = "; ".join(f"{m.run}: {m.info.horizons}" for m in members)
        raise KizashiError(f"ensemble: the runs share no horizon ({shown})")
    return horizons


def _read_predictions(
    member: _Member, horizons: list[int], index: int, name: str = PREDICTIONS, key: tuple[str, ...] = KEY
) -> pl.DataFrame:
    """The member's file ``name`` (PREDICTION_SCHEMA) at ``horizons``, unique on ``key``; the
    columns outside ``key`` (of fold, prediction, target, forward_return_1d) suffixed ``_{index}``."""
    path = member.run / name
    frame = pl.read_parquet(path)
    require_columns(frame, list(PREDICTION_SCHEMA), str(path))
    frame = frame.select(
        [pl.col(c).cast(t) for c, t in PREDICTION_SCHEMA.items()]
    ).filter(pl.col("horizon").is_in(horizons))
    duplicated = frame.filter(pl.struct(*key).is_duplicated())
    if duplicated.height:
        example = duplicated.sort(*key).row(0, named=True)
        raise KizashiError(
            f"{path}: {duplicated.height} rows share a ({', '.join(key)}) key, e.g. {_row(example)}"
        )
    return frame.rename({c: f"{c}_{index}" for c in ("fold", "prediction", *LABEL_COLUMNS) if c not in key})


def _inner_join(
    members: list[_Member], frames: list[pl.DataFrame], horizons: list[int], key: tuple[str, ...], what: str
) -> pl.DataFrame:
    """The rows of ``frames`` (one per member, from :func:`_read_predictions`) common to all,
    on ``key``, sorted by it; how many rows each member loses is logged (``what`` names them)."""
    joined = frames[0]
    for frame in frames[1:]:
        joined = joined.join(frame, on=list(key), how="inner")
    for member, frame in zip(members, frames):
        lost = frame.height - joined.height
        log.info(
            "ensemble: %s: %s of its %s %s at horizon(s) %s are common to all, %s left out",
            member.run, f"{joined.height:,}", f"{frame.height:,}", what, horizons, f"{lost:,}",
        )
    return joined.sort(*key)


def _join(members: list[_Member], horizons: list[int]) -> tuple[pl.DataFrame, list[tuple[int, int]]]:
    """One row per (date, code, horizon) of every member: ``fold_i``, ``prediction_i``,
    ``target_i``, ``forward_return_1d_i`` of member ``i``; and (rows left out, rows) per member."""
    frames = [_read_predictions(m, horizons, i) for i, m in enumerate(members)]
    joined = _inner_join(members, frames, horizons, KEY, "rows")
    if joined.height == 0:
        spans = "; ".join(
            f"{m.run}: {f.height:,} rows"
            + (f", {f.get_column('date').min()} .. {f.get_column('date').max()}" if f.height else "")
            for m, f in zip(members, frames)
        )
        raise KizashiError(f"ensemble: the runs share no (date, code, horizon) row at horizons {horizons} ({spans})")
    return joined, [(f.height - joined.height, f.height) for f in frames]


def _missing(column: str) -> pl.Expr:
    return pl.col(column).fill_nan(None).is_null()


def _check_agreement(members: list[_Member], joined: pl.DataFrame) -> None:
    """The fold column (when not part of the key) and the labels of every common row are the
    same in every member."""
    first = members[0]
    for i, member in enumerate(members[1:], start=1):
        fold_in_key = "fold_0" not in joined.columns
        wrong = joined.clear() if fold_in_key else joined.filter(pl.col(f"fold_{i}") != pl.col("fold_0"))
        if wrong.height:
            example = wrong.row(0, named=True)
            raise KizashiError(
                f"ensemble: {member.run} and {first.run} put {wrong.height:,} common rows in different folds, e.g. "
                f"{_row(example)}: fold {example[f'fold_{i}']} vs {example['fold_0']}"
            )
        for column in LABEL_COLUMNS:
            a, b = f"{column}_0", f"{column}_{i}"
            same = (
                (_missing(a) & _missing(b))
                | (pl.col(a) == pl.col(b)).fill_null(False)
                | ((pl.col(a) - pl.col(b)).abs() <= TARGET_TOLERANCE).fill_null(False)
            )
            wrong = joined.filter(~same)
            if wrong.height:
                example = wrong.row(0, named=True)
                raise KizashiError(
                    f"ensemble: {member.run} and {first.run} have different `{column}` on {wrong.height:,} common rows "
                    f"(beyond {TARGET_TOLERANCE:g}), e.g. {_row(example)}: {example[b]!r} vs {example[a]!r}; the "
                    "members must be evaluations of the same dataset"
                )


# --------------------------------------------------------------------------------------
# the combination
# --------------------------------------------------------------------------------------


def _percentile_rank(column: str, group: tuple[str, ...] = ("date", "horizon")) -> pl.Expr:
    """``column``'s average rank / n among the finite values of its ``group`` (a day, at one
    horizon), in (0, 1]; null where not finite."""
    finite = pl.col(column).is_finite().fill_null(False)
    ranks = pl.when(finite).then(pl.col(column)).rank("average").over(*group)
    return ranks / finite.sum().over(*group)


def _ensemble_predictions(
    members: list[_Member], joined: pl.DataFrame, group: tuple[str, ...] = ("date", "horizon"), what: str = "common rows"
) -> pl.DataFrame:
    """PREDICTION_SCHEMA rows: the weighted mean of the members' percentile ranks within each
    ``group``; the first member's fold and labels (checked equal to every member's)."""
    combined = pl.sum_horizontal(
        [_percentile_rank(f"prediction_{i}", group) * m.weight for i, m in enumerate(members)]
    )
    # sum_horizontal skips nulls: a row where any member has no rank has no ensemble prediction.
    incomplete = pl.any_horizontal(
        [~pl.col(f"prediction_{i}").is_finite().fill_null(False) for i in range(len(members))]
    )
    frame = joined.select(
        "date",
        "code",
        pl.col("fold_0" if "fold_0" in joined.columns else "fold").alias("fold"),
        "horizon",
        pl.when(incomplete).then(None).otherwise(combined).alias("prediction"),
        pl.col("target_0").alias("target"),
        pl.col("forward_return_1d_0").alias("forward_return_1d"),
    ).cast(PREDICTION_SCHEMA)
    missing = frame.get_column("prediction").null_count()
    if missing:
        log.warning(
            "ensemble: %s of %s %s have no ensemble prediction (a member's prediction is missing there)",
            f"{missing:,}", f"{frame.height:,}", what,
        )
    return frame


def _ensemble_validation(members: list[_Member], horizons: list[int]) -> pl.DataFrame | None:
    """The ensemble's validation-slice rows (PREDICTION_SCHEMA; module docstring), or None
    with one log line saying why there are none."""
    lacking = [m.run for m in members if not (m.run / VALIDATION_PREDICTIONS).is_file()]
    if lacking:
        log.warning(
            "ensemble: no %s written: %s %s none (an ensemble combines validation slices only when every "
            "member has them)", VALIDATION_PREDICTIONS, _names(lacking), "has" if len(lacking) == 1 else "have",
        )
        return None
    frames = [_read_predictions(m, horizons, i, VALIDATION_PREDICTIONS, VALIDATION_KEY) for i, m in enumerate(members)]
    reason = _validation_disagreement(members, frames)
    if reason is None:
        joined = _inner_join(members, frames, horizons, VALIDATION_KEY, "validation-slice rows")
        if joined.height == 0:
            reason = f"the members share no (fold, date, code, horizon) validation-slice row at horizons {horizons}"
    if reason is not None:
        log.warning("ensemble: no %s written: %s", VALIDATION_PREDICTIONS, reason)
        return None
    _check_agreement(members, joined)
    return _ensemble_predictions(members, joined, ("fold", "date", "horizon"), "common validation-slice rows")


def _validation_disagreement(members: list[_Member], frames: list[pl.DataFrame]) -> str | None:
    """Why the members' validation slices (``frames``, from :func:`_read_predictions`) cannot
    be combined, or None: a member's rows of a fold outside that fold's validation days
    (``run.json``, the same for all members), or members with slices of other (fold, horizon)s."""
    spans = {
        f["index"]: (dt.date.fromisoformat(f["val_first"]), dt.date.fromisoformat(f["val_last"]))
        for f in members[0].info.folds
        if f.get("val_first") and f.get("val_last")
    }
    pairs = []
    for member, frame in zip(members, frames):
        per_fold = frame.group_by("fold").agg(first=pl.col("date").min(), last=pl.col("date").max()).sort("fold")
        for fold, first, last in per_fold.iter_rows():
            val_first, val_last = spans.get(fold, (None, None))
            if val_first is None or first < val_first or last > val_last:
                return (
                    f"{member.run}'s validation rows of fold {fold} ({first} .. {last}) are not inside the fold's "
                    f"validation days ({val_first} .. {val_last}, {RUN_INFO} `folds`)"
                )
        pairs.append(set(frame.select("fold", "horizon").unique().iter_rows()))
    for member, theirs in zip(members[1:], pairs[1:]):
        if theirs != pairs[0]:
            only_first, only_theirs = sorted(pairs[0] - theirs), sorted(theirs - pairs[0])
            return (
                f"{member.run} and {members[0].run} have validation slices of different (fold, horizon)s "
                f"(only in {members[0].run}: {only_first}; only in {member.run}: {only_theirs})"
            )
    return None


def _fold_row(fold: dict[str, Any], horizon: int, predictions: pl.DataFrame) -> dict[str, Any]:
    """One ``folds.csv`` row, the columns of :func:`kizashi.jobs.common.fold_row`, from a
    ``run.json`` fold (``Fold.to_dict``: first / last date and day count of each part);
    ``best_iteration`` is 0: an ensemble fits nothing.

    (:func:`~kizashi.jobs.common.fold_row` needs a :class:`~kizashi.splits.Fold` with every
    date of each part, which ``run.json`` does not keep; the row is the same.)"""
    daily = daily_ic(predictions)
    row: dict[str, Any] = {"fold": fold["index"], "horizon": horizon}
    for name, key in (("train", "train"), ("val", "valid"), ("test", "test")):
        row[f"{key}_start"] = fold.get(f"{name}_first")
        row[f"{key}_end"] = fold.get(f"{name}_last")
    row["best_iteration"] = 0
    row["n_test_days"] = fold.get("test_n_days")
    row["ic_mean"] = summarize_ic(daily.get_column("ic"))["mean"]
    row["rank_ic_mean"] = summarize_ic(daily.get_column("rank_ic"))["mean"]
    return row


# --------------------------------------------------------------------------------------
# run.json of the ensemble
# --------------------------------------------------------------------------------------


def _metrics(members: list[_Member]) -> MetricsConfig:
    """The first member's ``metrics`` settings (defaults when it records none)."""
    raw = [m.info.config.get("metrics") for m in members]
    first = members[0]
    for member, settings in zip(members[1:], raw[1:]):
        if settings != raw[0]:
            log.warning(
                "ensemble: %s was evaluated with other `metrics` settings (%s) than %s (%s); using the latter",
                member.run, settings, first.run, raw[0],
            )
    if raw[0] is None:
        log.info("ensemble: %s records no `metrics` settings; using the defaults", first.run)
        return MetricsConfig()
    return config_from_dict(MetricsConfig, raw[0], f"{first.run / RUN_INFO} (config.metrics)")


def _portfolio(members: list[_Member]) -> PortfolioSettings:
    """The first member's portfolio settings (as ``kizashi strategies`` reads a run's)."""
    settings = [run_portfolio_settings(m.info, str(m.run / RUN_INFO)) for m in members]
    for member, theirs in zip(members[1:], settings[1:]):
        if theirs != settings[0]:
            log.warning(
                "ensemble: %s has other `portfolio` settings (%s) than %s (%s); using the latter",
                member.run, dump_config(theirs), members[0].run, dump_config(settings[0]),
            )
    return settings[0]


def _caveats(members: list[_Member], common_rows: int, lost: list[tuple[int, int]]) -> list[str]:
    """The members' caveats (each once), then the ensemble's own."""
    caveats = _unique(c for m in members for c in m.info.caveats)
    caveats.append(SELECTION_CAVEAT)
    if any(n for n, _ in lost):
        left_out = "; ".join(f"{m.run}: {n:,} of {total:,}" for m, (n, total) in zip(members, lost) if n)
        caveats.append(
            f"Ensemble: only the {common_rows:,} (date, code, horizon) rows common to all {len(members)} members "
            f"are combined and evaluated; the other rows of a member at these horizons ({left_out}) are not "
            "scored, so the members' own figures include rows that the ensemble's do not."
        )
    return caveats


def _references(members: list[_Member], horizons: list[int]) -> dict[str, dict[str, float]]:
    """The reference figures (per name and horizon) on which every member that records them agrees."""
    merged: dict[str, dict[str, float]] = {}
    names = _unique(name for m in members for name in m.info.references)
    for name in names:
        for h in (str(h) for h in horizons):
            values = [m.info.references[name][h] for m in members if h in m.info.references.get(name, {})]
            if not values:
                continue
            if all(_close(v, values[0]) for v in values):
                merged.setdefault(name, {})[h] = values[0]
            else:
                log.warning("ensemble: reference %s at %sd differs between members (%s); left out", name, h, values)
    return merged


def _close(a: float, b: float) -> bool:
    if a is None or b is None:
        return a is b
    return bool(a == b or abs(a - b) <= TARGET_TOLERANCE or (np.isnan(a) and np.isnan(b)))


def _unique(values: Any) -> list[Any]:
    """``values`` without repeats, in first-seen order."""
    return list(dict.fromkeys(values))


def _names(runs: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in runs)


def _row(row: dict[str, Any]) -> str:
    return f"date {row['date']}, code {row['code']}, horizon {row['horizon']}d"


__all__ = ["COMBINE", "TARGET_TOLERANCE", "EnsembleResult", "run_ensemble"]
