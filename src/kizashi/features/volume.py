"""Volume and turnover family: log volume and dollar volume, volume ratios and z-scores,
Amihud illiquidity, volume trend, price-volume correlation, on-balance flow."""

from __future__ import annotations

import polars as pl

from kizashi.features.expressions import (
    DOLLAR_VOLUME,
    RET,
    c,
    safe_div,
    ts_corr,
    ts_mean,
    ts_std,
    ts_sum,
)
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "volume"
RATIO_WINDOWS = (5, 10, 20, 60, 120)
ZSCORE_WINDOWS = (10, 20, 60, 120)
DOLLAR_WINDOWS = (5, 20, 60, 120)
AMIHUD_WINDOWS = (5, 20, 60, 120)
TREND_PAIRS = ((5, 20), (20, 60), (20, 120))
CORR_WINDOWS = (10, 20, 60)


def volume_family(ctx: FeatureContext) -> list[FeatureSpec]:
    vol = c("volume")
    log_vol = vol.log1p()
    dollar = c(DOLLAR_VOLUME)
    ret = c(RET)
    specs = [
        FeatureSpec("log_volume", log_vol, FAMILY, 0),
        FeatureSpec("log_dollar_volume", dollar.log1p(), FAMILY, 0),
        FeatureSpec("dollar_volume_change_1d", dollar.log1p() - dollar.log1p().shift(1), FAMILY, 1),
    ]
    for w in RATIO_WINDOWS:
        specs.append(FeatureSpec(f"volume_ratio_{w}d", safe_div(vol, ts_mean(vol, w)), FAMILY, w - 1))
    for w in ZSCORE_WINDOWS:
        z = safe_div(log_vol - ts_mean(log_vol, w), ts_std(log_vol, w), eps=1e-9)
        specs.append(FeatureSpec(f"volume_zscore_{w}d", z, FAMILY, w - 1))
    for w in DOLLAR_WINDOWS:
        specs.append(FeatureSpec(f"log_dollar_volume_mean_{w}d", ts_mean(dollar, w).log1p(), FAMILY, w - 1))
    for short, long in TREND_PAIRS:
        expr = safe_div(ts_mean(vol, short), ts_mean(vol, long))
        specs.append(FeatureSpec(f"volume_trend_{short}_{long}d", expr, FAMILY, long - 1))
    illiquidity = safe_div(ret.abs(), dollar) * 1e6
    for w in AMIHUD_WINDOWS:
        specs.append(FeatureSpec(f"amihud_illiquidity_{w}d", ts_mean(illiquidity, w).log1p(), FAMILY, w))
    for w in (20, 60):
        specs.append(FeatureSpec(f"log_volume_std_{w}d", ts_std(log_vol, w), FAMILY, w - 1))
    volume_change = log_vol - log_vol.shift(1)
    for w in CORR_WINDOWS:
        specs.append(FeatureSpec(f"price_volume_corr_{w}d", ts_corr(ret, volume_change, w), FAMILY, w))
    signed = pl.when(ret > 0).then(vol).when(ret < 0).then(-vol).otherwise(0.0)
    up_volume = pl.when(ret > 0).then(vol).otherwise(0.0)
    for w in (20, 60):
        specs.append(FeatureSpec(f"signed_volume_flow_{w}d", safe_div(ts_sum(signed, w), ts_sum(vol, w)), FAMILY, w))
        specs.append(FeatureSpec(f"up_volume_share_{w}d", safe_div(ts_sum(up_volume, w), ts_sum(vol, w)), FAMILY, w))
    return specs
