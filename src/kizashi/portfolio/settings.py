"""Settings of the portfolio library, re-exported from :mod:`kizashi.config` (their one home,
where ``EvaluateConfig.portfolio`` / ``TrainConfig.portfolio`` nest them): named strategies
(one block with a ``kind`` discriminator each), costs, tradability, market windows and
:class:`PortfolioSettings`.
"""

from __future__ import annotations

from kizashi.config import (
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
    SelectionMetric,
    Side,
    StrategySettings,
    TopkDropoutStrategy,
    TradabilitySettings,
)

__all__ = [
    "BetaNeutralStrategy",
    "CostSettings",
    "DecileStrategy",
    "EmaStrategy",
    "HysteresisStrategy",
    "ImpactSettings",
    "LongOnlyTopkStrategy",
    "MarketSettings",
    "PortfolioSettings",
    "RebalanceEveryStrategy",
    "SectorNeutralStrategy",
    "SelectionMetric",
    "Side",
    "StrategySettings",
    "TopkDropoutStrategy",
    "TradabilitySettings",
]
