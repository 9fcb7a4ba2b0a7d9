"""A daily-rebalanced, equal-weight long-short portfolio built from predictions, and its statistics.

Portfolio (:func:`long_short_returns`), per group of ``by`` (normally one horizon's predictions)
and per trading day ``t``:

* **Tradable stocks** are the rows whose prediction *and* realized return are finite (a stock
  whose next-day return is unknown, e.g. on the panel's last date or before a delisting, is
  not traded that day). A day with fewer than 2 tradable stocks has no portfolio and is left
  out of the output.
* **Leg size** ``k``: ``config.top_k`` if set, else ``max(1, floor(config.quantile * n))`` for
  ``n`` tradable stocks; always capped at ``n // 2`` so the legs never overlap.
* **Selection**: stocks are ordered by prediction ascending, ties broken by ``code`` ascending;
  the last ``k`` are long, the first ``k`` short (so among tied predictions at the boundary,
  the larger code goes long). The rule is deterministic whatever the input row order.
* **Weights**: ``+1/k`` on each long, ``-1/k`` on each short (gross exposure 2, net 0), set
  afresh every day (target weights; drift between rebalances is ignored).
* ``gross_t = sum_i w_{i,t} * realized_{i,t}`` where ``realized`` is the return earned from
  holding over the next day (``forward_return_1d`` of the predictions frame).
* ``turnover_t = sum_i |w_{i,t} - w_{i,t-1}|`` over the union of names held on ``t`` or on the
  previous portfolio day of the same group (a name absent on a day has weight 0). On the first
  day it is ``sum_i |w_{i,t}|`` = 2 (building the book from cash).
* ``net_t = gross_t - turnover_t * cost_bps / 1e4`` (``cost_bps`` is a one-way cost per unit
  of traded weight).

Statistics (:func:`portfolio_stats`), from a series of per-period returns ``r``:

* ``annual_return = mean(r) * periods_per_year`` (arithmetic annualization, not compounded).
* ``annual_volatility = std(r, ddof=1) * sqrt(periods_per_year)``.
* ``sharpe = annual_return / annual_volatility`` (no risk-free rate: a long-short book is
  self-financing); ``None`` when the volatility is 0 or undefined.
* ``max_drawdown = min_t (E_t / max_{s<=t} E_s - 1)`` on the compounded equity curve
  ``E_t = prod_{s<=t} (1 + r_s)`` with ``E_0 = 1`` as the initial peak; a non-positive fraction
  (``-0.25`` = a 25 % fall from the running peak).
* ``turnover = mean(turnover_t)``: mean daily traded weight.

Values are Python floats or ``None`` (never NaN), so the dict is JSON-serializable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from kizashi.config import LongShortConfig
from kizashi.data.schema import CODE, DATE
from kizashi.evaluation.run_dir import require_columns

logger = logging.getLogger(__name__)

# floor(quantile * n) must not lose a whole name to rounding (0.29 * 100 = 28.999999999999996).
_FLOOR_EPS = 1e-9

LONG_SHORT_COLUMNS = ("gross", "net", "turnover", "n_long", "n_short")


def _over(expr: pl.Expr, keys: list[str]) -> pl.Expr:
    """``expr`` evaluated per group of ``keys`` (or over the whole frame when there are none)."""
    return expr.over(keys) if keys else expr


def long_short_weights(
    frame: pl.DataFrame,
    config: LongShortConfig,
    prediction: str = "prediction",
    realized: str = "forward_return_1d",
    by: Sequence[str] = ("horizon",),
) -> pl.DataFrame:
    """The daily target weights of the long-short portfolio (nonzero weights only).

    Args:
        frame: long frame with ``by`` columns, ``date``, ``code``, ``prediction``, ``realized``;
            ``[rows]``, one row per (by, date, code).
        config: leg size and cost.
        prediction, realized: column names.
        by: grouping columns besides ``date`` (each group is one independent portfolio).

    Returns:
        ``[held names]`` frame ``*by, date, code, weight, realized`` sorted by ``*by, date, code``.
    """
    keys = list(by)
    require_columns(frame, [*keys, DATE, CODE, prediction, realized], "long_short_weights")
    day = [*keys, DATE]
    tradable = frame.select(*day, CODE, prediction, realized).filter(
        pl.col(prediction).is_finite() & pl.col(realized).is_finite()
    )
    n = pl.len().over(day)
    if config.top_k is not None:
        leg = pl.min_horizontal(pl.lit(config.top_k, pl.Int64), n // 2)
    else:
        share = (pl.lit(config.quantile) * n + _FLOOR_EPS).floor().cast(pl.Int64)
        leg = pl.min_horizontal(pl.max_horizontal(share, pl.lit(1, pl.Int64)), n // 2)
    ranked = (
        tradable.sort([*day, prediction, CODE])
        .with_columns(
            position=pl.int_range(pl.len()).over(day),  # 0 = lowest prediction
            n_day=n,
            leg=leg,
        )
        .filter(pl.col("leg") >= 1)
    )
    weights = ranked.with_columns(
        weight=pl.when(pl.col("position") >= pl.col("n_day") - pl.col("leg"))
        .then(1.0 / pl.col("leg"))
        .when(pl.col("position") < pl.col("leg"))
        .then(-1.0 / pl.col("leg"))
        .otherwise(0.0)
    ).filter(pl.col("weight") != 0.0)
    return weights.select(*day, CODE, "weight", realized).sort([*day, CODE])


def long_short_returns(
    frame: pl.DataFrame,
    config: LongShortConfig,
    prediction: str = "prediction",
    realized: str = "forward_return_1d",
    by: Sequence[str] = ("horizon",),
) -> pl.DataFrame:
    """Daily gross/net return and turnover of the long-short portfolio (see module docstring).

    Args:
        frame: long frame ``[rows]`` with ``by`` columns, ``date``, ``code``, ``prediction`` and
            ``realized`` (the return earned by holding from ``date``'s close for one day).
        config: leg size and cost.
        prediction, realized: column names.
        by: grouping columns besides ``date``; ``()`` for a frame without a horizon column.

    Returns:
        ``[portfolio days]`` frame ``*by, date, gross, net, turnover (Float64), n_long, n_short
        (Int32)`` sorted by ``*by, date``. Days with fewer than 2 tradable stocks are absent.
    """
    keys = list(by)
    day = [*keys, DATE]
    weights = long_short_weights(frame, config, prediction, realized, by)
    per_day = (
        weights.group_by(day)
        .agg(
            gross=(pl.col("weight") * pl.col(realized)).sum(),
            n_long=(pl.col("weight") > 0).sum().cast(pl.Int32),
            n_short=(pl.col("weight") < 0).sum().cast(pl.Int32),
        )
        .sort(day)
    )
    # The previous portfolio day of the same group, to align yesterday's weights with today's.
    calendar = per_day.select(*day).with_columns(next_date=_over(pl.col(DATE).shift(-1), keys))
    previous = (
        weights.join(calendar, on=day, how="inner")
        .filter(pl.col("next_date").is_not_null())
        .select(*keys, pl.col("next_date").alias(DATE), CODE, pl.col("weight").alias("previous_weight"))
    )
    turnover = (
        weights.select(*day, CODE, "weight")
        .join(previous, on=[*day, CODE], how="full", coalesce=True)
        .sort([*day, CODE])  # a full join's rows come in no fixed order: fix the order of the sums
        .group_by(day, maintain_order=True)
        .agg(
            turnover=(pl.col("weight").fill_null(0.0) - pl.col("previous_weight").fill_null(0.0)).abs().sum()
        )
    )
    result = (
        per_day.join(turnover, on=day, how="left")  # `previous` only lands on portfolio days
        .with_columns(net=pl.col("gross") - pl.col("turnover") * (config.cost_bps / 1e4))
        .select(*day, "gross", "net", "turnover", "n_long", "n_short")
        .sort(day)
    )
    logger.debug(
        "long-short: %d portfolio day(s) from %d rows (%d held name-days)",
        result.height,
        frame.height,
        weights.height,
    )
    return result


def finite_values(values: np.ndarray | pl.Series | Sequence[float] | None) -> np.ndarray:
    """1-D float64 array of the finite entries of ``values`` (nulls and NaN dropped)."""
    if values is None:
        return np.empty(0)
    if isinstance(values, pl.Series):
        values = values.cast(pl.Float64).fill_null(float("nan")).to_numpy()
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _float_or_none(value: float | np.floating | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def max_drawdown(returns: np.ndarray) -> float | None:
    """Largest fall from a running peak of ``prod(1 + r)`` (starting at 1), as ``<= 0``.

    Args:
        returns: ``[T]`` per-period simple returns; non-finite entries are dropped.

    Returns:
        e.g. ``-0.25`` for a 25 % peak-to-trough fall; ``0.0`` without a fall; ``None`` if empty.
    """
    r = finite_values(returns)
    if r.size == 0:
        return None
    equity = np.concatenate(([1.0], np.cumprod(1.0 + r)))
    peak = np.maximum.accumulate(equity)
    return float(np.min(equity / peak - 1.0))


def portfolio_stats(
    returns: np.ndarray | pl.Series,
    turnover: np.ndarray | pl.Series | None = None,
    periods_per_year: int = 252,
) -> dict[str, Any]:
    """Annualized return, volatility, Sharpe, max drawdown and mean turnover of a return series.

    Args:
        returns: ``[T]`` per-period returns; nulls/NaN are dropped.
        turnover: ``[T]`` per-period turnover, or ``None``; nulls/NaN are dropped.
        periods_per_year: annualization factor (252 trading days).

    Returns:
        ``{annual_return, annual_volatility, sharpe, max_drawdown, turnover}``: floats or
        ``None`` (empty input, fewer than 2 returns for the volatility, zero volatility).
    """
    r = finite_values(returns)
    out: dict[str, Any] = dict.fromkeys(
        ("annual_return", "annual_volatility", "sharpe", "max_drawdown", "turnover")
    )
    t = finite_values(turnover)
    out["turnover"] = float(t.mean()) if t.size else None
    if r.size == 0:
        return out
    out["annual_return"] = float(r.mean() * periods_per_year)
    if r.size >= 2:
        # A constant series has volatility exactly 0 (np.std can leave rounding residue).
        std = 0.0 if r.max() == r.min() else float(r.std(ddof=1))
        out["annual_volatility"] = std * math.sqrt(periods_per_year)
        if std > 0.0:
            out["sharpe"] = _float_or_none(out["annual_return"] / out["annual_volatility"])
    out["max_drawdown"] = max_drawdown(r)
    return out
