"""Distribution drift of one variable against a reference: PSI and the KS statistic, for one
sample and for every day of a stream at once.

Definitions (``r`` = reference values, ``x`` = the values of one day; non-finite values are
never part of either, callers count them):

* **Bins** (:func:`quantile_edges`): the ``B − 1`` inner edges ``e_1 < … < e_{B−1}`` are the
  reference quantiles at ``k / B``, taken as actual reference values (``numpy.quantile``
  method ``inverted_cdf``: the smallest ``r`` with ``F_r(r) ≥ k / B``, i.e. the
  ``ceil(k n / B)``-th smallest), duplicates removed: a reference with ties gives fewer bins,
  never a bin that the reference cannot fill (interpolated edges could). Bin ``k`` (0-based) is
  ``e_k ≤ v < e_{k+1}`` with ``e_0 = −∞`` and ``e_B = +∞``: the outer bins are open, so every
  finite value falls in a bin, however far it moved (:func:`bin_index` =
  ``searchsorted(edges, v, side="right")``).
* **PSI** (:func:`psi`): with ``q_k`` the reference share and ``p_k`` the day's share of bin
  ``k``, both floored at ``epsilon`` (an empty bin would make the log infinite; the floored
  shares are not renormalized)::

      PSI = Σ_k (p_k − q_k) · ln(p_k / q_k)   ≥ 0

* **KS statistic** (:func:`ks_statistic`): ``D = sup_v |F_r(v) − F_x(v)|`` with ``F`` the
  right-continuous empirical CDFs, the statistic of ``scipy.stats.ks_2samp`` (ties
  included). Both CDFs are step functions, so the sup is taken at the day's own points:
  between two consecutive distinct day values ``F_x`` is constant and ``F_r`` monotone, hence
  ``D = max_i max(|F_r(x_i) − F_x(x_i)|, |F_r(x_i⁻) − F_x(x_i⁻)|)`` with left limits
  ``F(v⁻)`` = share of values ``< v``. No p-value is computed: see
  :mod:`kizashi.monitoring.settings` for why the monitor thresholds ``D`` itself.
* **Quantile sketch** (:func:`quantile_sketch`): a reference of more than ``m`` values is
  kept as its ``m`` order statistics at probabilities ``(i + ½) / m`` (``numpy.quantile``
  method ``inverted_cdf``, so the kept values are actual reference values). Its CDF is
  ``floor(m · F_r(v) + ½) / m``, within ``1 / (2m)`` of ``F_r`` everywhere, so ``D`` against
  the sketch is within ``1 / (2m)`` of ``D`` against the full reference.

The per-day functions (:func:`daily_psi`, :func:`daily_ks`) take the values of a whole
stream with an integer day index and compute every day in one vectorized pass (a sort and
``bincount`` / ``reduceat``), never a Python loop over days.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kizashi.config import StrictModel
from kizashi.errors import KizashiError
from kizashi.evaluation.backtest import finite_values


class DistributionReference(StrictModel):
    """The reference distribution of one variable, as stored in a monitor reference.

    ``edges``: ``[B' − 1]`` sorted distinct inner bin edges (``B' ≤ n_bins``); ``shares``:
    ``[B']`` reference share of each bin (sums to 1); ``values``: ``[m]`` sorted reference
    values or their quantile sketch, for KS (empty when KS is not needed); ``n``: number of
    finite reference values; ``mean`` and ``std`` (ddof=0) of them, for the report.
    """

    n: int = Field(ge=1)
    edges: list[float]
    shares: list[float]
    values: list[float] = Field(default_factory=list)
    mean: float
    std: float

    def edge_array(self) -> np.ndarray:
        return np.asarray(self.edges, dtype=np.float64)

    def share_array(self) -> np.ndarray:
        return np.asarray(self.shares, dtype=np.float64)

    def value_array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.float64)


def quantile_edges(reference: np.ndarray, n_bins: int) -> np.ndarray:
    """``[≤ n_bins − 1]`` sorted distinct inner edges: the reference's ``inverted_cdf``
    quantiles at ``k / n_bins`` (module docstring)."""
    ref = finite_values(reference)
    if ref.size == 0:
        raise KizashiError("quantile_edges: the reference has no finite value")
    if n_bins < 2:
        raise KizashiError(f"quantile_edges: n_bins must be >= 2, got {n_bins}")
    return np.unique(np.quantile(ref, np.arange(1, n_bins) / n_bins, method="inverted_cdf"))


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``[n]`` int bin of each value: ``k`` such that ``edges[k−1] ≤ v < edges[k]`` (0..len(edges))."""
    return np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="right")


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``[len(edges) + 1]`` share of the finite ``values`` in each bin (zeros when none)."""
    v = finite_values(values)
    counts = np.bincount(bin_index(v, edges), minlength=edges.size + 1).astype(np.float64)
    return counts / v.size if v.size else counts


def psi(reference_shares: np.ndarray, shares: np.ndarray, epsilon: float = 1e-4) -> np.ndarray:
    """PSI ``Σ_k (p_k − q_k) ln(p_k / q_k)`` over the last axis, shares floored at ``epsilon``.

    Args:
        reference_shares: ``[B]`` reference share ``q`` of each bin.
        shares: ``[..., B]`` share ``p`` of each bin (one row per day, or one sample).
    Returns:
        ``[...]`` PSI (a 0-d array for one sample).
    """
    q = np.maximum(np.asarray(reference_shares, dtype=np.float64), epsilon)
    p = np.maximum(np.asarray(shares, dtype=np.float64), epsilon)
    return np.sum((p - q) * np.log(p / q), axis=-1)


def psi_of_samples(reference: np.ndarray, sample: np.ndarray, n_bins: int = 10,
                   epsilon: float = 1e-4) -> float:
    """PSI of ``sample`` against ``reference`` on the reference's ``n_bins`` quantile bins."""
    edges = quantile_edges(reference, n_bins)
    return float(psi(bin_shares(reference, edges), bin_shares(sample, edges), epsilon))


def quantile_sketch(reference: np.ndarray, max_values: int) -> np.ndarray:
    """The sorted finite reference values, or their ``max_values`` order statistics at
    ``(i + ½) / max_values`` when there are more (CDF within ``1 / (2 · max_values)``)."""
    ref = np.sort(finite_values(reference))
    if ref.size <= max_values:
        return ref
    probabilities = (np.arange(max_values) + 0.5) / max_values
    return np.quantile(ref, probabilities, method="inverted_cdf")


def _ks_terms(reference_sorted: np.ndarray, values: np.ndarray, count_le: np.ndarray,
              count_lt: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per value: ``max(|F_r(v) − F_x(v)|, |F_r(v⁻) − F_x(v⁻)|)`` (see the module docstring)."""
    m = reference_sorted.size
    ref_le = np.searchsorted(reference_sorted, values, side="right") / m
    ref_lt = np.searchsorted(reference_sorted, values, side="left") / m
    return np.maximum(np.abs(ref_le - count_le / n), np.abs(ref_lt - count_lt / n))


def ks_statistic(reference_sorted: np.ndarray, sample: np.ndarray) -> float:
    """KS statistic ``D`` of the finite ``sample`` against the sorted ``reference_sorted``
    (``scipy.stats.ks_2samp(reference, sample).statistic``); NaN for an empty side."""
    ref = np.asarray(reference_sorted, dtype=np.float64)
    x = np.sort(finite_values(sample))
    if x.size == 0 or ref.size == 0:
        return float("nan")
    count_le = np.searchsorted(x, x, side="right").astype(np.float64)
    count_lt = np.searchsorted(x, x, side="left").astype(np.float64)
    return float(np.max(_ks_terms(ref, x, count_le, count_lt, np.float64(x.size))))


def _check_days(day: np.ndarray, values: np.ndarray, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    day = np.asarray(day, dtype=np.int64).ravel()
    values = np.asarray(values, dtype=np.float64).ravel()
    if day.shape != values.shape:
        raise KizashiError(f"day index {day.shape} and values {values.shape} differ in shape")
    if day.size and (day.min() < 0 or day.max() >= n_days):
        raise KizashiError(f"day index outside 0..{n_days - 1}")
    keep = np.isfinite(values)
    return day[keep], values[keep]


def daily_counts(day: np.ndarray, values: np.ndarray, n_days: int) -> np.ndarray:
    """``[n_days]`` number of finite values of each day."""
    day, _ = _check_days(day, values, n_days)
    return np.bincount(day, minlength=n_days)


def daily_psi(day: np.ndarray, values: np.ndarray, n_days: int, reference: DistributionReference,
              epsilon: float = 1e-4) -> np.ndarray:
    """PSI of every day against ``reference``, in one pass.

    Args:
        day: ``[rows]`` day index in ``0..n_days − 1``; values: ``[rows]`` (non-finite ignored).
    Returns:
        ``[n_days]`` PSI; NaN for a day without a finite value.
    """
    day, values = _check_days(day, values, n_days)
    edges = reference.edge_array()
    n_bins = edges.size + 1
    counts = np.bincount(day * n_bins + bin_index(values, edges),
                         minlength=n_days * n_bins).reshape(n_days, n_bins).astype(np.float64)
    n = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / n[:, None]
    out = psi(reference.share_array(), shares, epsilon)
    out[n == 0] = np.nan
    return out


def daily_ks(day: np.ndarray, values: np.ndarray, n_days: int, reference_sorted: np.ndarray) -> np.ndarray:
    """KS statistic ``D`` of every day against the sorted reference, in one pass.

    The rows are sorted by (day, value); per row, the day's counts of values ``≤`` and ``<``
    it come from the boundaries of its run of equal (day, value) keys, and the day's ``D`` is
    the ``maximum.reduceat`` of the per-row terms (module docstring).

    Args:
        day: ``[rows]`` day index in ``0..n_days − 1``; values: ``[rows]`` (non-finite ignored);
        reference_sorted: ``[m]`` sorted reference values (m ≥ 1).
    Returns:
        ``[n_days]`` D in [0, 1]; NaN for a day without a finite value.
    """
    ref = np.asarray(reference_sorted, dtype=np.float64)
    if ref.size == 0:
        raise KizashiError("daily_ks: the reference holds no value (it was built without KS values)")
    day, values = _check_days(day, values, n_days)
    out = np.full(n_days, np.nan)
    if values.size == 0:
        return out
    order = np.lexsort((values, day))
    d, v = day[order], values[order]
    n = np.bincount(d, minlength=n_days)
    day_start = np.concatenate(([0], np.cumsum(n)[:-1]))
    new_key = np.concatenate(([True], (d[1:] != d[:-1]) | (v[1:] != v[:-1])))
    run_start = np.flatnonzero(new_key)
    run_end = np.concatenate((run_start[1:], [v.size])) - 1
    run = np.cumsum(new_key) - 1
    count_le = (run_end[run] - day_start[d] + 1).astype(np.float64)
    count_lt = (run_start[run] - day_start[d]).astype(np.float64)
    terms = _ks_terms(ref, v, count_le, count_lt, n[d].astype(np.float64))
    present = np.flatnonzero(n > 0)
    out[present] = np.maximum.reduceat(terms, day_start[present])
    return out
