"""Intraday bars: reading, validation and no-look-ahead resampling to coarser timeframes.

The input layer of Stage-1 multi-timeframe pretraining. Three steps, each a function:

1. :func:`read_bars` reads one file (CSV with any of ``, ; \\t |``, or Parquet) into the
   canonical bar frame, in file order::

       timestamp  Datetime("us", "UTC")   the bar's OPEN time, as in the raw file
       open, high, low, close, volume     Float64

2. :func:`validate_bars` checks that frame and returns ``(bars, BarReport)``: the bars sorted
   by time with one row per timestamp and a Boolean ``invalid_range`` column, and a report
   with counts and examples of every problem (duplicated timestamps, rows out of order,
   invalid price ranges, gaps, ...) plus the base timeframe read from the data.

3. :func:`resample_bars` / :func:`build_timeframes` aggregate validated base bars into
   coarser timeframes (open=first, high=max, low=min, close=last, volume=sum), buckets
   aligned to the Unix epoch (d1 buckets start at 00:00 UTC, h4 buckets at 00, 04, 08, ...
   UTC). Every output frame (the base timeframe included) has the columns::

       timestamp      Datetime("us", "UTC")  the bar's CLOSE time = open_time + duration
       open_time      Datetime("us", "UTC")  the bucket start
       open, high, low, close, volume   Float64
       n_bars         Int32    base bars inside the bucket
       partial        Boolean  n_bars < duration / base duration (a gap, or an edge bucket)
       invalid_range  Boolean  some base bar inside has an invalid price range

No look-ahead
-------------
Raw bars are labelled by their open time: the m30 bar ``12:00`` holds trades from 12:00 to
12:30 and is only known at 12:30. Once resampled, every bar is labelled by its **close
time** (``timestamp``), the first instant at which all of it is known. The rule for every
consumer: a bar with ``timestamp = T`` may be used by a window ending at time ``t`` only if
``T <= t``. A coarse bar is never visible before its bucket has closed, even when the data
ends (or has a gap) inside the bucket: an incomplete bucket keeps the close time of the
full bucket and is flagged ``partial``. :func:`bar_close_times` turns open-time labels into
close times and :func:`visible_coarse_index` gives, for each base bar, the last coarse bar
that has closed by the base bar's close (``searchsorted(side="right") - 1``), so aligned
multi-timeframe windows never see an unfinished coarse bar. For trading sessions shorter
than a bucket (stocks: 14:30-21:00 UTC) the coarse bar becomes visible only at the bucket's
end (a d1 bar at the next 00:00 UTC), which is late but never early.

Validation policy (see :func:`validate_bars`): duplicated timestamps are an error unless a
policy keeps the ``first`` or ``last`` row (never merged or averaged); rows out of order are
counted and sorted; null / non-finite values and negative volume are errors; bars whose
prices do not form a valid range are kept and flagged (``invalid_range``); gaps and
timestamps off the base grid are reported. What is dropped is counted in the report.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from kizashi.data.readers import read_table
from kizashi.data.timeframes import (
    DEFAULT_TIMEFRAMES,
    coarser_timeframes,
    timeframe_minutes,
    timeframe_name,
)
from kizashi.errors import DataValidationError

log = logging.getLogger(__name__)

DuplicatePolicy = Literal["error", "first", "last"]

TIMESTAMP = "timestamp"
OPEN_TIME = "open_time"
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
VALUE_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")
BAR_COLUMNS: tuple[str, ...] = (TIMESTAMP, *VALUE_COLUMNS)
N_BARS = "n_bars"
PARTIAL = "partial"
INVALID_RANGE = "invalid_range"
RESAMPLED_COLUMNS: tuple[str, ...] = (
    TIMESTAMP,
    OPEN_TIME,
    *VALUE_COLUMNS,
    N_BARS,
    PARTIAL,
    INVALID_RANGE,
)
UTC_DATETIME = pl.Datetime("us", "UTC")
N_EXAMPLES = 5

_US_PER_MINUTE = 60_000_000
_ROW = "__kizashi_row__"

# Accepted column names (compared after lower-casing, stripping ``<>`` and turning spaces
# and hyphens into ``_``), in order of preference when several are present.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    TIMESTAMP: (
        "timestamp",
        "datetime",
        "date_time",
        "time",
        "gmt_time",
        "time_gmt",
        "utc_time",
        "open_time",
        "ts",
        "date",
    ),
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price", "last"),
    "volume": ("volume", "vol", "v", "tick_volume", "tickvol", "real_volume"),
}

# Timestamp text formats tried in turn (year-first, or day-first with dots as in
# Dukascopy's "Gmt time"; slash or dash day/month orders are ambiguous and not guessed).
# ``%.f`` also matches no fraction at all.
_NAIVE_FORMATS: tuple[str, ...] = (
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y.%m.%d %H:%M:%S%.f",
    "%Y.%m.%d %H:%M",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y/%m/%d %H:%M",
    "%d.%m.%Y %H:%M:%S%.f",
    "%d.%m.%Y %H:%M",
    "%Y%m%d %H:%M:%S%.f",
    "%Y%m%d %H:%M",
    "%Y-%m-%d",
    "%Y.%m.%d",
    "%Y/%m/%d",
    "%Y%m%d",
)
_OFFSET_FORMATS: tuple[str, ...] = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%d %H:%M%#z",
)
_ACCEPTED_TIMESTAMPS = (
    "'YYYY-MM-DD HH:MM[:SS[.fff]]' (space or T, optional offset such as +02:00 or Z), "
    "'YYYY.MM.DD HH:MM[:SS]', 'YYYY/MM/DD HH:MM[:SS]', 'DD.MM.YYYY HH:MM[:SS[.fff]]', "
    "'YYYYMMDD HH:MM[:SS]', dates alone, or integer Unix epochs (s, ms, us or ns)"
)
_TIME_OF_DAY = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?$")
_EPOCH_DIGITS = r"^-?\d{9,}$"


# --------------------------------------------------------------------------- reading


def _normalize_name(name: str) -> str:
    text = name.strip().lower().strip("<>").strip()
    return re.sub(r"[\s\-]+", "_", text)


def _match_columns(
    columns: Sequence[str], timestamp_column: str | None, source: str
) -> tuple[dict[str, str], str | None]:
    """``({canonical: raw column}, raw date column to combine with a time-of-day column)``."""
    by_norm: dict[str, list[str]] = {}
    for raw in columns:
        by_norm.setdefault(_normalize_name(raw), []).append(raw)
    clashes = {norm: raws for norm, raws in by_norm.items() if len(raws) > 1}

    def pick(canonical: str, aliases: Iterable[str]) -> str | None:
        present = [alias for alias in aliases if alias in by_norm]
        if not present:
            return None
        alias = present[0]
        if alias in clashes:
            raise DataValidationError(
                f"{source}: columns {clashes[alias]} all match {canonical!r} "
                "(names are compared case-insensitively); rename or drop one of them"
            )
        if len(present) > 1:
            log.info(
                "%s: using column %r as %s (also present: %s)",
                source,
                by_norm[alias][0],
                canonical,
                [by_norm[a][0] for a in present[1:]],
            )
        return by_norm[alias][0]

    mapping: dict[str, str] = {}
    missing: list[str] = []
    for canonical, aliases in COLUMN_ALIASES.items():
        if canonical == TIMESTAMP and timestamp_column is not None:
            wanted = _normalize_name(timestamp_column)
            if wanted not in by_norm:
                raise DataValidationError(
                    f"{source}: timestamp_column {timestamp_column!r} not found; "
                    f"columns in the file: {list(columns)}"
                )
            chosen = pick(canonical, [wanted])
        else:
            chosen = pick(canonical, aliases)
        if chosen is None:
            missing.append(canonical)
        else:
            mapping[canonical] = chosen
    if missing:
        accepted = "; ".join(f"{c}: {', '.join(COLUMN_ALIASES[c])}" for c in missing)
        raise DataValidationError(
            f"{source}: missing bar column(s) {missing}; columns in the file: {list(columns)}. "
            f"Accepted names (case-insensitive): {accepted}"
            + ("; or set timestamp_column" if TIMESTAMP in missing else "")
        )
    date_column = None
    if timestamp_column is None and _normalize_name(mapping[TIMESTAMP]) == "time":
        date_column = by_norm.get("date", [None])[0]
    return mapping, date_column


def _looks_like_time_of_day(series: pl.Series) -> bool:
    if series.dtype == pl.Time:
        return True
    if series.dtype != pl.Utf8:
        return False
    first = series.drop_nulls().head(1).to_list()
    return bool(first) and _TIME_OF_DAY.match(first[0].strip()) is not None


def _epoch_unit(values: pl.Series) -> str:
    """Unix-epoch unit read from the magnitude of integer timestamps."""
    biggest = values.abs().max()
    biggest = 0 if biggest is None else int(biggest)  # type: ignore[arg-type]
    if biggest < 10**11:
        return "s"
    if biggest < 10**14:
        return "ms"
    if biggest < 10**17:
        return "us"
    return "ns"


def _parse_timestamps(
    raw: pl.Series, timezone: str, source: str, column: str
) -> tuple[pl.Series, str]:
    """Parse one raw timestamp column to ``Datetime("us", "UTC")``.

    Returns ``(parsed, how)``; values that do not parse (or fall into a DST hole / overlap
    of ``timezone``) are null in ``parsed`` and reported by the caller."""
    dtype = raw.dtype

    def localize(values: pl.Series) -> pl.Series:
        return (
            values.dt.cast_time_unit("us")
            .dt.replace_time_zone(timezone, ambiguous="null", non_existent="null")
            .dt.convert_time_zone("UTC")
        )

    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return localize(raw), f"naive datetimes read in {timezone}"
        return raw.dt.cast_time_unit("us").dt.convert_time_zone("UTC"), "zoned datetimes"
    if dtype == pl.Date:
        return localize(raw.cast(pl.Datetime("us"))), f"dates read in {timezone}"
    if dtype.is_integer() or (
        dtype == pl.Utf8
        and raw.drop_nulls().len()
        and raw.str.strip_chars().str.contains(_EPOCH_DIGITS).fill_null(True).all()
    ):
        ints = raw.str.strip_chars().cast(pl.Int64) if dtype == pl.Utf8 else raw.cast(pl.Int64)
        unit = _epoch_unit(ints)
        scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}[unit]
        micros = ints // 1_000 if scale is None else ints * scale
        parsed = micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        return parsed, f"Unix epoch in {unit}"
    if dtype != pl.Utf8:
        raise DataValidationError(
            f"{source}: column {column!r} has dtype {dtype}, which cannot be a timestamp "
            f"(expected text, Datetime, Date or integer epochs)"
        )
    text = raw.str.strip_chars()
    frame = pl.DataFrame({"t": text})
    naive = frame.select(
        pl.coalesce(
            [pl.col("t").str.to_datetime(f, time_unit="us", strict=False) for f in _NAIVE_FORMATS]
        )
    ).to_series()
    zoned = frame.select(
        pl.coalesce(
            [pl.col("t").str.to_datetime(f, time_unit="us", strict=False) for f in _OFFSET_FORMATS]
        )
    ).to_series()
    parsed = zoned.dt.convert_time_zone("UTC").fill_null(localize(naive))
    how = "text" if zoned.null_count() == zoned.len() else "text with UTC offsets"
    return parsed.alias(raw.name), how


def _parse_numbers(raw: pl.Series, source: str, column: str) -> pl.Series:
    dtype = raw.dtype
    if dtype.is_numeric():
        return raw.cast(pl.Float64).fill_nan(None)
    if dtype == pl.Utf8:
        text = raw.str.strip_chars()
        text = pl.select(pl.when(text == "").then(None).otherwise(text)).to_series()
        return text.cast(pl.Float64, strict=False).fill_nan(None)
    raise DataValidationError(
        f"{source}: column {column!r} has dtype {dtype}, which cannot be a number"
    )


def _unparsable_message(raw: pl.Series, parsed: pl.Series, column: str, what: str) -> str | None:
    present = raw.is_not_null()
    if raw.dtype == pl.Utf8:
        present = present & (raw.str.strip_chars() != "")
    failed = present & parsed.is_null()
    count = int(failed.sum())
    if not count:
        return None
    rows = (pl.arange(1, raw.len() + 1, eager=True).filter(failed)).head(N_EXAMPLES).to_list()
    values = raw.filter(failed).head(N_EXAMPLES).to_list()
    return (
        f"column {column!r}: {count} value(s) cannot be read as {what}: "
        f"data row(s) {rows} (1-based, header excluded), e.g. {values}"
    )


def read_bars(
    path: str | Path,
    *,
    timestamp_column: str | None = None,
    separator: str | None = None,
    timezone: str = "UTC",
) -> pl.DataFrame:
    """Read one bar file into the canonical frame, rows in file order (not sorted).

    Args:
        path: a CSV (delimiter ``, ; \\t |``, sniffed unless ``separator`` is given) or a
            Parquet file (told apart by suffix or magic bytes).
        timestamp_column: the time column's name (case-insensitive). By default the first
            of ``timestamp, datetime, date_time, time, gmt_time, ..., date`` present is
            used; separate ``Date`` + time-of-day ``Time`` columns are combined.
        separator: the CSV delimiter, when sniffing is not wanted.
        timezone: the zone of naive timestamps (the default: they are UTC/GMT). Timestamps
            carrying an offset or a zone are converted from their own.

    Returns:
        ``[N, 6]`` frame: ``timestamp`` (``Datetime("us", "UTC")``, each bar's open time as
        written in the file) and ``open, high, low, close, volume`` (Float64; NaN read as
        null). Other columns are ignored. Columns are matched case-insensitively against
        :data:`COLUMN_ALIASES` (e.g. ``Time``/``Date``/``Datetime``, ``Vol``/``Volume``).

    Raises:
        DataValidationError: the file is missing, not a table, lacks a bar column, or has
            cells that do not parse; the message names the file, the column, the data rows
            and example values. Empty cells are kept as nulls (:func:`validate_bars`
            reports them).
    """
    file = Path(path)
    source = str(file)
    raw = read_table(file, separator=separator)
    mapping, date_column = _match_columns(raw.columns, timestamp_column, source)
    time_raw = raw.get_column(mapping[TIMESTAMP])
    time_label = mapping[TIMESTAMP]
    if date_column is not None and _looks_like_time_of_day(time_raw):
        date_raw = raw.get_column(date_column)
        time_raw = (
            date_raw.cast(pl.Utf8).str.strip_chars()
            + " "
            + time_raw.cast(pl.Utf8).str.strip_chars()
        ).alias(time_label)
        time_label = f"{date_column} + {mapping[TIMESTAMP]}"
    problems: list[str] = []
    timestamps, how = _parse_timestamps(time_raw, timezone, source, time_label)
    message = _unparsable_message(
        time_raw,
        timestamps,
        time_label,
        f"a timestamp in {timezone} (accepted: {_ACCEPTED_TIMESTAMPS}; "
        "also rejected: local times that do not exist or repeat at a DST change)",
    )
    if message:
        problems.append(message)
    values: dict[str, pl.Series] = {}
    for name in VALUE_COLUMNS:
        column = raw.get_column(mapping[name])
        values[name] = _parse_numbers(column, source, mapping[name])
        message = _unparsable_message(column, values[name], mapping[name], "a number")
        if message:
            problems.append(message)
    if problems:
        raise DataValidationError(
            f"{source}: {len(problems)} column(s) with unparsable cells:\n- "
            + "\n- ".join(problems)
        )
    frame = pl.DataFrame(
        [timestamps.alias(TIMESTAMP).cast(UTC_DATETIME)]
        + [values[name].alias(name) for name in VALUE_COLUMNS]
    )
    ignored = [c for c in raw.columns if c not in mapping.values() and c != date_column]
    log.info(
        "%s: read %d bars (timestamps: %s from %r%s)",
        source,
        frame.height,
        how,
        time_label,
        f"; ignored columns {ignored}" if ignored else "",
    )
    return frame


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class RowExample:
    """One example of a problem: the 1-based input row, its timestamp and what is wrong."""

    row: int
    timestamp: dt.datetime | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        return f"row {self.row} @ {_fmt_time(self.timestamp)}: {self.detail}"


@dataclass(frozen=True)
class Gap:
    """Consecutive bars further apart than the base timeframe.

    ``start`` / ``end`` are the open times of the bars on either side of the gap;
    ``missing_bars`` the base-grid slots strictly between them."""

    start: dt.datetime
    end: dt.datetime
    missing_bars: int

    @property
    def duration(self) -> dt.timedelta:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "missing_bars": self.missing_bars,
        }

    def __str__(self) -> str:
        return (
            f"{_fmt_time(self.start)} -> {_fmt_time(self.end)}: "
            f"{self.missing_bars} bar(s) missing ({self.duration})"
        )


@dataclass(frozen=True)
class BarReport:
    """What :func:`validate_bars` found in one bar series (JSON-safe via :meth:`to_dict`).

    Counts refer to input rows unless said otherwise; example rows are 1-based input rows
    (= data rows of the file for a frame from :func:`read_bars`), at most 5 per check.
    """

    source: str
    n_rows_in: int
    n_bars: int  # rows out: one per timestamp, sorted
    base_timeframe: str
    n_intervals_at_base: int  # consecutive bar pairs exactly one base timeframe apart
    first_timestamp: dt.datetime | None
    last_timestamp: dt.datetime | None
    duplicate_policy: str
    n_duplicate_timestamps: int  # distinct timestamps that occur on more than one row
    n_duplicate_rows_dropped: int  # rows removed by the policy ("first"/"last")
    n_conflicting_duplicates: int  # duplicated timestamps whose rows differ in a value
    duplicate_examples: tuple[RowExample, ...]
    n_out_of_order: int  # rows earlier than the row just before them (sorted in the output)
    out_of_order_examples: tuple[RowExample, ...]
    n_invalid_range: int  # output bars flagged invalid_range (any of the four below)
    n_high_below_low: int
    n_open_outside_range: int
    n_close_outside_range: int
    n_nonpositive_price: int
    invalid_range_examples: tuple[RowExample, ...]
    n_off_grid: int  # output bars whose open time is not a multiple of the base timeframe
    off_grid_examples: tuple[RowExample, ...]
    n_gaps: int
    n_missing_bars: int
    largest_gaps: tuple[Gap, ...]

    def summary(self) -> str:
        """A few human-readable lines: the totals, then one line per check with examples."""
        share = (
            f"{self.n_intervals_at_base / (self.n_bars - 1):.1%} of intervals"
            if self.n_bars > 1
            else "set, not inferred"
        )
        span = f"{_fmt_time(self.first_timestamp)} .. {_fmt_time(self.last_timestamp)}"
        head = (
            f"{self.source}: {self.n_rows_in} rows in, {self.n_bars} bars out, base timeframe "
            f"{self.base_timeframe} ({share}), {span} (bar open times)"
        )
        lines = [head]

        def section(title: str, examples: Sequence[object]) -> None:
            lines.append(f"  {title}")
            lines.extend(f"      e.g. {example}" for example in examples)

        if self.n_duplicate_timestamps:
            section(
                f"duplicated timestamps: {self.n_duplicate_timestamps} timestamp(s), "
                f"{self.n_conflicting_duplicates} with differing values; policy "
                f"{self.duplicate_policy!r}: kept one row each, dropped "
                f"{self.n_duplicate_rows_dropped} row(s)",
                self.duplicate_examples,
            )
        else:
            lines.append("  duplicated timestamps: none")
        if self.n_out_of_order:
            section(
                f"out of order: {self.n_out_of_order} row(s) earlier than the row before them; "
                "output sorted by timestamp",
                self.out_of_order_examples,
            )
        else:
            lines.append("  out of order: none")
        if self.n_invalid_range:
            section(
                f"invalid price range: {self.n_invalid_range} bar(s) kept and flagged "
                f"invalid_range (high < low: {self.n_high_below_low}, open outside "
                f"[low, high]: {self.n_open_outside_range}, close outside: "
                f"{self.n_close_outside_range}, price <= 0: {self.n_nonpositive_price})",
                self.invalid_range_examples,
            )
        else:
            lines.append("  invalid price range: none")
        if self.n_off_grid:
            section(
                f"off the {self.base_timeframe} grid: {self.n_off_grid} bar(s) whose open time "
                "is not a multiple of the base timeframe (resampling refuses them)",
                self.off_grid_examples,
            )
        if self.n_gaps:
            section(
                f"gaps: {self.n_gaps}, {self.n_missing_bars} {self.base_timeframe} bar(s) missing "
                f"in all; largest:",
                self.largest_gaps,
            )
        else:
            lines.append("  gaps: none")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: datetimes as ISO strings, examples as dicts."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, dt.datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = [item.to_dict() for item in value]
            out[name] = value
        return out


def _fmt_time(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + " UTC"


# --------------------------------------------------------------------------- validation


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
    if mode_us % _US_PER_MINUTE:
        raise DataValidationError(
            f"{source}: the most common interval between bars is "
            f"{dt.timedelta(microseconds=mode_us)} "
            f"({n_mode} of {diffs_us.len()} intervals), not a whole number of minutes; "
            "bars finer than m1 are not supported"
        )
    minutes = mode_us // _US_PER_MINUTE
    if expected_minutes is not None and expected_minutes != minutes:
        errors.append(
            f"base timeframe: expected {timeframe_name(expected_minutes)}, but the data's most "
            f"common interval is {timeframe_name(minutes)} ({n_mode} of {diffs_us.len()} "
            f"intervals, {share:.1%})"
        )
    return minutes, n_mode, errors


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
) -> tuple[pl.DataFrame, BarReport]:
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
        ``report``: a :class:`BarReport` (its summary is logged at INFO; gaps, rows out of
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
    base_us = base_minutes * _US_PER_MINUTE
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
    report = BarReport(
        source=source,
        n_rows_in=n_in,
        n_bars=out.height,
        base_timeframe=base,
        n_intervals_at_base=n_at_base,
        first_timestamp=out.item(0, TIMESTAMP),
        last_timestamp=out.item(-1, TIMESTAMP),
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
    if n_in != out.height + n_dropped:  # a bug here, never a data problem
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


# --------------------------------------------------------------------------- resampling


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
    base_us = base_minutes * _US_PER_MINUTE
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
    target_us = target_minutes * _US_PER_MINUTE
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


__all__ = [
    "BAR_COLUMNS",
    "COLUMN_ALIASES",
    "INVALID_RANGE",
    "RESAMPLED_COLUMNS",
    "BarReport",
    "DuplicatePolicy",
    "Gap",
    "RowExample",
    "bar_close_times",
    "build_timeframes",
    "read_bars",
    "resample_bars",
    "validate_bars",
    "visible_coarse_index",
]
