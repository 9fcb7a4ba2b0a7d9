"""A first look at what a signal is worth as a book: a small fixed set of strategies run on
one horizon's predictions, with linear costs (``kizashi demo``). The set is fixed in advance,
not chosen on the days it is shown on; the table is for information, and a strategy to trade
is chosen on validation slices (:func:`kizashi.portfolio.selection.select_by_validation`)."""

from __future__ import annotations

import polars as pl

from kizashi.portfolio.settings import (
    CostSettings,
    DecileStrategy,
    EmaStrategy,
    HysteresisStrategy,
    RebalanceEveryStrategy,
    StrategySettings,
    TopkDropoutStrategy,
)
from kizashi.portfolio.simulate import run_strategies
from kizashi.portfolio.stats import strategy_table

#: The overview's strategies, in display order.
OVERVIEW_STRATEGIES: dict[str, StrategySettings] = {
    "daily decile long-short": DecileStrategy(),
    "rebalance every 5 days": RebalanceEveryStrategy(every=5),
    "hysteresis (enter 10%, exit 20%)": HysteresisStrategy(enter_quantile=0.1, exit_quantile=0.2),
    "EMA of scores (half-life 5)": EmaStrategy(halflife=5),
}
TOPK_DROPOUT = "TopkDropout (10% held, 2% replaced a day)"


def overview_strategies(universe: int) -> dict[str, StrategySettings]:
    """:data:`OVERVIEW_STRATEGIES` then TopkDropout holding 10% of ``universe`` (the median
    number of stocks a day) per leg and replacing at most a fifth of them a day."""
    held = max(1, universe // 10)
    return {**OVERVIEW_STRATEGIES, TOPK_DROPOUT: TopkDropoutStrategy(top_k=held, n_drop=max(1, held // 5))}


def median_universe(predictions: pl.DataFrame) -> int:
    """The median number of rows a day of a predictions frame."""
    return int(predictions.group_by("date").len().get_column("len").median() or 0)


def strategy_overview(predictions: pl.DataFrame, horizon: int, cost_bps: float) -> pl.DataFrame:
    """:data:`OVERVIEW_STRATEGIES` on the ``horizon`` rows of a predictions frame (``date,
    code, horizon, prediction, forward_return_1d``), ``cost_bps`` per unit of turnover, no
    impact or tradability limits: one row per strategy (``strategy`` then the statistics of
    :func:`kizashi.portfolio.stats.strategy_table`), then TopkDropout holding 10% of the
    median daily universe per leg and replacing at most a fifth of them a day."""
    rows = predictions.filter(pl.col("horizon") == horizon)
    run = run_strategies(rows, overview_strategies(median_universe(rows)), costs=CostSettings(cost_bps=cost_bps))
    return strategy_table(run.daily)


__all__ = ["OVERVIEW_STRATEGIES", "median_universe", "overview_strategies", "strategy_overview"]
