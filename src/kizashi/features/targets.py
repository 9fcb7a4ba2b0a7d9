"""Forward-return targets: the only forward-looking columns, all named ``target_*``.

Horizons count sessions of the market calendar (the panel's own trading dates), not a
stock's rows: ``target_return_{h}d`` at date t is the stock's close on the session h
sessions after t over its close on t, minus one. When the stock has no row on that session
(a halt, a gap in the data, a delisting) the target is null, or, with ``fill_end_days = k``,
taken from its next close within k further sessions. A target therefore never reaches more
than ``h + fill_end_days`` sessions ahead, which is what the walk-forward purge covers.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from kizashi.features.expressions import IN_UNIVERSE, SESSION, c, cs_rank

_WANTED = "_target_session"
_END_SESSION = "_target_end_session"
_END_CLOSE = "_target_end_close"


def target_return_name(horizon: int) -> str:
    return f"target_return_{horizon}d"


def target_rank_name(horizon: int) -> str:
    return f"target_rank_{horizon}d"


def target_columns(horizons: Sequence[int]) -> list[str]:
    return [name for h in horizons for name in (target_return_name(h), target_rank_name(h))]


def target_reach(horizons: Sequence[int], fill_end_days: int = 0) -> int:
    """The most sessions after a date that any target of that date can read: the purge a
    walk-forward split needs so that no training label reaches into the test period."""
    return max(horizons) + int(fill_end_days)


def add_targets(panel: pl.DataFrame, horizons: Sequence[int], *, fill_end_days: int = 0) -> pl.DataFrame:
    """Add ``target_return_{h}d`` (see the module docstring) and ``target_rank_{h}d`` (its
    percentile rank among the day's stocks in the universe; null outside it).

    ``panel`` must be sorted by (code, date) and carry ``_session`` (the date's index in the
    market calendar) and ``_in_universe``.
    """
    if fill_end_days < 0:
        raise ValueError(f"fill_end_days must be >= 0, got {fill_end_days}")
    ends = panel.select("code", c(SESSION).alias(_END_SESSION), c("close").alias(_END_CLOSE))
    forward = []
    for h in horizons:
        wanted = panel.select("code", (c(SESSION) + h).alias(_WANTED))
        end = wanted.join_asof(
            ends,
            left_on=_WANTED,
            right_on=_END_SESSION,
            by="code",
            strategy="forward",
            tolerance=int(fill_end_days),
            check_sortedness=False,  # sorted within each code: the panel is sorted by (code, date)
        )
        if end.height != panel.height:  # pragma: no cover - join_asof keeps the left rows
            raise RuntimeError("target end lookup changed the number of rows")
        forward.append((end.get_column(_END_CLOSE) / panel.get_column("close") - 1.0).alias(target_return_name(h)))
    universe = c(IN_UNIVERSE)
    ranks = [cs_rank(pl.when(universe).then(c(target_return_name(h)))).alias(target_rank_name(h)) for h in horizons]
    return panel.with_columns(forward).with_columns(ranks)
