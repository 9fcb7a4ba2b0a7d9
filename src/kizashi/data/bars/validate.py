"""Validation of one bar series: :func:`validate_bars`, reported in a
:class:`~kizashi.data.report.ValidationReport` of kind ``"bars"``.

Validation policy (see :func:`validate_bars`): duplicated timestamps are an error unless a
policy keeps the ``first`` or ``last`` row (never merged or averaged); rows out of order are
counted and sorted; null / non-finite values and negative volume are errors; bars whose
prices do not form a valid range are kept and flagged (``invalid_range``); gaps and
timestamps off the base grid are reported. What is dropped is counted in the report.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Literal

import polars as pl

from kizashi.data.bars._common import (
    BAR_COLUMNS,
    INVALID_RANGE,
    N_EXAMPLES,
    OPEN_TIME,
    PRICE_COLUMNS,
    TIMESTAMP,
    US_PER_MINUTE,
    VALUE_COLUMNS,
)
from kizashi.data.report import (
    BAR_KIND,
    ROW_TMP,
    Gap,
    RowExample,
    ValidationIssue,
    ValidationReport,
)
from kizashi.data.timeframes import timeframe_minutes, timeframe_name
from kizashi.errors import DataValidationError

log = logging.getLogger(__name__)

DuplicatePolicy = Literal["error", "first", "last"]

_ROW = ROW_TMP


def _as_bar_frame(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Select the canonical columns with canonical dtypes (naive datetimes taken as UTC)."""
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{source}: missing bar column(s) {missing}; columns: {frame.columns} "
            "(read files with kizashi.data.bars.read_bars)"
        )
    if OPEN_TIME in frame.columns:
        raise DataValidationError(
            f"{source}: frame has an {OPEN_TIME!r} column: it is already resampled and "
            "labelled by close time; validate the raw (open-time labelled) bars instead"
        )
    ts_type = frame.schema[TIMESTAMP]
    if not isinstance(ts_type, pl.Datetime):
        raise DataValidationError(
            f"{source}: column {TIMESTAMP!r} has dtype {ts_type}, expected Datetime "
            "(read files with kizashi.data.bars.read_bars)"
        )
    ts = pl.col(TIMESTAMP).dt.cast_time_unit("us")
    ts = (
        ts.dt.replace_time_zone("UTC")
        if ts_type.time_zone is None
        else ts.dt.convert_time_zone("UTC")
    )
    casts = [ts.alias(TIMESTAMP)]
    for name in VALUE_COLUMNS:
        dtype = frame.schema[name]
        if not dtype.is_numeric():
            raise DataValidationError(
                f"{source}: column {name!r} has dtype {dtype}, expected a number"
            )
        casts.append(pl.col(name).cast(pl.Float64).alias(name))
    extra = [c for c in frame.columns if c not in BAR_COLUMNS and c != INVALID_RANGE]
    if extra:
        log.info("%s: validate_bars ignores columns %s", source, extra)
    return frame.select(casts)


def _row_examples(rows: pl.DataFrame, detail: pl.Expr) -> tuple[RowExample, ...]:
    shown = rows.head(N_EXAMPLES).select(_ROW, TIMESTAMP, detail.alias("__detail"))
    return tuple(RowExample(int(row), ts, str(text)) for row, ts, text in shown.iter_rows())


def _values_detail(*columns: str) -> pl.Expr:
    parts: list[pl.Expr | str] = []
    for i, name in enumerate(columns):
        parts.extend(
            [("" if i == 0 else " ") + f"{name}=", pl.col(name).cast(pl.Utf8).fill_null("null")]
        )
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts])


def _infer_base_minutes(
    diffs_us: pl.Series, expected: str | None, source: str
) -> tuple[int, int, list[str]]:
    """``(base minutes, intervals at base, errors)`` from positive consecutive differences."""
    errors: list[str] = []
    expected_minutes = timeframe_minutes(expected) if expected is not None else None
    if diffs_us.len() == 0:
        if expected_minutes is None:
            raise DataValidationError(
                f"{source}: fewer than two distinct timestamps: the base timeframe cannot be "
                "read from the data; pass expected_timeframe"
            )
        return expected_minutes, 0, errors
    counts = diffs_us.value_counts(name="n").sort(["n", diffs_us.name], descending=[True, False])
    mode_us, n_mode = int(counts.item(0, 0)), int(counts.item(0, 1))
    share = n_mode / diffs_us.len()
    if mode_us % US_PER_MINUTE:
        raise DataValidationError(
            f"{source}: the most common interval between bars is "
            f"{dt.timedelta(microseconds=mode_us)} "
            f"({n_mode} of {diffs_us.len()} intervals), not a whole number of minutes; "
            "bars finer than m1 are not supported"
        )
    minutes = mode_us // US_PER_MINUTE
    if expected_minutes is not None and expected_minutes != minutes:
        errors.append(
            f"base timeframe: expected {timeframe_name(expected_minutes)}, but the data's most "
            f"common interval is {timeframe_name(minutes)} ({n_mode} of {diffs_us.len()} "
            f"intervals, {share:.1%})"
        )
    return minutes, n_mode, errors


def _examples_text(examples: tuple[object, ...]) -> str:
    return "\n".join(f"e.g. {example}" for example in examples)


def _bar_issues(report: ValidationReport) -> list[ValidationIssue]:
    """One issue per bar check that found something (the bar fields hold the details)."""
    issues: list[ValidationIssue] = []
    base = report.base_timeframe
    if report.n_duplicate_rows_dropped:
        issues.append(
            ValidationIssue(
                "duplicate_rows",
                TIMESTAMP,
                report.n_duplicate_rows_dropped,
                "dropped",
                f"{report.n_duplicate_timestamps} duplicated timestamp(s) "
                f"({report.n_conflicting_duplicates} with differing values): kept the "
                f"{report.duplicate_policy} row of each, dropped "
                f"{report.n_duplicate_rows_dropped} row(s)",
                _examples_text(report.duplicate_examples),
            )
        )
    if report.n_out_of_order:
        issues.append(
            ValidationIssue(
                "unsorted",
                TIMESTAMP,
                report.n_out_of_order,
                "info",
                f"{report.n_out_of_order} row(s) earlier than the row before them; "
                "sorted by timestamp",
                _examples_text(report.out_of_order_examples),
            )
        )
    if report.n_invalid_range:
        issues.append(
            ValidationIssue(
                INVALID_RANGE,
                ", ".join(PRICE_COLUMNS),
                report.n_invalid_range,
                "info",
                f"{report.n_invalid_range} bar(s) kept and flagged {INVALID_RANGE} (high < low: "
                f"{report.n_high_below_low}, open outside [low, high]: "
                f"{report.n_open_outside_range}, close outside: {report.n_close_outside_range}, "
                f"price <= 0: {report.n_nonpositive_price})",
                _examples_text(report.invalid_range_examples),
            )
        )
    if report.n_off_grid:
        issues.append(
            ValidationIssue(
                "off_grid",
                TIMESTAMP,
                report.n_off_grid,
                "info",
                f"{report.n_off_grid} bar(s) whose open time is not a multiple of {base} since "
                "the epoch (resampling refuses them)",
                _examples_text(report.off_grid_examples),
            )
        )
    if report.n_gaps:
        issues.append(
            ValidationIssue(
                "gaps",
                TIMESTAMP,
                report.n_gaps,
                "info",
                f"{report.n_gaps} gap(s), {report.n_missing_bars} {base} bar(s) missing in all "
                "(largest first)",
                _examples_text(report.largest_gaps),
            )
        )
    return issues


def _raise_errors(source: str, errors: list[tuple[str, tuple[RowExample, ...]]]) -> None:
    lines = [f"{source}: bars failed validation ({len(errors)} error(s)):"]
    for message, examples in errors:
        lines.append(f"- {message}")
        lines.extend(f"    e.g. {example}" for example in examples)
    raise DataValidationError("\n".join(lines))


def validate_bars(
    frame: pl.DataFrame,
    *,
    source: str = "bars",
    duplicates: DuplicatePolicy = "error",
    expected_timeframe: str | None = None,
) -> tuple[pl.DataFrame, ValidationReport]:
    """Check one bar series; return ``(bars, report)``.

    Args:
        frame: ``[N, 6]`` canonical bars in input order (see :func:`read_bars`): open-time
            ``timestamp`` plus OHLCV. A naive ``timestamp`` is taken as UTC.
        source: the file name or label used in messages.
        duplicates: rows sharing a timestamp: ``"error"`` (default) raises; ``"first"`` /
            ``"last"`` keep the first / last such row in input order and count the others
            as dropped. Rows are never merged or averaged.
        expected_timeframe: if given (e.g. ``"m30"``), the base timeframe read from the data
            must equal it; it is also used when there are too few bars to infer one.

    Returns:
        ``bars``: ``[M, 7]`` sorted by ``timestamp``, one row per timestamp, columns
        ``timestamp, open, high, low, close, volume, invalid_range`` (Boolean).
        ``report``: a :class:`~kizashi.data.report.ValidationReport` of kind ``"bars"``
        with the bar fields set and one issue per check that found something (its summary is logged at INFO; gaps, rows out of
        order, dropped duplicates, flagged and off-grid bars are logged as warnings).

    Checks and what each one does:

    - null / NaN / infinite values in any column: error.
    - negative volume: error (zero volume is allowed).
    - duplicated timestamps: per ``duplicates``; the report tells whether the rows were
      identical copies or differ.
    - rows out of order (earlier than the row before them): counted, output sorted.
    - invalid price range: ``high < low``, ``open`` or ``close`` outside ``[low, high]``, or
      a price ``<= 0``. Such bars are **kept and flagged** in ``invalid_range`` rather than
      raised on or dropped: they are single bad ticks in otherwise usable series (the
      LINKUSDT file has a bar with low = 0), dropping one would make a gap, and raising
      would make the whole file unusable. Consumers mask flagged bars; the flag carries
      over to every coarse bar containing one (:func:`resample_bars`).
    - base timeframe: the most common positive interval between consecutive sorted
      timestamps (ties: the shorter), named with :func:`timeframe_name`; a mismatch with
      ``expected_timeframe`` is an error.
    - gaps: intervals longer than the base timeframe; counted, with the bars missing
      (``ceil(interval / base) - 1`` each, exact for bars on the base grid) and the 5
      largest gaps.
    - off grid: open times that are not a multiple of the base timeframe since the epoch
      (reported; :func:`resample_bars` refuses such bars, they would straddle buckets).

    Raises:
        DataValidationError: listing every error found (with counts and example rows).
    """
    if duplicates not in ("error", "first", "last"):
        raise ValueError(f"duplicates must be 'error', 'first' or 'last', got {duplicates!r}")
    bars = _as_bar_frame(frame, source).with_row_index(_ROW, offset=1)
    n_in = bars.height
    if n_in == 0:
        raise DataValidationError(f"{source}: no bars (the input has no rows)")
    errors: list[tuple[str, tuple[RowExample, ...]]] = []

    # Nulls and non-finite values.
    bad_value = {TIMESTAMP: pl.col(TIMESTAMP).is_null()} | {
        name: pl.col(name).is_null() | ~pl.col(name).is_finite() for name in VALUE_COLUMNS
    }
    bad_counts = bars.select([e.sum().alias(n) for n, e in bad_value.items()]).row(0, named=True)
    if any(bad_counts.values()):
        examples = _row_examples(
            bars.filter(pl.any_horizontal(list(bad_value.values()))),
            _values_detail(*VALUE_COLUMNS),
        )
        listing = ", ".join(f"{name}: {n}" for name, n in bad_counts.items() if n)
        errors.append((f"null, NaN or infinite values ({listing})", examples))
    timed = bars.filter(pl.col(TIMESTAMP).is_not_null())

    # Rows out of order, in input order.
    out_of_order = timed.with_columns(pl.col(TIMESTAMP).shift(1).alias("__previous")).filter(
        pl.col(TIMESTAMP) < pl.col("__previous")
    )
    out_of_order_examples = _row_examples(
        out_of_order,
        pl.lit("earlier than the row before it (")
        + pl.col("__previous").dt.strftime("%Y-%m-%d %H:%M:%S")
        + pl.lit(" UTC)"),
    )

    # Duplicated timestamps.
    groups = (
        timed.group_by(TIMESTAMP)
        .agg(
            pl.len().alias("n"),
            pl.col(_ROW).alias("rows"),
            pl.struct(VALUE_COLUMNS).n_unique().alias("n_versions"),
        )
        .filter(pl.col("n") > 1)
        .sort(pl.col("rows").list.first())
    )
    n_dup_ts = groups.height
    n_dup_extra = int(groups.get_column("n").sum()) - n_dup_ts if n_dup_ts else 0
    n_conflicting = int((groups.get_column("n_versions") > 1).sum()) if n_dup_ts else 0
    duplicate_examples = tuple(
        RowExample(
            int(rows[0]),
            ts,
            f"{n} rows ({', '.join(map(str, rows[:8]))}{', …' if n > 8 else ''}): "
            + (
                "identical values" if versions == 1 else f"{versions} different versions of the bar"
            ),
        )
        for ts, n, rows, versions in groups.head(N_EXAMPLES).iter_rows()
    )
    if n_dup_ts and duplicates == "error":
        errors.append(
            (
                (
                    f"duplicated timestamps: {n_dup_ts} timestamp(s) on "
                    f"{n_dup_ts + n_dup_extra} rows ({n_dup_extra} extra row(s); "
                    f"{n_conflicting} timestamp(s) with differing values); choose "
                    "duplicates='first' or 'last' to keep one row per timestamp"
                ),
                duplicate_examples,
            )
        )
        kept = timed
    else:
        kept = timed.unique(
            TIMESTAMP, keep=duplicates if duplicates != "error" else "first", maintain_order=True
        )
    n_dropped = timed.height - kept.height
    kept = kept.sort(TIMESTAMP, _ROW)

    # Negative volume.
    negative = kept.filter(pl.col("volume") < 0)
    if negative.height:
        errors.append(
            (
                f"negative volume on {negative.height} row(s)",
                _row_examples(negative, _values_detail("volume")),
            )
        )

    # Invalid price ranges (kept, flagged).
    high_below_low = pl.col("high") < pl.col("low")
    open_outside = (pl.col("open") < pl.col("low")) | (pl.col("open") > pl.col("high"))
    close_outside = (pl.col("close") < pl.col("low")) | (pl.col("close") > pl.col("high"))
    nonpositive = pl.min_horizontal(PRICE_COLUMNS) <= 0
    invalid = (high_below_low | open_outside | close_outside | nonpositive).fill_null(False)
    kept = kept.with_columns(invalid.alias(INVALID_RANGE))
    range_counts = kept.select(
        high_below_low.sum().alias("hl"),
        open_outside.sum().alias("o"),
        close_outside.sum().alias("c"),
        nonpositive.sum().alias("p"),
        pl.col(INVALID_RANGE).sum().alias("any"),
    ).row(0, named=True)
    invalid_examples = _row_examples(
        kept.filter(pl.col(INVALID_RANGE)), _values_detail(*PRICE_COLUMNS)
    )

    # Base timeframe, grid and gaps (on the kept, sorted, unique timestamps).
    epoch_us = pl.col(TIMESTAMP).dt.epoch("us")
    diffs = kept.select(epoch_us.diff().alias("diff")).get_column("diff").drop_nulls()
    positive = diffs.filter(diffs > 0)
    try:
        base_minutes, n_at_base, tf_errors = _infer_base_minutes(
            positive, expected_timeframe, source
        )
    except DataValidationError as err:
        if not errors:
            raise
        errors.append((str(err).removeprefix(f"{source}: "), ()))
        _raise_errors(source, errors)
    errors.extend((message, ()) for message in tf_errors)
    base_us = base_minutes * US_PER_MINUTE
    base = timeframe_name(base_minutes)
    off_grid = kept.filter(epoch_us % base_us != 0)
    off_grid_examples = _row_examples(
        off_grid,
        pl.lit(f"not on the {base} grid (open time not a multiple of {base} since the epoch)"),
    )
    gap_rows = (
        kept.select(
            pl.col(TIMESTAMP).shift(1).alias("start"),
            pl.col(TIMESTAMP).alias("end"),
            epoch_us.diff().alias("diff"),
        )
        .filter(pl.col("diff") > base_us)
        .with_columns(((pl.col("diff") + base_us - 1) // base_us - 1).alias("missing"))
    )
    n_missing = int(gap_rows.get_column("missing").sum()) if gap_rows.height else 0
    largest_gaps = tuple(
        Gap(start, end, int(missing))
        for start, end, _, missing in gap_rows.sort(["missing", "start"], descending=[True, False])
        .head(N_EXAMPLES)
        .iter_rows()
    )

    if errors:
        _raise_errors(source, errors)

    out = kept.drop(_ROW)
    first_ts, last_ts = out.item(0, TIMESTAMP), out.item(-1, TIMESTAMP)
    report = ValidationReport(
        source=source,
        n_rows_in=n_in,
        n_rows_out=out.height,
        date_min=first_ts.date(),
        date_max=last_ts.date(),
        kind=BAR_KIND,
        base_timeframe=base,
        n_intervals_at_base=n_at_base,
        first_timestamp=first_ts,
        last_timestamp=last_ts,
        duplicate_policy=duplicates,
        n_duplicate_timestamps=n_dup_ts,
        n_duplicate_rows_dropped=n_dropped,
        n_conflicting_duplicates=n_conflicting,
        duplicate_examples=duplicate_examples,
        n_out_of_order=out_of_order.height,
        out_of_order_examples=out_of_order_examples,
        n_invalid_range=int(range_counts["any"]),
        n_high_below_low=int(range_counts["hl"]),
        n_open_outside_range=int(range_counts["o"]),
        n_close_outside_range=int(range_counts["c"]),
        n_nonpositive_price=int(range_counts["p"]),
        invalid_range_examples=invalid_examples,
        n_off_grid=off_grid.height,
        off_grid_examples=off_grid_examples,
        n_gaps=gap_rows.height,
        n_missing_bars=n_missing,
        largest_gaps=largest_gaps,
    )
    report.issues.extend(_bar_issues(report))
    if n_in != out.height + report.n_dropped:  # a bug here, never a data problem
        raise AssertionError(
            f"{source}: row ledger broken: {n_in} in != {out.height} out + {n_dropped} dropped"
        )
    log.info("%s", report.summary())
    if n_dropped:
        log.warning(
            "%s: %d duplicated row(s) dropped (policy %r, %d timestamp(s) with differing values)",
            source,
            n_dropped,
            duplicates,
            n_conflicting,
        )
    if report.n_out_of_order:
        log.warning(
            "%s: %d row(s) out of order; sorted by timestamp", source, report.n_out_of_order
        )
    if report.n_gaps:
        log.warning(
            "%s: %d gap(s), %d %s bar(s) missing; largest: %s",
            source,
            report.n_gaps,
            n_missing,
            base,
            largest_gaps[0],
        )
    if report.n_invalid_range:
        log.warning("%s: %d bar(s) flagged invalid_range", source, report.n_invalid_range)
    if report.n_off_grid:
        log.warning("%s: %d bar(s) off the %s grid", source, report.n_off_grid, base)
    return out, report
