"""Margin family: weekly margin balances joined as of their *publication* date (a balance
published on day p is first usable on the next trading day after p), scaled by trading
activity, long/short ratio and its z-score over 12 weeks, week-on-week changes, age.

:func:`join_margin` prepares the ``_margin_*`` columns on the panel."""

from __future__ import annotations

import polars as pl

from kizashi.features.expressions import DOLLAR_VOLUME, RAW_CLOSE, c, safe_div, ts_mean
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "margin"
ZSCORE_WEEKS = 12
MARGIN_COLUMNS = (
    "_margin_long",
    "_margin_short",
    "_margin_long_prev",
    "_margin_short_prev",
    "_margin_log_ratio_zscore",
    "_margin_published_date",
)


def margin_table(margin: pl.DataFrame) -> pl.DataFrame:
    """Per (code, record date) weekly table with previous-week values and a 12-week z-score
    of log(long/short), each using records up to that week only."""
    log_ratio = safe_div(c("long_margin_volume"), c("short_margin_volume")).log()
    return (
        margin.sort("code", "date")
        .with_columns(log_ratio.alias("_log_ratio"))
        .with_columns(
            c("long_margin_volume").alias("_margin_long"),
            c("short_margin_volume").alias("_margin_short"),
            c("long_margin_volume").shift(1).over("code").alias("_margin_long_prev"),
            c("short_margin_volume").shift(1).over("code").alias("_margin_short_prev"),
            safe_div(
                c("_log_ratio") - c("_log_ratio").rolling_mean(ZSCORE_WEEKS).over("code"),
                c("_log_ratio").rolling_std(ZSCORE_WEEKS).over("code"),
            ).alias("_margin_log_ratio_zscore"),
            c("published_date").alias("_margin_published_date"),
        )
        .select("code", "published_date", *MARGIN_COLUMNS)
        .sort("published_date")
    )


def join_margin(panel: pl.DataFrame, margin: pl.DataFrame | None) -> pl.DataFrame:
    """As-of join on publication: the latest record published strictly before ``date``.
    Without margin data the ``_margin_*`` columns are all null."""
    if margin is None:
        return panel.with_columns(pl.lit(None, dtype=pl.Float64).alias(name) for name in MARGIN_COLUMNS[:-1]).with_columns(
            pl.lit(None, dtype=pl.Date).alias("_margin_published_date")
        )
    table = margin_table(margin)
    joined = panel.sort("date", maintain_order=True).join_asof(
        table,
        left_on="date",
        right_on="published_date",
        by="code",
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    return joined.sort("code", "date")


def margin_family(ctx: FeatureContext) -> list[FeatureSpec]:
    if not ctx.has_margin:
        return []
    long, short = c("_margin_long"), c("_margin_short")
    dollar_mean = ts_mean(c(DOLLAR_VOLUME), 20)
    raw_close = c(RAW_CLOSE)

    def joined(name: str, expr: pl.Expr) -> FeatureSpec:
        return FeatureSpec(name, expr, FAMILY, 0, masked=False)

    return [
        FeatureSpec("margin_long_days_20d", safe_div(long * raw_close, dollar_mean), FAMILY, 19),
        FeatureSpec("margin_short_days_20d", safe_div(short * raw_close, dollar_mean), FAMILY, 19),
        joined("margin_log_ratio", safe_div(long, short).log()),
        joined("margin_net_balance", safe_div(long - short, long + short)),
        joined("margin_long_change_1w", safe_div(long, c("_margin_long_prev")).log()),
        joined("margin_short_change_1w", safe_div(short, c("_margin_short_prev")).log()),
        joined("margin_log_ratio_zscore_12w", c("_margin_log_ratio_zscore")),
        joined("margin_age_days", (c("date") - c("_margin_published_date")).dt.total_days().cast(pl.Float64)),
    ]
