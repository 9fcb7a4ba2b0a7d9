"""Column names, dtypes and constants shared by the bar modules (read, validate, resample).

Canonical bar frame (:func:`~kizashi.data.bars.read_bars` output): :data:`BAR_COLUMNS`.
Resampled frame (:func:`~kizashi.data.bars.resample_bars` output): :data:`RESAMPLED_COLUMNS`.
"""

from __future__ import annotations

import polars as pl

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

US_PER_MINUTE = 60_000_000
