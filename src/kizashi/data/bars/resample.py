"""No-look-ahead resampling of validated base bars to coarser timeframes.

Buckets are aligned to the Unix epoch and every output bar is labelled by its **close
time** (see the package docstring, "No look-ahead"): :func:`resample_bars`,
:func:`build_timeframes`, :func:`bar_close_times` and :func:`visible_coarse_index`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import numpy as np
import polars as pl

from kizashi.data.bars._common import (
    BAR_COLUMNS,
    INVALID_RANGE,
    N_BARS,
    OPEN_TIME,
    PARTIAL,
    RESAMPLED_COLUMNS,
    TIMESTAMP,
    US_PER_MINUTE,
    UTC_DATETIME,
    VALUE_COLUMNS,
)
from kizashi.data.timeframes import (
    DEFAULT_TIMEFRAMES,
    coarser_timeframes,
    timeframe_minutes,
    timeframe_name,
)
from kizashi.errors import DataValidationError

log = logging.getLogger(__name__)


def _check_base_bars(frame: pl.DataFrame, base_minutes: int) -> None:
    """Resampling needs validated base bars: strictly increasing, on the base grid, no nulls."""
    if OPEN_TIME in frame.columns:
        raise ValueError(
            f"frame has an {OPEN_TIME!r} column: it is already resampled (close-time labels); "
            "resample the validated base bars instead"
        )
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"missing bar column(s) {missing}; columns: {frame.columns}")
    if frame.schema[TIMESTAMP] != UTC_DATETIME:
        raise ValueError(
            f"{TIMESTAMP!r} must be {UTC_DATETIME} (validate_bars output), "
            f"got {frame.schema[TIMESTAMP]}"
        )
    base_us = base_minutes * US_PER_MINUTE
    epoch_us = pl.col(TIMESTAMP).dt.epoch("us")
    checks = frame.select(
        (epoch_us.diff() <= 0).sum().alias("not_increasing"),
        (epoch_us % base_us != 0).sum().alias("off_grid"),
        pl.sum_horizontal([pl.col(c).null_count() for c in BAR_COLUMNS]).alias("nulls"),
    ).row(0, named=True)
    problems = []
    if checks["not_increasing"]:
        problems.append(f"{checks['not_increasing']} timestamp(s) not after the previous one")
    if checks["off_grid"]:
        problems.append(
            f"{checks['off_grid']} open time(s) off the {timeframe_name(base_minutes)} grid "
            "(such bars would straddle coarse buckets)"
        )
    if checks["nulls"]:
        problems.append(f"{checks['nulls']} null value(s)")
    if problems:
        raise DataValidationError(
            "resample_bars needs validated base bars (validate_bars): " + "; ".join(problems)
        )


def resample_bars(
    frame: pl.DataFrame,
    base_timeframe: str,
    target_timeframe: str,
    *,
    drop_partial: bool = False,
) -> pl.DataFrame:
    """Aggregate validated base bars into ``target_timeframe`` bars, labelled by close time.

    Args:
        frame: ``[N, 6 or 7]`` output of :func:`validate_bars` (open-time ``timestamp``
            strictly increasing and on the base grid; an ``invalid_range`` column is
            carried over when present).
        base_timeframe: the frame's timeframe (``report.base_timeframe``).
        target_timeframe: a whole multiple of the base (equal to it gives the base bars in
            the resampled layout).
        drop_partial: drop buckets with fewer base bars than a full one (the number dropped
            is logged). Default: keep them, flagged ``partial``.

    Returns:
        ``[K, 10]`` frame sorted by time, one row per bucket holding at least one base bar
        (empty buckets are not invented): ``timestamp`` (close time = ``open_time`` + target
        duration; the bar is usable from this instant on), ``open_time`` (bucket start,
        aligned to the epoch), ``open`` (first), ``high`` (max), ``low`` (min), ``close``
        (last), ``volume`` (sum), ``n_bars`` (Int32), ``partial`` (``n_bars < target /
        base``), ``invalid_range`` (any base bar inside flagged; False without the column).
    """
    base_minutes = timeframe_minutes(base_timeframe)
    target_minutes = timeframe_minutes(target_timeframe)
    if target_minutes < base_minutes or target_minutes % base_minutes:
        raise ValueError(
            f"cannot build {target_timeframe} bars from {base_timeframe} bars: the target must "
            f"be a whole multiple of the base timeframe"
        )
    _check_base_bars(frame, base_minutes)
    target_us = target_minutes * US_PER_MINUTE
    per_bucket = target_minutes // base_minutes
    invalid = pl.col(INVALID_RANGE) if INVALID_RANGE in frame.columns else pl.lit(False)
    bucket_us = (pl.col(TIMESTAMP).dt.epoch("us") // target_us) * target_us
    out = (
        frame.lazy()
        .select(
            bucket_us.cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias(OPEN_TIME),
            *VALUE_COLUMNS,
            invalid.alias(INVALID_RANGE),
        )
        .group_by(OPEN_TIME, maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.len().cast(pl.Int32).alias(N_BARS),
            pl.col(INVALID_RANGE).any(),
        )
        .sort(OPEN_TIME)
        .with_columns(
            (pl.col(OPEN_TIME) + pl.duration(minutes=target_minutes)).alias(TIMESTAMP),
            (pl.col(N_BARS) < per_bucket).alias(PARTIAL),
        )
        .select(RESAMPLED_COLUMNS)
        .collect()
    )
    if drop_partial:
        n_partial = int(out.get_column(PARTIAL).sum())
        out = out.filter(~pl.col(PARTIAL))
        log.info(
            "%s -> %s: dropped %d partial bar(s), %d full bar(s) left",
            base_timeframe,
            target_timeframe,
            n_partial,
            out.height,
        )
    return out


def bar_close_times(frame: pl.DataFrame, timeframe: str) -> pl.Series:
    """Close times of open-time labelled bars: ``timestamp + duration(timeframe)``.

    ``frame`` holds raw/validated bars (``timestamp`` = open time). A resampled frame
    (with ``open_time``) is already labelled by close time: use its ``timestamp``.
    Returns a ``[N]`` ``Datetime("us", "UTC")`` Series named ``close_time``."""
    if OPEN_TIME in frame.columns:
        raise ValueError(
            f"frame has an {OPEN_TIME!r} column: its {TIMESTAMP!r} is already the close time"
        )
    minutes = timeframe_minutes(timeframe)
    return frame.select(
        (pl.col(TIMESTAMP) + pl.duration(minutes=minutes)).alias("close_time")
    ).to_series()


def _epoch_us(values: pl.Series | np.ndarray | Sequence[dt.datetime]) -> np.ndarray:
    if isinstance(values, pl.Series):
        if isinstance(values.dtype, pl.Datetime):
            return values.dt.epoch("us").to_numpy().astype(np.int64)
        if values.dtype.is_integer():
            return values.to_numpy().astype(np.int64)
        raise TypeError(f"expected Datetime or integer (epoch us) values, got {values.dtype}")
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.datetime64):
        return array.astype("datetime64[us]").astype(np.int64)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    return pl.Series(list(values)).dt.epoch("us").to_numpy().astype(np.int64)


def visible_coarse_index(
    base_close_times: pl.Series | np.ndarray | Sequence[dt.datetime],
    coarse_close_times: pl.Series | np.ndarray | Sequence[dt.datetime],
) -> np.ndarray:
    """For each base close time ``t``, the index of the last coarse bar closing at or before ``t``.

    Args:
        base_close_times: ``[N]`` close times of the base bars (:func:`bar_close_times`, or
            the ``timestamp`` of the base frame from :func:`build_timeframes`).
        coarse_close_times: ``[K]`` strictly increasing close times (the ``timestamp`` of a
            resampled frame). Datetime Series, ``datetime64`` arrays or integer epoch
            microseconds.

    Returns:
        ``[N]`` int64 array of indices into the coarse frame, ``-1`` where no coarse bar has
        closed yet. ``coarse[i].timestamp <= t`` always holds, and the next coarse bar (if
        any) closes after ``t``: a window ending at ``t`` never sees an unfinished coarse bar.
    """
    base = _epoch_us(base_close_times)
    coarse = _epoch_us(coarse_close_times)
    if coarse.size > 1 and not np.all(np.diff(coarse) > 0):
        raise ValueError("coarse_close_times must be strictly increasing")
    return np.searchsorted(coarse, base, side="right").astype(np.int64) - 1


def build_timeframes(
    frame: pl.DataFrame,
    base_timeframe: str,
    timeframes: Sequence[str] | None = None,
    *,
    drop_partial: bool = False,
) -> dict[str, pl.DataFrame]:
    """The base bars and every coarser timeframe, all in the :func:`resample_bars` layout.

    Args:
        frame: validated base bars (:func:`validate_bars`).
        base_timeframe: their timeframe (``report.base_timeframe``).
        timeframes: candidate coarser timeframes (default :data:`DEFAULT_TIMEFRAMES`); those
            not coarser than the base or not a whole multiple of it are skipped (logged).
        drop_partial: passed to :func:`resample_bars` for the coarser timeframes.

    Returns:
        ``{name: frame}`` ordered fine to coarse, the base first (its ``timestamp`` = open
        time + base duration, ``n_bars`` = 1, ``partial`` = False); every frame has the
        columns of :data:`RESAMPLED_COLUMNS`.
    """
    base = timeframe_name(timeframe_minutes(base_timeframe))
    candidates = tuple(timeframes) if timeframes is not None else DEFAULT_TIMEFRAMES
    chosen = coarser_timeframes(base, candidates)
    skipped = [
        name
        for name in candidates
        if name not in chosen and timeframe_minutes(name) != timeframe_minutes(base)
    ]
    if skipped:
        level = logging.WARNING if timeframes is not None else logging.INFO
        log.log(
            level,
            "base timeframe %s: skipping %s (not coarser than the base, or not a multiple of it)",
            base,
            skipped,
        )
    out = {base: resample_bars(frame, base, base)}
    for name in chosen:
        out[name] = resample_bars(frame, base, name, drop_partial=drop_partial)
    log.info(
        "built timeframes from %s: %s",
        base,
        ", ".join(
            f"{name} {bars.height} bars ({int(bars.get_column(PARTIAL).sum())} partial)"
            for name, bars in out.items()
        ),
    )
    return out
