"""A straightforward pandas implementation of 20 representative kizashi features.

This is the reference that ``bench_features.py`` times kizashi against: the code a quant
would write in pandas (``groupby("code")[col].rolling(w)``, ``groupby(...).apply(lambda)``,
``groupby("date").rank()``), one feature at a time, single-threaded, no tricks.

Input: a pandas DataFrame made from kizashi's *prepared* panel (``prepare_panel``), rows
sorted by (code, date), with the columns ``code, date, sector, open, high, low, close,
volume`` and the prepared helper columns ``_prev_close`` (previous adjusted close),
``_ret`` / ``_log_ret`` (close-to-close simple / log return), ``_dollar_volume``,
``_mkt_ret`` (equal-weight market return of the day) and ``_sec_ret`` (equal-weight sector
return of the day). Both implementations read the same prepared input.

The definitions follow kizashi's (documented in ``kizashi.features.*``), including its
conventions where a plain pandas call would differ; each such place is commented:

* ``safe_div``: a ratio is null where ``|denominator| <= 1e-12`` (``1e-9`` for volume
  z-scores);
* range-based volatilities read a mean of squares at or below ``1e-14`` as 0;
* ``skew``: kizashi (Polars ``rolling_skew``) is the population skewness g1; pandas'
  ``rolling().skew()`` is the bias-corrected G1 = g1 * sqrt(n (n - 1)) / (n - 2): the
  reference converts with that constant;
* kizashi masks a stock's first ``lookback`` rows to null; the reference does not (a pandas
  window simply starts when it is full), so the two can differ in the first rows only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

EPS = 1e-12
VARIANCE_FLOOR = 1e-14

Feature = Callable[[pd.DataFrame, dict[str, pd.Series]], pd.Series]


def _by_code(s: pd.Series, df: pd.DataFrame):
    return s.groupby(df["code"], sort=False)


def _rolling(s: pd.Series, df: pd.DataFrame, window: int):
    """Per-stock rolling window over ``s``; results come back with a (code, row) index."""
    return _by_code(s, df).rolling(window)


def _flat(result: pd.Series) -> pd.Series:
    """Drop the group level that groupby().rolling() adds (rows keep their index)."""
    return result.droplevel(0)


def _safe_div(num: pd.Series, den: pd.Series, eps: float = EPS) -> pd.Series:
    return (num / den).where(den.abs() > eps)


def _sqrt_mean(daily: pd.Series, df: pd.DataFrame, window: int) -> pd.Series:
    mean = _flat(_rolling(daily, df, window).mean())
    # kizashi convention: a mean of squares <= 1e-14 is rounding residue, read as 0.
    return np.sqrt(mean).where(mean > VARIANCE_FLOOR, mean * 0.0)


def _prev_close(df: pd.DataFrame) -> pd.Series:
    return df.groupby("code")["close"].shift(1)


# ---------------------------------------------------------------------------- features


def return_5d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    return df["close"] / df.groupby("code")["close"].shift(5) - 1.0


def momentum_60_20d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    g = df.groupby("code")["close"]
    return g.shift(20) / g.shift(60) - 1.0


def realized_vol_20d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    return _flat(df.groupby("code")["_log_ret"].rolling(20).std())


def parkinson_vol_20d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    daily = np.log(df["high"] / df["low"]) ** 2 / (4.0 * math.log(2.0))
    return _sqrt_mean(daily, df, 20)


def garman_klass_vol_20d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    log_hl = np.log(df["high"] / df["low"])
    log_co = np.log(df["close"] / df["open"])
    daily = 0.5 * log_hl**2 - (2.0 * math.log(2.0) - 1.0) * log_co**2
    return _sqrt_mean(daily, df, 20)


def hl_range_mean_20d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    return _flat(_rolling(np.log(df["high"] / df["low"]), df, 20).mean())


def gap_return(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    return df["open"] / _prev_close(df) - 1.0


def volume_ratio_20d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    mean = _flat(df.groupby("code")["volume"].rolling(20).mean())
    return _safe_div(df["volume"], mean)


def volume_zscore_20d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    log_vol = np.log1p(df["volume"])
    roll = _rolling(log_vol, df, 20)
    mean, std = _flat(roll.mean()), _flat(roll.std())
    return _safe_div(log_vol - mean, std, eps=1e-9)


def amihud_illiquidity_20d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    illiquidity = _safe_div(df["_ret"].abs(), df["_dollar_volume"]) * 1e6
    return np.log1p(_flat(_rolling(illiquidity, df, 20).mean()))


def rsi_14d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    ret = df["_ret"]
    gains = _flat(_rolling(ret.clip(lower=0.0), df, 14).mean())
    losses = _flat(_rolling((-ret).clip(lower=0.0), df, 14).mean())
    return 100.0 * _safe_div(gains, gains + losses)


def bollinger_pctb_20d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    roll = df.groupby("code")["close"].rolling(20)
    mean, std = _flat(roll.mean()), _flat(roll.std())
    return _safe_div(df["close"] - (mean - 2.0 * std), 4.0 * std)


def atr_14d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    prev = _prev_close(df)
    true_range = pd.concat(
        [df["high"] - df["low"], (df["high"] - prev).abs(), (df["low"] - prev).abs()], axis=1
    ).max(axis=1)
    return _safe_div(_flat(_rolling(true_range, df, 14).mean()), df["close"])


def stochastic_k_14d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    lowest = _flat(df.groupby("code")["low"].rolling(14).min())
    highest = _flat(df.groupby("code")["high"].rolling(14).max())
    return _safe_div(df["close"] - lowest, highest - lowest)


def ma_gap_20d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    mean = df.groupby("code")["close"].transform(lambda s: s.rolling(20).mean())
    return _safe_div(df["close"], mean) - 1.0


def skew_20d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    n = 20
    unbiased = _flat(df.groupby("code")["_ret"].rolling(n).skew())
    # pandas gives the bias-corrected G1; kizashi's is the population g1.
    return unbiased * ((n - 2) / math.sqrt(n * (n - 1)))


def drawdown_60d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    peak = df.groupby("code")["close"].transform(lambda s: s.rolling(60).max())
    return _safe_div(df["close"], peak) - 1.0


def beta_60d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    def one_stock(x: pd.DataFrame) -> pd.Series:
        cov = x["_ret"].rolling(60).cov(x["_mkt_ret"])
        var = x["_mkt_ret"].rolling(60).var()
        return _safe_div(cov, var)

    return df.groupby("code", group_keys=False)[["_ret", "_mkt_ret"]].apply(one_stock)


def cs_rank_return_5d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    ret5 = done["return_5d"] if "return_5d" in done else return_5d(df, done)
    by_date = ret5.groupby(df["date"])
    rank = by_date.rank(method="average")
    count = by_date.transform("count")
    return _safe_div(rank - 1.0, count - 1.0)


def sector_rel_return_5d(df: pd.DataFrame, done: dict[str, pd.Series]) -> pd.Series:
    ret5 = df["close"] / df.groupby("code")["close"].shift(5) - 1.0
    sector_growth = _flat(_rolling(np.log1p(df["_sec_ret"]), df, 5).sum())
    return ret5 - (np.exp(sector_growth) - 1.0)


REFERENCE: dict[str, Feature] = {
    f.__name__: f
    for f in (
        return_5d,
        momentum_60_20d,
        realized_vol_20d,
        parkinson_vol_20d,
        garman_klass_vol_20d,
        hl_range_mean_20d,
        gap_return,
        volume_ratio_20d,
        volume_zscore_20d,
        amihud_illiquidity_20d,
        rsi_14d,
        bollinger_pctb_20d,
        atr_14d,
        stochastic_k_14d,
        ma_gap_20d,
        skew_20d,
        drawdown_60d,
        beta_60d,
        cs_rank_return_5d,
        sector_rel_return_5d,
    )
}
FEATURE_NAMES = tuple(REFERENCE)
INPUT_COLUMNS = (
    "code",
    "date",
    "sector",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "_ret",
    "_log_ret",
    "_dollar_volume",
    "_mkt_ret",
    "_sec_ret",
)


def compute_reference(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """All reference features of ``df`` (sorted by code, date) -> (frame of the features,
    in ``df``'s row order; seconds per feature)."""
    done: dict[str, pd.Series] = {}
    seconds: dict[str, float] = {}
    for name, feature in REFERENCE.items():
        started = time.perf_counter()
        done[name] = feature(df, done).reindex(df.index)
        seconds[name] = time.perf_counter() - started
    return pd.DataFrame(done, index=df.index), seconds
