"""Intraday bars: reading, validation and no-look-ahead resampling to coarser timeframes.

The input layer of Stage-1 multi-timeframe pretraining. Three steps, each a function:

1. :func:`read_bars` reads one file (CSV with any of ``, ; \\t |``, or Parquet) into the
   canonical bar frame, in file order::

       timestamp  Datetime("us", "UTC")   the bar's OPEN time, as in the raw file
       open, high, low, close, volume     Float64

2. :func:`validate_bars` checks that frame and returns ``(bars, report)``: the bars sorted
   by time with one row per timestamp and a Boolean ``invalid_range`` column, and a
   :class:`~kizashi.data.report.ValidationReport` (kind ``"bars"``) with counts and
   examples of every problem (duplicated timestamps, rows out of order,
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

Modules (``read``, ``validate`` and ``resample`` each use ``_common``; none imports
another):

- :mod:`~kizashi.data.bars.read`: column matching, timestamp / number parsing, :func:`read_bars`.
- :mod:`~kizashi.data.bars.validate`: :func:`validate_bars` (duplicates, order, ranges,
  base timeframe, gaps); its report, :class:`Gap` and :class:`RowExample` are those of
  :mod:`kizashi.data.report`.
- :mod:`~kizashi.data.bars.resample`: :func:`resample_bars`, :func:`build_timeframes`,
  :func:`bar_close_times`, :func:`visible_coarse_index`.
- :mod:`~kizashi.data.bars._common`: column names and constants shared by the three.
"""

from kizashi.data.bars._common import (
    BAR_COLUMNS,
    INVALID_RANGE,
    N_BARS,
    OPEN_TIME,
    PARTIAL,
    PRICE_COLUMNS,
    RESAMPLED_COLUMNS,
    TIMESTAMP,
    UTC_DATETIME,
    VALUE_COLUMNS,
)
from kizashi.data.bars.read import COLUMN_ALIASES, read_bars
from kizashi.data.bars.resample import (
    bar_close_times,
    build_timeframes,
    resample_bars,
    visible_coarse_index,
)
from kizashi.data.bars.validate import DuplicatePolicy, validate_bars
from kizashi.data.report import Gap, RowExample, ValidationReport

__all__ = [
    "BAR_COLUMNS",
    "COLUMN_ALIASES",
    "INVALID_RANGE",
    "N_BARS",
    "OPEN_TIME",
    "PARTIAL",
    "PRICE_COLUMNS",
    "RESAMPLED_COLUMNS",
    "TIMESTAMP",
    "UTC_DATETIME",
    "VALUE_COLUMNS",
    "DuplicatePolicy",
    "Gap",
    "RowExample",
    "ValidationReport",
    "bar_close_times",
    "build_timeframes",
    "read_bars",
    "resample_bars",
    "validate_bars",
    "visible_coarse_index",
]
