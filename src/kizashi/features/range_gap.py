"""Ranges and gaps family: intraday range, overnight gap, open-to-close move, candle
shadows, close location in the day's range, true range; and their rolling means."""

from __future__ import annotations

import polars as pl

from kizashi.features.expressions import PREV_CLOSE, c, safe_div, ts_mean, ts_sum
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "range_gap"
MEAN_WINDOWS = (5, 10, 20, 60)


def range_gap_family(ctx: FeatureContext) -> list[FeatureSpec]:
    o, h, lo, cl, prev = c("open"), c("high"), c("low"), c("close"), c(PREV_CLOSE)
    hl_range = (h / lo).log()
    gap = o / prev - 1.0
    intraday = cl / o - 1.0
    close_location = safe_div(cl - lo, h - lo)
    true_range = safe_div(pl.max_horizontal(h, prev) - pl.min_horizontal(lo, prev), prev)
    base = [
        ("hl_range", hl_range, 0),
        ("gap_return", gap, 1),
        ("intraday_return", intraday, 0),
        ("upper_shadow", (h - pl.max_horizontal(o, cl)) / cl, 0),
        ("lower_shadow", (pl.min_horizontal(o, cl) - lo) / cl, 0),
        ("close_location", close_location, 0),
        ("true_range", true_range, 1),
    ]
    specs = [FeatureSpec(name, expr, FAMILY, lb) for name, expr, lb in base]
    rolled = [
        ("hl_range", hl_range, 0),
        ("gap_return", gap, 1),
        ("abs_gap_return", gap.abs(), 1),
        ("intraday_return", intraday, 0),
        ("close_location", close_location, 0),
    ]
    for w in MEAN_WINDOWS:
        for name, expr, lb in rolled:
            specs.append(FeatureSpec(f"{name}_mean_{w}d", ts_mean(expr, w), FAMILY, lb + w - 1))
    specs += [
        FeatureSpec("gap_up_share_20d", ts_mean((gap > 0).cast(pl.Float64), 20), FAMILY, 20),
        FeatureSpec("overnight_return_sum_20d", ts_sum((1.0 + gap).log(), 20), FAMILY, 20),
        FeatureSpec("intraday_return_sum_20d", ts_sum((1.0 + intraday).log(), 20), FAMILY, 19),
    ]
    return specs
