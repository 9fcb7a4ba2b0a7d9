"""Synthetic data with known properties: a daily equity market and intraday bars.

- :mod:`~kizashi.data.synthetic.daily`: :func:`generate_market`, a daily panel with a
  planted, known signal (the embedded default data set).
- :mod:`~kizashi.data.synthetic.intraday`: :func:`generate_bars`, intraday bars with the
  stylized facts of real ones and no planted signal.

The daily market's names are re-exported here; the intraday module's constants
(``BAR_COLUMNS``, ``TRADING_DAYS_PER_YEAR``, ...) are imported from it directly.
"""

from kizashi.data.synthetic.daily import (
    ORACLE_COLUMNS,
    QUOTE_COLUMNS,
    TRADING_DAYS_PER_YEAR,
    SyntheticMarket,
    SyntheticModelParams,
    default_market,
    generate_market,
    generate_trading_days,
)
from kizashi.data.synthetic.intraday import SyntheticBarsConfig, bars_to_csv, generate_bars

__all__ = [
    "ORACLE_COLUMNS",
    "QUOTE_COLUMNS",
    "TRADING_DAYS_PER_YEAR",
    "SyntheticBarsConfig",
    "SyntheticMarket",
    "SyntheticModelParams",
    "bars_to_csv",
    "default_market",
    "generate_bars",
    "generate_market",
    "generate_trading_days",
]
