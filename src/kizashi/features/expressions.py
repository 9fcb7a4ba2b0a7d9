"""Expression helpers shared by the feature families.

Every helper returns a Polars expression over the *prepared* panel: rows sorted by
(code, date), with the helper columns listed below. The pipeline evaluates each
stock-level feature per stock (``over("code")``) and masks it while ``_run_row < lookback``:
a window of ``lookback`` rows is used only when those rows are ``lookback`` consecutive
sessions of the market calendar, so no window steps over a stock's missing days.

Polars' common-subexpression elimination skips rolling and ``over`` expressions, so a
helper that needs an operand twice (``safe_div`` tests the denominator and divides by it)
binds it once in a struct instead of repeating the expression: a repeated rolling operand
would be computed twice.
"""

from __future__ import annotations

import math

import polars as pl

# Helper columns added by the pipeline (features.pipeline.prepare_base); dropped on output.
ROW = "_row"  # 0-based row number within the stock
SESSION = "_session"  # 0-based index of the date in the market calendar
RUN_ROW = "_run_row"  # 0-based row number within the stock's current run of consecutive sessions
IN_UNIVERSE = "_in_universe"  # the stock has input.min_history rows up to this date
PREV_CLOSE = "_prev_close"  # adjusted close of the previous market session (null after a gap)
RET = "_ret"  # simple return over one market session (null after a gap)
LOG_RET = "_log_ret"  # log return over one market session (null after a gap)
DOLLAR_VOLUME = "_dollar_volume"  # currency traded (unadjusted)
RAW_CLOSE = "_raw_close"  # unadjusted close (for margin balances in raw shares)

EPS = 1e-12


def c(name: str) -> pl.Expr:
    return pl.col(name)


def close() -> pl.Expr:
    return pl.col("close")


def _bind(result: pl.Expr, **operands: pl.Expr | float) -> pl.Expr:
    """Evaluate each operand once and compute ``result`` (written with ``pl.field(name)``)
    from them: the struct keeps repeated operands from being evaluated twice."""
    fields = [(v if isinstance(v, pl.Expr) else pl.lit(v, pl.Float64)).alias(k) for k, v in operands.items()]
    return pl.struct(fields).struct.with_fields(result.alias("_result")).struct.field("_result")


def safe_div(num: pl.Expr | float, den: pl.Expr, eps: float = EPS) -> pl.Expr:
    """``num / den``, null where ``|den| <= eps``."""
    d = pl.field("den")
    return _bind(pl.when(d.abs() > eps).then(pl.field("num") / d), num=num, den=den)


def safe_log(x: pl.Expr) -> pl.Expr:
    """``log(x)``, null where ``x <= 0``."""
    v = pl.field("x")
    return _bind(pl.when(v > 0).then(v.log()), x=x)


def simple_return(window: int) -> pl.Expr:
    """Close-to-close return over ``window`` rows; lookback ``window``."""
    return close() / close().shift(window) - 1.0


def log_return(window: int) -> pl.Expr:
    return (close() / close().shift(window)).log()


def ts_mean(x: pl.Expr, window: int) -> pl.Expr:
    return x.rolling_mean(window)


def ts_sum(x: pl.Expr, window: int) -> pl.Expr:
    return x.rolling_sum(window)


def ts_std(x: pl.Expr, window: int) -> pl.Expr:
    return x.rolling_std(window)


def ts_max(x: pl.Expr, window: int) -> pl.Expr:
    return x.rolling_max(window)


def ts_min(x: pl.Expr, window: int) -> pl.Expr:
    return x.rolling_min(window)


def ts_cov(x: pl.Expr, y: pl.Expr, window: int) -> pl.Expr:
    """Rolling covariance (ddof=0) from rolling means of products."""
    return ts_mean(x * y, window) - ts_mean(x, window) * ts_mean(y, window)


def ts_var(x: pl.Expr, window: int) -> pl.Expr:
    """Rolling variance (ddof=0), clipped at zero against rounding."""
    return (ts_mean(x * x, window) - ts_mean(x, window) ** 2).clip(lower_bound=0.0)


def ts_corr(x: pl.Expr, y: pl.Expr, window: int) -> pl.Expr:
    return pl.rolling_corr(x, y, window_size=window)


def ema_weights(span: int) -> list[float]:
    """Weights (oldest first) of a finite-impulse EMA: alpha = 2 / (span + 1), truncated at
    3 * span rows (99.7% of the infinite EMA's weight) and renormalized. A finite window
    keeps every feature's lookback bounded, which makes chunked builds exact."""
    alpha = 2.0 / (span + 1.0)
    length = 3 * span
    raw = [(1.0 - alpha) ** k for k in range(length - 1, -1, -1)]
    total = math.fsum(raw)
    return [w / total for w in raw]


def ts_ema(x: pl.Expr, span: int) -> pl.Expr:
    """Finite EMA over ``3 * span`` rows (lookback ``3 * span - 1`` on top of ``x``'s)."""
    weights = ema_weights(span)
    length = len(weights)
    # Polars' weighted rolling kernels reject arrays with a null mask: sum over zero-filled
    # values and null out any window that contained a null.
    v = pl.field("x")
    has_null = v.is_null().cast(pl.Float64).rolling_sum(length) > 0
    return _bind(pl.when(~has_null).then(v.fill_null(0.0).rolling_sum(length, weights=weights)), x=x)


def ema_length(span: int) -> int:
    return 3 * span


def cs_rank(x: pl.Expr, by: str | list[str] = "date") -> pl.Expr:
    """Percentile rank in [0, 1] among the stocks of a day (or day x group); nulls stay null."""
    n = x.count().over(by)
    return safe_div(x.rank("average").over(by) - 1.0, (n - 1).cast(pl.Float64))


def cs_zscore(x: pl.Expr, by: str | list[str] = "date") -> pl.Expr:
    return safe_div(x - x.mean().over(by), x.std().over(by))


def cs_demean(x: pl.Expr, by: str | list[str] = "date") -> pl.Expr:
    return x - x.mean().over(by)
