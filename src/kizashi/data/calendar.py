"""The market calendar: the sorted trading days a panel's dates define."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl


def trading_calendar(dates: Any) -> np.ndarray:
    """Sorted, de-duplicated ``datetime64[D]`` array from any collection of dates.

    Accepts a Polars Series (Date or Datetime), a NumPy array, a pandas index, or an
    iterable of ``datetime.date`` / ``datetime64`` / ISO strings. Missing dates are an error.
    """
    if isinstance(dates, pl.DataFrame):
        raise TypeError("pass the date column (a Series), not a DataFrame")
    if isinstance(dates, pl.Series):
        if dates.null_count():
            raise ValueError(f"calendar has {dates.null_count()} missing (null) dates")
        if dates.dtype != pl.Date:
            dates = dates.cast(pl.Date)
        values = dates.to_numpy()
    else:
        if not isinstance(dates, np.ndarray):
            dates = list(dates) if isinstance(dates, Iterable) else dates
        values = np.asarray(dates)
    try:
        values = values.astype("datetime64[D]")
    except (TypeError, ValueError) as err:
        raise ValueError(f"calendar dates could not be read as dates: {err}") from None
    values = values.reshape(-1)
    if np.isnat(values).any():
        raise ValueError(f"calendar has {int(np.isnat(values).sum())} missing (NaT) dates")
    return np.unique(values)


__all__ = ["trading_calendar"]
