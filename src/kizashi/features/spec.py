"""What a feature is: a named Polars expression with its family, lookback and kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

Kind = Literal["continuous", "flag", "categorical", "rank", "market"]


@dataclass(frozen=True)
class FeatureSpec:
    """One output column.

    Attributes:
        name: column name (explains itself: ``realized_vol_20d``).
        expr: expression evaluated over the prepared panel (sorted by code, date).
        family: the family function that made it.
        lookback: sessions of the stock's own history needed before today (0 = today
            only). Stock-level time-series features are masked to null unless the stock's
            last ``lookback + 1`` rows are consecutive sessions of the market calendar
            (``_run_row >= lookback``): no window spans missing days, and none reaches into
            the previous stock's rows.
        kind: ``continuous`` (normalized per day), ``rank`` (already in [0, 1]),
            ``flag`` (0/1), ``categorical`` (small integers), ``market`` (same value for
            every stock on a day: never cross-sectionally normalized).
        stage: 1 = reads prepared panel columns only; 2 = reads stage-1 feature columns.
        masked: apply the lookback mask (False for values that come from market/sector
            tables or are already masked through their inputs).
        spans_gaps: the feature describes the stock's gaps themselves (sessions or days since
            its previous row): masked only while ``_row < lookback``, not after a gap.
    """

    name: str
    expr: pl.Expr
    family: str
    lookback: int = 0
    kind: Kind = "continuous"
    stage: int = 1
    masked: bool = True
    spans_gaps: bool = False
    description: str = ""

    @property
    def normalize(self) -> bool:
        return self.kind == "continuous"


@dataclass(frozen=True)
class FeatureContext:
    """What the families may know about the data before building expressions.

    Attributes:
        sectors: sector names present (sorted), for one-hot columns.
        has_margin: whether weekly margin balances were given.
        has_graph: whether per-day correlation graphs were built (neighbour columns).
    """

    sectors: tuple[str, ...] = ()
    has_margin: bool = False
    has_graph: bool = False
    extra: dict[str, object] = field(default_factory=dict)
