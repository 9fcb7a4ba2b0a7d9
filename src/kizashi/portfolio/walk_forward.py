"""A book for a walk-forward signal, chosen fold by fold on validation slices only.

Inputs: one horizon's predictions of the test windows (``date, code, fold, prediction``
and ``forward_return_1d`` when no market frame is given) and of each fit's **validation
slice** (the same columns; slices of different folds may share dates, so each fold's slice
is its own book), the folds' test date ranges, and :class:`PortfolioSettings`.

* Every candidate (``settings.strategies``, or the standard set of
  :func:`kizashi.portfolio.overview.overview_strategies` sized to the median daily universe
  of the test predictions) is simulated on every fold's validation slice and on the test
  period (one continuous book).
* **Fold by fold**: fold ``k``'s book is the candidate with the best ``selection_metric``
  over the validation slices of folds ``0..k`` only. Fold ``k``'s slice ends before fold
  ``k``'s test days, so no choice reads a day it is judged on; a later fold's slice can lie
  inside fold ``k``'s test window, so it is never used for fold ``k``.
* Those choices' test books on their folds' test days, spliced into one series, give the
  row ``walk-forward choice``: **the figure to quote**. Splicing ignores the turnover of
  switching books at a fold boundary (at most one rebalance per boundary).
* Every candidate's own validation and test figures are shown beside it (test figures are
  marked as not used for any choice); the choice over every fold's slice is the book to
  trade from now on.

The validation slices also early-stopped the model, so their figures lean optimistic;
they are still the only days a choice may read.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from kizashi.config import PortfolioSettings, StrategySettings
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import WALK_FORWARD_CHOICE
from kizashi.portfolio.overview import median_universe, overview_strategies
from kizashi.portfolio.selection import Selection, select_by_validation
from kizashi.portfolio.simulate import run_strategies
from kizashi.portfolio.stats import strategy_stats

log = logging.getLogger(__name__)

#: Columns of the daily test series kept per candidate (``strategy_daily.parquet``).
DAILY_SERIES_COLUMNS = ("gross", "net", "turnover")


@dataclass(frozen=True)
class TestWindow:
    """One fold's test date range (inclusive)."""

    fold: int
    first: dt.date
    last: dt.date


@dataclass(frozen=True)
class WalkForwardChoice:
    """The result of :func:`choose_walk_forward` for one horizon.

    Attributes:
        horizon: the predictions' horizon in days.
        selection: the choice over every fold's validation slice (the book to trade now)
            with every candidate's validation and test rows.
        per_fold: fold index -> the candidate chosen on the slices of folds ``0..k``.
        walk_forward: statistics of the spliced test series of those choices.
        table: ``horizon`` then the selection table's columns, plus the ``walk-forward
            choice`` row (part ``test``, not used for selection).
        daily: ``horizon, strategy, date, gross, net, turnover``: every candidate's test
            series and the spliced ``walk-forward choice`` series.
    """

    horizon: int
    selection: Selection
    per_fold: dict[int, str]
    walk_forward: dict[str, Any]
    table: pl.DataFrame
    daily: pl.DataFrame


def candidate_strategies(settings: PortfolioSettings, test: pl.DataFrame) -> dict[str, StrategySettings]:
    """``settings.strategies``, or the standard set sized to ``test``'s median daily universe."""
    return dict(settings.strategies) if settings.strategies is not None else overview_strategies(median_universe(test))


def choose_walk_forward(
    test: pl.DataFrame,
    validation: pl.DataFrame,
    windows: Sequence[TestWindow],
    horizon: int,
    settings: PortfolioSettings | None = None,
    *,
    market: pl.DataFrame | None = None,
    periods_per_year: int = 252,
) -> WalkForwardChoice:
    """Choose a book fold by fold on validation slices (module docstring).

    Args:
        test: ``[rows]`` one horizon's test predictions (``date, code, fold, prediction``,
            ``forward_return_1d`` without a market frame).
        validation: ``[rows]`` the same columns on every fold's validation slice.
        windows: each fold's test date range.
        horizon: the predictions' horizon (labels the outputs).
        settings: candidates, costs, tradability, selection metric (default: the standard set, 10 bp).
        market: ``[rows]`` market frame (:func:`kizashi.portfolio.market.market_frame`) for
            tradability and impact; None = the predictions' own returns, every trade allowed.
        periods_per_year: annualization factor.
    """
    settings = settings or PortfolioSettings()
    if validation.is_empty():
        raise KizashiError(f"choose_walk_forward ({horizon}d): no validation-slice predictions to choose on")
    if settings.costs.impact is not None and market is None:
        raise KizashiError(
            "portfolio.costs.impact needs a market frame (dollar volume, volatility) built from the run's input panel"
        )
    candidates = candidate_strategies(settings, test)
    options = {"market": market, "costs": settings.costs, "tradability": settings.tradability}
    if market is None:  # the predictions' returns and no market data: every trade goes through
        options["tradability"] = settings.tradability.model_copy(update={"enforce": False})
    on_validation = run_strategies(validation, candidates, by=("fold",), **options).daily
    on_test = run_strategies(test, candidates, **options).daily
    metric = settings.selection_metric
    selection = select_by_validation(on_validation, on_test, metric, periods_per_year)

    per_fold: dict[int, str] = {}
    spliced = []
    for window in sorted(windows, key=lambda w: w.fold):
        seen = on_validation.filter(pl.col("fold") <= window.fold)
        if seen.is_empty():
            continue
        per_fold[window.fold] = select_by_validation(seen, on_test, metric, periods_per_year).selected
        spliced.append(
            on_test.filter(
                (pl.col("strategy") == per_fold[window.fold]) & pl.col("date").is_between(window.first, window.last)
            )
        )
    chosen = pl.concat(spliced).sort("date") if spliced else on_test.clear()
    walk_forward = strategy_stats(chosen, periods_per_year) if spliced else {}
    note = "each fold's test days traded with the choice on the slices of folds up to it: " + ", ".join(
        f"{k}: {name}" for k, name in per_fold.items()
    )
    row = {"strategy": WALK_FORWARD_CHOICE, "part": "test", "used_for_selection": False, "selected": False,
           "note": note, **walk_forward}
    table = pl.concat([selection.table, pl.DataFrame([row], schema=selection.table.schema)], how="vertical")
    table = table.select(pl.lit(horizon, pl.Int32).alias("horizon"), pl.all())
    daily = pl.concat(
        [
            on_test.select("strategy", "date", *DAILY_SERIES_COLUMNS),
            chosen.select(pl.lit(WALK_FORWARD_CHOICE).alias("strategy"), "date", *DAILY_SERIES_COLUMNS),
        ]
    ).select(pl.lit(horizon, pl.Int32).alias("horizon"), pl.all())
    log.info("%dd books chosen on validation slices, per fold %s; to trade now: %s", horizon, per_fold,
             selection.selected)
    return WalkForwardChoice(horizon, selection, per_fold, walk_forward, table, daily)


__all__ = ["DAILY_SERIES_COLUMNS", "TestWindow", "WalkForwardChoice", "candidate_strategies", "choose_walk_forward"]
