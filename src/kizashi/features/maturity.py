"""Window-maturity family: flags saying whether the stock has an unbroken history (consecutive
market sessions) long enough for each window, and how long it has been listed (capped, so the
value is bounded-lookback)."""

from __future__ import annotations

import polars as pl

from kizashi.features.expressions import ROW, RUN_ROW, c
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "maturity"
WINDOWS = (5, 10, 20, 40, 60, 120)
LISTED_CAP = 250


def maturity_family(ctx: FeatureContext) -> list[FeatureSpec]:
    row = c(ROW)
    specs = [
        FeatureSpec(f"has_history_{w}d", (c(RUN_ROW) >= w).cast(pl.Float64), FAMILY, 0, kind="flag", masked=False)
        for w in WINDOWS
    ]
    listed = (row.clip(upper_bound=LISTED_CAP).cast(pl.Float64) + 1.0).log()
    specs.append(FeatureSpec(f"log_days_listed_capped_{LISTED_CAP}", listed, FAMILY, 0, masked=False))
    return specs
