"""Evaluate the feature families over a whole panel.

Steps (all vectorized over the panel; no Python loop per stock or per day):

1. :func:`prepare_base` sorts by (code, date), adds helper columns (``_row``, ``_ret``,
   ...) and the ``target_*`` columns; :func:`context_tables` builds, from the whole panel,
   the per-date market table, the per-(date, sector) sector table, the correlation graphs
   with their per-(date, code) neighbour table, and keeps the weekly margin balances;
   :func:`attach_context` joins them onto rows (margin as of publication), per chunk in a
   build, or once for the whole panel in :func:`prepare_panel`.
2. :func:`iter_feature_chunks` evaluates stage-1 expressions (reading prepared columns;
   stock-level ones per stock with ``over("code")``, masked while ``_run_row < lookback``),
   then keeps the rows in the universe, then evaluates stage-2 expressions (reading stage-1
   features) and per-day normalization, over chunks of trading days. Each chunk carries, per
   stock, the ``max_lookback`` rows before its first row in the chunk, so chunked results
   equal a whole-panel build while memory stays bounded by the chunk size.

Time is the market calendar: the sorted trading dates of the whole panel. A stock's missing
sessions (halts, gaps in the data, a delisting and re-listing) are never stepped over: the
one-session return after a gap is null, a stock-level feature of lookback L is null unless
the stock's last L + 1 rows are consecutive sessions, and targets count sessions
(:mod:`kizashi.features.targets`).

The universe is point-in-time: a stock is in it on date t when it has ``min_history`` rows
up to t. Rows outside it feed only the stock's own lookbacks; they are not written and take
no part in any per-day aggregate (market and sector tables, graphs, cross-sectional ranks
and normalization, target ranks), so no row's values depend on rows after its date.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from kizashi.config import GraphConfig
from kizashi.features.expressions import (
    DOLLAR_VOLUME,
    IN_UNIVERSE,
    LOG_RET,
    PREV_CLOSE,
    RAW_CLOSE,
    RET,
    ROW,
    RUN_ROW,
    SESSION,
    c,
)
from kizashi.features.margin import join_margin
from kizashi.features.market import market_table
from kizashi.features.normalization import cross_sectional_normalize
from kizashi.features.registry import max_lookback
from kizashi.features.sector import sector_table
from kizashi.features.spec import FeatureContext, FeatureSpec
from kizashi.features.targets import add_targets, target_columns
from kizashi.features.graph import correlation_graphs, neighbor_table

log = logging.getLogger(__name__)

KEY_COLUMNS = ("code", "date", "sector")
UNKNOWN_SECTOR = "UNKNOWN"
_CONSECUTIVE = "_consecutive"  # the stock's previous row is on the previous market session


def feature_context(panel: pl.DataFrame, margin: pl.DataFrame | None, has_graph: bool = False) -> FeatureContext:
    sectors = tuple(sorted(panel.get_column("sector").unique().drop_nulls().to_list())) if "sector" in panel.columns else ()
    return FeatureContext(sectors=sectors, has_margin=margin is not None and margin.height > 0, has_graph=has_graph)


@dataclass(frozen=True)
class ContextTables:
    """The per-date tables joined onto panel rows before features are evaluated: the
    market table (one row per date), the sector table (one row per (date, sector)), the
    margin balances (weekly rows per code, joined as of publication) and, when graphs are
    built, the graph ``edges`` and their per-(date, code) ``neighbors`` aggregates."""

    market: pl.DataFrame
    sector: pl.DataFrame
    margin: pl.DataFrame | None
    edges: pl.DataFrame | None = None
    neighbors: pl.DataFrame | None = None


def prepare_base(
    panel: pl.DataFrame, horizons: Sequence[int], *, min_history: int = 1, fill_end_days: int = 0
) -> pl.DataFrame:
    """Adjusted, validated panel -> rows sorted by (code, date) with the helper columns
    (``_row``, ``_session``, ``_run_row``, ``_in_universe``, ``_prev_close``, ``_ret``, ...)
    and the ``target_*`` columns, but none of the joined per-date tables (see
    :func:`context_tables`, :func:`attach_context`).

    ``panel`` columns: code, date, open, high, low, close, volume, optional turnover_value,
    adjustment_multiplier, sector, oracle_*. ``min_history``: rows a stock needs up to a date
    to be in that date's universe. ``fill_end_days``: see :func:`add_targets`.
    """
    if min_history < 1:
        raise ValueError(f"min_history must be >= 1, got {min_history}")
    if "sector" not in panel.columns:
        panel = panel.with_columns(pl.lit(UNKNOWN_SECTOR).alias("sector"))
    dollar = c("turnover_value") if "turnover_value" in panel.columns else c("close") * c("volume")
    raw_close = c("close") / c("adjustment_multiplier") if "adjustment_multiplier" in panel.columns else c("close")
    sessions = panel.select(pl.col("date").unique().sort()).with_row_index(SESSION).with_columns(c(SESSION).cast(pl.Int32))
    # A row follows its stock's previous row without a gap when that row is on the previous
    # market session; the first row of a stock starts a run too.
    consecutive = c(_CONSECUTIVE).fill_null(False)
    run_start = pl.when(consecutive).then(pl.lit(None, pl.Int32)).otherwise(c(ROW)).forward_fill()
    base = (
        panel.sort("code", "date")
        .join(sessions, on="date", how="left", maintain_order="left")
        .with_columns(
            pl.int_range(pl.len(), dtype=pl.Int32).over("code").alias(ROW),
            ((c(SESSION) - c(SESSION).shift(1)).over("code") == 1).alias(_CONSECUTIVE),
            dollar.cast(pl.Float64).alias(DOLLAR_VOLUME),
            raw_close.alias(RAW_CLOSE),
        )
        .with_columns(
            pl.when(consecutive).then(c("close").shift(1).over("code")).alias(PREV_CLOSE),
            (c(ROW) - run_start.over("code")).cast(pl.Int32).alias(RUN_ROW),
            (c(ROW) + 1 >= min_history).alias(IN_UNIVERSE),
        )
        .with_columns(
            (c("close") / c(PREV_CLOSE) - 1.0).alias(RET),
            (c("close") / c(PREV_CLOSE)).log().alias(LOG_RET),
        )
        .drop(_CONSECUTIVE)
    )
    return add_targets(base, horizons, fill_end_days=fill_end_days)


def context_tables(
    base: pl.DataFrame,
    margin: pl.DataFrame | None,
    graph: GraphConfig | None = None,
    sectors: pl.DataFrame | None = None,
    graph_dates: Any = None,
) -> ContextTables:
    """The per-date tables of a whole base panel (:func:`prepare_base`). They are built
    from every stock in each date's universe, so they must come from the whole panel, never
    a chunk; every date of the market calendar has a row (null where no stock is in it).

    With an enabled ``graph`` config the per-day correlation graphs are built too (from the
    base panel's daily returns; ``sectors``: ``code, sector`` for the same-sector flag,
    default the panel's own sector column). ``graph_dates`` restricts the graphs to those
    days (each still from its full window of the whole panel: the same edges as without it).
    """
    calendar = base.select(pl.col("date").unique().sort())
    universe = base.lazy().filter(c(IN_UNIVERSE)).select("code", "date", "sector", RET).collect()
    edges = neighbors = None
    if graph is not None and graph.enabled:
        returns = universe.select("code", "date", c(RET).alias("return_1d"))
        if sectors is None:
            sectors = base.select("code", "sector").unique()
        edges = correlation_graphs(returns, graph, sectors=sectors, dates=graph_dates, dtype=graph.dtype)
        neighbors = neighbor_table(edges, returns)
    return ContextTables(
        market=market_table(universe, calendar),
        sector=sector_table(universe, calendar),
        margin=margin,
        edges=edges,
        neighbors=neighbors,
    )


def attach_context(rows: pl.DataFrame, tables: ContextTables) -> pl.DataFrame:
    """Join the context tables onto base rows (any subset of the panel); sorted by
    (code, date)."""
    joined = rows.join(tables.market, on="date", how="left").join(tables.sector, on=["date", "sector"], how="left")
    if tables.neighbors is not None:
        joined = joined.join(tables.neighbors, on=["date", "code"], how="left")
    return join_margin(joined, tables.margin).sort("code", "date")


def prepare_panel(
    panel: pl.DataFrame,
    margin: pl.DataFrame | None,
    horizons: Sequence[int],
    graph: GraphConfig | None = None,
    *,
    min_history: int = 1,
    fill_end_days: int = 0,
) -> pl.DataFrame:
    """The whole prepared panel in memory: :func:`prepare_base` with the context tables
    attached. Large builds keep the base and attach per chunk instead (``kizashi.jobs.data_build``)."""
    base = prepare_base(panel, horizons, min_history=min_history, fill_end_days=fill_end_days)
    return attach_context(base, context_tables(base, margin, graph))


def _stage_exprs(specs: Sequence[FeatureSpec], stage: int, dtype: pl.DataType) -> list[pl.Expr]:
    """Stage ``stage``'s expressions, each cast to ``dtype`` (cast inside the expression: the
    full-width float64 block never exists at once). Non-finite values are left for
    :func:`_finite_exprs`."""
    exprs = []
    for spec in specs:
        if spec.stage != stage:
            continue
        expr = spec.expr
        if spec.masked and spec.lookback > 0:
            expr = pl.when(c(ROW if spec.spans_gaps else RUN_ROW) >= spec.lookback).then(expr)
        if spec.masked and stage == 1:
            # Per stock: a sliding-window sum over the whole column would carry rounding
            # error from the previous stock's rows (including its later dates) into this
            # stock's values. Evaluating per stock keeps every value a function of the
            # stock's own past only, and makes chunked builds exact (~+40% stage-1 time).
            expr = expr.over("code")
        exprs.append(expr.cast(dtype).alias(spec.name))
    return exprs


def _finite_exprs(specs: Sequence[FeatureSpec], stage: int) -> list[pl.Expr]:
    """Non-finite values (inf, NaN) of stage ``stage``'s columns become null.

    A separate pass over the materialized columns: ``when(e.is_finite()).then(e)`` on the
    feature expression itself would evaluate ``e`` twice (Polars' common-subexpression
    elimination skips rolling and ``over`` expressions), doubling the cost of stage 1.
    """
    return [pl.when(c(s.name).is_finite()).then(c(s.name)).alias(s.name) for s in specs if s.stage == stage]


def evaluate_features(
    frame: pl.DataFrame,
    specs: Sequence[FeatureSpec],
    *,
    normalization: str = "zscore",
    clip: float = 5.0,
    dtype: pl.DataType = pl.Float32(),
) -> pl.DataFrame:
    """Add every feature column to a prepared frame (no chunking; see iter_feature_chunks).

    Features are cast to ``dtype``, non-finite values become null; rows outside the universe
    are dropped after stage 1 (they served the stocks' own lookbacks), then continuous
    features are normalized per day. The result is sorted by (date, code): one trading day
    is a contiguous block, which per-day normalization and per-day datasets both want.
    """
    normalized = [s.name for s in specs if s.normalize]
    # Stage 1 is per stock (over("code")): fastest on (code, date) order, where each stock
    # is a contiguous slice. Stage 2 and normalization work per day: (date, code) order.
    built = (
        frame.sort("code", "date")
        .lazy()
        .with_columns(_stage_exprs(specs, 1, dtype))
        .with_columns(_finite_exprs(specs, 1))
        .filter(c(IN_UNIVERSE))
        .sort("date", "code")
        .with_columns(_stage_exprs(specs, 2, dtype))
        .with_columns(_finite_exprs(specs, 2))
        .collect()
    )
    return cross_sectional_normalize(built, normalized, normalization, clip)


def output_columns(frame: pl.DataFrame, specs: Sequence[FeatureSpec], horizons: Sequence[int]) -> list[str]:
    oracle = [n for n in frame.columns if n.startswith("oracle_")]
    return [*KEY_COLUMNS, *(s.name for s in specs), *target_columns(horizons), *oracle]


def chunk_bounds(dates: Sequence[dt.date], chunk_days: int) -> list[tuple[dt.date, dt.date]]:
    """Consecutive [first, last] date ranges of ``chunk_days`` trading days each."""
    return [(dates[i], dates[min(i + chunk_days, len(dates)) - 1]) for i in range(0, len(dates), chunk_days)]


def iter_feature_chunks(
    prepared: pl.DataFrame,
    specs: Sequence[FeatureSpec],
    horizons: Sequence[int],
    *,
    tables: ContextTables | None = None,
    chunk_days: int | None = None,
    normalization: str = "zscore",
    clip: float = 5.0,
    dtype: pl.DataType = pl.Float32(),
) -> Iterator[pl.DataFrame]:
    """Yield the output rows chunk by chunk (dates ascending within each chunk's range).

    ``prepared`` is a whole prepared panel (:func:`prepare_panel`), or, with ``tables``, a
    base panel (:func:`prepare_base`) whose context tables are then attached per chunk:
    only one chunk ever carries the joined market/sector/margin columns.
    Each chunk's frame has the columns of :func:`output_columns`, rows sorted by
    (date, code). ``chunk_days=None`` builds everything at once.
    """

    def attached(rows: pl.DataFrame) -> pl.DataFrame:
        return rows if tables is None else attach_context(rows, tables)

    columns = output_columns(prepared, specs, horizons)
    if chunk_days is None:
        yield evaluate_features(attached(prepared), specs, normalization=normalization, clip=clip, dtype=dtype).select(columns)
        return
    dates = prepared.get_column("date").unique().sort().to_list()
    for first, last in chunk_bounds(dates, chunk_days):
        yield feature_chunk(
            prepared, specs, horizons, first, last, tables=tables, normalization=normalization, clip=clip, dtype=dtype
        )


def chunk_window(prepared: pl.DataFrame, specs: Sequence[FeatureSpec], first: dt.date, last: dt.date) -> pl.DataFrame:
    """The rows the features of the dates ``first`` .. ``last`` read: those dates' rows and
    each stock's :func:`max_lookback` rows before its first one (no later rows)."""
    start_row = c(ROW).filter(c("date").is_between(first, last)).min().over("code")
    return prepared.filter((c("date") <= last) & (c(ROW) >= start_row - max_lookback(specs)))


def feature_chunk(
    prepared: pl.DataFrame,
    specs: Sequence[FeatureSpec],
    horizons: Sequence[int],
    first: dt.date,
    last: dt.date,
    *,
    tables: ContextTables | None = None,
    normalization: str = "zscore",
    clip: float = 5.0,
    dtype: pl.DataType = pl.Float32(),
) -> pl.DataFrame:
    """The output rows of the dates ``first`` .. ``last`` (columns of :func:`output_columns`,
    sorted by (date, code)), computed from those dates' rows plus each stock's
    :func:`max_lookback` earlier rows as warm-up: the same values as a build of every date
    (the chunks of :func:`iter_feature_chunks`; ``kizashi predict`` builds only its days)."""
    in_chunk = c("date").is_between(first, last)
    window = chunk_window(prepared, specs, first, last)
    if tables is not None:
        window = attach_context(window, tables)
    built = evaluate_features(window, specs, normalization=normalization, clip=clip, dtype=dtype)
    return built.filter(in_chunk).select(output_columns(prepared, specs, horizons))


def compute_features(
    panel: pl.DataFrame,
    margin: pl.DataFrame | None = None,
    *,
    horizons: Sequence[int] = (1, 5, 10, 20),
    families: Sequence[str] | str = "all",
    exclude: Sequence[str] = (),
    normalization: str = "zscore",
    clip: float = 5.0,
    dtype: pl.DataType = pl.Float32(),
    chunk_days: int | None = None,
    graph: GraphConfig | None = None,
    min_history: int = 1,
    fill_end_days: int = 0,
) -> tuple[pl.DataFrame, list[FeatureSpec]]:
    """In-memory convenience: adjusted panel -> (frame of :func:`output_columns`, specs).
    ``graph`` (an enabled GraphConfig) builds the correlation graphs and with them the
    ``peers`` family; ``min_history`` sets the point-in-time universe and ``fill_end_days``
    the targets' gap rule (:func:`prepare_base`). For large panels write chunks to disk
    instead (``kizashi.jobs.data_build``)."""
    from kizashi.features.registry import resolve_specs

    base = prepare_base(panel, horizons, min_history=min_history, fill_end_days=fill_end_days)
    tables = context_tables(base, margin, graph)
    specs = resolve_specs(feature_context(base, margin, tables.neighbors is not None), families, exclude)
    chunks = iter_feature_chunks(
        base, specs, horizons, tables=tables, chunk_days=chunk_days, normalization=normalization, clip=clip, dtype=dtype
    )
    return pl.concat(list(chunks)), specs
