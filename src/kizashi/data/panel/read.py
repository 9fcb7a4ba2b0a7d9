"""Readers for raw inputs: daily panels, sector tables and margin balances.

A reader only reads and renames: it returns the file's values as they are (CSV cells as
strings, Parquet columns in their stored dtypes) under canonical column names. Casting,
null handling and every other rule live in :mod:`kizashi.data.panel.validate`, so that a value
that does not parse is reported with its row instead of failing deep inside a CSV parser.

Inputs may be one file or a folder of per-ticker files (``code_from_filename`` reads the
ticker from each file name). A file that is not a table (e.g. a JSON error body saved
under a ``.csv`` name) is named in a :class:`~kizashi.errors.DataValidationError`, or
skipped and noted when ``skip_bad_files`` is set.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow.parquet as pq

from kizashi.data.schema import CODE, COLUMN_PRESETS
from kizashi.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

TableFormat = Literal["auto", "csv", "parquet"]

CANDIDATE_SEPARATORS = ",;\t|"
_PARQUET_SUFFIXES = {".parquet", ".pq", ".parq"}
_CSV_SUFFIXES = {".csv", ".tsv", ".txt", ".psv"}
_SNIFF_BYTES = 64 * 1024
# Cells read as null in CSVs (besides empty cells).
CSV_NULL_VALUES = ["NA", "N/A", "NULL", "null", "None", "NaN", "nan", "#N/A"]
# Header cells of a MetaTrader-style export: a name, bracketed (``<DATE>``, ``<TICKVOL>``,
# ``<REAL VOLUME>``) or not.
_HEADER_NAME = re.compile(r"<[A-Za-z_][\w .\-]*>|[A-Za-z_][\w .\-]*")


# --------------------------------------------------------------------------- tables


def _resolve_format(path: Path, format: TableFormat) -> Literal["csv", "parquet"]:
    if format != "auto":
        return format
    suffix = path.suffix.lower()
    if suffix in _PARQUET_SUFFIXES:
        return "parquet"
    if suffix in _CSV_SUFFIXES:
        return "csv"
    with path.open("rb") as fh:
        magic = fh.read(4)
    return "parquet" if magic == b"PAR1" else "csv"


def _describe_head(text: str, limit: int = 80) -> str:
    head = " ".join(text.split())
    return repr(head[:limit] + ("…" if len(head) > limit else ""))


def sniff_separator(head: str, source: str) -> str:
    """Pick the delimiter of a CSV from its first lines (``, ; \\t |``).

    Uses :class:`csv.Sniffer`; when it cannot decide, falls back to the candidate that
    splits the header line into the most fields. Raises when no candidate splits it.
    """
    lines = [line for line in head.splitlines() if line.strip()]
    if not lines:
        raise DataValidationError(f"{source}: file is empty (no header line)")
    sample = "\n".join(lines[:50])
    try:
        return csv.Sniffer().sniff(sample, delimiters=CANDIDATE_SEPARATORS).delimiter
    except csv.Error:
        pass
    counts = {sep: lines[0].count(sep) for sep in CANDIDATE_SEPARATORS}
    best = max(counts, key=lambda sep: counts[sep])
    if counts[best] == 0:
        raise DataValidationError(
            f"{source}: not a delimited table: no ',', ';', tab or '|' in the header line "
            f"{_describe_head(lines[0])}; set input.separator if the file uses another delimiter"
        )
    return best


def _is_bracketed_header(head: str) -> bool:
    """True when the first line is a header of ``<NAME>`` cells (MetaTrader exports).

    E.g. ``<DATE>\\t<TIME>\\t<OPEN>...``: split on one of ``, ; \\t |`` it gives at least
    two cells and every cell is a name, bracketed or not. HTML/XML (``<!DOCTYPE html>``,
    ``<?xml ...?>``, ``<html lang="en">``, ``<html><body>``) does not pass and is still
    refused as such.
    """
    line = head.splitlines()[0].strip() if head.strip() else ""
    for sep in CANDIDATE_SEPARATORS:
        cells = [cell.strip() for cell in line.split(sep)]
        if len(cells) >= 2 and all(_HEADER_NAME.fullmatch(cell) for cell in cells):
            return True
    return False


def first_invalid_utf8(path: Path, block_size: int = 1 << 20) -> tuple[int, int, bytes] | None:
    """``(byte offset, line number, bad bytes)`` of the first byte sequence of ``path`` that
    is not UTF-8 (offset 0-based, line 1-based), or None when the whole file decodes.

    Reads the file in blocks (memory bounded by ``block_size``); a multi-byte character cut
    by a block boundary is carried into the next block, not reported.
    """
    offset = 0  # file offset of data[0]
    lines_before = 0  # newlines before data[0]
    carry = b""
    with path.open("rb") as fh:
        while True:
            block = fh.read(block_size)
            data = carry + block
            if not data:
                return None
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as err:
                cut = err.reason == "unexpected end of data" and err.end == len(data)
                if not (cut and block):  # a sequence cut by the block end is completed next time
                    line = lines_before + data.count(b"\n", 0, err.start) + 1
                    return offset + err.start, line, data[err.start : max(err.end, err.start + 1)]
                lines_before += data.count(b"\n", 0, err.start)
                offset += err.start
                carry = data[err.start :]
                continue
            if not block:
                return None
            lines_before += data.count(b"\n")
            offset += len(data)
            carry = b""


def _not_utf8(source: str, position: tuple[int, int, bytes]) -> DataValidationError:
    offset, line, bad = position
    return DataValidationError(
        f"{source}: not UTF-8 text: byte {offset:,} (line {line:,}) is {bad!r}; "
        "convert the file to UTF-8 (e.g. from Shift-JIS/cp932)"
    )


def _read_csv(path: Path, separator: str | None) -> pl.DataFrame:
    source = str(path)
    with path.open("rb") as fh:
        raw_head = fh.read(_SNIFF_BYTES)
    if not raw_head.strip():
        raise DataValidationError(f"{source}: file is empty")
    try:
        head = raw_head.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # A multi-byte character cut at the sniff boundary is not an encoding problem.
        if err.start < len(raw_head) - 4:
            line = raw_head.count(b"\n", 0, err.start) + 1
            raise _not_utf8(source, (err.start, line, raw_head[err.start : err.end])) from None
        head = raw_head[: err.start].decode("utf-8-sig")
    stripped = head.lstrip()
    if stripped[:1] in ("{", "["):
        raise DataValidationError(
            f"{source}: not a CSV table: the file holds JSON "
            f"(starts with {_describe_head(stripped)}); "
            "a failed download saves the server's error body under the data file's name"
        )
    if stripped[:1] == "<" and not _is_bracketed_header(stripped):
        raise DataValidationError(
            f"{source}: not a CSV table: the file holds HTML/XML "
            f"(starts with {_describe_head(stripped)})"
        )
    sep = separator if separator is not None else sniff_separator(head, source)
    header_line = head.splitlines()[0] if head.splitlines() else ""
    header = next(csv.reader(io.StringIO(header_line), delimiter=sep), [])
    header = [name.strip() for name in header]
    duplicated = sorted(name for name, n in Counter(header).items() if n > 1)
    if duplicated:
        raise DataValidationError(
            f"{source}: duplicated column name(s) in the header: "
            f"{', '.join(map(repr, duplicated))} "
            f"(header: {header})"
        )
    if len(header) < 2:
        raise DataValidationError(
            f"{source}: only one column ({_describe_head(header_line)}) with separator {sep!r}; "
            "this is not a table of prices (wrong input.separator, or not a CSV)"
        )
    try:
        frame = pl.scan_csv(
            path,
            separator=sep,
            infer_schema=False,
            null_values=CSV_NULL_VALUES,
            truncate_ragged_lines=False,
        ).collect()
    except pl.exceptions.PolarsError as err:
        # Only the head was checked above; a bad byte further on is found and placed here.
        position = first_invalid_utf8(path)
        if position is not None:
            raise _not_utf8(source, position) from None
        raise DataValidationError(
            f"{source}: could not be read as CSV (separator {sep!r}): {err}"
        ) from None
    # Header cells padded with spaces ("Close ") would not match any mapping.
    renames = {c: c.strip() for c in frame.columns if c != c.strip()}
    return frame.rename(renames) if renames else frame


def _read_parquet(path: Path) -> pl.DataFrame:
    source = str(path)
    try:
        names = pq.read_schema(path).names
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a non-Parquet file
        raise DataValidationError(f"{source}: not a readable Parquet file: {err}") from None
    duplicated = sorted(name for name, n in Counter(names).items() if n > 1)
    if duplicated:
        raise DataValidationError(
            f"{source}: duplicated column name(s): {', '.join(map(repr, duplicated))} "
            f"(columns: {names})"
        )
    try:
        return pl.scan_parquet(path).collect()
    except pl.exceptions.PolarsError as err:
        raise DataValidationError(f"{source}: could not be read as Parquet: {err}") from None


def read_table(
    path: str | Path, *, format: TableFormat = "auto", separator: str | None = None
) -> pl.DataFrame:
    """Read one CSV (any of ``, ; \\t |``, sniffed when ``separator`` is None) or Parquet file.

    CSV cells come back as strings (nulls: empty cells and ``NA``-like markers); validation
    casts them with strict checking. Errors name the file.
    """
    file = Path(path)
    if not file.exists():
        raise DataValidationError(f"{file}: file not found")
    if not file.is_file():
        raise DataValidationError(f"{file}: not a file")
    fmt = _resolve_format(file, format)
    return _read_parquet(file) if fmt == "parquet" else _read_csv(file, separator)


# --------------------------------------------------------------------------- column mapping


def resolve_mapping(
    preset: str, columns: dict[str, str] | None, what: str = "input"
) -> dict[str, str]:
    """Preset mapping (source -> canonical) updated by explicit ``columns``."""
    if preset not in COLUMN_PRESETS:
        raise ConfigError(
            f"unknown column preset {preset!r} for {what}; "
            f"known presets: {', '.join(sorted(COLUMN_PRESETS))}"
        )
    mapping = dict(COLUMN_PRESETS[preset])
    mapping.update(columns or {})
    return mapping


def apply_column_mapping(df: pl.DataFrame, mapping: dict[str, str], source: str) -> pl.DataFrame:
    """Rename ``source -> canonical`` for the mapped columns present in ``df``.

    Mapping entries whose source column is absent are ignored (presets cover several
    layouts). Two present source columns mapped to one canonical name, or a renamed column
    colliding with an existing one, raise :class:`DataValidationError` naming them.
    """
    columns = df.columns
    duplicated = sorted(name for name, n in Counter(columns).items() if n > 1)
    if duplicated:
        raise DataValidationError(f"{source}: duplicated column name(s): {', '.join(duplicated)}")
    renames = {src: dst for src, dst in mapping.items() if src in columns and src != dst}
    targets: dict[str, list[str]] = {}
    for src, dst in renames.items():
        targets.setdefault(dst, []).append(src)
    problems = [
        f"columns {', '.join(map(repr, srcs))} all map to {dst!r}"
        for dst, srcs in targets.items()
        if len(srcs) > 1
    ]
    for dst, srcs in targets.items():
        if dst in columns and dst not in renames:
            problems.append(
                f"column {srcs[0]!r} maps to {dst!r}, which is already a column of the file"
            )
    if problems:
        raise DataValidationError(
            f"{source}: ambiguous column mapping: {'; '.join(problems)} "
            f"(columns in the file: {columns}); drop one of them or change the mapping"
        )
    return df.rename(renames) if renames else df


# --------------------------------------------------------------------------- panels


def _list_folder(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _code_from_name(pattern: re.Pattern[str], file: Path) -> str:
    match = (
        pattern.fullmatch(file.name) or pattern.fullmatch(file.stem) or pattern.search(file.name)
    )
    if match is None:
        raise DataValidationError(
            f"{file}: file name does not match code_from_filename {pattern.pattern!r}"
        )
    return match.group(1)


def _compile_code_pattern(regex: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(regex)
    except re.error as err:
        raise ConfigError(f"code_from_filename {regex!r} is not a valid regex: {err}") from None
    if pattern.groups != 1:
        raise ConfigError(
            f"code_from_filename {regex!r} must have exactly one group (the code), "
            f"has {pattern.groups}"
        )
    return pattern


def _read_one_panel_file(
    file: Path,
    *,
    format: TableFormat,
    separator: str | None,
    mapping: dict[str, str],
    pattern: re.Pattern[str] | None,
) -> pl.DataFrame:
    frame = apply_column_mapping(
        read_table(file, format=format, separator=separator), mapping, str(file)
    )
    if pattern is not None:
        code = _code_from_name(pattern, file)
        if CODE in frame.columns:
            raise DataValidationError(
                f"{file}: has a {CODE!r} column and code_from_filename is set; use one or the other"
            )
        frame = frame.with_columns(pl.lit(code, dtype=pl.Utf8).alias(CODE)).select(
            CODE, pl.exclude(CODE)
        )
    return frame


def read_panel(
    path: str | Path,
    *,
    format: TableFormat = "auto",
    separator: str | None = None,
    preset: str = "canonical",
    columns: dict[str, str] | None = None,
    code_from_filename: str | None = None,
    skip_bad_files: bool = False,
) -> tuple[pl.DataFrame, list[str]]:
    """Read a daily panel from a file or a folder of files; return ``(raw frame, notes)``.

    ``preset`` / ``columns`` rename source columns to canonical ones (``columns`` wins).
    For a folder, every non-hidden file is read; each needs a ``code`` column, or
    ``code_from_filename`` (a regex with one group) to take the code from its file name.
    A file that cannot be read raises a :class:`DataValidationError` naming every bad
    file, or, with ``skip_bad_files``, is skipped and named in the returned notes.
    """
    root = Path(path)
    mapping = resolve_mapping(preset, columns)
    pattern = _compile_code_pattern(code_from_filename) if code_from_filename else None
    notes: list[str] = []
    if not root.exists():
        raise DataValidationError(f"{root}: input path not found")
    if root.is_file():
        return _read_one_panel_file(
            root, format=format, separator=separator, mapping=mapping, pattern=pattern
        ), notes

    files = _list_folder(root)
    if not files:
        raise DataValidationError(f"{root}: folder holds no files")
    frames: list[pl.DataFrame] = []
    bad: list[tuple[Path, str]] = []
    for file in files:
        try:
            frame = _read_one_panel_file(
                file, format=format, separator=separator, mapping=mapping, pattern=pattern
            )
        except DataValidationError as err:
            bad.append((file, str(err)))
            continue
        if CODE not in frame.columns:
            raise DataValidationError(
                f"{root}: reading a folder needs the stock code of every file, but {file.name} has "
                f"no {CODE!r} column (columns: {frame.columns}); set input.code_from_filename to a "
                r"regex with one group, e.g. 'DA-(.+)-T-\d{4}-\d{2}-\d{2}'"
            )
        frames.append(frame)
    if bad:
        listing = "\n".join(f"  - {msg}" for _, msg in bad)
        if not skip_bad_files:
            raise DataValidationError(
                f"{root}: {len(bad)} of {len(files)} file(s) could not be read "
                f"(set input.skip_bad_files: true to load the others):\n{listing}"
            )
        for file, msg in bad:
            note = f"skipped bad file {file.name}: {msg}"
            notes.append(note)
            log.warning(note)
    if not frames:
        raise DataValidationError(f"{root}: none of the {len(files)} file(s) could be read")
    try:
        panel = pl.concat(frames, how="diagonal_relaxed")
    except pl.exceptions.PolarsError as err:
        raise DataValidationError(
            f"{root}: files have incompatible column types and cannot be stacked: {err}"
        ) from None
    log.info("read %d rows from %d file(s) in %s", panel.height, len(frames), root)
    return panel, notes


def read_sectors(
    path: str | Path, *, preset: str = "canonical", columns: dict[str, str] | None = None
) -> pl.DataFrame:
    """Read a sector table (code plus sector level columns) under canonical names."""
    file = Path(path)
    return apply_column_mapping(
        read_table(file), resolve_mapping(preset, columns, "sectors"), str(file)
    )


def read_margin(
    path: str | Path, *, preset: str = "canonical", columns: dict[str, str] | None = None
) -> pl.DataFrame:
    """Read weekly margin balances under canonical names."""
    file = Path(path)
    return apply_column_mapping(
        read_table(file), resolve_mapping(preset, columns, "margin"), str(file)
    )


def header_columns(path: Path) -> list[str]:
    """The column names of a quotes / sector file: a Parquet file's schema, a text file's first
    line split on , ; | or tab (a folder: none)."""
    if path.is_dir() or path.suffix.lower() == ".parquet":
        return pl.read_parquet_schema(path).keys() if path.is_file() else []  # type: ignore[return-value]
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    return [c.strip() for c in first.replace("\t", ",").replace(";", ",").replace("|", ",").split(",")]


def guess_preset(path: Path) -> str:
    """jquants when the file has J-Quants column names, sp500 for AlphaVantage-style, else canonical."""
    header = set(header_columns(path))
    if {"Code", "Date", "Close"} <= header:
        return "jquants"
    if "timestamp" in header or "adjusted_close" in header:
        return "sp500"
    return "canonical"


#: Column names of common exports (lower case, without spaces, ``_`` and ``-``) -> canonical.
COLUMN_ALIASES: dict[str, str] = {
    "date": "date", "datetime": "date", "timestamp": "date", "tradedate": "date", "day": "date",
    "code": CODE, "ticker": CODE, "symbol": CODE, "instrument": CODE, "secid": CODE, "stock": CODE,
    "open": "open", "high": "high", "low": "low", "close": "close",
    "volume": "volume", "vol": "volume", "turnovervalue": "turnover_value",
    "upperlimit": "upper_limit", "lowerlimit": "lower_limit",
}


def guess_columns(path: Path, preset: str) -> dict[str, str]:
    """``{source: canonical}`` for the header columns of ``path`` that ``preset`` does not map
    and that name a required column in another spelling (``Date``, ``Ticker``, ``Close``,
    ``trade_date``, ...; :data:`COLUMN_ALIASES`). A canonical name the file already has, or
    that two columns would both take, is left alone (the check then reports it)."""
    preset_map = COLUMN_PRESETS.get(preset, {})
    header = header_columns(path)
    taken = {preset_map.get(name, name) for name in header}
    candidates: dict[str, list[str]] = {}
    for name in header:
        if name in preset_map or name in taken & set(COLUMN_ALIASES.values()):
            continue
        canonical = COLUMN_ALIASES.get(name.lower().replace(" ", "").replace("_", "").replace("-", ""))
        if canonical is not None and canonical not in taken:
            candidates.setdefault(canonical, []).append(name)
    return {names[0]: canonical for canonical, names in candidates.items() if len(names) == 1}


def guess_input_settings(path: Path) -> dict[str, Any]:
    """``input`` settings for a quotes file read without a config: the guessed ``preset``
    (:func:`guess_preset`) and, when the header spells required columns otherwise, ``columns``
    (:func:`guess_columns`, logged)."""
    preset = guess_preset(path)
    settings: dict[str, Any] = {"preset": preset}
    columns = guess_columns(path, preset)
    if columns:
        settings["columns"] = columns
        log.info(
            "%s: columns read as %s (set input.columns to map them otherwise)",
            path.name, ", ".join(f"{source} -> {target}" for source, target in columns.items()),
        )
    return settings


def guess_sectors_preset(path: Path) -> str:
    """sectors_sp500 / sectors_jquants by the table's column names, else canonical."""
    header = set(header_columns(path))
    if {"Symbol", "Sector"} <= header:
        return "sectors_sp500"
    if "Sector33CodeName" in header:
        return "sectors_jquants"
    return "canonical"


