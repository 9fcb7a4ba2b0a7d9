"""Forward-return targets: the only forward-looking columns, all named ``target_*``."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from kizashi.features.expressions import c, cs_rank

ROWS_LEFT = "_rows_left"  # rows remaining for the stock after this one


def target_return_name(horizon: int) -> str:
    return f"target_return_{horizon}d"


def target_rank_name(horizon: int) -> str:
    return f"target_rank_{horizon}d"


def target_columns(horizons: Sequence[int]) -> list[str]:
    return [name for h in horizons for name in (target_return_name(h), target_rank_name(h))]


def add_targets(panel: pl.DataFrame, horizons: Sequence[int]) -> pl.DataFrame:
    """Add ``target_return_{h}d`` (adjusted close at the stock's h-th next row over today's,
    minus one; null when fewer than h rows follow) and ``target_rank_{h}d`` (its per-day
    percentile rank). ``panel`` must be sorted by (code, date) and carry ``_rows_left``."""
    forward = [
        pl.when(c(ROWS_LEFT) >= h).then(c("close").shift(-h) / c("close") - 1.0).alias(target_return_name(h))
        for h in horizons
    ]
    ranks = [cs_rank(c(target_return_name(h))).alias(target_rank_name(h)) for h in horizons]
    return panel.with_columns(forward).with_columns(ranks)
