"""Return distribution family: rolling skew and kurtosis, drawdown and draw-up from the
window's extreme, largest daily moves, share of up days.

``skew_{w}d`` is the population skewness g1 = m3 / m2^1.5 of the window's daily returns
(Polars' ``rolling_skew``, biased); pandas' ``rolling().skew()`` is the bias-corrected
G1 = g1 * sqrt(w (w - 1)) / (w - 2). Kurtosis is the population excess kurtosis likewise.
"""

from __future__ import annotations

import polars as pl

from kizashi.features.expressions import RET, c, close, safe_div, ts_max, ts_mean, ts_min
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "distribution"
MOMENT_WINDOWS = (20, 60, 120)
DRAWDOWN_WINDOWS = (20, 60, 120)
EXTREME_WINDOWS = (5, 20, 60)


def distribution_family(ctx: FeatureContext) -> list[FeatureSpec]:
    ret, cl = c(RET), close()
    specs = []
    for w in MOMENT_WINDOWS:
        specs.append(FeatureSpec(f"skew_{w}d", ret.rolling_skew(w), FAMILY, w))
        specs.append(FeatureSpec(f"kurtosis_{w}d", ret.rolling_kurtosis(w), FAMILY, w))
    for w in DRAWDOWN_WINDOWS:
        specs.append(FeatureSpec(f"drawdown_{w}d", safe_div(cl, ts_max(cl, w)) - 1.0, FAMILY, w - 1))
        specs.append(FeatureSpec(f"drawup_{w}d", safe_div(cl, ts_min(cl, w)) - 1.0, FAMILY, w - 1))
    for w in EXTREME_WINDOWS:
        specs.append(FeatureSpec(f"max_return_{w}d", ts_max(ret, w), FAMILY, w))
        specs.append(FeatureSpec(f"min_return_{w}d", ts_min(ret, w), FAMILY, w))
    for w in (20, 60):
        specs.append(FeatureSpec(f"up_day_share_{w}d", ts_mean((ret > 0).cast(pl.Float64), w), FAMILY, w))
    return specs
