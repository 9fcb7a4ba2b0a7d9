"""Strategies: from one day's scores (and the book held so far) to that day's target weights.

A strategy is a small object with ``reset(n_codes)`` and ``target(day, previous) -> [N]``
weights, built from its settings by :func:`build_strategy`. The simulator
(:mod:`kizashi.portfolio.simulate`) calls it once per portfolio day in date order, so
``target`` at day ``t`` sees only ``day`` (the scores, eligibility, sectors and betas of ``t``)
and ``previous`` (the realized weights of the previous portfolio day, after tradability) plus
whatever state the strategy kept from earlier days: never a later row. Weights are fractions
of the book: a long-short book has ``+1`` on its long leg and ``-1`` on its short leg (gross
exposure 2, net 0), a long-only book ``+1``.

Conventions shared with :mod:`kizashi.evaluation.backtest` (``long_short_weights``):

* **Eligible names** on day t: finite prediction and finite ``forward_return_1d`` (a name whose
  next-day return is unknown is not bought; this mirrors the backtest).
* **Order**: ascending by score, ties broken by code ascending (codes are the columns of the
  simulator's matrices, sorted ascending, so the column index breaks ties). The best name of
  a long leg is the last of the order; of a short leg the first.
* **Leg size** ``k``: ``top_k`` if set, else ``max(1, floor(quantile * n + 1e-9))`` for ``n``
  eligible names, capped at ``n // 2`` for long-short (the legs never overlap) and at ``n``
  for long-only; ``k = 0`` means a flat book.
* **Equal weights** ``+1/k_long`` / ``-1/k_short`` within a leg.

Strategies (settings in :mod:`kizashi.portfolio.settings`):

* ``decile``: the legs of the day's order, afresh every day (the backtest's portfolio).
* ``rebalance_every``: the decile target on portfolio days ``t`` with ``t % every ==
  offset % every``, and the same target on the days between (flat before the first one).
* ``hysteresis``: long leg ``L_t = (L_{t-1} & top(q_exit)) | top(q_enter)`` where
  ``L_{t-1}`` are the names held long yesterday (realized) that are eligible today and
  ``top(q)`` the last ``k(q)`` names of the order; the short leg mirrors it on the bottom. The
  leg size floats between ``k(q_enter)`` and ``k(q_exit)``.
* ``ema``: per name ``s_t = a * x_t + (1 - a) * s_{t-1}`` with ``a = 1 - 2^(-1/halflife)``
  on the days it has a prediction (``s`` = ``x`` on its first one; a day without one leaves
  ``s`` unchanged), where ``x_t`` is the prediction transformed per day (``rank``:
  ``(r + 0.5) / n - 0.5`` for its ordinal rank ``r`` among the day's ``n`` finite
  predictions, ties by code; ``zscore``: ``(p - mean) / std``, 0 when ``std = 0``; ``none``).
  The decile legs are taken on ``s`` among today's eligible names.
* ``topk_dropout`` (Qlib's TopkDropoutStrategy, per leg): ``last`` = held names still eligible
  sorted best first; ``today`` = the best ``n_drop + k - |last|`` eligible names not held;
  ``sell`` = names of ``last`` among the worst ``n_drop`` of ``last ∪ today``; ``buy`` = the
  first ``|sell| + k - |last|`` of ``today``; the leg is ``(last - sell) ∪ buy`` (trimmed
  to its best ``k``). The long leg buys no name held short (such a name leaves the short leg
  by dropout first); the short leg is built the same way on the reversed order, among names
  not in the new long leg. So a full leg whose names stay eligible replaces at most
  ``n_drop`` names a day.
* ``long_only_topk``: the long leg of ``decile`` alone (``k`` capped at ``n``), weights
  summing to 1; its benchmark is the equal-weight universe (``net_exposure = 1``).
* ``sector_neutral``: within each sector ``s`` with ``n_s >= 2`` eligible names (and a known
  sector), long the top / short the bottom ``k_s = max(1, floor(quantile * n_s))`` (capped
  at ``n_s // 2``), each at ``b_s / k_s`` with budget ``b_s = n_s / sum_s' n_s'`` over the
  traded sectors: each leg sums to 1 and every sector's long and short legs are equal.
* ``beta_neutral``: the decile legs among eligible names with a finite beta, long weights
  ``a / k`` and short weights ``-b / k`` with ``a = 2 bS / (bL + bS)``, ``b = 2 bL / (bL +
  bS)`` for the mean betas ``bL``, ``bS`` of the legs: gross ``a + b = 2`` and ``sum_i w_i
  beta_i = a bL - b bS = 0``. A day with ``bL <= 0`` or ``bS <= 0`` has no such scaling and
  the book is flat (counted in ``diagnostics["unhedgeable_days"]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kizashi.portfolio.settings import (
    BetaNeutralStrategy,
    DecileStrategy,
    EmaStrategy,
    HysteresisStrategy,
    LongOnlyTopkStrategy,
    RebalanceEveryStrategy,
    SectorNeutralStrategy,
    Side,
    StrategySettings,
    TopkDropoutStrategy,
)

# floor(quantile * n) must not lose a whole name to rounding (0.29 * 100 = 28.999999999999996);
# the same guard as kizashi.evaluation.backtest.
FLOOR_EPS = 1e-9


@dataclass(frozen=True)
class DayView:
    """What a strategy may read on portfolio day ``t`` (all arrays ``[N]`` over the codes).

    Attributes:
        t: index of the day in its book (0 = first portfolio day).
        score: prediction, NaN where the name has none.
        eligible: finite prediction and finite forward return (may be bought or sold short).
        sector: integer sector id, -1 when unknown; ``None`` when the market has no sectors.
        beta: beta against the market, NaN when unknown; ``None`` when the market has none.
    """

    t: int
    score: np.ndarray
    eligible: np.ndarray
    sector: np.ndarray | None = None
    beta: np.ndarray | None = None


class Strategy(Protocol):
    """A per-day target-weight rule (see the module docstring)."""

    net_exposure: float
    diagnostics: dict[str, int]

    def reset(self, n_codes: int) -> None: ...

    def target(self, day: DayView, previous: np.ndarray) -> np.ndarray: ...


def leg_size(n: int, quantile: float, top_k: int | None, cap: int) -> int:
    """Names per leg: ``top_k`` or ``max(1, floor(quantile * n))``, at most ``cap`` (0 when ``n = 0``)."""
    if n <= 0:
        return 0
    k = top_k if top_k is not None else max(1, math.floor(quantile * n + FLOOR_EPS))
    return max(0, min(k, cap))


def ascending_order(score: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Indices of ``mask`` sorted by ``score`` ascending, ties by index (= code) ascending."""
    index = np.flatnonzero(mask)
    return index[np.argsort(score[index], kind="stable")]


def _cap(n: int, side: Side) -> int:
    return n if side == "long_only" else n // 2


def equal_legs(order: np.ndarray, k: int, n_codes: int, side: Side) -> np.ndarray:
    """``+1/k`` on the last ``k`` names of ``order``, ``-1/k`` on the first ``k`` (long-short only)."""
    weights = np.zeros(n_codes)
    if k < 1:
        return weights
    weights[order[-k:]] = 1.0 / k
    if side == "long_short":
        weights[order[:k]] = -1.0 / k
    return weights


def _leg_weights(long: np.ndarray, short: np.ndarray) -> np.ndarray:
    """Equal weights from two boolean masks: ``+1/|long|`` and ``-1/|short|``."""
    weights = np.zeros(long.shape[0])
    if long.any():
        weights[long] = 1.0 / long.sum()
    if short.any():
        weights[short] = -1.0 / short.sum()
    return weights


class _Base:
    net_exposure = 0.0

    def __init__(self) -> None:
        self.diagnostics: dict[str, int] = {}

    def reset(self, n_codes: int) -> None:
        self.n_codes = n_codes
        self.diagnostics = {}


class Decile(_Base):
    """Daily decile long-short (or long-only) legs on the day's scores."""

    def __init__(
        self, settings: DecileStrategy | LongOnlyTopkStrategy, side: Side = "long_short"
    ) -> None:
        super().__init__()
        self.settings = settings
        self.side = side
        self.net_exposure = 1.0 if side == "long_only" else 0.0

    def target(self, day: DayView, previous: np.ndarray) -> np.ndarray:
        return decile_target(
            day.score, day.eligible, self.settings.quantile, self.settings.top_k, self.side
        )


def decile_target(
    score: np.ndarray, eligible: np.ndarray, quantile: float, top_k: int | None, side: Side
) -> np.ndarray:
    """The decile legs of ``score`` among ``eligible`` names (``[N]`` weights)."""
    order = ascending_order(score, eligible)
    k = leg_size(order.size, quantile, top_k, _cap(order.size, side))
    return equal_legs(order, k, score.shape[0], side)


class RebalanceEvery(_Base):
    """The decile target chosen every ``every`` portfolio days, held in between."""

    def __init__(self, settings: RebalanceEveryStrategy) -> None:
        super().__init__()
        self.settings = settings
        self.net_exposure = 1.0 if settings.side == "long_only" else 0.0

    def reset(self, n_codes: int) -> None:
        super().reset(n_codes)
        self.held = np.zeros(n_codes)

    def target(self, day: DayView, previous: np.ndarray) -> np.ndarray:
        s = self.settings
        if day.t % s.every == s.offset % s.every:
            self.held = decile_target(day.score, day.eligible, s.quantile, s.top_k, s.side)
        return self.held.copy()


class Hysteresis(_Base):
    """Rank buffer: enter in the top ``enter_quantile``, leave below the top ``exit_quantile``."""

    def __init__(self, settings: HysteresisStrategy) -> None:
        super().__init__()
        self.settings = settings
        self.net_exposure = 1.0 if settings.side == "long_only" else 0.0

    def target(self, day: DayView, previous: np.ndarray) -> np.ndarray:
        s = self.settings
        order = ascending_order(day.score, day.eligible)
        n = order.size
        cap = _cap(n, s.side)
        k_enter = leg_size(n, s.enter_quantile, None, cap)
        k_exit = max(k_enter, leg_size(n, s.exit_quantile, None, cap))
        long = np.zeros(self.n_codes, dtype=bool)
        short = np.zeros(self.n_codes, dtype=bool)
        if k_enter >= 1:
            top_exit = np.zeros(self.n_codes, dtype=bool)
            top_exit[order[n - k_exit :]] = True
            long[order[n - k_enter :]] = True
            long |= (previous > 0) & top_exit
            if s.side == "long_short":
                bottom_exit = np.zeros(self.n_codes, dtype=bool)
                bottom_exit[order[:k_exit]] = True
                short[order[:k_enter]] = True
                short |= (previous < 0) & bottom_exit
                short &= ~long
        return _leg_weights(long, short)


class Ema(_Base):
    """Decile legs on an exponential moving average of each name's normalized score."""

    def __init__(self, settings: EmaStrategy) -> None:
        super().__init__()
        self.settings = settings
        self.alpha = 1.0 - 0.5 ** (1.0 / settings.halflife)
        self.net_exposure = 1.0 if settings.side == "long_only" else 0.0

    def reset(self, n_codes: int) -> None:
        super().reset(n_codes)
        self.level = np.full(n_codes, np.nan)

    def target(self, day: DayView, previous: np.ndarray) -> np.ndarray:
        s = self.settings
        x = normalize_scores(day.score, s.normalize)
        seen = np.isfinite(x)
        fresh = seen & ~np.isfinite(self.level)
        self.level[fresh] = x[fresh]
        update = seen & ~fresh
        self.level[update] = self.alpha * x[update] + (1.0 - self.alpha) * self.level[update]
        eligible = day.eligible & np.isfinite(self.level)
        return decile_target(self.level, eligible, s.quantile, s.top_k, s.side)


def normalize_scores(score: np.ndarray, how: str) -> np.ndarray:
    """Per-day transform of the finite scores (NaN elsewhere); see the module docstring."""
    out = np.full(score.shape[0], np.nan)
    finite = np.isfinite(score)
    n = int(finite.sum())
    if n == 0:
        return out
    if how == "rank":
        order = ascending_order(score, finite)
        out[order] = (np.arange(n) + 0.5) / n - 0.5
    elif how == "zscore":
        values = score[finite]
        std = values.std()
        out[finite] = (values - values.mean()) / std if std > 0 else 0.0
    else:
        out[finite] = score[finite]
    return out


class TopkDropout(_Base):
    """Qlib's TopkDropout per leg (see the module docstring).

    The slowest strategy (two argsorts and set tests per leg and day): about 0.5 s for
    2000 days x 500 names on one CPU core.
    """

    def __init__(self, settings: TopkDropoutStrategy) -> None:
        super().__init__()
        self.settings = settings
        self.net_exposure = 1.0 if settings.side == "long_only" else 0.0

    def target(self, day: DayView, previous: np.ndarray) -> np.ndarray:
        s = self.settings
        order = ascending_order(day.score, day.eligible)
        n = order.size
        k = min(s.top_k, _cap(n, s.side))
        long = np.zeros(self.n_codes, dtype=bool)
        short = np.zeros(self.n_codes, dtype=bool)
        if k >= 1:
            best_first = order[::-1]
            long[_dropout_leg(best_first, previous > 0, previous < 0, k, s.n_drop)] = True
            if s.side == "long_short":
                short[_dropout_leg(order, previous < 0, long, k, s.n_drop)] = True
        return _leg_weights(long, short)


def _dropout_leg(
    best_first: np.ndarray, held: np.ndarray, excluded: np.ndarray, k: int, n_drop: int
) -> np.ndarray:
    """One TopkDropout leg: indices of the new leg, chosen among the eligible names ``best_first``.

    Args:
        best_first: ``[n]`` eligible code indices, best for this leg first.
        held: ``[N]`` names held in this leg yesterday; excluded: ``[N]`` names not allowed.
        k: leg size; n_drop: most names replaced.
    """
    available = best_first[~excluded[best_first]]
    position = np.full(held.shape[0], np.iinfo(np.int64).max)
    position[available] = np.arange(available.size)  # 0 = best

    def by_position(codes: np.ndarray) -> np.ndarray:
        return codes[np.argsort(position[codes], kind="stable")]

    last = available[held[available]]  # held and still eligible, best first
    candidates = available[~held[available]]
    today = candidates[: max(0, n_drop + k - last.size)]
    comb = by_position(np.concatenate([last, today]))
    worst = comb[max(0, comb.size - n_drop) :] if n_drop > 0 else comb[:0]
    sell = last[np.isin(last, worst)]
    keep = last[~np.isin(last, sell)]
    buy = today[: max(0, sell.size + k - last.size)]
    leg = by_position(np.concatenate([keep, buy]))
    return leg[:k]  # more than k only when the universe shrank below the held leg: keep the best k


class SectorNeutral(_Base):
    """Long-short within each sector, sector budgets proportional to the sector's eligible names."""

    def __init__(self, settings: SectorNeutralStrategy) -> None:
        super().__init__()
        self.settings = settings

    def target(self, day: DayView, previous: np.ndarray) -> np.ndarray:
        weights = np.zeros(self.n_codes)
        assert day.sector is not None  # the simulator requires the column for this strategy
        usable = day.eligible & (day.sector >= 0)
        legs = []
        for sector in np.unique(day.sector[usable]):
            order = ascending_order(day.score, usable & (day.sector == sector))
            k = leg_size(order.size, self.settings.quantile, None, order.size // 2)
            if k >= 1:
                legs.append((order, k))
        total = sum(order.size for order, _ in legs)
        for order, k in legs:
            budget = order.size / total
            weights[order[-k:]] = budget / k
            weights[order[:k]] = -budget / k
        return weights


class BetaNeutral(_Base):
    """Decile legs scaled so that the book's beta is zero (see the module docstring)."""

    def __init__(self, settings: BetaNeutralStrategy) -> None:
        super().__init__()
        self.settings = settings

    def target(self, day: DayView, previous: np.ndarray) -> np.ndarray:
        assert day.beta is not None  # the simulator requires the column for this strategy
        eligible = day.eligible & np.isfinite(day.beta)
        weights = decile_target(
            day.score, eligible, self.settings.quantile, self.settings.top_k, "long_short"
        )
        long, short = weights > 0, weights < 0
        if not long.any():
            return weights
        beta_long, beta_short = day.beta[long].mean(), day.beta[short].mean()
        if beta_long <= 0 or beta_short <= 0:
            self.diagnostics["unhedgeable_days"] = self.diagnostics.get("unhedgeable_days", 0) + 1
            return np.zeros(self.n_codes)
        scale_long = 2.0 * beta_short / (beta_long + beta_short)
        scale_short = 2.0 * beta_long / (beta_long + beta_short)
        weights[long] *= scale_long
        weights[short] *= scale_short
        return weights


def build_strategy(settings: StrategySettings) -> Strategy:
    """The strategy object for one settings block."""
    if isinstance(settings, DecileStrategy):
        return Decile(settings)
    if isinstance(settings, LongOnlyTopkStrategy):
        return Decile(settings, side="long_only")
    if isinstance(settings, RebalanceEveryStrategy):
        return RebalanceEvery(settings)
    if isinstance(settings, HysteresisStrategy):
        return Hysteresis(settings)
    if isinstance(settings, EmaStrategy):
        return Ema(settings)
    if isinstance(settings, TopkDropoutStrategy):
        return TopkDropout(settings)
    if isinstance(settings, SectorNeutralStrategy):
        return SectorNeutral(settings)
    if isinstance(settings, BetaNeutralStrategy):
        return BetaNeutral(settings)
    raise TypeError(f"unknown strategy settings: {type(settings).__name__}")


def required_market_columns(settings: StrategySettings) -> tuple[str, ...]:
    """Market columns a strategy reads besides scores and returns."""
    if isinstance(settings, SectorNeutralStrategy):
        return ("sector",)
    if isinstance(settings, BetaNeutralStrategy):
        return ("beta",)
    return ()


__all__ = [
    "DayView",
    "Strategy",
    "ascending_order",
    "build_strategy",
    "decile_target",
    "equal_legs",
    "leg_size",
    "normalize_scores",
    "required_market_columns",
]
