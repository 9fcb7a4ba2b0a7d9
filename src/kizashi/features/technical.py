"""Technical indicators family: RSI, MACD, Bollinger %b and width, ATR, stochastics,
moving-average gaps and crosses, price position in its range, CCI, distance to highs/lows,
trend slope. EMAs are finite-window (see ``expressions.ts_ema``) so lookbacks are bounded."""

from __future__ import annotations

import polars as pl

from kizashi.features.expressions import (
    PREV_CLOSE,
    RET,
    c,
    close,
    ema_length,
    safe_div,
    ts_ema,
    ts_max,
    ts_mean,
    ts_min,
    ts_std,
)
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "technical"
RSI_WINDOWS = (6, 9, 14, 21, 28)
MACD_PARAMS = ((12, 26, 9), (5, 35, 5))
BOLLINGER_WINDOWS = (10, 20, 40, 60)
ATR_WINDOWS = (7, 14, 21, 28)
STOCH_WINDOWS = (9, 14, 21, 28)
MA_WINDOWS = (5, 10, 20, 40, 60, 120)
EMA_SPANS = (5, 10, 20, 40)
MA_CROSSES = ((5, 20), (10, 40), (20, 60), (60, 120))
POSITION_WINDOWS = (10, 20, 60, 120)
EXTREME_WINDOWS = (20, 60, 120)
CCI_WINDOWS = (20, 40)
SLOPE_WINDOWS = (20, 60)


def rsi(window: int) -> pl.Expr:
    """Cutler's RSI (simple means of gains and losses), in [0, 100]."""
    ret = c(RET)
    gains = ts_mean(pl.max_horizontal(ret, pl.lit(0.0)), window)
    losses = ts_mean(pl.max_horizontal(-ret, pl.lit(0.0)), window)
    return 100.0 * safe_div(gains, gains + losses)


def slope_weights(window: int) -> list[float]:
    """Least-squares slope of y on time over a window as a fixed linear filter (oldest
    first): sum_k (k - mean_k) y_k / sum_k (k - mean_k)^2. Evaluated window by window, so
    no running sum carries rounding from earlier rows."""
    centre = (window - 1) / 2.0
    denominator = sum((k - centre) ** 2 for k in range(window))
    return [(k - centre) / denominator for k in range(window)]


def technical_family(ctx: FeatureContext) -> list[FeatureSpec]:
    cl, hi, lo = close(), c("high"), c("low")
    specs = [FeatureSpec(f"rsi_{w}d", rsi(w), FAMILY, w) for w in RSI_WINDOWS]
    for fast, slow, signal in MACD_PARAMS:
        macd = safe_div(ts_ema(cl, fast) - ts_ema(cl, slow), cl)
        macd_signal = ts_ema(macd, signal)
        lb = ema_length(slow) - 1
        lb_signal = lb + ema_length(signal) - 1
        tag = f"{fast}_{slow}_{signal}"
        specs += [
            FeatureSpec(f"macd_{tag}", macd, FAMILY, lb),
            FeatureSpec(f"macd_signal_{tag}", macd_signal, FAMILY, lb_signal),
            FeatureSpec(f"macd_hist_{tag}", macd - macd_signal, FAMILY, lb_signal),
        ]
    for w in BOLLINGER_WINDOWS:
        mean, std = ts_mean(cl, w), ts_std(cl, w)
        specs.append(FeatureSpec(f"bollinger_pctb_{w}d", safe_div(cl - (mean - 2 * std), 4 * std), FAMILY, w - 1))
        specs.append(FeatureSpec(f"bollinger_width_{w}d", safe_div(4 * std, mean), FAMILY, w - 1))
    # True range needs the previous close, so ATR over w days reads w + 1 rows (lookback w):
    # a stock's first w rows are null, one more than a plain w-day mean (pandas' rolling
    # mean of the same true range starts one row earlier, from a row without a prev close).
    prev = c(PREV_CLOSE)
    true_range = pl.max_horizontal(hi, prev) - pl.min_horizontal(lo, prev)
    for w in ATR_WINDOWS:
        specs.append(FeatureSpec(f"atr_{w}d", safe_div(ts_mean(true_range, w), cl), FAMILY, w))
    for w in STOCH_WINDOWS:
        k = safe_div(cl - ts_min(lo, w), ts_max(hi, w) - ts_min(lo, w))
        specs.append(FeatureSpec(f"stochastic_k_{w}d", k, FAMILY, w - 1))
        specs.append(FeatureSpec(f"stochastic_d_{w}d", ts_mean(k, 3), FAMILY, w + 1))
    for w in MA_WINDOWS:
        specs.append(FeatureSpec(f"ma_gap_{w}d", safe_div(cl, ts_mean(cl, w)) - 1.0, FAMILY, w - 1))
    for span in EMA_SPANS:
        specs.append(FeatureSpec(f"ema_gap_{span}d", safe_div(cl, ts_ema(cl, span)) - 1.0, FAMILY, ema_length(span) - 1))
    for fast, slow in MA_CROSSES:
        expr = safe_div(ts_mean(cl, fast), ts_mean(cl, slow)) - 1.0
        specs.append(FeatureSpec(f"ma_cross_{fast}_{slow}d", expr, FAMILY, slow - 1))
    for w in POSITION_WINDOWS:
        expr = safe_div(cl - ts_min(cl, w), ts_max(cl, w) - ts_min(cl, w))
        specs.append(FeatureSpec(f"price_position_{w}d", expr, FAMILY, w - 1))
    for w in EXTREME_WINDOWS:
        specs.append(FeatureSpec(f"distance_to_high_{w}d", safe_div(cl, ts_max(hi, w)) - 1.0, FAMILY, w - 1))
        specs.append(FeatureSpec(f"distance_to_low_{w}d", safe_div(cl, ts_min(lo, w)) - 1.0, FAMILY, w - 1))
    typical = (hi + lo + cl) / 3.0
    for w in CCI_WINDOWS:
        expr = safe_div(typical - ts_mean(typical, w), 0.015 * ts_std(typical, w))
        specs.append(FeatureSpec(f"cci_{w}d", expr, FAMILY, w - 1))
    log_price = cl.log()
    for w in SLOPE_WINDOWS:
        specs.append(FeatureSpec(f"trend_slope_{w}d", log_price.rolling_sum(w, weights=slope_weights(w)), FAMILY, w - 1))
    return specs
