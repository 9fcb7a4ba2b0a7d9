"""Tradability: which of a day's wanted trades the market lets through.

For each name the wanted trade is ``d_i = target_i - previous_i`` (fractions of the book):
``d_i > 0`` is a **buy** (opening or adding to a long, or covering a short), ``d_i < 0`` a
**sell** (reducing a long, or opening or adding to a short). A buy needs ``can_buy_i``, a
sell ``can_sell_i``:

* ``can_buy`` is false on a day the stock closes at its upper price limit, ``can_sell`` on a
  day it closes at its lower limit (J-Quants UpperLimit / LowerLimit flags, else a configured
  daily limit; :func:`kizashi.portfolio.market.market_frame`);
* both are false on a day without volume, and on a day the stock has no row in the market
  frame (a halt, a gap, or any day after its last row).

A refused trade keeps yesterday's weight for that name: ``w_i = previous_i``. The other names
trade to their targets. **No renormalisation**: the book's leg sums may then differ from the
target's (e.g. a long leg of 1.02 while a sale is blocked); the simulator reports the realized
``long_exposure`` / ``short_exposure`` every day, and counts the refused trades
(``n_blocked_buy``, ``n_blocked_sell``). Renormalising the free names instead would trade
names that the strategy did not ask to trade and make the blocked name's effect spread over
the whole book, so it is not done.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TradeResult:
    """Realized weights of one day and the refused trades (all ``[N]``)."""

    weights: np.ndarray
    blocked_buy: np.ndarray
    blocked_sell: np.ndarray


def apply_tradability(
    target: np.ndarray, previous: np.ndarray, can_buy: np.ndarray, can_sell: np.ndarray
) -> TradeResult:
    """Realized weights: ``target`` where the trade is allowed, ``previous`` where it is refused.

    Args:
        target, previous: ``[N]`` weights (fractions of the book).
        can_buy, can_sell: ``[N]`` booleans (false also where the name has no market row).

    Returns:
        :class:`TradeResult` with ``weights`` ``[N]`` and the boolean masks of refused buys and sells.
    """
    delta = target - previous
    blocked_buy = (delta > 0) & ~can_buy
    blocked_sell = (delta < 0) & ~can_sell
    weights = np.where(blocked_buy | blocked_sell, previous, target)
    return TradeResult(weights=weights, blocked_buy=blocked_buy, blocked_sell=blocked_sell)


__all__ = ["TradeResult", "apply_tradability"]
