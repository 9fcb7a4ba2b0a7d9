"""Cross-sectional family: per-day percentile rank and z-score of a chosen set of stage-1
features across all stocks of the day."""

from __future__ import annotations

from kizashi.features.expressions import c, cs_rank, cs_zscore
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "cross_section"
RANKED = (
    "return_1d",
    "return_2d",
    "return_3d",
    "return_5d",
    "return_10d",
    "return_20d",
    "return_60d",
    "return_120d",
    "momentum_60_20d",
    "momentum_120_20d",
    "realized_vol_5d",
    "realized_vol_20d",
    "realized_vol_60d",
    "parkinson_vol_20d",
    "hl_range",
    "gap_return",
    "intraday_return",
    "close_location",
    "volume_ratio_5d",
    "volume_ratio_20d",
    "volume_zscore_20d",
    "log_dollar_volume",
    "log_dollar_volume_mean_20d",
    "amihud_illiquidity_20d",
    "rsi_6d",
    "rsi_14d",
    "macd_hist_12_26_9",
    "bollinger_pctb_20d",
    "stochastic_k_14d",
    "ma_gap_5d",
    "ma_gap_20d",
    "ma_gap_60d",
    "price_position_20d",
    "distance_to_high_60d",
    "beta_60d",
    "idiosyncratic_vol_20d",
    "excess_return_5d",
    "skew_20d",
    "drawdown_60d",
    "sector_rel_return_5d",
    "sector_rel_return_20d",
)


def cross_section_family(ctx: FeatureContext) -> list[FeatureSpec]:
    specs = []
    for name in RANKED:
        x = c(name)
        specs.append(FeatureSpec(f"cs_rank_{name}", cs_rank(x), FAMILY, 0, kind="rank", stage=2, masked=False))
        specs.append(FeatureSpec(f"cs_zscore_{name}", cs_zscore(x), FAMILY, 0, stage=2, masked=False))
    return specs
