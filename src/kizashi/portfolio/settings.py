"""Settings of the portfolio library: strategies, costs, tradability, market data.

Every model subclasses :class:`kizashi.config.StrictModel` (unknown keys are errors), so a
block can later be nested into a job config unchanged, e.g. ``EvaluateConfig.portfolio:
PortfolioSettings = Field(default_factory=PortfolioSettings)``. A strategy is one block with a
``kind`` discriminator::

    strategies:
      daily_decile: {kind: decile}
      weekly:       {kind: rebalance_every, every: 5}
      sticky:       {kind: hysteresis, enter_quantile: 0.1, exit_quantile: 0.2}
      smooth:       {kind: ema, halflife: 5}
      qlib:         {kind: topk_dropout, top_k: 50, n_drop: 5}
      long_only:    {kind: long_only_topk, top_k: 50}
      by_sector:    {kind: sector_neutral}
      hedged:       {kind: beta_neutral}

Leg sizes follow :mod:`kizashi.evaluation.backtest`: ``top_k`` names if set, else
``max(1, floor(quantile * n))`` of the day's ``n`` eligible names, capped at ``n // 2`` for a
long-short book (at ``n`` for a long-only one).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from kizashi.config import StrictModel

Side = Literal["long_short", "long_only"]


class _Legs(StrictModel):
    """Leg size: ``top_k`` names per leg, else ``quantile`` of the day's eligible names."""

    top_k: int | None = Field(None, ge=1, description="names per leg; null = use quantile")
    quantile: float = Field(
        0.1, gt=0, le=0.5, description="share of the day's eligible names per leg"
    )


class DecileStrategy(_Legs):
    """Today's daily-rebalanced equal-weight top/bottom long-short (evaluation.backtest)."""

    kind: Literal["decile"] = "decile"


class RebalanceEveryStrategy(_Legs):
    """The decile book chosen every ``every`` portfolio days and held in between."""

    kind: Literal["rebalance_every"] = "rebalance_every"
    every: int = Field(5, ge=1, description="portfolio days between rebalances")
    offset: int = Field(0, ge=0, description="first rebalance on portfolio day `offset % every`")
    side: Side = "long_short"


class HysteresisStrategy(StrictModel):
    """Rank buffer: a name enters a leg in the top ``enter_quantile``, leaves below ``exit_quantile``."""

    kind: Literal["hysteresis"] = "hysteresis"
    enter_quantile: float = Field(0.1, gt=0, le=0.5)
    exit_quantile: float = Field(0.2, gt=0, le=0.5)
    side: Side = "long_short"

    @model_validator(mode="after")
    def _ordered(self) -> HysteresisStrategy:
        if self.exit_quantile < self.enter_quantile:
            raise ValueError(
                f"exit_quantile ({self.exit_quantile}) must be >= enter_quantile ({self.enter_quantile})"
            )
        return self


class EmaStrategy(_Legs):
    """The decile book on an exponential moving average of each name's (normalized) score."""

    kind: Literal["ema"] = "ema"
    halflife: float = Field(5.0, gt=0, description="portfolio days for a score's weight to halve")
    normalize: Literal["rank", "zscore", "none"] = Field(
        "rank", description="per-day transform of the predictions before smoothing"
    )
    side: Side = "long_short"


class TopkDropoutStrategy(StrictModel):
    """Qlib's TopkDropout: hold ``top_k`` names per leg, replace at most ``n_drop`` per day."""

    kind: Literal["topk_dropout"] = "topk_dropout"
    top_k: int = Field(50, ge=1)
    n_drop: int = Field(5, ge=0)
    side: Side = "long_short"


class LongOnlyTopkStrategy(_Legs):
    """Daily equal-weight long-only top names; judged against the equal-weight universe (IR)."""

    kind: Literal["long_only_topk"] = "long_only_topk"
    top_k: int | None = Field(50, ge=1, description="names held; null = use quantile")


class SectorNeutralStrategy(StrictModel):
    """Long top / short bottom ``quantile`` within each sector; sector budgets ~ sector size."""

    kind: Literal["sector_neutral"] = "sector_neutral"
    quantile: float = Field(0.1, gt=0, le=0.5)


class BetaNeutralStrategy(_Legs):
    """The decile book with its legs scaled so that ``sum_i w_i * beta_i = 0`` (gross kept at 2)."""

    kind: Literal["beta_neutral"] = "beta_neutral"


StrategySettings = Annotated[
    DecileStrategy
    | RebalanceEveryStrategy
    | HysteresisStrategy
    | EmaStrategy
    | TopkDropoutStrategy
    | LongOnlyTopkStrategy
    | SectorNeutralStrategy
    | BetaNeutralStrategy,
    Field(discriminator="kind"),
]


class ImpactSettings(StrictModel):
    """Square-root market impact (see :mod:`kizashi.portfolio.costs`)."""

    book_size: float = Field(
        1e8, gt=0, description="capital of the book, currency units (a long leg of 1 = book_size)"
    )
    coefficient: float = Field(1.0, ge=0, description="Y of cost = Y * sigma * sqrt(participation)")
    volatility: float | None = Field(
        None,
        gt=0,
        description="daily volatility for every name; null = the market's `volatility` column",
    )


class CostSettings(StrictModel):
    """Linear cost per unit of turnover plus an optional square-root impact term."""

    cost_bps: float = Field(
        10.0, ge=0, description="one-way cost per unit of turnover, basis points"
    )
    impact: ImpactSettings | None = None


class TradabilitySettings(StrictModel):
    """Whether blocked trades are refused (see :mod:`kizashi.portfolio.tradability`)."""

    enforce: bool = Field(True, description="refuse trades the market frame marks as impossible")


class MarketSettings(StrictModel):
    """How :func:`kizashi.portfolio.market.market_frame` derives the market columns from a panel."""

    dollar_volume_window: int = Field(
        20, ge=1, description="sessions in the average daily dollar volume"
    )
    volatility_window: int = Field(20, ge=2, description="sessions in the daily-return volatility")
    beta_window: int = Field(
        60, ge=2, description="sessions in the beta against the equal-weight market"
    )
    daily_limit: float | None = Field(
        None,
        gt=0,
        description="price limit as a fraction (0.1 = +-10 %) when no limit flags are given",
    )
    upper_limit_column: str = Field(
        "upper_limit", description="flag column: closed at the upper limit"
    )
    lower_limit_column: str = Field(
        "lower_limit", description="flag column: closed at the lower limit"
    )


SelectionMetric = Literal["net_sharpe", "net_annual_return", "information_ratio"]


class PortfolioSettings(StrictModel):
    """Everything the portfolio library needs: named strategies, costs, tradability, market data."""

    strategies: dict[str, StrategySettings] = Field(
        default_factory=lambda: {"decile": DecileStrategy()}
    )
    costs: CostSettings = Field(default_factory=CostSettings)
    tradability: TradabilitySettings = Field(default_factory=TradabilitySettings)
    market: MarketSettings = Field(default_factory=MarketSettings)
    selection_metric: SelectionMetric = "net_sharpe"

    @model_validator(mode="after")
    def _some_strategy(self) -> PortfolioSettings:
        if not self.strategies:
            raise ValueError("strategies: name at least one strategy")
        return self


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
