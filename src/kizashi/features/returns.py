"""Returns family: simple and log close-to-close returns over 1-120 days, and momentum
that skips the most recent days."""

from __future__ import annotations

from kizashi.features.expressions import close, log_return, simple_return
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "returns"
RETURN_WINDOWS = (1, 2, 3, 5, 10, 20, 40, 60, 120)
# (from, to): return from t-from to t-to, skipping the last `to` days (short-term reversal).
MOMENTUM_SPANS = ((20, 5), (60, 5), (60, 20), (120, 20), (120, 60))


def returns_family(ctx: FeatureContext) -> list[FeatureSpec]:
    specs = []
    for w in RETURN_WINDOWS:
        specs.append(FeatureSpec(f"return_{w}d", simple_return(w), FAMILY, w))
        specs.append(FeatureSpec(f"log_return_{w}d", log_return(w), FAMILY, w))
    for start, end in MOMENTUM_SPANS:
        expr = close().shift(end) / close().shift(start) - 1.0
        specs.append(FeatureSpec(f"momentum_{start}_{end}d", expr, FAMILY, start))
    return specs
