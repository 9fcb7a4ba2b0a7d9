"""Interactions family: products and ratios of stage-1 features that trees and linear
heads find hard to form themselves (risk-adjusted momentum, volume-confirmed reversal,
regime-conditioned momentum, ...)."""

from __future__ import annotations

import math

from kizashi.features.expressions import c, safe_div
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "interactions"


def interactions_family(ctx: FeatureContext) -> list[FeatureSpec]:
    vol20 = c("realized_vol_20d")
    pairs = [
        *(
            (f"risk_adjusted_return_{w}d", safe_div(c(f"return_{w}d"), vol20 * math.sqrt(w)))
            for w in (5, 20, 60)
        ),
        ("reversal_x_volume_5d", c("return_5d") * c("volume_ratio_20d")),
        ("momentum_x_vol_regime_20d", c("return_20d") * c("market_vol_regime")),
        ("gap_x_volume", c("gap_return") * c("volume_ratio_5d")),
        ("rsi_x_bollinger_14_20d", (c("rsi_14d") - 50.0) / 50.0 * (c("bollinger_pctb_20d") - 0.5)),
        ("beta_x_market_return_5d", c("beta_60d") * c("market_return_5d")),
        ("sector_rel_x_volume_5d", c("sector_rel_return_5d") * c("volume_ratio_20d")),
        ("illiquidity_x_return_5d", c("amihud_illiquidity_20d") * c("return_5d")),
        ("vol_adjusted_gap", safe_div(c("gap_return"), vol20)),
        ("excess_return_per_idio_vol_20d", safe_div(c("excess_return_20d"), c("idiosyncratic_vol_20d"))),
        ("range_x_volume", c("hl_range") * c("volume_ratio_20d")),
    ]
    return [FeatureSpec(name, expr, FAMILY, 0, stage=2, masked=False) for name, expr in pairs]
