"""Statistics of a strategy's daily frame (:func:`kizashi.portfolio.simulate.simulate`).

Return, volatility, Sharpe, drawdown and turnover come from
:func:`kizashi.evaluation.backtest.portfolio_stats` (arithmetic annualization ``mean * P``,
``sharpe = mean / std(ddof=1) * sqrt(P)``, drawdown on the compounded equity curve), applied
to the daily ``gross`` and ``net`` returns (``P = periods_per_year``). Besides:

* ``information_ratio``: the Sharpe ratio of the active return ``net_t - benchmark_t``
  where ``benchmark_t = net_exposure * universe_return_t`` (the equal-weight return of the
  day's eligible names for a long-only book; 0 for a self-financing long-short book, whose
  IR is then its net Sharpe); ``active_annual_return = mean(active) * P``.
* ``avg_holding_days``: measured from position spells, not estimated from turnover: a spell
  is a run of consecutive portfolio days with a nonzero weight of one sign, and the mean
  spell length is ``sum_t n_held_t / sum_t n_opened_t``. Spells already open on the first
  day start there and spells still open on the last day end there (both censored, which
  shortens the mean on short samples).
* ``hit_rate``: share of days with ``net > 0``.
* ``linear_cost_annual`` / ``impact_cost_annual``: ``mean(cost) * P``;
  ``gross_exposure``: mean of ``long_exposure + short_exposure``.
* ``n_blocked_buy``, ``n_blocked_sell``, ``n_stale``, ``n_unpriced``: totals over the days;
  ``blocked_share = (n_blocked_buy + n_blocked_sell) / (n_trades + n_blocked_buy +
  n_blocked_sell)``, the share of wanted trades the market refused.
* ``participation_mean`` (over all priced trades) / ``participation_max``: the trades'
  share of average daily dollar volume at the configured book size.
* ``capacity``: :func:`kizashi.portfolio.costs.capacity` of the mean gross return and the
  mean impact cost, in the currency of ``dollar_volume``; ``None`` without an impact model,
  with a non-positive mean gross return, or without impact.

Values are Python floats, ints or ``None`` (never NaN), so the dict is JSON-serializable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from kizashi.errors import KizashiError
from kizashi.evaluation.backtest import finite_values, portfolio_stats
from kizashi.evaluation.run_dir import require_columns
from kizashi.portfolio.costs import capacity
from kizashi.portfolio.simulate import DAILY_COLUMNS

STAT_FIELDS = (
    "n_days",
    "gross_annual_return",
    "gross_sharpe",
    "net_annual_return",
    "net_annual_volatility",
    "net_sharpe",
    "max_drawdown",
    "information_ratio",
    "active_annual_return",
    "turnover",
    "avg_holding_days",
    "hit_rate",
    "linear_cost_annual",
    "impact_cost_annual",
    "gross_exposure",
    "n_blocked_buy",
    "n_blocked_sell",
    "n_stale",
    "n_unpriced",
    "blocked_share",
    "participation_mean",
    "participation_max",
    "capacity",
)


def _mean(values: pl.Series) -> float | None:
    finite = finite_values(values)
    return float(finite.mean()) if finite.size else None


def _total(daily: pl.DataFrame, name: str) -> int:
    return int(daily.get_column(name).sum() or 0)


def strategy_stats(daily: pl.DataFrame, periods_per_year: int = 252) -> dict[str, Any]:
    """The statistics of one strategy's daily frame (see the module docstring).

    Args:
        daily: ``[portfolio days]`` frame with the columns of ``simulate``'s daily frame
            (several books, e.g. one per fold, are pooled day by day in frame order).
        periods_per_year: annualization factor.

    Returns:
        ``{field: value}`` for every name in :data:`STAT_FIELDS`.
    """
    require_columns(daily, list(DAILY_COLUMNS), "strategy_stats")
    out: dict[str, Any] = dict.fromkeys(STAT_FIELDS)
    out["n_days"] = daily.height
    gross = portfolio_stats(daily.get_column("gross"), periods_per_year=periods_per_year)
    net = portfolio_stats(daily.get_column("net"), daily.get_column("turnover"), periods_per_year)
    active = portfolio_stats(
        daily.get_column("net") - daily.get_column("benchmark_return"),
        periods_per_year=periods_per_year,
    )
    out |= {
        "gross_annual_return": gross["annual_return"],
        "gross_sharpe": gross["sharpe"],
        "net_annual_return": net["annual_return"],
        "net_annual_volatility": net["annual_volatility"],
        "net_sharpe": net["sharpe"],
        "max_drawdown": net["max_drawdown"],
        "turnover": net["turnover"],
        "information_ratio": active["sharpe"],
        "active_annual_return": active["annual_return"],
    }
    opened = _total(daily, "n_opened")
    out["avg_holding_days"] = _total(daily, "n_held") / opened if opened else None
    net_values = finite_values(daily.get_column("net"))
    out["hit_rate"] = float((net_values > 0).mean()) if net_values.size else None
    for name in ("linear_cost", "impact_cost"):
        mean = _mean(daily.get_column(name))
        out[f"{name}_annual"] = None if mean is None else mean * periods_per_year
    out["gross_exposure"] = _mean(
        daily.get_column("long_exposure") + daily.get_column("short_exposure")
    )
    for name in ("n_blocked_buy", "n_blocked_sell", "n_stale", "n_unpriced"):
        out[name] = _total(daily, name)
    blocked = out["n_blocked_buy"] + out["n_blocked_sell"]
    wanted = _total(daily, "n_trades") + blocked
    out["blocked_share"] = blocked / wanted if wanted else None
    priced = (daily.get_column("n_trades") - daily.get_column("n_unpriced")).cast(pl.Float64)
    mean_participation = daily.get_column("participation_mean").fill_null(0.0)
    n_priced = float(priced.sum() or 0.0)
    out["participation_mean"] = (
        float((mean_participation * priced).sum()) / n_priced if n_priced else None
    )
    max_participation = daily.get_column("participation_max").max()
    out["participation_max"] = None if max_participation is None else float(max_participation)
    book = daily.get_column("book_size").drop_nulls()
    mean_gross, mean_impact = (
        _mean(daily.get_column("gross")),
        _mean(daily.get_column("impact_cost")),
    )
    if book.len() and mean_gross is not None and mean_impact is not None:
        if book.n_unique() > 1:
            raise KizashiError(
                f"strategy_stats: several book sizes in one daily frame: {book.unique().to_list()}"
            )
        out["capacity"] = capacity(mean_gross, mean_impact, float(book[0]))
    return out


def strategy_table(
    daily: pl.DataFrame, periods_per_year: int = 252, by: Sequence[str] = ("strategy",)
) -> pl.DataFrame:
    """One row per group of ``by`` (in order of first appearance): ``*by`` then :data:`STAT_FIELDS`.

    Args:
        daily: stacked daily frames, e.g. :func:`kizashi.portfolio.simulate.run_strategies`'s.
        periods_per_year: annualization factor.
        by: the columns naming a strategy.
    """
    keys = list(by)
    require_columns(daily, keys, "strategy_table")
    rows = []
    for key, group in daily.partition_by(keys, as_dict=True, maintain_order=True).items():
        rows.append(dict(zip(keys, key, strict=True)) | strategy_stats(group, periods_per_year))
    schema = {k: daily.schema[k] for k in keys} | _stat_schema()
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _stat_schema() -> dict[str, pl.DataType]:
    counts = {"n_days", "n_blocked_buy", "n_blocked_sell", "n_stale", "n_unpriced"}
    return {name: (pl.Int64() if name in counts else pl.Float64()) for name in STAT_FIELDS}


__all__ = ["STAT_FIELDS", "strategy_stats", "strategy_table"]
