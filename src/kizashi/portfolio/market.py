"""The market frame the simulator reads, derived causally from a daily panel.

Input: an adjusted daily panel (``data.panel.adjust.adjust_prices``'s output: ``code, date,
close, volume`` and optionally ``turnover_value``, limit flags), optionally a sector table
(``code, sector``). Windows count **sessions of the market calendar** (the panel's own
dates, :func:`kizashi.data.calendar.trading_calendar`), not a stock's rows: each stock is laid
on the calendar from its first to its last row, so a missing session is a null in its
window, never skipped over. Per stock and session ``t`` (``r_t = close_t / close_{t-1} - 1``,
null when either session is missing):

* ``forward_return_1d = close_{t+1} / close_t - 1`` (null when session ``t+1`` is missing;
  the only forward-looking column, like ``target_*``).
* ``dollar_volume``: mean of ``turnover_value`` (else ``close * volume``; adjusted price times
  adjusted volume is the currency traded) over the last ``dollar_volume_window`` sessions up
  to t, with at least ``ceil(window / 2)`` of them present.
* ``volatility``: ``std(r, ddof=1)`` over the last ``volatility_window`` sessions up to t
  (at least ``max(2, window // 2)`` returns).
* ``beta = cov(r, m) / var(m)`` over the last ``beta_window`` sessions up to t, on the
  sessions where the stock has a return, with ``m_t`` the equal-weight mean of all stocks'
  ``r_t`` (at least ``max(2, window // 2)`` pairs; null when ``var(m) = 0``).
* ``can_buy = volume > 0 and not upper_limit``, ``can_sell = volume > 0 and not
  lower_limit``. The limit flags come from the panel's ``upper_limit_column`` /
  ``lower_limit_column`` when present (J-Quants UpperLimit / LowerLimit: "1", true or a
  nonzero number = at the limit), else from ``daily_limit``: ``r_t >= daily_limit`` is at the
  upper limit, ``r_t <= -daily_limit`` at the lower one (a percentage band approximates
  markets whose limits are price tables, like Japan's), else no limit.
* ``sector`` from the sector table (null for a code without one).

Only the panel's own rows are returned (a session without a row has no market row: the
simulator treats the stock as untradable that day). Everything but ``forward_return_1d`` at
``t`` depends only on rows up to ``t`` (tested by perturbation).
"""

from __future__ import annotations

import math

import polars as pl

from kizashi.data.calendar import trading_calendar
from kizashi.data.schema import CODE, DATE, SECTOR
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import require_columns
from kizashi.portfolio.settings import MarketSettings

MARKET_COLUMNS = (
    DATE,
    CODE,
    "forward_return_1d",
    "dollar_volume",
    "volatility",
    "beta",
    "can_buy",
    "can_sell",
)
_SESSION = "_session"
_PRESENT = "_present"


def _limit_flag(panel: pl.DataFrame, column: str) -> pl.Expr:
    """A panel flag column as Boolean: "1"/"true", True or a nonzero number = at the limit."""
    dtype = panel.schema[column]
    expr = pl.col(column)
    if dtype == pl.Utf8:
        flag = expr.str.strip_chars().str.to_lowercase().is_in(["1", "true", "t", "yes"])
    elif dtype == pl.Boolean:
        flag = expr
    else:
        flag = expr.cast(pl.Float64) != 0
    return flag.fill_null(False)


def market_frame(
    panel: pl.DataFrame, settings: MarketSettings | None = None, sectors: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The market frame of ``panel`` (see the module docstring).

    Args:
        panel: ``[rows]`` adjusted daily panel, one row per (code, date).
        settings: windows and limits (default :class:`MarketSettings`).
        sectors: optional ``code, sector`` table.

    Returns:
        ``[rows]`` frame ``date, code, forward_return_1d, dollar_volume, volatility, beta (Float64),
        can_buy, can_sell (Boolean)`` plus ``sector`` (Utf8) when ``sectors`` is given, sorted
        by (date, code).
    """
    settings = settings or MarketSettings()
    require_columns(panel, [CODE, DATE, "close", "volume"], "market_frame")
    calendar = pl.DataFrame(
        {DATE: pl.Series(trading_calendar(panel.get_column(DATE))).cast(pl.Date)}
    )
    calendar = calendar.with_row_index(_SESSION).with_columns(pl.col(_SESSION).cast(pl.Int64))
    upper_col, lower_col = settings.upper_limit_column, settings.lower_limit_column
    flags = [c for c in (upper_col, lower_col) if c in panel.columns]
    traded = (
        pl.col("turnover_value")
        if "turnover_value" in panel.columns
        else pl.col("close") * pl.col("volume")
    )
    rows = panel.select(
        CODE,
        pl.col(DATE).cast(pl.Date),
        pl.col("close").cast(pl.Float64),
        pl.col("volume").cast(pl.Float64),
        traded.cast(pl.Float64).alias("_traded"),
        *[_limit_flag(panel, c).alias(c) for c in flags],
    ).join(calendar, on=DATE)
    spans = rows.group_by(CODE).agg(
        pl.col(_SESSION).min().alias("_first"), pl.col(_SESSION).max().alias("_last")
    )
    grid = (
        spans.select(CODE, pl.int_ranges("_first", pl.col("_last") + 1).alias(_SESSION))
        .explode(_SESSION, empty_as_null=False)  # a span is never empty (first <= last)
        .join(rows.with_columns(pl.lit(True).alias(_PRESENT)), on=[CODE, _SESSION], how="left")
        .with_columns(pl.col(_PRESENT).fill_null(False))
        .sort(CODE, _SESSION)
    )
    close = pl.col("close")
    ret = (close / close.shift(1) - 1.0).over(CODE)
    grid = grid.with_columns(_ret=ret, forward_return_1d=(close.shift(-1) / close - 1.0).over(CODE))
    grid = grid.with_columns(_market=pl.col("_ret").mean().over(_SESSION))

    def rolling_mean(expr: pl.Expr, window: int, least: int) -> pl.Expr:
        return expr.rolling_mean(window, min_samples=least).over(CODE)

    bw = settings.beta_window
    least_beta = max(2, bw // 2)
    paired_market = pl.when(pl.col("_ret").is_not_null()).then(pl.col("_market"))
    grid = grid.with_columns(
        dollar_volume=rolling_mean(
            pl.col("_traded"),
            settings.dollar_volume_window,
            math.ceil(settings.dollar_volume_window / 2),
        ),
        volatility=pl.col("_ret")
        .rolling_std(
            settings.volatility_window, min_samples=max(2, settings.volatility_window // 2)
        )
        .over(CODE),
        _mx=rolling_mean(paired_market, bw, least_beta),
        _rx=rolling_mean(pl.col("_ret"), bw, least_beta),
        _xy=rolling_mean(pl.col("_ret") * paired_market, bw, least_beta),
        _xx=rolling_mean(paired_market * paired_market, bw, least_beta),
    )
    variance = pl.col("_xx") - pl.col("_mx") ** 2
    covariance = pl.col("_xy") - pl.col("_rx") * pl.col("_mx")
    if flags:
        upper = pl.col(upper_col) if upper_col in flags else pl.lit(False)
        lower = pl.col(lower_col) if lower_col in flags else pl.lit(False)
    elif settings.daily_limit is not None:
        # the limit itself, up to rounding of the prices it was computed from
        bound = settings.daily_limit * (1.0 - 1e-9)
        upper = (pl.col("_ret") >= bound).fill_null(False)
        lower = (pl.col("_ret") <= -bound).fill_null(False)
    else:
        upper = lower = pl.lit(False)
    has_volume = (pl.col("volume") > 0).fill_null(False)
    out = grid.filter(pl.col(_PRESENT)).select(
        DATE,
        CODE,
        "forward_return_1d",
        "dollar_volume",
        "volatility",
        beta=pl.when(variance > 1e-18).then(covariance / variance),
        can_buy=has_volume & ~upper,
        can_sell=has_volume & ~lower,
    )
    if sectors is not None:
        require_columns(sectors, [CODE, SECTOR], "market_frame sectors")
        table = sectors.select(CODE, pl.col(SECTOR).cast(pl.Utf8))
        repeated = table.filter(pl.col(CODE).is_duplicated()).get_column(CODE).unique().sort()
        if repeated.len():
            raise KizashiError(
                f"market_frame sectors: {repeated.len()} code(s) with several rows, e.g. {repeated.head(3).to_list()}"
            )
        out = out.join(table, on=CODE, how="left")
    return out.sort(DATE, CODE)


__all__ = ["MARKET_COLUMNS", "market_frame"]
