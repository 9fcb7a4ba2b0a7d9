"""Checks of the monitor's input frames (signals, features, realized returns).

Every frame is long: one row per ``(date, code)``. A missing column or a duplicated
``(date, code)`` key is an error naming the frame, the column and example rows; nothing is
dropped silently (non-finite values are counted by the callers and logged).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from kizashi.data.schema import CODE, DATE
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import require_columns

EXAMPLE_ROWS = 5


def check_frame(frame: pl.DataFrame, value_columns: Sequence[str], what: str) -> pl.DataFrame:
    """``frame[date, code, *value_columns]`` with the values cast to Float64, after checking
    the columns exist and ``(date, code)`` is unique; raises :class:`KizashiError` otherwise."""
    if not isinstance(frame, pl.DataFrame):
        raise KizashiError(f"{what}: expected a polars DataFrame, got {type(frame).__name__}")
    require_columns(frame, [DATE, CODE, *value_columns], what)
    out = frame.select(DATE, CODE, *value_columns)
    for column in value_columns:
        if not out.schema[column].is_numeric():
            raise KizashiError(f"{what}: column {column!r} must be numeric, got {out.schema[column]}")
    if out[DATE].null_count() or out[CODE].null_count():
        raise KizashiError(f"{what}: {out[DATE].null_count()} null date(s) and "
                           f"{out[CODE].null_count()} null code(s); every row needs both")
    duplicated = out.filter(pl.struct(DATE, CODE).is_duplicated())
    if duplicated.height:
        keys = duplicated.select(DATE, CODE).unique().sort(DATE, CODE)
        examples = [(str(d), c) for d, c in keys.head(EXAMPLE_ROWS).rows()]
        raise KizashiError(f"{what}: {keys.height} (date, code) key(s) on more than one row "
                           f"({duplicated.height} rows), e.g. {examples}; give one value per stock and day")
    return out.with_columns(pl.col(c).cast(pl.Float64) for c in value_columns)


def day_index(dates: pl.Series, calendar: pl.Series) -> np.ndarray:
    """``[rows]`` position of each of ``dates`` in the sorted unique ``calendar``; -1 for a date
    not in it."""
    lookup = pl.DataFrame({DATE: calendar, "_day": np.arange(calendar.len(), dtype=np.int64)})
    joined = pl.DataFrame({DATE: dates}).join(lookup, on=DATE, how="left", maintain_order="left")
    return joined["_day"].fill_null(-1).to_numpy()


def non_finite_count(frame: pl.DataFrame, column: str) -> int:
    """Rows of ``frame`` whose ``column`` is null, NaN or infinite."""
    return int(frame.select((~pl.col(column).is_finite()).fill_null(True).sum()).item())


def require_same_keys(frame: pl.DataFrame, signals: pl.DataFrame, what: str) -> None:
    """A clear error when ``frame``'s date or code type differs from the signals' (a join
    would fail or match nothing)."""
    for column in (DATE, CODE):
        if frame.schema[column] != signals.schema[column]:
            raise KizashiError(f"{what}: column {column!r} is {frame.schema[column]}, the signals' is "
                               f"{signals.schema[column]}; cast one to the other")
