"""Sector family: equal-weight sector returns and volatility over several windows, stock
minus sector, sector beta, within-sector rank and z-score, sector momentum rank; and the
sector one-hot family.

:func:`sector_table` computes the per-(date, sector) series once over the whole panel; the
pipeline joins its ``_sec_*`` columns onto the panel by (date, sector).
"""

from __future__ import annotations

import re

import polars as pl

from kizashi.features.expressions import (
    RET,
    c,
    cs_rank,
    cs_zscore,
    safe_div,
    simple_return,
    ts_cov,
    ts_var,
)
from kizashi.features.market import compounded
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "sector"
ONEHOT_FAMILY = "sector_onehot"
SEC_RET = "_sec_ret"
SECTOR_RETURN_WINDOWS = (5, 20, 60)
SECTOR_VOL_WINDOWS = (20, 60)
RELATIVE_WINDOWS = (1, 5, 20, 60)
# Stage-1 features ranked and z-scored within (date, sector).
WITHIN_SECTOR = (
    "return_1d",
    "return_5d",
    "return_20d",
    "return_60d",
    "realized_vol_20d",
    "volume_ratio_20d",
)


def sector_table(panel: pl.DataFrame, calendar: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per-(date, sector) equal-weight series with rolling values over the market calendar.

    Input: prepared panel rows (the day's universe) with ``date``, ``sector`` and ``_ret``;
    ``calendar``: a ``date`` frame of every market session (default: the panel's dates).
    Every (calendar date, sector) pair has a row, null where the sector has no return that
    day, so a rolling window never steps over a day the sector was empty.
    """
    ret = c(RET)
    if calendar is None:
        calendar = panel.select(pl.col("date").unique())
    aggregates = panel.lazy().group_by("date", "sector").agg(
        ret.mean().alias(SEC_RET),
        (ret > 0).cast(pl.Float64).mean().alias("_sec_breadth"),
        ret.count().cast(pl.Float64).alias("_sec_count"),
    )
    grid = calendar.lazy().join(panel.lazy().select(pl.col("sector").unique()), how="cross")
    daily = grid.join(aggregates, on=["date", "sector"], how="left").sort("sector", "date")
    s = c(SEC_RET)
    columns = [
        *(((s.log1p().rolling_sum(w)).exp() - 1.0).over("sector").alias(f"_sec_return_{w}d") for w in SECTOR_RETURN_WINDOWS),
        *(s.rolling_std(w).over("sector").alias(f"_sec_vol_{w}d") for w in SECTOR_VOL_WINDOWS),
    ]
    return daily.with_columns(columns).collect()


def sector_family(ctx: FeatureContext) -> list[FeatureSpec]:
    level = [
        ("sector_return_1d", SEC_RET),
        *((f"sector_return_{w}d", f"_sec_return_{w}d") for w in SECTOR_RETURN_WINDOWS),
        *((f"sector_vol_{w}d", f"_sec_vol_{w}d") for w in SECTOR_VOL_WINDOWS),
        ("sector_breadth", "_sec_breadth"),
        ("sector_size", "_sec_count"),
    ]
    specs = [FeatureSpec(name, c(col), FAMILY, 0, masked=False) for name, col in level]
    r, s = c(RET), c(SEC_RET)
    for w in RELATIVE_WINDOWS:
        expr = simple_return(w) - compounded(s, w)
        specs.append(FeatureSpec(f"sector_rel_return_{w}d", expr, FAMILY, w))
    specs.append(FeatureSpec("sector_beta_60d", safe_div(ts_cov(r, s, 60), ts_var(s, 60)), FAMILY, 60))
    by = ["date", "sector"]
    for name in WITHIN_SECTOR:
        x = c(name)
        specs.append(FeatureSpec(f"sector_rank_{name}", cs_rank(x, by), FAMILY, 0, kind="rank", stage=2, masked=False))
        specs.append(FeatureSpec(f"sector_zscore_{name}", cs_zscore(x, by), FAMILY, 0, stage=2, masked=False))
    vol = c("realized_vol_20d")
    specs.append(FeatureSpec("sector_rel_vol_20d", safe_div(vol, vol.mean().over(by)), FAMILY, 0, stage=2, masked=False))
    for w in (20, 60):
        expr = cs_rank(c(f"sector_return_{w}d"))
        specs.append(FeatureSpec(f"sector_momentum_rank_{w}d", expr, FAMILY, 0, kind="rank", stage=2, masked=False))
    return specs


def sector_slug(name: str) -> str:
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()
    return slug or "unnamed"


def sector_onehot_family(ctx: FeatureContext) -> list[FeatureSpec]:
    specs, seen = [], set()
    for name in ctx.sectors:
        slug = sector_slug(name)
        column = f"sector_is_{slug}"
        suffix = 2
        while column in seen:  # two sector names with the same slug ("A&B", "A B")
            column = f"sector_is_{slug}_{suffix}"
            suffix += 1
        seen.add(column)
        expr = (c("sector") == name).cast(pl.Float64)
        specs.append(FeatureSpec(column, expr, ONEHOT_FAMILY, 0, kind="flag", masked=False))
    return specs
