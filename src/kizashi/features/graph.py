"""Per-day stock graphs from rolling, pairwise-complete return correlation.

The graph of trading day ``t`` is built from the ``window`` trading dates of the panel
calendar that end at ``t`` (inclusive) and from nothing later, so it is known at ``t``'s
close. A stock is a node on ``t`` when it has a return on ``t`` and at least
``min_periods`` returns in the window. Each node (``dst``) receives edges from its
``top_k`` most correlated nodes by ``|correlation|`` (``src``), optionally only those with
``|correlation| >= threshold``; with a threshold alone every pair above it is an edge.

Computation: the long ``(code, date, return)`` frame is pivoted once into a dense
``[dates, codes]`` matrix (NaN = missing); days are processed in small batches, each an
``[B, W, N]`` stack of windows whose pairwise-complete moments come from two batched
matmuls (see :func:`pairwise_correlation`); top-k uses ``np.partition`` per row. Batches
run on a few threads (numpy releases the GIL) with BLAS itself single-threaded. Timings:
``benchmarks/bench_graph.py`` and docs/benchmarks.md (Correlation graphs).

Output (one row per edge)::

    date: Date, src_code: Utf8, dst_code: Utf8,
    correlation: Float32, abs_correlation: Float32, same_sector: Int8

sorted by date, dst_code, then rank (``|correlation|`` descending, ``src_code`` ascending
on ties).
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kizashi.config import GraphConfig
from kizashi.data.schema import CODE, DATE, SECTOR
from kizashi.log import progress
from kizashi.data.calendar import trading_calendar

logger = logging.getLogger(__name__)

EDGE_SCHEMA: dict[str, pl.DataType] = {
    DATE: pl.Date(),
    "src_code": pl.Utf8(),
    "dst_code": pl.Utf8(),
    "correlation": pl.Float32(),
    "abs_correlation": pl.Float32(),
    "same_sector": pl.Int8(),
}

# Elements of one [B, N, N] working array per batch: small enough that a batch's working
# set stays in cache (measured fastest at one day per batch for 500 stocks).
_BATCH_ELEMENTS = 1 << 18
_PROGRESS_MIN_BATCHES = 50  # a progress bar only for long work
# Relative size (in units of the dtype's machine epsilon times the window length) below
# which a standard deviation counts as zero: see pairwise_correlation.
_ZERO_VARIANCE_ULPS = 8.0


def default_min_periods(config: GraphConfig) -> int:
    """``config.min_periods``, or 2/3 of the window rounded up."""
    if config.min_periods is not None:
        return int(config.min_periods)
    return math.ceil(2 * config.window / 3)


def pairwise_correlation(
    window: np.ndarray, min_periods: int, *, dtype: type[np.floating] | np.dtype = np.float64
) -> np.ndarray:
    """Pairwise-complete Pearson correlation of each window in a batch.

    ``window`` is ``[B, W, N]`` (or ``[W, N]``): B windows of W dates by N series, NaN (or
    inf) = missing. Returns ``[B, N, N]`` (or ``[N, N]``) in ``dtype``: the correlation of
    series i and j over the dates where both are present, the same as pandas'
    ``DataFrame.corr(min_periods=...)``. NaN where the pair has fewer than ``min_periods``
    joint observations, or where either series is constant over them.

    All pair sums come from two batched matmuls (mask M = present, X = centred values with
    zeros where missing): ``[X | X² | M]ᵀ @ M`` gives per pair the joint count n, Σx and Σx²
    over the joint dates, ``Xᵀ @ X`` gives Σxy; then ``cov = Σxy − Σx·Σy/n`` and
    ``var = Σx² − (Σx)²/n``.

    Numerics: each series is first centred by its own mean over the window. Covariance is
    shift-invariant, so this is exact algebra, and it removes the cancellation that makes the
    one-pass formula fail when a mean is large relative to the spread (prices, or float32
    sums). After centring, every term is of the order of the series' spread, so the rounding
    error of the sums is about ``W · eps`` relative to ``sqrt(var_i · var_j)``: with
    float32 (eps ≈ 6e-8) and W = 60 that bounds the correlation error by ~1e-5 absolute
    (measured: at most 5e-7 against float64 over 2.8 M edges of 500 stocks), below what a
    top-k neighbour choice can notice; float64 matches pandas to ~1e-13. A series counts as
    constant when its standard deviation over the joint dates is below
    ``8 · W · eps`` times its largest absolute value in the window (rounding of the mean
    alone leaves a residue of that order).
    """
    values = np.asarray(window)
    single = values.ndim == 2
    if single:
        values = values[None]
    if values.ndim != 3:
        shape = np.asarray(window).shape
        raise ValueError(f"window must be [B, W, N] (or [W, N]), got shape {shape}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    corr = _pairwise_correlation(values, min_periods, dtype, _Workspace())
    return corr[0] if single else corr


class _Workspace:
    """Named scratch buffers reused from batch to batch.

    Allocating the [B, N, N] temporaries afresh for every batch costs more than the
    arithmetic on them: the allocator hands the pages back to the kernel and every batch
    page-faults them in again.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.size < size:
            buffer = np.empty(max(size, 1), dtype=dtype)
            self._buffers[name] = buffer
        return buffer[:size].reshape(shape)


def _pairwise_correlation(
    values: np.ndarray, min_periods: int, dtype: np.dtype, work: _Workspace
) -> np.ndarray:
    """:func:`pairwise_correlation` of ``[B, W, N]`` into buffers of ``work`` (the result
    is overwritten by the next call with the same workspace)."""
    values = np.ascontiguousarray(values)  # the derived arrays below are matmul operands
    n_batch, n_dates, n_series = values.shape
    square = (n_batch, n_series, n_series)

    present = np.isfinite(values)
    filled = np.where(present, values, 0.0)
    count = present.sum(axis=1)  # [B, N]
    mean = filled.sum(axis=1, dtype=np.float64) / np.maximum(count, 1)
    scale = np.abs(filled).max(axis=1, initial=0.0).astype(np.float64)  # [B, N]
    centred = np.where(present, filled - mean[:, None, :], 0.0).astype(dtype, copy=False)
    mask = present.astype(dtype)

    # Both matmul operands must be C-contiguous, else numpy skips BLAS for a much slower loop.
    stacked = work.take("stacked", (n_batch, 3 * n_series, n_dates), dtype)
    centred_t = stacked[:, :n_series]  # [B, N, W]
    centred_t[...] = centred.transpose(0, 2, 1)
    np.multiply(centred_t, centred_t, out=stacked[:, n_series : 2 * n_series])
    stacked[:, 2 * n_series :] = mask.transpose(0, 2, 1)
    moments = work.take("moments", (n_batch, 3 * n_series, n_series), dtype)
    np.matmul(stacked, mask, out=moments)
    sum_x = moments[:, :n_series]  # Σ x_i over the dates where both i and j are present
    sum_xx = moments[:, n_series : 2 * n_series]
    joint = moments[:, 2 * n_series :]  # joint counts (exact in float up to 2**24)
    sum_xy = np.matmul(
        np.ascontiguousarray(centred_t), centred, out=work.take("sum_xy", square, dtype)
    )

    inv_joint = np.maximum(joint, 1.0, out=work.take("inv_joint", square, dtype))
    np.reciprocal(inv_joint, out=inv_joint)
    mean_x = np.multiply(sum_x, inv_joint, out=work.take("cov", square, dtype))
    var = np.multiply(mean_x, sum_x, out=work.take("var", square, dtype))
    np.subtract(sum_xx, var, out=var)  # Σ (x_i − mean_ij)² over the joint dates
    cov = np.multiply(mean_x, sum_x.transpose(0, 2, 1), out=mean_x)
    np.subtract(sum_xy, cov, out=cov)  # Σ (x_i − mean_ij)(x_j − mean_ji)
    rel = _ZERO_VARIANCE_ULPS * max(n_dates, 1) * np.finfo(dtype).eps
    floor = ((rel * scale) ** 2).astype(dtype)[:, :, None]  # [B, N, 1], per-observation variance
    per_date_var = np.multiply(var, inv_joint, out=inv_joint)
    constant = np.less_equal(per_date_var, floor, out=work.take("constant", square, np.bool_))
    invalid = np.less(joint, min_periods, out=work.take("invalid", square, np.bool_))
    invalid |= constant
    invalid |= constant.transpose(0, 2, 1)
    denominator = np.multiply(var, var.transpose(0, 2, 1), out=inv_joint)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.sqrt(denominator, out=denominator)
        corr = np.divide(cov, denominator, out=cov)
    np.copyto(corr, np.nan, where=invalid)
    # Σxy from BLAS need not be bit-symmetric: average with the transpose so that
    # corr[i, j] == corr[j, i] exactly (the NaN pattern is symmetric already).
    corr = np.add(corr, corr.transpose(0, 2, 1), out=var)
    corr *= 0.5
    np.clip(corr, -1.0, 1.0, out=corr)
    return corr


def correlation_graphs(
    returns: pl.DataFrame,
    config: GraphConfig,
    sectors: pl.DataFrame | None = None,
    dates: Any = None,
    *,
    value: str = "return_1d",
    sector_column: str = SECTOR,
    dtype: type[np.floating] | np.dtype = np.float32,
    batch_days: int = 64,
    workers: int | None = None,
) -> pl.DataFrame:
    """Edges of the per-day correlation graphs of a panel (see the module docstring).

    ``returns`` has columns ``code``, ``date`` and ``value`` (null / NaN = missing); the
    trading calendar is the set of its dates. ``sectors`` (``code`` + ``sector_column``)
    fills ``same_sector`` (1 = both stocks in the same known sector). ``dates`` restricts
    output to those days (dates outside the calendar are skipped and counted in the log).
    ``dtype`` is the precision of the correlation sums (float32 with centring is accurate to
    ~1e-5, see :func:`pairwise_correlation`; float64 is slower). ``batch_days`` caps the
    days per batch (the batch is also capped so that a ``[B, N, N]`` array stays small).
    ``workers`` threads process batches in parallel (default: the CPUs this process may use,
    at most 8); the result does not depend on it.
    """
    started = time.perf_counter()
    empty = pl.DataFrame(schema=EDGE_SCHEMA)
    if not config.enabled:
        logger.info("correlation graphs disabled (graph.enabled = false)")
        return empty
    min_periods = default_min_periods(config)
    if min_periods > config.window:
        raise ValueError(
            f"graph.min_periods ({min_periods}) exceeds graph.window ({config.window}): "
            "no stock could ever be a node"
        )

    dtype = np.dtype(dtype)
    matrix, calendar, codes = _pivot(returns, value, dtype)
    n_dates, n_codes = matrix.shape
    days = _target_days(calendar, config.every_n_days, dates) if n_dates else np.zeros(0, np.int64)
    all_days = _target_days(calendar, config.every_n_days, None) if n_dates else np.zeros(0, np.int64)
    if n_codes < 2 or days.size == 0:
        logger.info("correlation graphs: nothing to build (%d codes, %d days)", n_codes, days.size)
        return empty
    sector_ids = _sector_ids(codes, sectors, sector_column)

    window = config.window
    padded = np.concatenate([np.full((window - 1, n_codes), np.nan, matrix.dtype), matrix])
    offsets = np.arange(window)
    observed = np.isfinite(padded)
    cum_obs = np.concatenate([np.zeros((1, n_codes), np.int64), np.cumsum(observed, axis=0)])
    # observations of each code in the window ending at t: rows t .. t+W-1 of `padded`
    window_obs = cum_obs[window:] - cum_obs[:-window]  # [T, N]
    is_node = np.isfinite(matrix) & (window_obs >= min_periods)  # [T, N]

    per_batch = max(1, min(batch_days, _BATCH_ELEMENTS // (n_codes * n_codes)))
    # Batches are cut from every graph day, whatever ``dates`` asks for, and a batch is built
    # whole: a day's sums then have the same shapes (the batch's codes) and so the same
    # rounding as in a build of every day. Only the batches holding a requested day run.
    batches = [all_days[i : i + per_batch] for i in range(0, all_days.size, per_batch)]
    if dates is not None:
        batches = [batch for batch in batches if np.isin(batch, days).any()]
    n_workers = max(1, min(workers or _available_cpus(), len(batches)))
    local = threading.local()

    def build(batch: np.ndarray) -> tuple[np.ndarray, ...] | None:
        nodes = is_node[batch]  # [B, N]
        columns = np.flatnonzero(nodes.any(axis=0))
        if columns.size < 2:
            return None
        if not hasattr(local, "work"):
            local.work = _Workspace()  # one per thread: results live in its buffers
        # window of day t = rows t .. t+W-1 of `padded` (it ends at calendar row t)
        rows = batch[:, None, None] + offsets[None, :, None]
        stack = padded[rows, columns[None, None, :]]  # [B, W, n], C-contiguous
        corr = _pairwise_correlation(stack, min_periods, dtype, local.work)
        b, dst, src = _select_edges(
            corr, nodes[:, columns], config.top_k, config.threshold, config.symmetric, local.work
        )
        return (
            batch[b].astype(np.int32),
            columns[dst].astype(np.int32),
            columns[src].astype(np.int32),
            corr[b, dst, src].astype(np.float32),
        )

    # Days run in parallel threads (numpy releases the GIL); BLAS is kept single-threaded:
    # these [n, W] x [W, n] products are too small for its threads, which only add wake-up
    # latency (slower and erratic timings on machines with few cores).
    with _single_threaded_blas(), ThreadPoolExecutor(n_workers) as pool:
        results = pool.map(build, batches)
        if len(batches) >= _PROGRESS_MIN_BATCHES:
            results = progress(results, "correlation graphs", total=len(batches))
        parts = [part for part in results if part is not None]

    if not parts:
        logger.info("correlation graphs: no edges (%d days, no day had two nodes)", days.size)
        return empty
    day_idx, dst_idx, src_idx, corr_values = (
        np.concatenate(column) for column in zip(*parts, strict=True)
    )
    if dates is not None:  # the requested days only
        keep = np.isin(day_idx, days)
        day_idx, dst_idx, src_idx, corr_values = (a[keep] for a in (day_idx, dst_idx, src_idx, corr_values))
    code_series = pl.Series(CODE, codes, dtype=pl.Utf8)
    same = (sector_ids[src_idx] == sector_ids[dst_idx]) & (sector_ids[src_idx] >= 0)
    out = pl.DataFrame(
        {
            DATE: pl.Series(DATE, calendar[day_idx], dtype=pl.Date),
            "src_code": code_series.gather(src_idx),
            "dst_code": code_series.gather(dst_idx),
            "correlation": pl.Series("correlation", corr_values, dtype=pl.Float32),
            "abs_correlation": pl.Series("abs_correlation", np.abs(corr_values), dtype=pl.Float32),
            "same_sector": pl.Series("same_sector", same.astype(np.int8), dtype=pl.Int8),
        }
    )
    logger.info(
        "correlation graphs: %d edges on %d days (%d codes, window %d, min_periods %d) in %.1fs",
        out.height,
        int(np.count_nonzero(np.diff(day_idx))) + 1,  # day_idx is sorted
        n_codes,
        window,
        min_periods,
        time.perf_counter() - started,
    )
    return out


def _pivot(
    returns: pl.DataFrame, value: str, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ``[dates, codes]`` matrix (NaN = missing), the sorted calendar and codes."""
    missing = [c for c in (CODE, DATE, value) if c not in returns.columns]
    if missing:
        raise ValueError(
            f"returns frame lacks column(s) {missing}; it has {returns.columns} "
            f"(pass value=<name> to use another return column)"
        )
    frame = returns.select(
        pl.col(CODE).cast(pl.Utf8),
        pl.col(DATE).cast(pl.Date),
        pl.col(value).cast(pl.Float64),
    )
    for column in (CODE, DATE):
        nulls = frame[column].null_count()
        if nulls:
            raise ValueError(f"returns frame has {nulls} null value(s) in column `{column}`")
    duplicated = frame.filter(pl.struct(CODE, DATE).is_duplicated())
    if duplicated.height:
        examples = duplicated.select(CODE, DATE).unique().sort(CODE, DATE).head(5).rows()
        raise ValueError(
            f"returns frame has {duplicated.height} rows with a duplicated (code, date), "
            f"e.g. {examples}"
        )
    frame = frame.with_columns(
        (pl.col(DATE).rank("dense") - 1).cast(pl.Int64).alias("_day"),
        (pl.col(CODE).rank("dense") - 1).cast(pl.Int64).alias("_code"),
    )
    calendar = frame[DATE].unique().sort().to_numpy().astype("datetime64[D]")
    codes = frame[CODE].unique().sort().to_numpy().astype(str)
    matrix = np.full((calendar.size, codes.size), np.nan, dtype=dtype)
    vals = frame[value].fill_null(np.nan).to_numpy().astype(dtype)
    matrix[frame["_day"].to_numpy(), frame["_code"].to_numpy()] = vals
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix, calendar, codes


def _target_days(calendar: np.ndarray, every_n_days: int, dates: Any) -> np.ndarray:
    """Calendar indices that get a graph: every n-th day counted back from the last one."""
    n_dates = calendar.size
    days = np.arange(n_dates - 1, -1, -every_n_days)[::-1].astype(np.int64)
    if dates is None:
        return days
    wanted = trading_calendar(dates)
    position = np.searchsorted(calendar, wanted)
    inside = (position < n_dates) & (calendar[np.minimum(position, max(n_dates - 1, 0))] == wanted)
    if (~inside).any():
        logger.info(
            "correlation graphs: %d requested date(s) are not in the panel calendar",
            int((~inside).sum()),
        )
    requested = position[inside]
    kept = days[np.isin(days, requested)]
    if kept.size < requested.size:
        logger.info(
            "correlation graphs: %d requested date(s) skipped by every_n_days=%d",
            requested.size - kept.size,
            every_n_days,
        )
    return kept


def _sector_ids(codes: np.ndarray, sectors: pl.DataFrame | None, column: str) -> np.ndarray:
    """Integer sector of each code (-1 = unknown)."""
    ids = np.full(codes.size, -1, dtype=np.int64)
    if sectors is None:
        return ids
    missing = [c for c in (CODE, column) if c not in sectors.columns]
    if missing:
        raise ValueError(f"sector table lacks column(s) {missing}; it has {sectors.columns}")
    table = sectors.select(pl.col(CODE).cast(pl.Utf8), pl.col(column).cast(pl.Utf8)).unique()
    table = table.filter(pl.col(CODE).is_not_null() & pl.col(column).is_not_null())
    conflicting = table.filter(pl.col(CODE).is_duplicated())
    if conflicting.height:
        raise ValueError(
            f"sector table gives more than one `{column}` to "
            f"{conflicting[CODE].n_unique()} code(s), "
            f"e.g. {conflicting.sort(CODE).head(4).rows()}"
        )
    table = table.with_columns((pl.col(column).rank("dense") - 1).cast(pl.Int64).alias("_sector"))
    lookup = dict(zip(table[CODE].to_list(), table["_sector"].to_list(), strict=True))
    for i, code in enumerate(codes.tolist()):
        ids[i] = lookup.get(code, -1)
    return ids


def _select_edges(
    corr: np.ndarray,
    nodes: np.ndarray,
    top_k: int | None,
    threshold: float | None,
    symmetric: bool,
    work: _Workspace | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(batch, dst, src)`` of a batch of correlation matrices ``[B, n, n]``.

    ``nodes`` is ``[B, n]``. Rows are destinations; candidates are the other nodes with a
    finite correlation (and ``|corr| >= threshold``). Top-k ties at the k-th value go to the
    lower column index (= the smaller code). Edges come out ordered by batch, dst, then
    ``|corr|`` (as float32, the output precision) descending and src ascending.
    """
    work = work or _Workspace()
    n_batch, n, _ = corr.shape
    score = np.abs(corr, out=work.take("score", corr.shape, corr.dtype))
    np.fmax(score, -1.0, out=score)  # NaN -> -1 (not a candidate); real scores are >= 0
    absent = ~nodes
    np.copyto(score, -1.0, where=absent[:, :, None])
    np.copyto(score, -1.0, where=absent[:, None, :])
    score.reshape(n_batch, n * n)[:, :: n + 1] = -1.0  # no self-loops
    if threshold is not None:
        np.copyto(score, -1.0, where=score < threshold)

    if top_k is None or top_k >= n - 1:
        selected = np.greater_equal(score, 0, out=work.take("selected", corr.shape, np.bool_))
    else:
        ranked = work.take("ranked", corr.shape, corr.dtype)
        ranked[...] = score
        ranked.partition(n - top_k, axis=-1)
        # k-th largest score of each row; rows with fewer than k candidates take them all
        kth = np.maximum(ranked[..., n - top_k, None], 0)
        selected = np.greater_equal(score, kth, out=work.take("selected", corr.shape, np.bool_))
        over = np.flatnonzero((selected.sum(axis=-1) > top_k).reshape(-1))
        if over.size:  # candidates tied at the k-th value overflow: the lowest src wins
            row_score = score.reshape(-1, n)[over]
            row_kth = kth.reshape(-1, 1)[over]
            above = row_score > row_kth
            at_kth = row_score == row_kth
            need = top_k - above.sum(axis=-1, keepdims=True)
            selected.reshape(-1, n)[over] = above | (at_kth & (np.cumsum(at_kth, axis=-1) <= need))
    if symmetric:
        selected |= selected.transpose(0, 2, 1).copy()

    flat_index = np.flatnonzero(selected)  # ordered by (batch, dst, src)
    row = flat_index // n
    src = flat_index - row * n
    # Order within a row by |corr| descending: the bits of a non-negative float32 grow with
    # its value, so (row, max - bits) is an exact integer key; the stable sort keeps src
    # ascending among equal values.
    bits = score.reshape(-1)[flat_index].astype(np.float32).view(np.int32).astype(np.int64)
    order = np.argsort((row << 31) | (0x7FFFFFFF - bits), kind="stable")
    row, src = row[order], src[order]
    batch = row // n
    return batch, row - batch * n, src


def _available_cpus() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    return max(1, min(count, 8))


# (set, get) thread-count functions of OpenBLAS builds: numpy's wheels, then plain OpenBLAS.
_OPENBLAS_THREAD_FUNCTIONS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


def _openblas_thread_setters() -> tuple[Any, Any] | None:
    """(set, get) of the OpenBLAS that numpy loaded, or None (another BLAS, not found)."""
    candidates: list[str] = []
    maps = Path("/proc/self/maps")
    if maps.exists():
        for line in maps.read_text().splitlines():
            path = line.split()[-1] if line.strip() else ""
            if "openblas" in Path(path).name and path not in candidates:
                candidates.append(path)
    for path in candidates:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _OPENBLAS_THREAD_FUNCTIONS:
            setter = getattr(library, set_name, None)
            getter = getattr(library, get_name, None)
            if setter is not None and getter is not None:
                getter.restype = ctypes.c_int
                return setter, getter
    return None


_BLAS_LOCK = threading.Lock()


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run the block with OpenBLAS on one thread, then restore its thread count."""
    with _BLAS_LOCK:
        setters = _openblas_thread_setters()
        if setters is None:
            logger.debug("OpenBLAS not found; leaving BLAS threading as it is")
            yield
            return
        setter, getter = setters
        before = getter()
        setter(1)
        try:
            yield
        finally:
            setter(before)


# Columns of the per-(date, code) neighbour table joined onto panel rows (kizashi.features).
NEIGHBOR_RETURN = "_nb_ret"  # mean return today of the stock's graph neighbours (sources)
NEIGHBOR_WEIGHTED_RETURN = "_nb_wret"  # correlation-weighted mean return of the neighbours
NEIGHBOR_COUNT = "_nb_count"  # number of neighbours (in-degree) in today's graph


def neighbor_table(edges: pl.DataFrame, returns: pl.DataFrame, value: str = "return_1d") -> pl.DataFrame:
    """Per (date, code): aggregates of the day's returns over the stock's in-neighbours in
    that day's graph (``src_code -> dst_code`` edges of :func:`correlation_graphs`).

    ``returns``: ``code, date, value``. The graph of day t and the returns of day t are both
    known at t's close, so every value is too. Output columns: ``date, code,``
    :data:`NEIGHBOR_RETURN`, :data:`NEIGHBOR_WEIGHTED_RETURN` (sum of corr x return over
    sum of |corr|), :data:`NEIGHBOR_COUNT`; stocks with no neighbour have no row.
    """
    source_returns = returns.select(
        pl.col(CODE).alias("src_code"), pl.col(DATE), pl.col(value).cast(pl.Float64).alias("_src_ret")
    )
    joined = edges.select(DATE, "src_code", "dst_code", "correlation").join(
        source_returns, on=[DATE, "src_code"], how="inner"
    )
    corr = pl.col("correlation").cast(pl.Float64)
    ret = pl.col("_src_ret")
    valid = ret.is_not_null() & ret.is_finite()
    return (
        joined.filter(valid)
        .group_by(DATE, "dst_code")
        .agg(
            ret.mean().alias(NEIGHBOR_RETURN),
            ((corr * ret).sum() / corr.abs().sum()).alias(NEIGHBOR_WEIGHTED_RETURN),
            pl.len().cast(pl.Float64).alias(NEIGHBOR_COUNT),
        )
        .rename({"dst_code": CODE})
        .sort(DATE, CODE)
    )
