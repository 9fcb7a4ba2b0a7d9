"""Canonical column names and dtypes of kizashi's raw inputs.

Daily panel (one row per stock and trading day)::

    code: Utf8, date: Date, open/high/low/close: Float64, volume: Float64
    optional: turnover_value (currency traded, unadjusted)
              adjustment_factor (J-Quants convention: 0.5 on the ex-date of a 2-for-1 split)
              adjusted_close, split_coefficient, dividend_amount (S&P 500 / AlphaVantage layout)
              upper_limit, lower_limit (1 = the day closed at its upper / lower daily price
                limit, else 0; J-Quants UpperLimit / LowerLimit): carried to the adjusted panel
                unchanged, read by kizashi.portfolio.market (a book cannot buy at the upper
                limit or sell at the lower one)
              oracle_* (synthetic markets only: the planted signal; never read by features)

Sector table: ``code`` plus one or more level columns (``sector`` first; e.g. ``sector_2``).
Margin balances (weekly): code, date, published_date, long_margin_volume, short_margin_volume.
"""

from __future__ import annotations

import polars as pl

CODE = "code"
DATE = "date"
PRICE_COLUMNS = ("open", "high", "low", "close")
REQUIRED_PANEL_COLUMNS = (CODE, DATE, *PRICE_COLUMNS, "volume")
OPTIONAL_PANEL_COLUMNS = (
    "turnover_value",
    "adjustment_factor",
    "adjusted_close",
    "split_coefficient",
    "dividend_amount",
    "upper_limit",
    "lower_limit",
)
LIMIT_FLAG_COLUMNS = ("upper_limit", "lower_limit")
ORACLE_PREFIX = "oracle_"
TARGET_PREFIX = "target_"

PANEL_DTYPES: dict[str, pl.DataType] = {
    CODE: pl.Utf8(),
    DATE: pl.Date(),
    **{c: pl.Float64() for c in (*PRICE_COLUMNS, "volume", *OPTIONAL_PANEL_COLUMNS)},
}

SECTOR = "sector"
REQUIRED_SECTOR_COLUMNS = (CODE, SECTOR)

PUBLISHED_DATE = "published_date"
MARGIN_VALUE_COLUMNS = ("long_margin_volume", "short_margin_volume")
REQUIRED_MARGIN_COLUMNS = (CODE, DATE, PUBLISHED_DATE, *MARGIN_VALUE_COLUMNS)
MARGIN_DTYPES: dict[str, pl.DataType] = {
    CODE: pl.Utf8(),
    DATE: pl.Date(),
    PUBLISHED_DATE: pl.Date(),
    **{c: pl.Float64() for c in MARGIN_VALUE_COLUMNS},
}

# Column mappings that let common exports load without editing (source name -> canonical).
COLUMN_PRESETS: dict[str, dict[str, str]] = {
    "canonical": {},
    "jquants": {
        "Code": CODE,
        "Date": DATE,
        "Open": "open",
        "High": "high",
        "Low": "low",
        "Close": "close",
        "Volume": "volume",
        "TurnoverValue": "turnover_value",
        "AdjustmentFactor": "adjustment_factor",
        "UpperLimit": "upper_limit",
        "LowerLimit": "lower_limit",
    },
    "sp500": {
        "timestamp": DATE,
        "symbol": CODE,
        "ticker": CODE,
    },
    "jquants_margin": {
        "Code": CODE,
        "Date": DATE,
        "PublishedDate": PUBLISHED_DATE,
        "LongMarginTradeVolume": "long_margin_volume",
        "ShortMarginTradeVolume": "short_margin_volume",
    },
    "sectors_sp500": {"Symbol": CODE, "Sector": SECTOR, "Name": "name"},
    "sectors_jquants": {
        "Code": CODE,
        "Sector33CodeName": SECTOR,
        "Sector17CodeName": "sector_2",
        "CompanyName": "name",
    },
}
