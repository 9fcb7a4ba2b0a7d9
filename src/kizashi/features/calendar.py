"""Calendar and regime family: weekday, month (cyclic), month/quarter/year-end flags from
calendar arithmetic (never from the data's future rows), days and sessions since the
stock's previous trading row, market volatility and trend regimes."""

from __future__ import annotations

import math

import polars as pl

from kizashi.features.expressions import SESSION, c
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "calendar"
HIGH_VOL_REGIME = 1.25


def calendar_family(ctx: FeatureContext) -> list[FeatureSpec]:
    date = c("date")
    weekday = date.dt.weekday()  # 1 = Monday ... 7 = Sunday
    month = date.dt.month()
    # Next / previous weekday: a calendar fact, known in advance.
    next_weekday = pl.when(weekday >= 5).then(date + pl.duration(days=8) - pl.duration(days=weekday)).otherwise(date + pl.duration(days=1))
    prev_weekday = pl.when(weekday == 1).then(date - pl.duration(days=3)).otherwise(date - pl.duration(days=1))
    month_end = next_weekday.dt.month() != month
    month_start = prev_weekday.dt.month() != month

    def flag(expr: pl.Expr) -> pl.Expr:
        return expr.cast(pl.Float64)

    def market(name: str, expr: pl.Expr, kind: str = "market") -> FeatureSpec:
        return FeatureSpec(name, expr, FAMILY, 0, kind=kind, masked=False)

    specs = [
        market("weekday", (weekday - 1).cast(pl.Float64), "categorical"),
        *(market(f"is_{day}", flag(weekday == i + 1), "flag") for i, day in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday"))),
        market("month", month.cast(pl.Float64), "categorical"),
        market("month_sin", (2 * math.pi * (month - 1) / 12.0).sin()),
        market("month_cos", (2 * math.pi * (month - 1) / 12.0).cos()),
        market("day_of_month", date.dt.day().cast(pl.Float64)),
        market("is_month_end", flag(month_end), "flag"),
        market("is_month_start", flag(month_start), "flag"),
        market("is_quarter_end", flag(month_end & (month % 3 == 0)), "flag"),
        market("is_year_end", flag(month_end & (month == 12)), "flag"),
        market("market_vol_regime", c("_mkt_vol_regime")),
        market("high_vol_regime", flag(c("_mkt_vol_regime") > HIGH_VOL_REGIME), "flag"),
        market("market_uptrend", flag(c("_mkt_trend_120d") > 0), "flag"),
        FeatureSpec("days_since_prev_trade", (date - date.shift(1)).dt.total_days().cast(pl.Float64), FAMILY, 1, kind="categorical", spans_gaps=True),
        FeatureSpec("missed_sessions", (c(SESSION) - c(SESSION).shift(1) - 1).cast(pl.Float64), FAMILY, 1, kind="categorical", spans_gaps=True),
    ]
    return specs
