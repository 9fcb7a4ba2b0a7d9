"""Reading one bar file (CSV with any of ``, ; \\t |``, or Parquet) into the canonical frame.

Column names are matched against :data:`COLUMN_ALIASES`; timestamps (text in several
layouts, Datetime/Date columns, integer Unix epochs) and numbers are parsed here, and cells
that do not parse are reported with their rows. Output layout: see :func:`read_bars`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from kizashi.data.bars._common import N_EXAMPLES, TIMESTAMP, UTC_DATETIME, VALUE_COLUMNS
from kizashi.data.panel.read import read_table
from kizashi.errors import DataValidationError

log = logging.getLogger(__name__)

# Volume columns. A traded ("real") volume column is preferred; a tick volume column (the
# number of price changes, what MetaTrader exports as <TICKVOL> / tick_volume) is used when
# the file has no real volume column, or when the real one is all zeros (MetaTrader writes
# <VOL> = 0 for symbols without exchange volume, e.g. forex and CFDs). See read_bars.
REAL_VOLUME_ALIASES: tuple[str, ...] = ("volume", "vol", "v", "real_volume")
TICK_VOLUME_ALIASES: tuple[str, ...] = ("tick_volume", "tickvol")

# Accepted column names (compared after lower-casing, stripping ``<>`` and turning spaces
# and hyphens into ``_``, so MetaTrader's ``<DATE>``, ``<TICKVOL>`` match), in order of
# preference when several are present.
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
    "volume": (*REAL_VOLUME_ALIASES, *TICK_VOLUME_ALIASES),
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


def _normalize_name(name: str) -> str:
    text = name.strip().lower().strip("<>").strip()
    return re.sub(r"[\s\-]+", "_", text)


def _match_columns(
    columns: Sequence[str], timestamp_column: str | None, source: str
) -> tuple[dict[str, str], str | None, str | None]:
    """``({canonical: raw column}, date column, tick volume column)``.

    The date column is the raw ``date`` column to combine with a time-of-day ``time``
    column (None when there is none). ``mapping["volume"]`` is a real volume column when
    one is present, else a tick volume column; the third item is a tick volume column
    present besides a real one (the fallback for an all-zero real volume), else None.
    """
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
    tick = None
    for canonical, aliases in COLUMN_ALIASES.items():
        if canonical == TIMESTAMP and timestamp_column is not None:
            wanted = _normalize_name(timestamp_column)
            if wanted not in by_norm:
                raise DataValidationError(
                    f"{source}: timestamp_column {timestamp_column!r} not found; "
                    f"columns in the file: {list(columns)}"
                )
            chosen = pick(canonical, [wanted])
        elif canonical == "volume":
            chosen = pick(canonical, REAL_VOLUME_ALIASES)
            tick = pick("tick volume", TICK_VOLUME_ALIASES)
            if chosen is None:
                chosen, tick = tick, None
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
    return mapping, date_column, tick


def _is_all_zero(raw: pl.Series, parsed: pl.Series) -> bool:
    """Every non-empty cell of ``raw`` parsed and is 0 (and there is at least one)."""
    present = parsed.drop_nulls()
    return (
        present.len() > 0
        and _unparsable_message(raw, parsed, raw.name, "a number") is None
        and bool((present == 0).all())
    )


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
            used; separate ``Date`` + time-of-day ``Time`` columns are combined (e.g.
            MetaTrader's ``<DATE>`` ``2023.09.08`` + ``<TIME>`` ``19:45:00``).
        separator: the CSV delimiter, when sniffing is not wanted.
        timezone: the zone of naive timestamps (the default: they are UTC/GMT). Timestamps
            carrying an offset or a zone are converted from their own.

    Returns:
        ``[N, 6]`` frame: ``timestamp`` (``Datetime("us", "UTC")``, each bar's open time as
        written in the file) and ``open, high, low, close, volume`` (Float64; NaN read as
        null). Other columns are ignored. Columns are matched case-insensitively against
        :data:`COLUMN_ALIASES` (e.g. ``Time``/``Date``/``Datetime``, ``Vol``/``Volume``),
        after stripping ``<>`` (MetaTrader headers such as ``<DATE>``, ``<TICKVOL>``).

    Volume rule: a real volume column (``volume, vol, v, real_volume``) is preferred; a
    tick volume column (``tick_volume, tickvol``) is used when there is no real one, or
    when the real one is all zeros and a tick volume column is present (MetaTrader exports
    ``<VOL>`` = 0 for forex/CFDs). The column used is named in the INFO log.

    Raises:
        DataValidationError: the file is missing, not a table, lacks a bar column, or has
            cells that do not parse; the message names the file, the column, the data rows
            and example values. Empty cells are kept as nulls (:func:`validate_bars`
            reports them).
    """
    file = Path(path)
    source = str(file)
    raw = read_table(file, separator=separator)
    mapping, date_column, tick_column = _match_columns(raw.columns, timestamp_column, source)
    volume_note = ""
    if tick_column is not None:
        volume_note = f" (real volume; tick volume {tick_column!r} not used)"
        real_raw = raw.get_column(mapping["volume"])
        if _is_all_zero(real_raw, _parse_numbers(real_raw, source, mapping["volume"])):
            log.info(
                "%s: real volume column %r is all zeros; using tick volume %r instead",
                source,
                mapping["volume"],
                tick_column,
            )
            volume_note = f" (tick volume; real volume {mapping['volume']!r} is all zeros)"
            mapping["volume"] = tick_column
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
        "%s: read %d bars (timestamps: %s from %r; volume from %r%s%s)",
        source,
        frame.height,
        how,
        time_label,
        mapping["volume"],
        volume_note,
        f"; ignored columns {ignored}" if ignored else "",
    )
    return frame
