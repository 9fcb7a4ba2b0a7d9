"""The portfolio simulator: predictions + market -> daily target and realized weights, returns, costs.

Inputs:

* ``predictions``: one horizon's predictions, one row per (``by`` group, date, code), with
  ``date``, ``code`` and the ``prediction`` column (a run directory's ``predictions.parquet``
  filtered to one horizon; several horizons need ``by=("horizon",)``).
* ``market`` (optional): one row per (date, code) the stock trades, with ``date``, ``code``,
  ``forward_return_1d`` (the return from this close to the next, earned by a position held
  from today's close) and, optionally, ``sector`` (Utf8), ``beta``, ``dollar_volume`` (average
  daily dollar volume up to t), ``volatility`` (daily return std up to t), ``can_buy`` and
  ``can_sell`` (Boolean, null = allowed); see :func:`kizashi.portfolio.market.market_frame`.
  Without it, the predictions frame is the market: its ``forward_return_1d`` and any of the
  optional columns it carries are used, and "a row on day t" means a prediction row.

Per ``by`` group (an independent book starting from cash) the **portfolio days** are the
dates with at least 2 eligible names (finite prediction and finite forward return), as in
:func:`kizashi.evaluation.backtest.long_short_returns`; the codes are the group's predicted
codes sorted ascending (so the column index breaks ties by code). On each portfolio day t, in
order:

1. ``target_t = strategy.target(day_t, w_{t-1})`` (:mod:`kizashi.portfolio.strategies`),
   then ``target_{i,t} = 0`` where name i has no finite forward return on t (a position is not
   carried through a day whose return is unknown; the backtest's rule).
2. ``w_t``: with ``tradability.enforce``, a trade towards the target that the market refuses
   keeps ``w_{i,t} = w_{i,t-1}`` (:mod:`kizashi.portfolio.tradability`; no renormalisation);
   otherwise ``w_t = target_t``. A name kept without a finite forward return (e.g. no market
   row after its last one) earns 0 that day and is counted in ``n_stale``.
3. ``gross_t = sum_i w_{i,t} * r_{i,t}``; ``turnover_t = sum_i |w_{i,t} - w_{i,t-1}|``
   (``w_{-1} = 0``: the first day builds the book from cash);
   ``linear_cost_t = turnover_t * cost_bps / 1e4``; ``impact_cost_t`` from
   :func:`kizashi.portfolio.costs.impact_cost` (0 without an impact model);
   ``net_t = gross_t - linear_cost_t - impact_cost_t``.

With ``strategy = decile``, no impact and ``tradability.enforce = False``, the weights are
those of :func:`kizashi.evaluation.backtest.long_short_weights` and ``gross``, ``net``,
``turnover``, ``n_long``, ``n_short`` those of ``long_short_returns`` (tested).

Daily frame (``[portfolio days]`` per group; ``*by, date`` first): ``gross, linear_cost,
impact_cost, net, turnover`` (Float64), ``long_exposure`` / ``short_exposure`` (sum of positive
weights / of ``|negative|`` weights), ``n_long, n_short, n_held, n_opened, n_trades,
n_blocked_buy, n_blocked_sell, n_stale, n_unpriced`` (Int32; ``n_opened`` counts names whose
position sign changed to nonzero, so ``sum n_held / sum n_opened`` is the mean length of a
position spell), ``participation_mean`` / ``participation_max`` (over the day's priced trades,
null without any), ``universe_return`` (equal-weight mean forward return of the eligible
names), ``benchmark_return`` (``net_exposure * universe_return``: 0 for long-short books, the
universe for long-only ones) and ``book_size`` (null without an impact model).

Weights frame (one row per name-day with a nonzero target or realized weight): ``*by, date,
code, target_weight, weight``.

Speed: the per-day loop is numpy over the day's ``N`` names; measured on 2000 days x 500
names (one CPU core): 0.3-0.5 s per strategy, ``topk_dropout`` the slowest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from kizashi.data.schema import CODE, DATE
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import require_columns
from kizashi.portfolio.costs import impact_cost, linear_cost
from kizashi.portfolio.settings import CostSettings, StrategySettings, TradabilitySettings
from kizashi.portfolio.strategies import DayView, build_strategy, required_market_columns
from kizashi.portfolio.tradability import apply_tradability

logger = logging.getLogger(__name__)

FLOAT_COLUMNS = (
    "gross",
    "linear_cost",
    "impact_cost",
    "net",
    "turnover",
    "long_exposure",
    "short_exposure",
)
COUNT_COLUMNS = (
    "n_long",
    "n_short",
    "n_held",
    "n_opened",
    "n_trades",
    "n_blocked_buy",
    "n_blocked_sell",
    "n_stale",
    "n_unpriced",
)
EXTRA_COLUMNS = (
    "participation_mean",
    "participation_max",
    "universe_return",
    "benchmark_return",
    "book_size",
)
DAILY_COLUMNS = (*FLOAT_COLUMNS, *COUNT_COLUMNS, *EXTRA_COLUMNS)
WEIGHT_COLUMNS = ("target_weight", "weight")
OPTIONAL_MARKET_COLUMNS = ("sector", "beta", "dollar_volume", "volatility", "can_buy", "can_sell")


@dataclass(frozen=True)
class PortfolioRun:
    """What a simulation produces: ``daily`` (one row per portfolio day) and ``weights``."""

    daily: pl.DataFrame
    weights: pl.DataFrame


@dataclass
class _Book:
    """One group's matrices, ``[T, N]`` over portfolio days x codes."""

    dates: pl.Series
    codes: list[str]
    score: np.ndarray
    ret: np.ndarray
    present: np.ndarray
    can_buy: np.ndarray
    can_sell: np.ndarray
    sector: np.ndarray | None
    beta: np.ndarray | None
    dollar_volume: np.ndarray | None
    volatility: np.ndarray | None

    @property
    def eligible(self) -> np.ndarray:
        return np.isfinite(self.score) & np.isfinite(self.ret)


def _no_duplicates(frame: pl.DataFrame, keys: list[str], what: str) -> None:
    duplicated = frame.filter(pl.struct(keys).is_duplicated())
    if duplicated.height:
        example = duplicated.select(keys).head(3).to_dicts()
        raise KizashiError(
            f"{what}: {duplicated.height} rows share ({', '.join(keys)}); e.g. {example}"
        )


def _to_float(series: pl.Series) -> np.ndarray:
    return series.cast(pl.Float64).fill_null(float("nan")).to_numpy()


def _book(
    predictions: pl.DataFrame,
    market: pl.DataFrame,
    prediction: str,
    realized: str,
    columns: Sequence[str],
) -> _Book:
    """Matrices of one group over its portfolio days (dates with >= 2 eligible names)."""
    dates = predictions.get_column(DATE).unique().sort()
    codes = predictions.get_column(CODE).unique().sort()
    day_index = pl.DataFrame({DATE: dates}).with_row_index("_t")
    code_index = pl.DataFrame({CODE: codes}).with_row_index("_c")
    shape = (dates.len(), codes.len())

    rows = (
        predictions.select(DATE, CODE, prediction)
        .join(day_index, on=DATE)
        .join(code_index, on=CODE)
    )
    t, c = rows.get_column("_t").to_numpy(), rows.get_column("_c").to_numpy()
    score = np.full(shape, np.nan)
    score[t, c] = _to_float(rows.get_column(prediction))

    rows = (
        market.select(DATE, CODE, realized, *columns)
        .join(day_index, on=DATE)
        .join(code_index, on=CODE)
    )
    t, c = rows.get_column("_t").to_numpy(), rows.get_column("_c").to_numpy()
    ret = np.full(shape, np.nan)
    ret[t, c] = _to_float(rows.get_column(realized))
    present = np.zeros(shape, dtype=bool)
    present[t, c] = True

    def flag(name: str) -> np.ndarray:
        if name not in columns:
            return present.copy()
        out = np.zeros(shape, dtype=bool)
        out[t, c] = rows.get_column(name).cast(pl.Boolean).fill_null(True).to_numpy()
        return out

    def floats(name: str) -> np.ndarray | None:
        if name not in columns:
            return None
        out = np.full(shape, np.nan)
        out[t, c] = _to_float(rows.get_column(name))
        return out

    sector = None
    if "sector" in columns:
        names = rows.get_column("sector").cast(pl.Utf8)
        labels = names.drop_nulls().unique().sort()
        ids = names.replace_strict(
            labels, pl.Series(np.arange(labels.len())), default=-1, return_dtype=pl.Int64
        )
        sector = np.full(shape, -1, dtype=np.int64)
        sector[t, c] = ids.to_numpy()

    keep = (np.isfinite(score) & np.isfinite(ret)).sum(axis=1) >= 2
    pick = np.flatnonzero(keep)

    def rows_of(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array[pick]

    return _Book(
        dates=dates.gather(pick),
        codes=codes.to_list(),
        score=score[pick],
        ret=ret[pick],
        present=present[pick],
        can_buy=flag("can_buy")[pick] & present[pick],
        can_sell=flag("can_sell")[pick] & present[pick],
        sector=rows_of(sector),
        beta=rows_of(floats("beta")),
        dollar_volume=rows_of(floats("dollar_volume")),
        volatility=rows_of(floats("volatility")),
    )


def _run_book(
    book: _Book, settings: StrategySettings, costs: CostSettings, tradability: TradabilitySettings
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, int]]:
    """The day loop of one book: (daily columns, target weights [T, N], weights [T, N], diagnostics)."""
    strategy = build_strategy(settings)
    n_days, n_codes = book.score.shape
    strategy.reset(n_codes)
    eligible = book.eligible
    finite_return = np.isfinite(book.ret)
    targets = np.zeros((n_days, n_codes))
    weights = np.zeros((n_days, n_codes))
    blocked_buy = np.zeros((n_days, n_codes), dtype=bool)
    blocked_sell = np.zeros((n_days, n_codes), dtype=bool)
    previous = np.zeros(n_codes)
    for t in range(n_days):
        day = DayView(
            t=t,
            score=book.score[t],
            eligible=eligible[t],
            sector=None if book.sector is None else book.sector[t],
            beta=None if book.beta is None else book.beta[t],
        )
        target = np.where(finite_return[t], strategy.target(day, previous), 0.0)
        targets[t] = target
        if tradability.enforce:
            trade = apply_tradability(target, previous, book.can_buy[t], book.can_sell[t])
            weights[t], blocked_buy[t], blocked_sell[t] = (
                trade.weights,
                trade.blocked_buy,
                trade.blocked_sell,
            )
        else:
            weights[t] = target
        previous = weights[t]

    before = np.vstack([np.zeros((1, n_codes)), weights[:-1]])
    trades = np.abs(weights - before)
    turnover = trades.sum(axis=1)
    gross = np.where(finite_return, weights * np.nan_to_num(book.ret), 0.0).sum(axis=1)
    linear = linear_cost(turnover, costs.cost_bps)
    sign, sign_before = np.sign(weights), np.sign(before)
    traded = trades > 0
    participation = np.full((n_days, n_codes), np.nan)
    unpriced = np.zeros((n_days, n_codes), dtype=bool)
    impact = np.zeros(n_days)
    if costs.impact is not None:
        volatility = (
            costs.impact.volatility if costs.impact.volatility is not None else book.volatility
        )
        assert book.dollar_volume is not None and volatility is not None  # checked by the caller
        result = impact_cost(
            trades, book.dollar_volume, volatility, costs.impact.book_size, costs.impact.coefficient
        )
        impact, participation, unpriced = result.cost, result.participation, result.unpriced
    has_participation = np.isfinite(participation).any(axis=1)
    safe = np.where(np.isfinite(participation), participation, 0.0)
    n_priced = np.isfinite(participation).sum(axis=1)
    universe = np.where(eligible, np.nan_to_num(book.ret), 0.0).sum(axis=1) / eligible.sum(axis=1)
    columns: dict[str, np.ndarray] = {
        "gross": gross,
        "linear_cost": linear,
        "impact_cost": impact,
        "net": gross - linear - impact,
        "turnover": turnover,
        "long_exposure": np.where(weights > 0, weights, 0.0).sum(axis=1),
        "short_exposure": -np.where(weights < 0, weights, 0.0).sum(axis=1),
        "n_long": (weights > 0).sum(axis=1),
        "n_short": (weights < 0).sum(axis=1),
        "n_held": (sign != 0).sum(axis=1),
        "n_opened": ((sign != 0) & (sign != sign_before)).sum(axis=1),
        "n_trades": traded.sum(axis=1),
        "n_blocked_buy": blocked_buy.sum(axis=1),
        "n_blocked_sell": blocked_sell.sum(axis=1),
        "n_stale": ((weights != 0) & ~finite_return).sum(axis=1),
        "n_unpriced": unpriced.sum(axis=1),
        "participation_mean": np.where(
            has_participation, safe.sum(axis=1) / np.maximum(n_priced, 1), np.nan
        ),
        "participation_max": np.where(has_participation, safe.max(axis=1, initial=0.0), np.nan),
        "universe_return": universe,
        "benchmark_return": strategy.net_exposure * universe,
        "book_size": np.full(n_days, np.nan if costs.impact is None else costs.impact.book_size),
    }
    return columns, targets, weights, dict(strategy.diagnostics)


def _check_inputs(
    predictions: pl.DataFrame,
    market: pl.DataFrame | None,
    settings: StrategySettings,
    costs: CostSettings,
    prediction: str,
    realized: str,
    by: list[str],
) -> tuple[pl.DataFrame, list[str]]:
    """The market frame to use and its optional columns, or a clear error."""
    require_columns(predictions, [*by, DATE, CODE, prediction], "portfolio predictions")
    if (
        "horizon" in predictions.columns
        and "horizon" not in by
        and predictions.get_column("horizon").n_unique() > 1
    ):
        raise KizashiError(
            "portfolio predictions: several horizons "
            f"({sorted(predictions.get_column('horizon').unique().to_list())}); "
            "filter to one or pass by=('horizon',)"
        )
    _no_duplicates(predictions, [*by, DATE, CODE], "portfolio predictions")
    source = (
        "portfolio market" if market is not None else "portfolio predictions (used as the market)"
    )
    frame = market if market is not None else predictions
    require_columns(frame, [DATE, CODE, realized], source)
    if market is not None:
        _no_duplicates(market, [DATE, CODE], source)
    needed = list(required_market_columns(settings))
    if costs.impact is not None:
        needed.append("dollar_volume")
        if costs.impact.volatility is None:
            needed.append("volatility")
    missing = [name for name in needed if name not in frame.columns]
    if missing:
        raise KizashiError(
            f"{source}: strategy {settings.kind!r} with these costs needs column(s) {', '.join(missing)}; "
            f"has {', '.join(frame.columns)}"
        )
    return frame, [name for name in OPTIONAL_MARKET_COLUMNS if name in frame.columns]


def simulate(
    predictions: pl.DataFrame,
    strategy: StrategySettings,
    *,
    market: pl.DataFrame | None = None,
    costs: CostSettings | None = None,
    tradability: TradabilitySettings | None = None,
    by: Sequence[str] = (),
    prediction: str = "prediction",
    realized: str = "forward_return_1d",
) -> PortfolioRun:
    """Simulate one strategy (see the module docstring).

    Args:
        predictions: ``[rows]`` with ``*by, date, code, prediction`` (and ``forward_return_1d``
            when ``market`` is None); one horizon unless ``by`` names ``horizon``.
        strategy: one strategy's settings.
        market: ``[rows]`` market frame, or None to use ``predictions``.
        costs: linear cost and optional impact (default: 10 bp, no impact).
        tradability: whether refused trades keep the old weight (default: enforced).
        by: grouping columns; each group is an independent book (e.g. ``("fold",)`` for
            validation slices whose dates overlap across folds).
        prediction, realized: column names.

    Returns:
        :class:`PortfolioRun` with the daily frame and the weights frame.
    """
    costs = costs or CostSettings()
    tradability = tradability or TradabilitySettings()
    keys = list(by)
    frame, columns = _check_inputs(predictions, market, strategy, costs, prediction, realized, keys)
    groups = (
        predictions.partition_by(keys, as_dict=True, maintain_order=True)
        if keys
        else {(): predictions}
    )
    daily_parts, weight_parts = [], []
    for key in sorted(groups, key=lambda k: tuple((v is None, v) for v in k)):
        group = groups[key]
        book = _book(group, group if market is None else frame, prediction, realized, columns)
        values, targets, weights, diagnostics = _run_book(book, strategy, costs, tradability)
        labels = [
            pl.lit(v, dtype=predictions.schema[k]).alias(k) for k, v in zip(keys, key, strict=True)
        ]
        daily = pl.DataFrame(
            {DATE: book.dates}
            | {
                name: pl.Series(name, values[name], dtype=pl.Float64, nan_to_null=True)
                for name in FLOAT_COLUMNS
            }
            | {name: pl.Series(name, values[name], dtype=pl.Int32) for name in COUNT_COLUMNS}
            | {
                name: pl.Series(name, values[name], dtype=pl.Float64, nan_to_null=True)
                for name in EXTRA_COLUMNS
            }
        )
        daily_parts.append(daily.select(*labels, DATE, *DAILY_COLUMNS) if labels else daily)
        t, c = np.nonzero((targets != 0) | (weights != 0))
        held = pl.DataFrame(
            {
                DATE: book.dates.gather(t),
                CODE: pl.Series(CODE, book.codes, dtype=pl.Utf8).gather(c),
                "target_weight": targets[t, c],
                "weight": weights[t, c],
            }
        )
        weight_parts.append(held.select(*labels, DATE, CODE, *WEIGHT_COLUMNS) if labels else held)
        summary = (
            values["n_blocked_buy"].sum(),
            values["n_blocked_sell"].sum(),
            values["n_stale"].sum(),
        )
        logger.debug(
            "portfolio %s %s: %d day(s) x %d code(s); blocked buys %d, sells %d, stale %d; %s",
            strategy.kind,
            key,
            book.score.shape[0],
            len(book.codes),
            *summary,
            diagnostics or "",
        )
        if diagnostics:
            logger.info("portfolio %s %s: %s", strategy.kind, key, diagnostics)
    daily = pl.concat(daily_parts) if daily_parts else _empty_daily(predictions, keys)
    weights = pl.concat(weight_parts) if weight_parts else _empty_weights(predictions, keys)
    return PortfolioRun(daily=daily, weights=weights)


def _empty_daily(predictions: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    schema = {k: predictions.schema[k] for k in keys} | {DATE: pl.Date}
    schema |= {n: pl.Float64 for n in FLOAT_COLUMNS} | {n: pl.Int32 for n in COUNT_COLUMNS}
    return pl.DataFrame(schema=schema | {n: pl.Float64 for n in EXTRA_COLUMNS})


def _empty_weights(predictions: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    schema = {k: predictions.schema[k] for k in keys} | {DATE: pl.Date, CODE: pl.Utf8}
    return pl.DataFrame(schema=schema | {n: pl.Float64 for n in WEIGHT_COLUMNS})


def run_strategies(
    predictions: pl.DataFrame,
    strategies: Mapping[str, StrategySettings],
    *,
    market: pl.DataFrame | None = None,
    costs: CostSettings | None = None,
    tradability: TradabilitySettings | None = None,
    by: Sequence[str] = (),
    prediction: str = "prediction",
    realized: str = "forward_return_1d",
) -> PortfolioRun:
    """:func:`simulate` for every named strategy, stacked with a leading ``strategy`` (Utf8) column.

    Args:
        strategies: name -> settings (e.g. ``PortfolioSettings.strategies``); names keep their order.
        (others as :func:`simulate`).
    """
    daily, weights = [], []
    for name, settings in strategies.items():
        run = simulate(
            predictions,
            settings,
            market=market,
            costs=costs,
            tradability=tradability,
            by=by,
            prediction=prediction,
            realized=realized,
        )
        daily.append(run.daily.select(pl.lit(name, pl.Utf8).alias("strategy"), pl.all()))
        weights.append(run.weights.select(pl.lit(name, pl.Utf8).alias("strategy"), pl.all()))
    if not daily:
        raise KizashiError("run_strategies: no strategies given")
    return PortfolioRun(daily=pl.concat(daily), weights=pl.concat(weights))


__all__ = ["DAILY_COLUMNS", "PortfolioRun", "run_strategies", "simulate"]
