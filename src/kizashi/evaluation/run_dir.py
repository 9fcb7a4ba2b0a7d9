"""The run directory: what a walk-forward run writes and what reports read.

A run directory (``artifacts/runs/<name>``) holds, all written atomically::

    run.json                 RunInfo: model, dataset, horizons, seed, control flag, the
                             number of folds and each fold's train / val / test date ranges
                             (``folds``: Fold.to_dict() per fold), feature names,
                             config, data caveats, created time, references (e.g. the
                             synthetic oracle's RankIC on the same test days)
    predictions.parquet      one row per (date, code, horizon) of the test windows:
                               date: Date, code: Utf8, fold: Int32, horizon: Int32,
                               prediction: Float64,
                               target: Float64         forward return over ``horizon`` days
                                                       (target_return_{h}d, not normalized)
                               forward_return_1d: Float64   next day's return, used by the
                                                       daily-rebalanced long-short portfolio
    validation_predictions.parquet   the same columns for each fold's validation slice (the
                             early-stopping days, purged from training and test; ``fold``
                             = the fold whose model predicted them): evaluate, train and
                             ensemble write it, ``kizashi strategies`` chooses on it
    daily.parquet            one row per (horizon, date):
                               horizon: Int32, date: Date, n: Int32, ic: Float64,
                               rank_ic: Float64, long_short_gross: Float64,
                               long_short_net: Float64, turnover: Float64
    summary.json / .csv      per horizon: the metrics of ``SUMMARY_FIELDS``
    deciles.csv              horizon, decile (1 = lowest prediction), mean_return, n_days
    folds.csv                per (fold, horizon): fold, horizon, train_start, train_end,
                             valid_start, valid_end, test_start, test_end, best_iteration,
                             n_test_days, ic_mean, rank_ic_mean
    feature_importance.csv   fold, horizon, feature, gain, split (absent for models without one)
    strategies.csv           written by ``kizashi strategies RUN_DIR`` (absent before): books for
                             the signal chosen on the validation slices, per horizon:
                               horizon: Int, strategy: Utf8, part ("validation" | "test"),
                               used_for_selection: Boolean, selected: Boolean, note: Utf8,
                               then the statistics of kizashi.portfolio.stats.STAT_FIELDS
                               (any may be empty);
                             two rows per candidate (validation, then test; ``selected`` on both
                             rows of the candidate with the best validation net Sharpe), then
                             one row ``strategy == WALK_FORWARD_CHOICE``, part "test", neither
                             used for selection nor selected: each fold's test days traded
                             with the candidate chosen on the validation slices of the folds up
                             to it, the figure to quote; its note lists the per-fold choices
    strategy_daily.parquet   written with strategies.csv: the daily test-period returns of
                             every candidate and of WALK_FORWARD_CHOICE, one row per
                             (horizon, strategy, date):
                               horizon: Int32, strategy: Utf8, date: Date, gross: Float64,
                               net: Float64, turnover: Float64
    report/index.html        written by ``kizashi report RUN_DIR`` (+ report/*.png)

Every table is long (a ``horizon`` column), so one reader serves every horizon.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from kizashi.atomic import restore_interrupted_output
from kizashi.errors import KizashiError

RUN_INFO = "run.json"
PREDICTIONS = "predictions.parquet"
# Each fold's (fit's) predictions of its own validation slice, PREDICTION_SCHEMA: written by
# `kizashi evaluate` (every fit), `kizashi train` (every fold) and `kizashi ensemble` (when every
# member has one); read by `kizashi strategies`.
VALIDATION_PREDICTIONS = "validation_predictions.parquet"
DAILY = "daily.parquet"
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
DECILES = "deciles.csv"
FOLDS = "folds.csv"
FEATURE_IMPORTANCE = "feature_importance.csv"
STRATEGIES = "strategies.csv"  # strategies: every candidate's validation and test statistics
STRATEGY_DAILY = "strategy_daily.parquet"  # strategies: daily test returns of every book
# The strategies row (and strategy_daily series) of each fold's test days traded with the
# candidate chosen on the validation slices up to that fold.
WALK_FORWARD_CHOICE = "walk-forward choice"
REPORT_DIR = "report"

PREDICTION_SCHEMA = {
    "date": pl.Date,
    "code": pl.Utf8,
    "fold": pl.Int32,
    "horizon": pl.Int32,
    "prediction": pl.Float64,
    "target": pl.Float64,
    "forward_return_1d": pl.Float64,
}

# The per-horizon summary, in display order.
SUMMARY_FIELDS = (
    "n_days",
    "ic_mean",
    "ic_std",
    "icir",
    "ic_tstat",
    "rank_ic_mean",
    "rank_ic_std",
    "rank_icir",
    "rank_ic_tstat",
    "hit_rate",
    "decile_spread",
    "ls_annual_return",
    "ls_annual_volatility",
    "ls_sharpe",
    "ls_max_drawdown",
    "ls_turnover",
    "ls_annual_return_net",
    "ls_sharpe_net",
)


# How the terminal tables show the summary: (field, label, format), in display order.
SUMMARY_DISPLAY = (
    ("rank_ic_mean", "RankIC (mean daily)", "{:+.4f}"),
    ("rank_ic_std", "RankIC std", "{:.4f}"),
    ("rank_icir", "RankICIR", "{:+.3f}"),
    ("rank_ic_tstat", "RankIC t-stat", "{:+.2f}"),
    ("ic_mean", "IC (mean daily)", "{:+.4f}"),
    ("hit_rate", "days with RankIC > 0", "{:.1%}"),
    ("decile_spread", "top - bottom decile return", "{:+.5f}"),
    ("ls_annual_return", "long-short annual return", "{:+.1%}"),
    ("ls_sharpe", "long-short Sharpe", "{:+.2f}"),
    ("ls_sharpe_net", "long-short Sharpe after costs", "{:+.2f}"),
    ("ls_max_drawdown", "long-short max drawdown", "{:.1%}"),
    ("ls_turnover", "daily turnover", "{:.2f}"),
    ("n_days", "test days", "{:d}"),
)


@dataclass
class RunInfo:
    """``run.json``: what was run, on what, and what a reader must know about the data."""

    model: str
    dataset: str
    horizons: list[int]
    seed: int
    control: bool = False
    n_folds: int = 0
    # One entry per fold run, as kizashi.splits.Fold.to_dict gives it: index, purge_days,
    # embargo_days and {train,val,test}_{first,last,n_days} (ISO dates, trading-day counts).
    folds: list[dict[str, Any]] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    caveats: list[str] = field(default_factory=list)
    source: str = ""
    created: str = ""
    # Reference figures measured on the same test days, e.g. {"oracle_rank_ic_mean": {"1": 0.11}}
    references: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunInfo:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def require_columns(frame: pl.DataFrame, needed: Sequence[str], what: str) -> None:
    """A clear error naming ``what`` (a function or file), the missing columns and the ones
    there, when ``frame`` lacks any of ``needed``."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise KizashiError(f"{what}: missing column(s) {', '.join(missing)}; has {', '.join(frame.columns)}")


def require_run_dir(path: str | Path) -> Path:
    """``path`` as a run directory, or a clear error naming what is missing. A run directory
    whose rewrite was killed in the middle of the swap is first put back
    (:func:`kizashi.atomic.restore_interrupted_output`)."""
    run = Path(path)
    if not run.is_dir():
        restore_interrupted_output(run)
    if not run.is_dir():
        raise KizashiError(f"{run}: no such run directory (run `kizashi evaluate` first)")
    missing = [n for n in (RUN_INFO, PREDICTIONS, DAILY, SUMMARY_JSON) if not (run / n).exists()]
    if missing:
        raise KizashiError(f"{run}: not a complete run directory, missing {', '.join(missing)}")
    return run


def read_run_info(run: str | Path) -> RunInfo:
    return RunInfo.from_dict(json.loads((Path(run) / RUN_INFO).read_text(encoding="utf-8")))


def read_summary(run: str | Path) -> dict[int, dict[str, float]]:
    """{horizon: {metric: value}} from ``summary.json``."""
    raw = json.loads((Path(run) / SUMMARY_JSON).read_text(encoding="utf-8"))
    return {int(h): metrics for h, metrics in raw.items()}
