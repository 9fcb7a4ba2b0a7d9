"""Alarm rules of the monitor, applied to its daily table.

Each rule gives, per day, a value and a severity (``"warn"`` or ``"alarm"``); a day where
a rule is at ``warn`` or ``alarm`` yields one :class:`Alarm` record (the higher severity
only). Thresholds come from :class:`~kizashi.monitoring.settings.MonitorSettings` (``s``):

============== ======================================= ==================== ====================
kind           value                                   warn when            alarm when
============== ======================================= ==================== ====================
score_psi      PSI of the day's raw scores             > s.psi_warn         > s.psi_alarm
score_ks       KS statistic D of the day's raw scores  > s.ks_warn          > s.ks_alarm
feature_psi    PSI of one watched feature (subject)    > s.feature_psi_warn > s.feature_psi_alarm
coverage       stocks scored / reference universe      < s.coverage_warn    < s.min_coverage
rank_ic        upper end of the rolling RankIC band    —                    < s.rank_ic_floor
rank_ic_decay  upper end of the rolling RankIC band    < fraction × ref     —
============== ======================================= ==================== ====================

(``fraction × ref`` = ``s.rank_ic_decay_fraction`` × the reference mean RankIC; the rule is
off when the reference has no RankIC or its mean is not positive.) The RankIC rules need
``rank_ic_n ≥ s.rank_ic_min_days`` values in the window. No record is made on the first
``s.min_days − 1`` days of the stream (day index ``< s.min_days − 1``). A missing value
(a day without scores, a day without a realized RankIC) raises nothing, except coverage,
which is 0 on a day without a finite score.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from kizashi.data.schema import DATE
from kizashi.monitoring.reference import MonitorReference
from kizashi.monitoring.settings import MonitorSettings

Severity = Literal["warn", "alarm"]
SEVERITIES: tuple[Severity, ...] = ("warn", "alarm")
KINDS = ("score_psi", "score_ks", "feature_psi", "coverage", "rank_ic", "rank_ic_decay")


@dataclass(frozen=True)
class Alarm:
    """One rule at ``warn`` or ``alarm`` on one day.

    ``subject`` is what the value is about: ``"score"``, a feature name, ``"universe"`` or
    ``"rank_ic"``; ``threshold`` is the threshold that was crossed (the alarm one when the
    severity is ``alarm``).
    """

    date: dt.date
    kind: str
    severity: Severity
    value: float
    threshold: float
    subject: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["date"] = iso_date(self.date)
        return out


def iso_date(value: Any) -> str:
    """A date as ISO text (``str`` of anything else, e.g. a date column given as text)."""
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)


@dataclass(frozen=True)
class _Rule:
    kind: str
    subject: str
    value_column: str
    direction: Literal["above", "below"]
    warn: float | None
    alarm: float | None
    what: str
    threshold_note: str = ""


def _severity(values: np.ndarray, rule: _Rule) -> np.ndarray:
    """``[days]`` 0 (quiet), 1 (warn) or 2 (alarm); NaN values are quiet."""
    out = np.zeros(values.shape, dtype=np.int8)
    finite = np.isfinite(values)
    for level, threshold in ((1, rule.warn), (2, rule.alarm)):
        if threshold is None:
            continue
        crossed = values > threshold if rule.direction == "above" else values < threshold
        out[finite & crossed] = level
    return out


def _rules(settings: MonitorSettings, reference: MonitorReference, feature_columns: dict[str, str]) -> list[_Rule]:
    s = settings
    rules = [
        _Rule("score_psi", "score", "score_psi", "above", s.psi_warn, s.psi_alarm, "PSI of the scores"),
        _Rule("score_ks", "score", "score_ks", "above", s.ks_warn, s.ks_alarm, "KS statistic of the scores"),
        _Rule("coverage", "universe", "coverage", "below", s.coverage_warn, s.min_coverage,
              "share of the reference universe scored"),
        _Rule("rank_ic", "rank_ic", "rank_ic_upper", "below", None, s.rank_ic_floor,
              f"upper end of the {s.rank_ic_window}-day RankIC band"),
    ]
    if reference.rank_ic_mean is not None and reference.rank_ic_mean > 0 and s.rank_ic_decay_fraction > 0:
        rules.append(_Rule("rank_ic_decay", "rank_ic", "rank_ic_upper", "below",
                           s.rank_ic_decay_fraction * reference.rank_ic_mean, None,
                           f"upper end of the {s.rank_ic_window}-day RankIC band",
                           f" = {s.rank_ic_decay_fraction:g} x reference RankIC {reference.rank_ic_mean:+.4f}"))
    for feature, column in feature_columns.items():
        rules.append(_Rule("feature_psi", feature, column, "above", s.feature_psi_warn, s.feature_psi_alarm,
                           f"PSI of feature {feature!r}"))
    return rules


def evaluate_alarms(
    daily: pl.DataFrame,
    settings: MonitorSettings,
    reference: MonitorReference,
    feature_columns: dict[str, str] | None = None,
) -> list[Alarm]:
    """All alarm records of a daily table, sorted by (date, kind, subject).

    Args:
        daily: ``[days]`` frame sorted by date with ``date`` and the value columns of the rules
            (``score_psi, score_ks, coverage, rank_ic_upper, rank_ic_n`` and the feature
            columns); a missing column switches its rule off.
        feature_columns: feature name -> its PSI column in ``daily``.
    """
    feature_columns = feature_columns or {}
    dates = daily[DATE].to_list()
    allowed = np.arange(daily.height) >= settings.min_days - 1
    if "rank_ic_n" in daily.columns:
        enough_ic = daily["rank_ic_n"].fill_null(0).to_numpy() >= settings.rank_ic_min_days
    else:
        enough_ic = np.zeros(daily.height, dtype=bool)
    found: list[Alarm] = []
    for rule in _rules(settings, reference, feature_columns):
        if rule.value_column not in daily.columns:
            continue
        values = daily[rule.value_column].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        level = _severity(values, rule)
        gate = allowed & (enough_ic if rule.kind.startswith("rank_ic") else True)
        for i in np.flatnonzero((level > 0) & gate):
            severity: Severity = SEVERITIES[level[i] - 1]
            threshold = float(rule.alarm if severity == "alarm" else rule.warn)  # type: ignore[arg-type]
            relation = ">" if rule.direction == "above" else "<"
            found.append(Alarm(
                date=dates[i], kind=rule.kind, severity=severity, value=float(values[i]),
                threshold=threshold, subject=rule.subject,
                message=(f"{rule.what} {values[i]:.4g} {relation} {severity} threshold "
                         f"{threshold:.4g}{rule.threshold_note}"),
            ))
    found.sort(key=lambda a: (a.date, KINDS.index(a.kind), a.subject))
    return found


def first_dates(alarms: Sequence[Alarm], severity: Severity = "alarm") -> dict[str, dt.date]:
    """The first date of each kind among ``alarms`` of ``severity`` (kinds without one are absent)."""
    first: dict[str, dt.date] = {}
    for alarm in alarms:
        if alarm.severity == severity and (alarm.kind not in first or alarm.date < first[alarm.kind]):
            first[alarm.kind] = alarm.date
    return dict(sorted(first.items(), key=lambda item: KINDS.index(item[0])))
