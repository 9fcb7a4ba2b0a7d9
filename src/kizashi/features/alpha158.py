"""Alpha158 family: Qlib's Alpha158 factors (``qlib.contrib.data.loader.Alpha158DL`` with
the ``Alpha158`` handler's default config), column for column, so that a model trained on
Qlib's Alpha158 reads the same inputs from a kizashi dataset.

Columns are named ``alpha158_<QLIB NAME>`` (``alpha158_KMID``, ``alpha158_ROC5``, ...):

* 9 K-bar shapes (KMID, KLEN, KMID2, KUP, KUP2, KLOW, KLOW2, KSFT, KSFT2);
* OPEN0, HIGH0, LOW0: today's open/high/low over today's close;
* 29 rolling operators x windows (5, 10, 20, 30, 60): ROC MA STD BETA RSQR RESI MAX MIN
  QTLU QTLD RANK RSV IMAX IMIN IMXD CORR CORD CNTP CNTN CNTD SUMP SUMN SUMD VMA VSTD WVMA
  VSUMP VSUMN VSUMD.

That is 157 of Alpha158's 158 columns: VWAP0 (``$vwap/$close``) needs a volume-weighted
average price, which kizashi's panel does not carry (Qlib's handler gives NaN for it on data
without a ``vwap`` field, such as the S&P 500 file).

Each formula is Qlib's, operator by operator (``qlib/data/ops.py``): ``Std`` is the sample
standard deviation (ddof 1), ``Quantile`` interpolates linearly, ``Rank`` is the average-tie
rank of today's value among the window's values over the window length, ``IdxMax``/``IdxMin``
are 1-based positions of the first maximum/minimum counted from the window's oldest row,
``Slope``/``Rsquare``/``Resi`` regress the window on 1..N, the ``+1e-12`` terms of the
denominators are kept, and ``Rsquare`` and ``Corr`` are null where Qlib sets NaN: where the
window's standard deviation of an input is at most 2e-5 (``np.isclose(std, 0,
atol=2e-05)``).

Two things differ by design, both where Qlib's windows are not full:

* Qlib's rolling operators use ``min_periods=1``: during a stock's first N - 1 sessions a
  window-N feature is computed from the rows there are. Here it is null until the window is
  full (the pipeline's lookback mask), like every kizashi feature.
* Qlib keeps a stock's missing sessions as NaN rows on its calendar and its rolling
  operators skip them, so a window that spans a gap is computed from fewer rows. Here such a
  window is null (lookbacks count sessions of the market calendar; no window steps over a
  stock's missing days).

Where a window is full, the values equal Qlib's (``tests/features/test_alpha158.py``
checks them against a fixture of Qlib-computed values; ``docs/peers.md`` states the
tolerance and why it is not zero: Qlib stores prices and computes element-wise operators in
float32). The family is optional: ``families: all`` does not build it; list it
(``features.families: [all, alpha158]``).
"""

from __future__ import annotations

import polars as pl

from kizashi.features.expressions import ROW, _bind, c
from kizashi.features.spec import FeatureContext, FeatureSpec

FAMILY = "alpha158"
PREFIX = "alpha158_"
WINDOWS = (5, 10, 20, 30, 60)
# Qlib's ``np.isclose(rolling_std, 0, atol=2e-05)``: Rsquare and Corr are NaN there.
FLAT_STD = 2e-5
# Qlib's guard against a zero denominator, added to it (not a null test).
GUARD = 1e-12


def regression_weights(window: int) -> list[float]:
    """Least-squares slope of y on 1..N over a window as fixed weights (oldest first):
    (k - mean_k) / sum_k (k - mean_k)^2. Evaluated window by window, so no running sum
    carries rounding error from earlier rows."""
    centre = (window + 1) / 2.0
    denominator = window * (window * window - 1) / 12.0
    return [(k - centre) / denominator for k in range(1, window + 1)]


def slope(x: pl.Expr, window: int) -> pl.Expr:
    """Qlib's ``Slope(x, N)``: the OLS slope of the window's values on 1..N."""
    return x.rolling_sum(window, weights=regression_weights(window))


def rsquare(x: pl.Expr, window: int) -> pl.Expr:
    """Qlib's ``Rsquare(x, N)``: R^2 of the regression on 1..N, slope^2 * Sxx / Syy with
    Sxx = N(N^2-1)/12 and Syy = (N-1) var(x); null where std(x) <= 2e-5 (as Qlib)."""
    sxx = window * (window * window - 1) / 12.0
    var = pl.field("var")
    r2 = pl.field("slope").pow(2) * sxx / (var * (window - 1))
    return _bind(pl.when(var.sqrt() > FLAT_STD).then(r2), var=x.rolling_var(window), slope=slope(x, window))


def residual(x: pl.Expr, window: int) -> pl.Expr:
    """Qlib's ``Resi(x, N)``: today's value minus the regression line at N:
    x_N - mean(x) - slope * (N - 1) / 2."""
    return x - x.rolling_mean(window) - slope(x, window) * ((window - 1) / 2.0)


def correlation(x: pl.Expr, y: pl.Expr, window: int) -> pl.Expr:
    """Qlib's ``Corr(x, y, N)``: Pearson correlation over the window, null where either
    input's standard deviation is <= 2e-5 (as Qlib)."""
    a, b = pl.field("x"), pl.field("y")
    flat = (a.rolling_std(window) <= FLAT_STD) | (b.rolling_std(window) <= FLAT_STD)
    return _bind(pl.when(~flat).then(pl.rolling_corr(a, b, window_size=window)), x=x, y=y)


def first_extreme_position(x: pl.Expr, window: int, largest: bool) -> pl.Expr:
    """Qlib's ``IdxMax(x, N)`` / ``IdxMin(x, N)``: the 1-based position, counted from the
    window's oldest row, of the first row holding the window's maximum (minimum). The window
    is the stock's last N rows (a rolling group over its row number)."""
    first = x.arg_max() if largest else x.arg_min()
    return first.rolling(index_column=ROW, period=f"{window}i").cast(pl.Float64) + 1.0


def stochastic(close: pl.Expr, high: pl.Expr, low: pl.Expr, window: int) -> pl.Expr:
    """Qlib's RSV: (close - Min(low, N)) / (Max(high, N) - Min(low, N) + 1e-12)."""
    lowest = pl.field("lowest")
    return _bind(
        (pl.field("close") - lowest) / (pl.field("highest") - lowest + GUARD),
        close=close, highest=high.rolling_max(window), lowest=low.rolling_min(window),
    )


def move_share(x: pl.Expr, window: int, part: str) -> pl.Expr:
    """Qlib's SUMP / SUMN / SUMD (``part`` "gain" / "loss" / "net"): the sum of the window's N
    one-session rises (falls; rises minus falls) of ``x`` over the sum of their absolute
    values + g (g = 1e-12). With A = sum |x_t - x_(t-1)| and D = x_t - x_(t-N) (the sum of the
    changes), rises = (A + D) / 2 and falls = (A - D) / 2, so SUMD = D / (A + g),
    SUMP = 1/2 + (D - g) / (2 (A + g)) and SUMN = 1/2 - (D + g) / (2 (A + g)): one rolling sum
    per feature (the same values to rounding, ~1e-16)."""
    moved = (x - x.shift(1)).abs().rolling_sum(window) + GUARD
    net = x - x.shift(window)
    if part == "net":
        return net / moved
    if part == "gain":
        return 0.5 + (net - GUARD) / (2.0 * moved)
    return 0.5 - (net + GUARD) / (2.0 * moved)


def rank_in_window(x: pl.Expr, window: int) -> pl.Expr:
    """Qlib's ``Rank(x, N)``: pandas' ``rolling(N).rank(pct=True)``, the average-tie rank of
    today's value among the window's N values, over N. Counted from today's comparisons with
    each earlier row, sign(x_t - x_(t-k)) = +1 / 0 / -1 for smaller / tied / larger:
    rank = 1 + #smaller + #tied / 2 = 1 + ((N - 1) + sum of signs) / 2 (exact; cheaper
    than a rolling rank)."""
    signs = pl.sum_horizontal([(x - x.shift(k)).sign() for k in range(1, window)])
    return (1.0 + ((window - 1) + signs) / 2.0) / window


def alpha158_family(ctx: FeatureContext) -> list[FeatureSpec]:
    op, hi, lo, cl, vol = c("open"), c("high"), c("low"), c("close"), c("volume")
    prev_close, prev_vol = cl.shift(1), vol.shift(1)
    bar_range = hi - lo + GUARD
    specs: list[FeatureSpec] = []

    def add(name: str, expr: pl.Expr, lookback: int) -> None:
        specs.append(FeatureSpec(PREFIX + name, expr, FAMILY, lookback))

    upper, lower = pl.max_horizontal(op, cl), pl.min_horizontal(op, cl)
    add("KMID", (cl - op) / op, 0)
    add("KLEN", (hi - lo) / op, 0)
    add("KMID2", (cl - op) / bar_range, 0)
    add("KUP", (hi - upper) / op, 0)
    add("KUP2", (hi - upper) / bar_range, 0)
    add("KLOW", (lower - lo) / op, 0)
    add("KLOW2", (lower - lo) / bar_range, 0)
    add("KSFT", (2 * cl - hi - lo) / op, 0)
    add("KSFT2", (2 * cl - hi - lo) / bar_range, 0)
    for name, field in (("OPEN0", op), ("HIGH0", hi), ("LOW0", lo)):
        add(name, field / cl, 0)

    # One-session changes: a window of N of them reads N + 1 rows (lookback N).
    change = cl - prev_close
    up, down = (cl > prev_close).cast(pl.Float64), (cl < prev_close).cast(pl.Float64)
    price_ratio = cl / prev_close
    log_volume_ratio = (vol / prev_vol + 1.0).log()
    weighted_move = (price_ratio - 1.0).abs() * vol
    log_volume = (vol + 1.0).log()

    def each(name: str, build, lookback_extra: int) -> None:
        for w in WINDOWS:
            add(f"{name}{w}", build(w), w - 1 + lookback_extra)

    each("ROC", lambda w: cl.shift(w) / cl, 1)
    each("MA", lambda w: cl.rolling_mean(w) / cl, 0)
    each("STD", lambda w: cl.rolling_std(w) / cl, 0)
    each("BETA", lambda w: slope(cl, w) / cl, 0)
    each("RSQR", lambda w: rsquare(cl, w), 0)
    each("RESI", lambda w: residual(cl, w) / cl, 0)
    each("MAX", lambda w: hi.rolling_max(w) / cl, 0)
    each("MIN", lambda w: lo.rolling_min(w) / cl, 0)
    each("QTLU", lambda w: cl.rolling_quantile(0.8, "linear", window_size=w) / cl, 0)
    each("QTLD", lambda w: cl.rolling_quantile(0.2, "linear", window_size=w) / cl, 0)
    each("RANK", lambda w: rank_in_window(cl, w), 0)
    each("RSV", lambda w: stochastic(cl, hi, lo, w), 0)

    def imax(w: int) -> pl.Expr:
        return first_extreme_position(hi, w, largest=True)

    def imin(w: int) -> pl.Expr:
        return first_extreme_position(lo, w, largest=False)

    each("IMAX", lambda w: imax(w) / w, 0)
    each("IMIN", lambda w: imin(w) / w, 0)
    each("IMXD", lambda w: (imax(w) - imin(w)) / w, 0)
    each("CORR", lambda w: correlation(cl, log_volume, w), 0)
    each("CORD", lambda w: correlation(price_ratio, log_volume_ratio, w), 1)
    each("CNTP", lambda w: up.rolling_mean(w), 1)
    each("CNTN", lambda w: down.rolling_mean(w), 1)
    each("CNTD", lambda w: change.sign().rolling_mean(w), 1)  # up - down, one rolling mean
    each("SUMP", lambda w: move_share(cl, w, "gain"), 1)
    each("SUMN", lambda w: move_share(cl, w, "loss"), 1)
    each("SUMD", lambda w: move_share(cl, w, "net"), 1)
    each("VMA", lambda w: vol.rolling_mean(w) / (vol + GUARD), 0)
    each("VSTD", lambda w: vol.rolling_std(w) / (vol + GUARD), 0)
    each("WVMA", lambda w: weighted_move.rolling_std(w) / (weighted_move.rolling_mean(w) + GUARD), 1)
    each("VSUMP", lambda w: move_share(vol, w, "gain"), 1)
    each("VSUMN", lambda w: move_share(vol, w, "loss"), 1)
    each("VSUMD", lambda w: move_share(vol, w, "net"), 1)
    return specs


QLIB_NAMES = tuple(
    ["KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2", "OPEN0", "HIGH0", "LOW0"]
    + [
        f"{op}{w}"
        for op in (
            "ROC MA STD BETA RSQR RESI MAX MIN QTLU QTLD RANK RSV IMAX IMIN IMXD CORR CORD CNTP CNTN CNTD "
            "SUMP SUMN SUMD VMA VSTD WVMA VSUMP VSUMN VSUMD"
        ).split()
        for w in WINDOWS
    ]
)
"""The Qlib Alpha158 names this family builds, in its column order (VWAP0 is not built)."""
