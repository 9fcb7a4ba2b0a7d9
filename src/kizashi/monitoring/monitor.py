"""Daily monitoring of a signal stream against its reference (:func:`run_monitor`).

For every date of the signals frame (the stream's calendar, day 0 = its first date) the
monitor computes, all days at once:

* ``n_rows`` / ``n_scored``: rows of the day and rows with a finite score (rows with a null
  or non-finite score are counted, not scored);
* ``coverage = n_scored / reference.universe_size``;
* ``score_mean`` / ``score_std`` (ddof = 0) of the finite scores;
* ``score_psi`` and ``score_ks``: PSI and the KS statistic of the day's **raw** scores against
  the reference's pooled raw scores (:mod:`kizashi.monitoring.drift`). Raw, not per-day
  standardized: drift of a model's output *is* a change of its scale or location, which
  standardizing would hide. A model whose output is already standardized per day makes the
  two the same; then the monitor sees only changes of shape;
* per watched feature ``f``: its PSI that day (the ``feature_psi`` table, one column per
  feature), and in the daily table ``feature_psi_max`` (the largest) and
  ``feature_psi_worst`` (which feature);
* with realized returns: ``n_realized`` and ``rank_ic`` (daily RankIC of the score against
  the realized return), and the rolling ``rank_ic_n, rank_ic_mean, rank_ic_sd, rank_ic_se,
  rank_ic_lower, rank_ic_upper`` on the days with a RankIC (:mod:`kizashi.monitoring.rank_ic`).

The alarm records follow the rules of :mod:`kizashi.monitoring.alarms`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from kizashi.data.schema import DATE
from kizashi.errors import KizashiError
from kizashi.monitoring.alarms import KINDS, Alarm, Severity, evaluate_alarms, first_dates, iso_date
from kizashi.monitoring.drift import daily_counts, daily_ks, daily_psi
from kizashi.monitoring.frames import check_frame, day_index, non_finite_count, require_same_keys
from kizashi.monitoring.rank_ic import realized_rank_ic, rolling_rank_ic
from kizashi.monitoring.reference import MonitorReference
from kizashi.monitoring.settings import MonitorSettings

logger = logging.getLogger(__name__)

# Rule kind -> the daily column whose last finite value dates "the latest evaluation".
_KIND_COLUMN = {"score_psi": "score_psi", "score_ks": "score_ks", "coverage": "coverage",
                "rank_ic": "rank_ic_upper", "rank_ic_decay": "rank_ic_upper",
                "feature_psi": "feature_psi_max"}
KS_SAMPLING_ALPHA = 0.01


@dataclass
class MonitorResult:
    """What :func:`run_monitor` found.

    ``daily``: ``[days]`` table (module docstring); ``feature_psi``: ``[days]`` frame ``date``
    + one PSI column per watched feature (only ``date`` when none); ``alarms``: the records,
    sorted by date; ``last_evaluated``: per rule kind, the last date its value exists (the
    latest RankIC lags the stream by the return horizon); ``sampling_floor``: the no-drift
    levels of PSI and KS at the stream's median number of stocks a day.
    """

    daily: pl.DataFrame
    feature_psi: pl.DataFrame
    alarms: list[Alarm]
    settings: MonitorSettings
    reference: MonitorReference
    last_evaluated: dict[str, dt.date] = field(default_factory=dict)
    sampling_floor: dict[str, float | None] = field(default_factory=dict)

    @property
    def first_alarms(self) -> dict[str, dt.date]:
        """Kind -> the first date it reached ``alarm``."""
        return first_dates(self.alarms, "alarm")

    @property
    def first_warnings(self) -> dict[str, dt.date]:
        """Kind -> the first date it reached ``warn`` (alarm days not counted)."""
        return first_dates(self.alarms, "warn")

    def first_alarm(self, kind: str, severity: Severity = "alarm") -> dt.date | None:
        if kind not in KINDS:
            raise KizashiError(f"unknown alarm kind {kind!r}; kinds: {', '.join(KINDS)}")
        return first_dates(self.alarms, severity).get(kind)

    def active_alarms(self) -> list[Alarm]:
        """The records dated on the last day their rule was evaluated: what is wrong now."""
        return [a for a in self.alarms if self.last_evaluated.get(a.kind) == a.date]

    def status(self) -> str:
        """``"alarm"``, ``"warn"`` or ``"ok"``: the worst severity among :meth:`active_alarms`."""
        active = {a.severity for a in self.active_alarms()}
        return "alarm" if "alarm" in active else "warn" if "warn" in active else "ok"


def _score_stats(frame: pl.DataFrame, calendar: pl.Series, score: str) -> pl.DataFrame:
    stats = (frame.filter(pl.col(score).is_finite())
             .group_by(DATE)
             .agg(score_mean=pl.col(score).mean(), score_std=pl.col(score).std(ddof=0)))
    return pl.DataFrame({DATE: calendar}).join(stats, on=DATE, how="left", maintain_order="left")


def _feature_psi(features: pl.DataFrame, signals: pl.DataFrame, reference: MonitorReference,
                 calendar: pl.Series, settings: MonitorSettings) -> pl.DataFrame:
    """``[days]`` frame ``date`` + the PSI of every watched feature on every day."""
    watched = list(reference.features)
    missing = [f for f in watched if f not in features.columns]
    if missing:
        raise KizashiError(f"features: the reference watches {', '.join(missing)}, missing from the "
                           f"features frame (has {', '.join(features.columns[:12])}...)")
    table = check_frame(features, watched, "features")
    require_same_keys(table, signals, "features")
    day = day_index(table[DATE], calendar)
    outside = int((day < 0).sum())
    if outside:
        logger.info("features: %d row(s) on dates without signals are not monitored", outside)
    inside = day >= 0
    out = {DATE: calendar}
    for name in watched:
        values = table[name].to_numpy()[inside]
        dropped = int((~np.isfinite(values)).sum())
        if dropped:
            logger.info("features: %s has %d null or non-finite value(s); not in its PSI", name, dropped)
        out[name] = daily_psi(day[inside], values, calendar.len(), reference.features[name],
                              settings.psi_epsilon)
    return pl.DataFrame(out)


def _rank_ic_columns(frame: pl.DataFrame, realized: pl.DataFrame, calendar: pl.Series,
                     score: str, return_column: str, settings: MonitorSettings) -> pl.DataFrame:
    """``[days]`` frame ``date, n_realized, rank_ic`` + the rolling columns (null on days
    without a RankIC)."""
    returns = check_frame(realized, [return_column], "realized returns")
    require_same_keys(returns, frame, "realized returns")
    daily = realized_rank_ic(frame, returns, score_column=score, return_column=return_column)
    observed = daily.filter(pl.col("rank_ic").is_finite())
    rolling = rolling_rank_ic(observed["rank_ic"].to_numpy(), settings.rank_ic_window,
                              settings.rank_ic_z, settings.rank_ic_nw_lags)
    observed = observed.select(DATE).with_columns(
        pl.Series(name, values, dtype=pl.Int32 if name == "rank_ic_n" else pl.Float64)
        for name, values in rolling.items())
    logger.info("realized returns: RankIC on %d of %d signal days", observed.height, calendar.len())
    return (pl.DataFrame({DATE: calendar})
            .join(daily, on=DATE, how="left", maintain_order="left")
            .join(observed, on=DATE, how="left", maintain_order="left")
            .with_columns(pl.col("rank_ic").fill_nan(None)))


def _sampling_floor(n_scored: np.ndarray, reference: MonitorReference,
                    settings: MonitorSettings) -> dict[str, float | None]:
    """No-drift levels at the median day: ``E[PSI] ≈ (B − 1)(1/N + 1/M)`` and the KS level
    exceeded with probability ``KS_SAMPLING_ALPHA``, ``sqrt(ln(2/α) / (2 N'))`` with
    ``N' = N M / (N + M)``; a warning is logged when they come near the warn thresholds."""
    present = n_scored[n_scored > 0]
    if present.size == 0:
        return {"median_stocks": None, "psi_expected": None, "ks_level": None}
    n = float(np.median(present))
    m = float(reference.scores.n)
    bins = len(reference.scores.edges) + 1
    psi_expected = (bins - 1) * (1.0 / n + 1.0 / m)
    ks_level = math.sqrt(math.log(2.0 / KS_SAMPLING_ALPHA) / (2.0 * n * m / (n + m)))
    if psi_expected > settings.psi_warn / 3 or ks_level > settings.ks_warn:
        logger.warning(
            "with %.0f stocks a day, PSI is about %.3f and KS exceeds %.3f on %.0f%% of days "
            "without any drift: the thresholds (psi_warn %.3g, ks_warn %.3g) will raise false "
            "warnings; raise them or lower n_bins", n, psi_expected, ks_level,
            100 * KS_SAMPLING_ALPHA, settings.psi_warn, settings.ks_warn)
    return {"median_stocks": n, "psi_expected": psi_expected, "ks_level": ks_level}


def _last_evaluated(daily: pl.DataFrame) -> dict[str, dt.date]:
    out: dict[str, dt.date] = {}
    for kind, column in _KIND_COLUMN.items():
        if column in daily.columns:
            dates = daily.filter(pl.col(column).cast(pl.Float64).is_finite())[DATE]
            if dates.len():
                out[kind] = dates.max()
    return out


def run_monitor(
    reference: MonitorReference,
    signals: pl.DataFrame,
    *,
    features: pl.DataFrame | None = None,
    realized: pl.DataFrame | None = None,
    settings: MonitorSettings | None = None,
    return_column: str = "realized",
) -> MonitorResult:
    """Monitor a stream of signals against ``reference``.

    Args:
        reference: from :func:`~kizashi.monitoring.reference.build_reference`.
        signals: ``[rows]`` frame ``date, code, <reference.score_column>``; its dates are the
            monitored days.
        features: ``[rows]`` frame ``date, code`` + every feature the reference watches
            (required when it watches any; rows on dates without signals are ignored).
        realized: ``[rows]`` frame ``date, code, <return_column>``: the forward return realized
            after each signal date, as far as it is known.
        settings: thresholds and windows (defaults: :class:`MonitorSettings`).
    Returns:
        :class:`MonitorResult`.
    """
    settings = settings or MonitorSettings()
    score = reference.score_column
    frame = check_frame(signals, [score], "signals")
    if frame.height == 0:
        raise KizashiError("signals: no rows to monitor")
    dropped = non_finite_count(frame, score)
    if dropped:
        logger.info("signals: %d of %d rows have a null or non-finite score (counted, not scored)",
                    dropped, frame.height)
    calendar = frame[DATE].unique().sort()
    n_days = calendar.len()
    day = day_index(frame[DATE], calendar)
    values = frame[score].to_numpy()
    n_scored = daily_counts(day, values, n_days)
    daily = _score_stats(frame, calendar, score).select(
        DATE,
        pl.Series("n_rows", np.bincount(day, minlength=n_days), dtype=pl.Int32),
        pl.Series("n_scored", n_scored, dtype=pl.Int32),
        pl.Series("coverage", n_scored / reference.universe_size, dtype=pl.Float64),
        "score_mean", "score_std",
        pl.Series("score_psi", daily_psi(day, values, n_days, reference.scores, settings.psi_epsilon)),
        pl.Series("score_ks", daily_ks(day, values, n_days, reference.scores.value_array())),
    ).with_columns(pl.col("score_psi", "score_ks").fill_nan(None))

    feature_psi = pl.DataFrame({DATE: calendar})
    if reference.features:
        if features is None:
            raise KizashiError(f"run_monitor: the reference watches {len(reference.features)} feature(s) "
                               f"({', '.join(list(reference.features)[:3])}...); pass the features frame")
        feature_psi = _feature_psi(features, frame, reference, calendar, settings)
        psi_matrix = feature_psi.drop(DATE).to_numpy()
        has_value = np.isfinite(psi_matrix).any(axis=1)
        filled = np.where(np.isfinite(psi_matrix), psi_matrix, -np.inf)
        worst = np.argmax(filled, axis=1)
        names = np.asarray(list(reference.features), dtype=object)
        daily = daily.with_columns(
            pl.Series("feature_psi_max", np.where(has_value, filled.max(axis=1), np.nan)).fill_nan(None),
            pl.Series("feature_psi_worst", np.where(has_value, names[worst], None), dtype=pl.Utf8),
        )
        feature_psi = feature_psi.with_columns(pl.exclude(DATE).fill_nan(None))

    if realized is not None:
        ic = _rank_ic_columns(frame, realized, calendar, score, return_column, settings)
        daily = daily.hstack(ic.drop(DATE))
    else:
        logger.info("no realized returns given: RankIC not monitored")

    feature_columns = {name: f"__psi__{name}" for name in reference.features}
    checked = daily.hstack(feature_psi.drop(DATE).rename(feature_columns)) if feature_columns else daily
    alarms = evaluate_alarms(checked, settings, reference, feature_columns)
    result = MonitorResult(
        daily=daily, feature_psi=feature_psi, alarms=alarms, settings=settings, reference=reference,
        last_evaluated=_last_evaluated(daily), sampling_floor=_sampling_floor(n_scored, reference, settings),
    )
    logger.info("monitor: %d day(s) %s .. %s, %d alarm record(s), first alarms %s, status %s",
                n_days, calendar[0], calendar[-1], len(alarms),
                {k: str(v) for k, v in result.first_alarms.items()} or "none", result.status())
    return result


def result_to_dict(result: MonitorResult) -> dict[str, Any]:
    """The JSON-ready content of ``monitor.json``: status, first alarm dates, settings,
    reference summary, sampling floor, alarms, the daily table and the feature PSI table
    (dates as ISO strings, NaN as null)."""
    ref = result.reference
    return {
        "format": "kizashi.monitor",
        "version": 1,
        "status": result.status(),
        "first_alarm": {k: iso_date(v) for k, v in result.first_alarms.items()},
        "first_warning": {k: iso_date(v) for k, v in result.first_warnings.items()},
        "last_evaluated": {k: iso_date(v) for k, v in result.last_evaluated.items()},
        "settings": result.settings.model_dump(mode="json"),
        "reference": {
            "score_column": ref.score_column, "first_date": ref.first_date, "last_date": ref.last_date,
            "n_days": ref.n_days, "universe_size": ref.universe_size, "n_bins": ref.n_bins,
            "score_mean": ref.scores.mean, "score_std": ref.scores.std,
            "features": list(ref.features), "rank_ic_mean": ref.rank_ic_mean,
            "rank_ic_sd": ref.rank_ic_sd, "rank_ic_n": ref.rank_ic_n,
        },
        "sampling_floor": result.sampling_floor,
        "alarms": [a.to_dict() for a in result.alarms],
        "active_alarms": [a.to_dict() for a in result.active_alarms()],
        "daily": _records(result.daily),
        "feature_psi": _records(result.feature_psi),
    }


def _records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, (dt.date, dt.datetime)):
            return iso_date(value)
        return value

    return [{k: clean(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
