"""Portfolios that survive costs: strategies from predictions to positions, tradability,
linear and impact costs, strategy statistics and selection on validation slices.

Modules (one responsibility each):

* :mod:`~kizashi.portfolio.settings`: pydantic settings (strategies with a ``kind``
  discriminator, costs, tradability, market windows, :class:`PortfolioSettings`).
* :mod:`~kizashi.portfolio.strategies`: per-day target-weight rules.
* :mod:`~kizashi.portfolio.tradability`: refused trades keep the old weight.
* :mod:`~kizashi.portfolio.costs`: linear cost, square-root impact, capacity.
* :mod:`~kizashi.portfolio.market`: the market frame (returns, dollar volume, volatility,
  beta, limit flags) from a panel, causally.
* :mod:`~kizashi.portfolio.simulate`: the day loop, daily returns and costs.
* :mod:`~kizashi.portfolio.stats`: statistics per strategy.
* :mod:`~kizashi.portfolio.selection`: choosing on validation, reporting test next to it.
"""

from kizashi.portfolio.costs import capacity, impact_cost, linear_cost
from kizashi.portfolio.market import market_frame
from kizashi.portfolio.overview import strategy_overview
from kizashi.portfolio.selection import Selection, select_by_validation
from kizashi.portfolio.settings import (
    BetaNeutralStrategy,
    CostSettings,
    DecileStrategy,
    EmaStrategy,
    HysteresisStrategy,
    ImpactSettings,
    LongOnlyTopkStrategy,
    MarketSettings,
    PortfolioSettings,
    RebalanceEveryStrategy,
    SectorNeutralStrategy,
    StrategySettings,
    TopkDropoutStrategy,
    TradabilitySettings,
)
from kizashi.portfolio.simulate import PortfolioRun, run_strategies, simulate
from kizashi.portfolio.stats import STAT_FIELDS, strategy_stats, strategy_table
from kizashi.portfolio.strategies import build_strategy
from kizashi.portfolio.tradability import apply_tradability

__all__ = [
    "strategy_overview",
    "STAT_FIELDS",
    "BetaNeutralStrategy",
    "CostSettings",
    "DecileStrategy",
    "EmaStrategy",
    "HysteresisStrategy",
    "ImpactSettings",
    "LongOnlyTopkStrategy",
    "MarketSettings",
    "PortfolioRun",
    "PortfolioSettings",
    "RebalanceEveryStrategy",
    "SectorNeutralStrategy",
    "Selection",
    "StrategySettings",
    "TopkDropoutStrategy",
    "TradabilitySettings",
    "apply_tradability",
    "build_strategy",
    "capacity",
    "impact_cost",
    "linear_cost",
    "market_frame",
    "run_strategies",
    "select_by_validation",
    "simulate",
    "strategy_stats",
    "strategy_table",
]
