"""Volatility family: realized (close-to-close), Parkinson, Garman-Klass and Rogers-Satchell
range estimators, downside/upside semi-volatility, volatility ratios. Daily units."""

from __future__ import annotations

import math

import polars as pl

from kizashi.features.expressions import LOG_RET, RET, c, safe_div, ts_mean, ts_std
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "volatility"
VOL_WINDOWS = (5, 10, 20, 40, 60, 120)
SEMI_WINDOWS = (10, 20, 60)
ABS_WINDOWS = (5, 20, 60)
RATIO_PAIRS = ((5, 20), (10, 60), (20, 60), (20, 120))


# A rolling mean of squares below this (a daily move of 1e-7) is rounding residue of the
# sliding-window sum, not variance: it is read as 0 so that sqrt does not amplify it into
# values that depend on where the window's running sum started.
VARIANCE_FLOOR = 1e-14


def _sqrt_mean(x: pl.Expr, window: int) -> pl.Expr:
    mean = ts_mean(x, window)
    return pl.when(mean > VARIANCE_FLOOR).then(mean.sqrt()).otherwise(mean * 0.0)


def realized_vol(window: int) -> pl.Expr:
    return ts_std(c(LOG_RET), window)


def volatility_family(ctx: FeatureContext) -> list[FeatureSpec]:
    log_hl = (c("high") / c("low")).log()
    log_co = (c("close") / c("open")).log()
    log_hc = (c("high") / c("close")).log()
    log_ho = (c("high") / c("open")).log()
    log_lc = (c("low") / c("close")).log()
    log_lo = (c("low") / c("open")).log()
    parkinson_daily = log_hl**2 / (4.0 * math.log(2.0))
    garman_klass_daily = 0.5 * log_hl**2 - (2.0 * math.log(2.0) - 1.0) * log_co**2
    rogers_satchell_daily = log_hc * log_ho + log_lc * log_lo
    specs = []
    for w in VOL_WINDOWS:
        specs += [
            FeatureSpec(f"realized_vol_{w}d", realized_vol(w), FAMILY, w),
            # Range estimators read today's bar only: w bars need w - 1 earlier rows.
            FeatureSpec(f"parkinson_vol_{w}d", _sqrt_mean(parkinson_daily, w), FAMILY, w - 1),
            FeatureSpec(f"garman_klass_vol_{w}d", _sqrt_mean(garman_klass_daily, w), FAMILY, w - 1),
            FeatureSpec(
                f"rogers_satchell_vol_{w}d", _sqrt_mean(rogers_satchell_daily, w), FAMILY, w - 1
            ),
        ]
    ret = c(RET)
    for w in SEMI_WINDOWS:
        down = pl.min_horizontal(ret, pl.lit(0.0)) ** 2
        up = pl.max_horizontal(ret, pl.lit(0.0)) ** 2
        specs.append(FeatureSpec(f"downside_vol_{w}d", _sqrt_mean(down, w), FAMILY, w))
        specs.append(FeatureSpec(f"upside_vol_{w}d", _sqrt_mean(up, w), FAMILY, w))
    for w in ABS_WINDOWS:
        specs.append(FeatureSpec(f"mean_abs_return_{w}d", ts_mean(ret.abs(), w), FAMILY, w))
    for short, long in RATIO_PAIRS:
        expr = safe_div(realized_vol(short), realized_vol(long))
        specs.append(FeatureSpec(f"vol_ratio_{short}_{long}d", expr, FAMILY, long))
    vol_of_vol = safe_div(ts_std(realized_vol(20), 60), ts_mean(realized_vol(20), 60))
    specs.append(FeatureSpec("vol_of_vol_20_60d", vol_of_vol, FAMILY, 20 + 59))
    return specs
