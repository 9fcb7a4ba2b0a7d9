"""Realized RankIC of a signal stream and its rolling mean with a confidence band.

* **Daily RankIC** (:func:`realized_rank_ic`): on each signal date, the Spearman correlation
  of the scores with the realized forward returns of the same ``(date, code)`` rows
  (:func:`kizashi.evaluation.metrics.daily_ic`: average ranks, only rows where both are
  finite, null below 2 pairs or when a side is constant). A return of horizon ``h`` is known
  ``h`` sessions after its signal date, so the most recent signal dates have no RankIC yet;
  every RankIC, and every alarm computed from it, is dated by its *signal* date.
* **Rolling window** (:func:`rolling_rank_ic`): over the series of days that *have* a
  RankIC (days without one are skipped, not counted as zero), the window ending at the
  ``j``-th value holds the last ``n = min(j + 1, W)`` values ``x_1..x_n``:

  - ``mean = Σ x / n``; ``sd`` = their standard deviation (ddof = 1);
  - autocovariances ``γ_k = Σ_{t>k} (x_t − mean)(x_{t−k} − mean) / n``;
  - long-run variance with Newey–West (Bartlett) weights and ``L = rank_ic_nw_lags``,
    scaled by ``n / (n − 1)`` so that ``L = 0`` gives exactly ``sd²``::

        σ²_LR = n / (n − 1) · (γ_0 + 2 Σ_{k=1..min(L, n−1)} (1 − k / (L + 1)) γ_k)

  - standard error ``se = sqrt(max(σ²_LR, 0) / n)`` and band ``mean ± z · se``
    (normal approximation).

  With ``L = 0`` this is the i.i.d. band ``mean ± z · sd / sqrt(n)``. Daily RankICs of
  ``h``-day forward returns overlap by ``h − 1`` days and are autocorrelated, which makes
  the i.i.d. band too narrow; ``L = h − 1`` corrects for that.

Time to detect a flip: if the daily RankIC is about ``+ρ`` before day ``T`` and ``−ρ`` after
(daily noise ``σ``), ``k`` days after ``T`` the window mean is ``ρ (W − 2k) / W`` and its
sd about ``sqrt(σ² + ρ² (1 − (1 − 2k/W)²))``, so the band's upper end crosses 0 at about
``k ≈ W/2 + z · sqrt(σ² + ρ²) · sqrt(W) / (2ρ)`` and not before about ``W/2`` (the mean
must be negative first); once the window holds only post-flip days (``k = W``) the upper end is
``−ρ + z σ / sqrt(W)``, below 0 whenever ``ρ > z σ / sqrt(W)``. The alarm therefore fires
between ``W/2`` and ``W`` RankIC days after the flip.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from kizashi.data.schema import CODE, DATE
from kizashi.errors import KizashiError
from kizashi.evaluation.metrics import daily_ic


def realized_rank_ic(signals: pl.DataFrame, realized: pl.DataFrame, *, score_column: str,
                     return_column: str) -> pl.DataFrame:
    """Daily RankIC of the scores against the realized returns.

    Args:
        signals: ``[rows]`` checked frame ``date, code, <score_column>``.
        realized: ``[rows]`` checked frame ``date, code, <return_column>`` (return realized
            over the horizon that follows ``date``).
    Returns:
        ``[days]`` frame ``date, n_realized (Int32), rank_ic (Float64)`` for the signal dates
        that have at least one realized return row; ``n_realized`` counts the valid pairs.
    """
    joined = signals.join(realized.select(DATE, CODE, return_column), on=[DATE, CODE], how="inner")
    daily = daily_ic(joined, prediction=score_column, target=return_column, by=(DATE,))
    return daily.select(DATE, pl.col("n").alias("n_realized"), "rank_ic")


def rolling_rank_ic(values: np.ndarray, window: int, z: float = 1.96, nw_lags: int = 0) -> dict[str, np.ndarray]:
    """Rolling mean of a daily RankIC series with its confidence band (module docstring).

    Args:
        values: ``[T]`` finite daily RankIC values in date order.
        window: ``W``, values per window (the first ``W − 1`` windows are shorter).
        z: half-width of the band in standard errors.
        nw_lags: Newey–West lags ``L`` (0: i.i.d. standard error).
    Returns:
        ``{rank_ic_n, rank_ic_mean, rank_ic_sd, rank_ic_se, rank_ic_lower, rank_ic_upper}``,
        each ``[T]``; sd, se and the band are NaN while ``n < 2``.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise KizashiError("rolling_rank_ic: values must be finite (drop the days without a RankIC)")
    if window < 1 or nw_lags < 0:
        raise KizashiError(f"rolling_rank_ic: window ({window}) must be >= 1 and nw_lags ({nw_lags}) >= 0")
    total = x.size
    padded = np.concatenate((np.full(window - 1, np.nan), x))
    windows = sliding_window_view(padded, window)  # [T, W], NaN left padding in early windows
    n = np.minimum(np.arange(1, total + 1), window).astype(np.float64)
    mean = np.nansum(windows, axis=1) / n
    centred = windows - mean[:, None]
    gamma0 = np.nansum(centred * centred, axis=1) / n
    long_run = gamma0.copy()
    for k in range(1, min(nw_lags, window - 1) + 1):
        gamma_k = np.nansum(centred[:, k:] * centred[:, :-k], axis=1) / n
        long_run += 2.0 * (1.0 - k / (nw_lags + 1)) * gamma_k
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(n > 1, n / (n - 1), np.nan)
        sd = np.sqrt(gamma0 * scale)
        se = np.sqrt(np.maximum(long_run * scale, 0.0) / n)
    return {
        "rank_ic_n": n.astype(np.int64),
        "rank_ic_mean": mean,
        "rank_ic_sd": sd,
        "rank_ic_se": se,
        "rank_ic_lower": mean - z * se,
        "rank_ic_upper": mean + z * se,
    }
