"""Cross-sectional signal metrics: daily IC / RankIC, their summary, quantile returns, and the
whole-run evaluation that fills a run directory's ``daily``, ``summary`` and ``deciles`` tables.

Definitions (one "day" = one group of ``by``, normally ``(horizon, date)``):

* **Valid pair**: a row whose prediction and target are both non-null and finite. Other rows
  are ignored (and counted: ``n`` is the number of valid pairs of the day).
* **IC**: Pearson correlation of prediction and target across the day's valid pairs.
* **RankIC**: Spearman correlation = Pearson correlation of the *average* ranks (ties share the
  mean of their ranks, as ``scipy.stats.spearmanr``).
* Both are ``null`` when ``n < 2`` or when either side is constant that day.
* **Summary of a daily series** (:func:`summarize_ic`), over the days with a non-null value:
  ``mean``; ``std`` with ``ddof=1``; ``ir = mean / std`` (not annualized);
  ``tstat = mean / std * sqrt(n)``; ``hit_rate`` = share of days with a value ``> 0``.
  Undefined values (no days, ``std`` of one day, ``std == 0``) are ``None``, not NaN, so the
  result is JSON-serializable.
* **Quantiles** (:func:`quantile_returns`): on each day with ``n >= n_quantiles`` valid pairs
  (smaller days are skipped), stock ``i`` with *average* rank ``r_i`` of its prediction
  (1 = lowest) goes to bucket ``floor((r_i - 1) * q / n) + 1`` in ``1..q``. Without ties the
  buckets are equal-count (sizes differ by at most one); tied predictions always share a
  bucket, so on days with many ties some buckets can be larger or empty. The day's bucket
  return is the mean target of its stocks; ``mean_return`` is the mean over the days on which
  the bucket is non-empty (``n_days`` of them). The **spread** is the top bucket's
  ``mean_return`` minus the bottom bucket's.

:func:`evaluate_predictions` ties these together with the long-short portfolio of
:mod:`kizashi.evaluation.backtest`; see it for the summary fields.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from kizashi.data.schema import CODE, DATE
from kizashi.errors import KizashiError
from kizashi.evaluation.backtest import (
    LongShortConfig,
    finite_values,
    long_short_returns,
    portfolio_stats,
)
from kizashi.evaluation.run_dir import PREDICTION_SCHEMA, SUMMARY_FIELDS, require_columns

logger = logging.getLogger(__name__)

HORIZON = "horizon"
DAILY_SCHEMA: dict[str, pl.DataType] = {
    HORIZON: pl.Int32(),
    DATE: pl.Date(),
    "n": pl.Int32(),
    "ic": pl.Float64(),
    "rank_ic": pl.Float64(),
    "long_short_gross": pl.Float64(),
    "long_short_net": pl.Float64(),
    "turnover": pl.Float64(),
}
DECILE_SCHEMA: dict[str, pl.DataType] = {
    HORIZON: pl.Int32(),
    "decile": pl.Int32(),
    "mean_return": pl.Float64(),
    "n_days": pl.Int32(),
}
_VALID = "_valid_pair"


def _resolve_by(frame: pl.DataFrame, by: Sequence[str], what: str) -> list[str]:
    """``by`` minus a ``horizon`` the frame lacks; any other missing column is an error."""
    keys = [c for c in by if not (c == HORIZON and c not in frame.columns)]
    if len(keys) < len(by):
        logger.debug("%s: frame has no %r column; grouping by %s", what, HORIZON, keys)
    require_columns(frame, keys, what)
    if not keys:
        raise KizashiError(f"{what}: `by` must name at least one column (e.g. 'date')")
    return keys


def _valid_pair(prediction: str, target: str) -> pl.Expr:
    return (pl.col(prediction).is_finite() & pl.col(target).is_finite()).fill_null(False)


def _pearson(x: pl.Expr, y: pl.Expr) -> pl.Expr:
    """Pearson correlation of ``x`` and ``y`` in an aggregation; null if n < 2 or a side is constant."""
    defined = (x.len() >= 2) & (x.max() > x.min()) & (y.max() > y.min())
    return pl.when(defined).then(pl.corr(x, y).clip(-1.0, 1.0)).otherwise(None)


def daily_ic(
    frame: pl.DataFrame,
    prediction: str = "prediction",
    target: str = "target",
    by: Sequence[str] = (HORIZON, DATE),
) -> pl.DataFrame:
    """IC and RankIC per day (per group of ``by``), computed in one ``group_by``.

    Args:
        frame: long frame ``[rows]`` with the ``by`` columns, ``prediction`` and ``target``.
        prediction, target: column names.
        by: the day key, normally ``(horizon, date)``; ``("date",)`` (or the default on a frame
            without a ``horizon`` column) for one signal.

    Returns:
        ``[days]`` frame ``*by, n (Int32), ic, rank_ic (Float64)`` sorted by ``by``; every group
        of the input appears, with ``n = 0`` and null IC when it has no valid pair.
    """
    keys = _resolve_by(frame, by, "daily_ic")
    x = pl.col(prediction).filter(pl.col(_VALID))
    y = pl.col(target).filter(pl.col(_VALID))
    return (
        frame.select(*keys, prediction, target)
        .with_columns(_valid_pair(prediction, target).alias(_VALID))
        .group_by(keys)
        .agg(
            n=pl.col(_VALID).sum().cast(pl.Int32),
            ic=_pearson(x.cast(pl.Float64), y.cast(pl.Float64)),
            rank_ic=_pearson(x.rank("average").cast(pl.Float64), y.rank("average").cast(pl.Float64)),
        )
        .with_columns(pl.col("ic", "rank_ic").cast(pl.Float64))
        .sort(keys)
    )


def summarize_ic(values: np.ndarray | pl.Series | Sequence[float]) -> dict[str, Any]:
    """Mean, std (ddof=1), IR, t-statistic and hit rate of a daily IC series.

    Args:
        values: ``[days]`` daily values; nulls and NaN are ignored.

    Returns:
        ``{mean, std, ir, tstat, hit_rate, n}`` with ``ir = mean / std``,
        ``tstat = ir * sqrt(n)``, ``hit_rate`` = share of days ``> 0`` and ``n`` the number of
        days used. Floats or ``None`` (``n == 0``; ``std``/``ir``/``tstat`` when ``n < 2``;
        ``ir``/``tstat`` when ``std == 0``), never NaN.
    """
    v = finite_values(values)
    n = int(v.size)
    out: dict[str, Any] = {"mean": None, "std": None, "ir": None, "tstat": None, "hit_rate": None, "n": n}
    if n == 0:
        return out
    out["mean"] = float(v.mean())
    out["hit_rate"] = float((v > 0).mean())
    if n >= 2:
        std = 0.0 if v.max() == v.min() else float(v.std(ddof=1))  # exact 0 for a constant series
        out["std"] = std
        if std > 0.0:
            out["ir"] = out["mean"] / std
            out["tstat"] = out["ir"] * math.sqrt(n)
    return out


def _daily_quantile_returns(
    frame: pl.DataFrame, n_quantiles: int, prediction: str, target: str, keys: list[str]
) -> pl.DataFrame:
    """``[days x buckets]`` frame ``*keys, decile, day_return`` (mean target per day and bucket)."""
    if n_quantiles < 2:
        raise KizashiError(f"n_quantiles must be at least 2, got {n_quantiles}")
    n = pl.len().over(keys)
    rank = pl.col(prediction).rank("average").over(keys)
    return (
        frame.select(*keys, prediction, target)
        .filter(_valid_pair(prediction, target))
        .filter(n >= n_quantiles)
        .with_columns(decile=(((rank - 1.0) * n_quantiles / n).floor() + 1).cast(pl.Int32))
        .group_by([*keys, "decile"])
        .agg(day_return=pl.col(target).mean())
    )


def quantile_returns(
    frame: pl.DataFrame,
    n_quantiles: int = 10,
    prediction: str = "prediction",
    target: str = "target",
    by: Sequence[str] = (HORIZON, DATE),
) -> pl.DataFrame:
    """Mean target per prediction quantile (1 = lowest prediction), averaged over days.

    Args:
        frame: long frame ``[rows]`` with the ``by`` columns, ``prediction`` and ``target``.
        n_quantiles: number of buckets ``q`` (10 = deciles).
        prediction, target: column names.
        by: the day key; must contain ``date``. The columns other than ``date`` (normally
            ``horizon``) are kept in the output.

    Returns:
        ``[groups x q]`` frame ``*by-without-date, decile (Int32), mean_return (Float64),
        n_days (Int32)`` sorted by those keys and ``decile``; see the module docstring for the
        bucket and tie rules. Days with fewer valid pairs than ``q`` are skipped.
    """
    keys = _resolve_by(frame, by, "quantile_returns")
    if DATE not in keys:
        raise KizashiError(f"quantile_returns: `by` must contain {DATE!r}, got {list(by)}")
    outer = [c for c in keys if c != DATE]
    # The per-day table comes out of a hash group_by in no fixed order: sort it, so that each
    # mean adds the same numbers in the same order in every run (the last digits depend on it).
    daily = _daily_quantile_returns(frame, n_quantiles, prediction, target, keys).sort([*keys, "decile"])
    return (
        daily.group_by([*outer, "decile"], maintain_order=True)
        .agg(mean_return=pl.col("day_return").mean(), n_days=pl.len().cast(pl.Int32))
        .sort([*outer, "decile"])
    )


def _spread(quantiles: pl.DataFrame, n_quantiles: int, outer: list[str]) -> pl.DataFrame:
    """``*outer, spread``: top bucket's mean_return minus bottom's (null if either is absent)."""
    top = pl.col("mean_return").filter(pl.col("decile") == n_quantiles).first()
    bottom = pl.col("mean_return").filter(pl.col("decile") == 1).first()
    if not outer:
        return quantiles.select(spread=top - bottom)
    return quantiles.group_by(outer).agg(spread=top - bottom).sort(outer)


def quantile_spread(
    frame: pl.DataFrame,
    n_quantiles: int = 10,
    prediction: str = "prediction",
    target: str = "target",
    by: Sequence[str] = (HORIZON, DATE),
) -> pl.DataFrame:
    """Top-minus-bottom quantile mean return (of :func:`quantile_returns`), per horizon.

    Returns:
        ``[groups]`` frame ``*by-without-date, spread (Float64)``; ``spread`` is null when the
        top or the bottom bucket never occurs (e.g. every day skipped).
    """
    keys = _resolve_by(frame, by, "quantile_spread")
    outer = [c for c in keys if c != DATE]
    return _spread(quantile_returns(frame, n_quantiles, prediction, target, keys), n_quantiles, outer)


@dataclass
class EvaluationResult:
    """What :func:`evaluate_predictions` computes, shaped like the run directory's tables.

    Attributes:
        daily: ``daily.parquet``: one row per (horizon, date): horizon, date, n, ic, rank_ic,
            long_short_gross, long_short_net, turnover (dtypes of ``DAILY_SCHEMA``).
        summary: ``{horizon: {field: value}}`` with exactly ``SUMMARY_FIELDS``; Python
            ``int``/``float`` or ``None``.
        deciles: ``deciles.csv``: horizon, decile (1 = lowest prediction), mean_return, n_days.
    """

    daily: pl.DataFrame
    summary: dict[int, dict[str, Any]]
    deciles: pl.DataFrame


def _check_predictions(predictions: pl.DataFrame) -> None:
    """Required columns present and one row per (date, code, horizon), or a clear error."""
    require_columns(predictions, [c for c in PREDICTION_SCHEMA if c != "fold"], "predictions frame")
    duplicated = predictions.filter(pl.struct(DATE, CODE, HORIZON).is_duplicated())
    if duplicated.height:
        examples = duplicated.select(DATE, CODE, HORIZON).unique().sort(DATE, CODE, HORIZON).head(5)
        raise KizashiError(
            f"predictions frame: {duplicated.height} rows share a (date, code, horizon) key, "
            f"e.g. {examples.rows()}"
        )


def _none_if_nan(value: Any) -> Any:
    if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
        return None
    return float(value) if isinstance(value, np.floating) else value


def evaluate_predictions(
    predictions: pl.DataFrame,
    *,
    n_quantiles: int = 10,
    long_short: LongShortConfig | None = None,
    periods_per_year: int = 252,
) -> EvaluationResult:
    """Daily metrics, per-horizon summary and quantile returns of a predictions frame.

    Args:
        predictions: the long predictions frame of ``predictions.parquet`` (``PREDICTION_SCHEMA``;
            ``fold`` is not needed), ``[rows]`` with one row per (date, code, horizon).
        n_quantiles: buckets for ``deciles`` and ``decile_spread``.
        long_short: the portfolio; default ``LongShortConfig()``: the top and bottom 10 % of
            the day's stocks per leg (``quantile=0.1``, ``top_k=None``) and ``cost_bps=10``: a
            one-way cost of 10 basis points per unit of turnover (net = gross - turnover x 0.001).
        periods_per_year: annualization of the long-short statistics.

    Returns:
        :class:`EvaluationResult`. Summary fields per horizon:

        * ``n_days``: days (rows of ``daily``) of the horizon;
        * ``ic_*`` / ``rank_ic_*``: :func:`summarize_ic` of the daily IC / RankIC (``icir`` =
          mean/std, ``*_tstat`` = mean/std*sqrt(n));
        * ``hit_rate``: share of days with RankIC > 0;
        * ``decile_spread``: top minus bottom quantile ``mean_return``;
        * ``ls_*``: :func:`~kizashi.evaluation.backtest.portfolio_stats` of the daily gross
          long-short return (``ls_turnover`` = mean daily turnover); ``ls_annual_return_net``
          and ``ls_sharpe_net`` of the net return.
    """
    _check_predictions(predictions)
    config = long_short if long_short is not None else LongShortConfig()
    # One row order whatever the input's: every per-day sum then adds the same numbers in the
    # same order, so the tables are identical to the last digit between runs.
    frame = predictions.with_columns(pl.col(HORIZON).cast(pl.Int32)).sort(HORIZON, DATE, CODE)
    invalid = frame.select(
        (~_valid_pair("prediction", "target")).sum().alias("pair"),
        (~pl.col("forward_return_1d").is_finite().fill_null(False)).sum().alias("realized"),
    ).row(0, named=True)
    if invalid["pair"] or invalid["realized"]:
        logger.info(
            "evaluation: %d of %d rows lack a finite prediction/target (left out of IC and quantiles), "
            "%d lack a finite forward_return_1d (not traded)",
            invalid["pair"],
            frame.height,
            invalid["realized"],
        )

    ic = daily_ic(frame, by=(HORIZON, DATE))
    portfolio = long_short_returns(frame, config, by=(HORIZON,))
    daily = (
        ic.join(portfolio, on=[HORIZON, DATE], how="left")
        .rename({"gross": "long_short_gross", "net": "long_short_net"})
        .select([pl.col(c).cast(t) for c, t in DAILY_SCHEMA.items()])
        .sort(HORIZON, DATE)
    )
    deciles = quantile_returns(frame, n_quantiles, by=(HORIZON, DATE)).select(
        [pl.col(c).cast(t) for c, t in DECILE_SCHEMA.items()]
    )
    spreads = dict(_spread(deciles, n_quantiles, [HORIZON]).iter_rows())

    summary: dict[int, dict[str, Any]] = {}
    # One iteration per horizon (a handful), each on that horizon's small daily table.
    for (horizon,), day_rows in daily.partition_by(HORIZON, as_dict=True, maintain_order=True).items():
        ic_stats = summarize_ic(day_rows["ic"])
        rank_stats = summarize_ic(day_rows["rank_ic"])
        traded = day_rows.filter(pl.col("long_short_gross").is_not_null())
        gross = portfolio_stats(traded["long_short_gross"], traded["turnover"], periods_per_year)
        net = portfolio_stats(traded["long_short_net"], None, periods_per_year)
        values = {
            "n_days": day_rows.height,
            "ic_mean": ic_stats["mean"],
            "ic_std": ic_stats["std"],
            "icir": ic_stats["ir"],
            "ic_tstat": ic_stats["tstat"],
            "rank_ic_mean": rank_stats["mean"],
            "rank_ic_std": rank_stats["std"],
            "rank_icir": rank_stats["ir"],
            "rank_ic_tstat": rank_stats["tstat"],
            "hit_rate": rank_stats["hit_rate"],
            "decile_spread": spreads.get(horizon),
            "ls_annual_return": gross["annual_return"],
            "ls_annual_volatility": gross["annual_volatility"],
            "ls_sharpe": gross["sharpe"],
            "ls_max_drawdown": gross["max_drawdown"],
            "ls_turnover": gross["turnover"],
            "ls_annual_return_net": net["annual_return"],
            "ls_sharpe_net": net["sharpe"],
        }
        summary[int(horizon)] = {f: _none_if_nan(values[f]) for f in SUMMARY_FIELDS}
    logger.info(
        "evaluated %d prediction rows: %d horizon(s), %d day-rows",
        frame.height,
        len(summary),
        daily.height,
    )
    return EvaluationResult(daily=daily, summary=summary, deciles=deciles)


def summary_table(summary: Mapping[int, Mapping[str, Any]]) -> pl.DataFrame:
    """``summary.csv``: one row per horizon (ascending), columns ``horizon`` + ``SUMMARY_FIELDS``.

    Args:
        summary: ``{horizon: {field: value}}`` as in :attr:`EvaluationResult.summary`.

    Returns:
        ``[horizons]`` frame: horizon and n_days Int32, the other fields Float64 (null = None).
    """
    schema: dict[str, pl.DataType] = {HORIZON: pl.Int32(), "n_days": pl.Int32()}
    schema.update({f: pl.Float64() for f in SUMMARY_FIELDS if f != "n_days"})
    rows = [{HORIZON: int(h), **{f: summary[h].get(f) for f in SUMMARY_FIELDS}} for h in sorted(summary)]
    return pl.DataFrame(rows, schema=schema)
