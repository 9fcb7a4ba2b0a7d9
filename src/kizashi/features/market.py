"""Market family: the equal-weight market built from the panel itself (return, volatility,
breadth, dispersion, drawdown, trend) and each stock's rolling beta, alpha, idiosyncratic
volatility, correlation with the market and excess return.

:func:`market_table` computes the per-date series once over the whole panel (small: one
row per date); the pipeline joins its ``_mkt_*`` columns onto the panel by date.
"""

from __future__ import annotations

import polars as pl

from kizashi.features.expressions import (
    RET,
    c,
    safe_div,
    simple_return,
    ts_corr,
    ts_cov,
    ts_mean,
    ts_sum,
    ts_var,
)
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "market"
MKT_RET = "_mkt_ret"
MARKET_RETURN_WINDOWS = (5, 10, 20, 60)
MARKET_VOL_WINDOWS = (5, 20, 60, 120)
BETA_WINDOWS = (20, 60, 120)
EXCESS_WINDOWS = (1, 5, 20, 60)
REGIME_WINDOW = 250


def market_table(panel: pl.DataFrame, calendar: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per-date equal-weight market series. Input: prepared panel rows (the day's universe)
    with ``date`` and ``_ret``; ``calendar``: a ``date`` frame of every market session
    (default: the panel's dates).

    Output: one row per calendar date (sorted) with ``_mkt_*`` columns, null on a date with
    no return; every rolling value at date d uses dates <= d only, and a rolling window over
    a null date is null.
    """
    ret = c(RET)
    if calendar is None:
        calendar = panel.select(pl.col("date").unique())
    aggregates = panel.lazy().group_by("date").agg(
        ret.mean().alias(MKT_RET),
        (ret > 0).cast(pl.Float64).mean().alias("_mkt_breadth"),
        ret.std().alias("_mkt_dispersion"),
    )
    daily = calendar.lazy().join(aggregates, on="date", how="left").sort("date")
    m = c(MKT_RET)
    log_growth = m.log1p().fill_null(0.0)
    index = log_growth.cum_sum().exp()
    vol20 = m.rolling_std(20)
    columns = [
        *(((m.log1p().rolling_sum(w)).exp() - 1.0).alias(f"_mkt_return_{w}d") for w in MARKET_RETURN_WINDOWS),
        *(m.rolling_std(w).alias(f"_mkt_vol_{w}d") for w in MARKET_VOL_WINDOWS),
        c("_mkt_breadth").rolling_mean(5).alias("_mkt_breadth_mean_5d"),
        c("_mkt_breadth").rolling_mean(20).alias("_mkt_breadth_mean_20d"),
        c("_mkt_dispersion").rolling_mean(20).alias("_mkt_dispersion_mean_20d"),
        (index / index.rolling_max(60) - 1.0).alias("_mkt_drawdown_60d"),
        (index / index.rolling_mean(120) - 1.0).alias("_mkt_trend_120d"),
        safe_div(vol20, vol20.rolling_mean(REGIME_WINDOW)).alias("_mkt_vol_regime"),
    ]
    return daily.with_columns(columns).collect()


MARKET_LEVEL = [
    ("market_return_1d", MKT_RET),
    *((f"market_return_{w}d", f"_mkt_return_{w}d") for w in MARKET_RETURN_WINDOWS),
    *((f"market_vol_{w}d", f"_mkt_vol_{w}d") for w in MARKET_VOL_WINDOWS),
    ("market_breadth", "_mkt_breadth"),
    ("market_breadth_mean_5d", "_mkt_breadth_mean_5d"),
    ("market_breadth_mean_20d", "_mkt_breadth_mean_20d"),
    ("market_dispersion", "_mkt_dispersion"),
    ("market_dispersion_mean_20d", "_mkt_dispersion_mean_20d"),
    ("market_drawdown_60d", "_mkt_drawdown_60d"),
    ("market_trend_120d", "_mkt_trend_120d"),
]


def compounded(daily_return: pl.Expr, window: int) -> pl.Expr:
    """Compounded return of a joined daily series over the stock's last ``window`` rows."""
    return ts_sum(daily_return.log1p(), window).exp() - 1.0


def market_family(ctx: FeatureContext) -> list[FeatureSpec]:
    specs = [FeatureSpec(name, c(col), FAMILY, 0, kind="market", masked=False) for name, col in MARKET_LEVEL]
    r, m = c(RET), c(MKT_RET)
    for w in BETA_WINDOWS:
        beta = safe_div(ts_cov(r, m, w), ts_var(m, w))
        residual_var = (ts_var(r, w) - beta**2 * ts_var(m, w)).clip(lower_bound=0.0)
        specs += [
            FeatureSpec(f"beta_{w}d", beta, FAMILY, w),
            FeatureSpec(f"alpha_{w}d", ts_mean(r, w) - beta * ts_mean(m, w), FAMILY, w),
            FeatureSpec(f"idiosyncratic_vol_{w}d", residual_var.sqrt(), FAMILY, w),
            FeatureSpec(f"market_corr_{w}d", ts_corr(r, m, w), FAMILY, w),
        ]
    for w in EXCESS_WINDOWS:
        expr = simple_return(w) - compounded(m, w)
        specs.append(FeatureSpec(f"excess_return_{w}d", expr, FAMILY, w))
    return specs
