"""Trading costs: linear cost per unit of turnover, square-root market impact, capacity.

Weights are fractions of the book ``B`` (currency); the trade of name ``i`` on day ``t`` is
``x_i = |w_{i,t} - w_{i,t-1}|`` (a fraction of ``B``), so ``turnover_t = sum_i x_i``.

* **Linear**: ``linear_t = turnover_t * cost_bps / 1e4`` (``cost_bps`` one-way, per unit of
  traded weight; the convention of :mod:`kizashi.evaluation.backtest`).
* **Square-root impact** (the "square-root law" of Almgren et al. 2005 and Tóth et al. 2011:
  the price moves against a metaorder by ``Y * sigma * sqrt(Q / V)``): with
  **participation** ``p_i = x_i * B / ADV_i`` (the trade's share of the stock's average daily
  dollar volume ``ADV_i``) and daily return volatility ``sigma_i``, the cost of the trade in
  return units of the book is

      ``impact_i = Y * sigma_i * x_i * sqrt(p_i) = Y * sigma_i * x_i^1.5 * sqrt(B / ADV_i)``

  and ``impact_t = sum_i impact_i``. It grows with ``sqrt(B)``. ``ADV_i`` and ``sigma_i`` are
  the market frame's ``dollar_volume`` and ``volatility`` at ``t`` (computed from data up to
  ``t``), or a constant ``sigma``. A traded name without a positive finite ``ADV_i`` or
  ``sigma_i`` cannot be priced: its impact is left out and counted (``n_unpriced``).
* **Capacity**: since ``impact_t(B) = sqrt(B / B0) * impact_t(B0)`` and nothing else depends
  on ``B``, the book size at which the mean impact eats half the mean gross return solves
  ``sqrt(B* / B0) * mean(impact(B0)) = mean(gross) / 2`` in closed form:
  ``B* = B0 * (mean(gross) / (2 * mean(impact(B0))))^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def linear_cost(turnover: np.ndarray, cost_bps: float) -> np.ndarray:
    """``turnover * cost_bps / 1e4`` (``[T]`` in, ``[T]`` out)."""
    return np.asarray(turnover, dtype=np.float64) * (cost_bps / 1e4)


@dataclass(frozen=True)
class ImpactResult:
    """Daily impact cost ``[T]`` and, per traded name-day, participation ``[T, N]`` (NaN where
    there is no priced trade) and the unpriced trades ``[T, N]`` (bool)."""

    cost: np.ndarray
    participation: np.ndarray
    unpriced: np.ndarray


def impact_cost(
    trades: np.ndarray,
    dollar_volume: np.ndarray,
    volatility: np.ndarray | float,
    book_size: float,
    coefficient: float = 1.0,
) -> ImpactResult:
    """Square-root impact of the trades (see the module docstring).

    Args:
        trades: ``[T, N]`` absolute traded weight ``x`` (fractions of the book).
        dollar_volume: ``[T, N]`` average daily dollar volume ``ADV`` (NaN where unknown).
        volatility: ``[T, N]`` daily return volatility, or one constant.
        book_size: ``B`` in the currency of ``dollar_volume``.
        coefficient: ``Y``.

    Returns:
        :class:`ImpactResult`; ``cost[t] = sum_i Y * sigma * x * sqrt(x * B / ADV)``.
    """
    x = np.asarray(trades, dtype=np.float64)
    adv = np.asarray(dollar_volume, dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(volatility, dtype=np.float64), x.shape)
    traded = x > 0
    priced = traded & np.isfinite(adv) & (adv > 0) & np.isfinite(sigma) & (sigma >= 0)
    participation = np.full(x.shape, np.nan)
    participation[priced] = x[priced] * book_size / adv[priced]
    per_name = np.zeros(x.shape)
    per_name[priced] = coefficient * sigma[priced] * x[priced] * np.sqrt(participation[priced])
    return ImpactResult(
        cost=per_name.sum(axis=1), participation=participation, unpriced=traded & ~priced
    )


def capacity(mean_gross: float, mean_impact: float, book_size: float) -> float | None:
    """Book size ``B*`` with ``mean impact(B*) = mean_gross / 2``, given ``mean_impact`` at ``book_size``.

    ``B* = book_size * (mean_gross / (2 * mean_impact))^2``; ``None`` when there is no positive
    solution (``mean_gross <= 0``) or no impact to solve for (``mean_impact <= 0``).
    """
    if (
        not (np.isfinite(mean_gross) and np.isfinite(mean_impact))
        or mean_gross <= 0
        or mean_impact <= 0
    ):
        return None
    return float(book_size * (mean_gross / (2.0 * mean_impact)) ** 2)


__all__ = ["ImpactResult", "capacity", "impact_cost", "linear_cost"]
