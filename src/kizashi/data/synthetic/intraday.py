"""Deterministic synthetic intraday OHLCV bars with the stylized facts of real markets.

Tests use these bars to exercise the intraday readers and the bar resampler, and Stage-1
multi-timeframe pretraining uses them as its default data when no real bars are given.
Unlike the daily market in :mod:`kizashi.data.synthetic.daily`, there is no planted signal: the
bars only look like real markets (volatility clustering, intraday seasonality, heavy tails,
jumps, correlated symbols, volume that rises with volatility).

Calendar
--------
Bars are labelled by their *open* time (UTC) and last one ``timeframe`` (``m1`` ... ``d1``).
The generated window is ``[start, start + n_days)`` in calendar days.

* ``session="24h"`` (crypto-like): bars every ``timeframe`` from ``start``, every day,
  with no gaps. The "session" is the whole UTC day, and the model counts 365 trading days
  a year.
* ``session="equity"``: weekdays only. Bars open every ``timeframe`` from ``session_open``
  (default 14:30 UTC) while before ``session_close`` (default 21:00 UTC), so the last bar of
  a day can reach past the close. Nights and weekends are gaps, and the model counts 252
  trading days a year.

Returns
-------
Let ``D`` be the number of trading days a year, ``sigma_d^2 = annual_volatility^2 / D`` the
variance of one trading day, ``phi = overnight_variance_share`` (equity only, else 0),
``psi = jump_variance_share`` (0 when ``jump_rate_per_day`` is 0) and
``sigma_c^2 = (1 - phi - psi) * sigma_d^2`` the day's diffusive (in-session) variance.

Intraday seasonality: for a session minute at position ``u`` in ``(0, 1)`` within the
session (UTC midnight to midnight for "24h"), the volatility multiplier is U-shaped::

    m(u) = 1 + A * (2u - 1)^2,          A = seasonality_amplitude
    w(minute) = m(u)^2 / sum over session minutes of m^2        (sums to 1 per day)

so edge minutes have ``1 + A`` times the volatility of midday minutes. Bar ``b`` gets the
seasonal variance ``v_b = sigma_c^2 * W_b``, where ``W_b`` is the sum of ``w`` over the
bar's session minutes. Because variance is added up minute by minute, the model is
consistent across timeframes (an h1 bar has the summed variance of its sixty m1 bars).

Shocks with a common factor (``rho = correlation``, same for every pair of symbols)::

    z[b, i] = sqrt(rho) * f[b] + sqrt(1 - rho) * e[b, i]

``f`` and ``e`` are independent unit-variance Student-t(``shock_df``) draws (normal when
``shock_df`` is None), clipped at +-12. GARCH(1,1) on a unitless variance multiplier ``h``
of the per-bar variance, with variance targeting (unconditional mean 1)::

    h[b + 1, i] = min(omega + alpha * h[b, i] * z[b, i]^2 + beta * h[b, i], variance_cap)
    omega = 1 - alpha - beta,   alpha + beta < 1,   h[0, i] = 1

Log return from a bar's open to its close::

    r[b, i] = mu_b + sqrt(v_b * h[b, i]) * z[b, i] + J[b, i]
    mu_b    = annual_drift / D * L_b / session_minutes    (L_b: session minutes in the bar)
    J[b, i] = s_J * (sqrt(Nc[b]) * xc[b] + sqrt(N[b, i]) * x[b, i])
    Nc[b] ~ Poisson(rho * lambda_b),  N[b, i] ~ Poisson((1 - rho) * lambda_b)
    lambda_b = lambda * L_b / session_minutes,  s_J^2 = psi * sigma_d^2 / lambda

with ``lambda = jump_rate_per_day``: each symbol jumps ``lambda`` times a trading day on
average, a share ``rho`` of the jumps being market-wide (the same jump hits every symbol at
once), so jumps are correlated like the shocks. ``xc``, ``x`` are unit-variance
Student-t(``jump_df``) draws (normal when None), clipped at +-12 (the sum of ``n`` jumps in
one bar is drawn as ``sqrt(n)`` times one draw). Because the GARCH paths of the symbols
differ, the measured correlation of returns is a little below ``rho`` (~0.47 for 0.5).
Across a session gap (equity only) the bar opens away from the previous close by a
common-factor gap term::

    g[b, i] = sqrt(phi) * sigma_d * (sqrt(rho) * f_g[b] + sqrt(1 - rho) * e_g[b, i])

Prices: ``log C[b] = log O[b] + r[b]``, ``log O[b] = log C[b - 1] + g[b]`` (``g = 0`` except
at the first bar of an equity session), ``O[0]`` = the symbol's start price; so within a
session a bar opens exactly at the previous close. High and low come from a Brownian bridge
from ``log O`` to ``log C`` with variance ``v = v_b * h[b]`` over the bar; the exact law of
its maximum and minimum (drawn independently of each other) is::

    log H = log O + (r + sqrt(r^2 + 2 v E1)) / 2,   log L = log O + (r - sqrt(r^2 + 2 v E2)) / 2
    E1, E2 ~ Exponential(1)

so ``L <= min(O, C) <= max(O, C) <= H`` and the expected range scales with the bar's
volatility (``E[H/L - 1] ~ sqrt(8 v / pi)`` for a small drift).

Volume: log-normal, seasonal, and rising with the return's size relative to the bar's
unconditional volatility (so it is high in volatile regimes and on jumps)::

    V[b, i] = round(V0 * L_b * s_b^gamma * (1 + kappa * |r[b, i] - mu_b| / sqrt(v_b))
                    * exp(nu * eta[b, i] - nu^2 / 2)),   at least 1
    s_b = sqrt(W_b * session_minutes / L_b)    (the bar's relative seasonal volatility)

with ``V0 = volume_per_minute``, ``gamma = volume_seasonality``, ``kappa =
volume_return_sensitivity``, ``nu = volume_noise`` and ``eta ~ N(0, 1)``.

Warts (for reader tests, off by default): ``gap_fraction`` of each symbol's bars (never the
first) are dropped, then ``duplicate_fraction`` of the remaining rows are repeated right
after themselves (same timestamp, same values). With warts, timestamps are no longer unique
and a bar after a dropped one does not open at the previous row's close.

Everything is vectorized over symbols (the GARCH recursion loops over bars only) and
deterministic given the config: each part of the model draws from its own child of one
``SeedSequence(seed)``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from kizashi.atomic import atomic_path
from kizashi.data.timeframes import timeframe_minutes, timeframe_name

logger = logging.getLogger(__name__)

SESSIONS = ("24h", "equity")
BAR_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
CSV_COLUMNS = ("Time", "Open", "High", "Low", "Close", "Volume")
CSV_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # as in the real files: naive UTC, no "T", no zone
TRADING_DAYS_PER_YEAR = {"24h": 365, "equity": 252}
MINUTES_PER_DAY = 1440
_SHOCK_CLIP = 12.0  # unit-variance shocks are clipped at +-12 sd
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class SyntheticBarsConfig:
    """Configuration of :func:`generate_bars` (the model is in the module docstring).

    Volatility and drift are annual, in log-return units. ``garch_alpha``/``garch_beta`` act
    per bar of ``timeframe`` (``omega = 1 - alpha - beta``, see :attr:`garch_omega`).
    ``start`` may be naive (read as UTC) or timezone-aware; it is stored in UTC and must be
    on a whole minute. ``timeframe`` is stored in canonical spelling (``"m60"`` -> ``"h1"``).
    ``start_prices`` is one price for every symbol or one per symbol.
    """

    symbols: tuple[str, ...] = ("SYN_A", "SYN_B", "SYN_C", "SYN_D")
    timeframe: str = "m1"
    n_days: int = 30
    start: dt.datetime = dt.datetime(2021, 1, 4, tzinfo=dt.UTC)
    seed: int = 0
    session: str = "24h"
    session_open: dt.time = dt.time(14, 30)  # UTC, equity session only
    session_close: dt.time = dt.time(21, 0)  # UTC, equity session only
    annual_volatility: float = 0.6
    annual_drift: float = 0.0
    garch_alpha: float = 0.05
    garch_beta: float = 0.94
    variance_cap: float = 25.0  # cap on the GARCH multiplier h (5x the unconditional vol)
    shock_df: float | None = 5.0  # Student-t df of the shocks; None = normal
    correlation: float = 0.5  # pairwise correlation of the symbols' shocks
    seasonality_amplitude: float = 1.0  # edge / midday volatility = 1 + amplitude
    jump_rate_per_day: float = 1.0  # Poisson rate of jumps per symbol per trading day
    jump_variance_share: float = 0.15  # share of the daily variance carried by jumps
    jump_df: float | None = 4.0  # Student-t df of jump sizes; None = normal
    overnight_variance_share: float = 0.2  # equity only: share of daily variance in the gap
    start_prices: float | tuple[float, ...] = 100.0
    volume_per_minute: float = 1000.0
    volume_seasonality: float = 1.0  # elasticity of volume to the seasonal volatility
    volume_return_sensitivity: float = 0.5  # kappa: volume x (1 + kappa |r| / vol)
    volume_noise: float = 0.5  # sd of the log-normal volume noise
    duplicate_fraction: float = 0.0  # wart: share of rows repeated
    gap_fraction: float = 0.0  # wart: share of bars dropped

    def __post_init__(self) -> None:
        # symbols
        symbols = self.symbols
        if isinstance(symbols, str) or not isinstance(symbols, (tuple, list)):
            raise ValueError(f"symbols: expected a tuple of names, got {symbols!r}")
        symbols = tuple(symbols)
        if not symbols:
            raise ValueError("symbols: at least one symbol is needed")
        for name in symbols:
            if not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\\t\n"):
                raise ValueError(
                    "symbols: each symbol must be a non-empty name usable in a file name, "
                    f"got {name!r}"
                )
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols: names must be unique, got {list(symbols)}")
        object.__setattr__(self, "symbols", symbols)
        # timeframe
        try:
            minutes = timeframe_minutes(self.timeframe)
        except ValueError as exc:
            raise ValueError(f"timeframe: {exc}") from None
        if minutes > MINUTES_PER_DAY:
            raise ValueError(f"timeframe: at most one day (d1), got {self.timeframe!r}")
        object.__setattr__(self, "timeframe", timeframe_name(minutes))
        # calendar
        _require_int(self.n_days, "n_days", minimum=1)
        _require_int(self.seed, "seed", minimum=0)
        if not isinstance(self.start, dt.datetime):
            raise ValueError(f"start: expected a datetime, got {self.start!r}")
        start = self.start
        start = start.replace(tzinfo=dt.UTC) if start.tzinfo is None else start.astimezone(dt.UTC)
        if start.second or start.microsecond:
            raise ValueError(f"start: must be on a whole minute, got {self.start.isoformat()}")
        object.__setattr__(self, "start", start)
        if self.session not in SESSIONS:
            raise ValueError(f"session: expected one of {list(SESSIONS)}, got {self.session!r}")
        for name in ("session_open", "session_close"):
            value = getattr(self, name)
            if not isinstance(value, dt.time) or value.second or value.microsecond:
                raise ValueError(
                    f"{name}: expected a datetime.time on a whole minute (UTC), got {value!r}"
                )
        if self.session == "equity" and not self.session_open < self.session_close:
            raise ValueError(
                f"session_open ({self.session_open}) must be before session_close "
                f"({self.session_close}) within one UTC day"
            )
        # return model
        _require_real(self.annual_volatility, "annual_volatility", low=0.0, low_open=True)
        _require_real(self.annual_drift, "annual_drift")
        _require_real(self.garch_alpha, "garch_alpha", low=0.0)
        _require_real(self.garch_beta, "garch_beta", low=0.0)
        if not self.garch_alpha + self.garch_beta < 1.0:
            raise ValueError(
                f"garch_alpha + garch_beta: the persistence must be below 1 (omega = 1 - alpha - "
                f"beta > 0), got {self.garch_alpha} + {self.garch_beta} = "
                f"{self.garch_alpha + self.garch_beta}"
            )
        _require_real(self.variance_cap, "variance_cap", low=1.0)
        _require_df(self.shock_df, "shock_df")
        _require_real(self.correlation, "correlation", low=0.0, high=1.0, high_open=True)
        _require_real(self.seasonality_amplitude, "seasonality_amplitude", low=0.0)
        _require_real(self.jump_rate_per_day, "jump_rate_per_day", low=0.0)
        _require_real(
            self.jump_variance_share, "jump_variance_share", low=0.0, high=1.0, high_open=True
        )
        _require_df(self.jump_df, "jump_df")
        _require_real(
            self.overnight_variance_share,
            "overnight_variance_share",
            low=0.0,
            high=1.0,
            high_open=True,
        )
        if (
            self.session == "equity"
            and self.jump_variance_share + self.overnight_variance_share >= 1.0
        ):
            raise ValueError(
                "jump_variance_share + overnight_variance_share: must leave some diffusive "
                f"variance (sum below 1), got {self.jump_variance_share} + "
                f"{self.overnight_variance_share}"
            )
        # prices and volume
        prices = self.start_prices
        prices = (
            (prices,)
            if isinstance(prices, (int, float)) and not isinstance(prices, bool)
            else prices
        )
        if not isinstance(prices, (tuple, list)) or len(prices) not in (1, len(symbols)):
            raise ValueError(
                f"start_prices: expected one price or one per symbol ({len(symbols)}), "
                f"got {self.start_prices!r}"
            )
        for price in prices:
            _require_real(price, "start_prices", low=0.0, low_open=True)
        object.__setattr__(
            self,
            "start_prices",
            tuple(float(p) for p in prices) if len(prices) > 1 else float(prices[0]),
        )
        _require_real(self.volume_per_minute, "volume_per_minute", low=0.0, low_open=True)
        _require_real(self.volume_seasonality, "volume_seasonality")
        _require_real(self.volume_return_sensitivity, "volume_return_sensitivity", low=0.0)
        _require_real(self.volume_noise, "volume_noise", low=0.0)
        _require_real(self.duplicate_fraction, "duplicate_fraction", low=0.0, high=1.0)
        _require_real(self.gap_fraction, "gap_fraction", low=0.0, high=1.0, high_open=True)

    @property
    def garch_omega(self) -> float:
        """GARCH constant on the unitless variance multiplier: ``1 - alpha - beta``."""
        return 1.0 - self.garch_alpha - self.garch_beta

    @property
    def timeframe_minutes(self) -> int:
        return timeframe_minutes(self.timeframe)

    def start_price_array(self) -> np.ndarray:
        """One start price per symbol, ``[N]``."""
        prices = np.asarray(self.start_prices, dtype=np.float64).reshape(-1)
        return np.broadcast_to(prices, (len(self.symbols),)).copy()


def generate_bars(config: SyntheticBarsConfig | None = None) -> dict[str, pl.DataFrame]:
    """Generate synthetic bars (see the module docstring for the model).

    Returns one frame per symbol (in ``config.symbols`` order) with columns ``timestamp``
    (``Datetime("us", "UTC")``, the bar's open time; sorted and unique unless warts are
    injected) and ``open``, ``high``, ``low``, ``close``, ``volume`` (Float64; volume is a
    whole number >= 1). The same config always gives identical frames.
    """
    started = time.perf_counter()
    cfg = config or SyntheticBarsConfig()
    seeds = np.random.SeedSequence(cfg.seed).spawn(6)
    rng_shock, rng_jump, rng_gap, rng_range, rng_volume, rng_warts = (
        np.random.default_rng(s) for s in seeds
    )
    timeline = _timeline(cfg)
    T, N = timeline.open_minute.size, len(cfg.symbols)

    days_per_year = TRADING_DAYS_PER_YEAR[cfg.session]
    var_day = cfg.annual_volatility**2 / days_per_year
    jump_share = cfg.jump_variance_share if cfg.jump_rate_per_day > 0 else 0.0
    gap_share = cfg.overnight_variance_share if cfg.session == "equity" else 0.0
    var_bar = (1.0 - gap_share - jump_share) * var_day * timeline.weight  # [T] v_b
    session_share = timeline.minutes / timeline.session_minutes  # [T] L_b / session minutes
    mu = cfg.annual_drift / days_per_year * session_share  # [T]

    # Correlated shocks and GARCH(1,1) variance multiplier.
    z = _common_factor_shocks(rng_shock, cfg.shock_df, cfg.correlation, (T, N))
    h = _garch_multiplier(z, cfg.garch_alpha, cfg.garch_beta, cfg.variance_cap)
    diffusive_var = var_bar[:, None] * h  # [T, N]
    returns = mu[:, None] + np.sqrt(diffusive_var) * z
    # Compound-Poisson jumps.
    if jump_share > 0:
        jump_scale = math.sqrt(jump_share * var_day / cfg.jump_rate_per_day)
        rate = cfg.jump_rate_per_day * session_share  # [T] expected jumps per bar and symbol
        rho = cfg.correlation
        common = np.sqrt(rng_jump.poisson(rho * rate)) * _unit_shocks(rng_jump, cfg.jump_df, (T,))
        own = np.sqrt(rng_jump.poisson((1.0 - rho) * rate[:, None], size=(T, N)))
        own *= _unit_shocks(rng_jump, cfg.jump_df, (T, N))
        returns += jump_scale * (common[:, None] + own)
    # Session gaps (equity): the first bar of a session opens away from the last close.
    gaps = np.zeros((T, N))
    if gap_share > 0 and timeline.session_start.any():
        n_gaps = int(timeline.session_start.sum())
        g = _common_factor_shocks(rng_gap, cfg.shock_df, cfg.correlation, (n_gaps, N))
        gaps[timeline.session_start] = math.sqrt(gap_share * var_day) * g

    start_prices = cfg.start_price_array()
    log_close = np.log(start_prices)[None, :] + np.cumsum(gaps + returns, axis=0)
    log_open = np.empty_like(log_close)  # previous close (+ gap): open == previous close exactly
    log_open[0] = np.log(start_prices)
    log_open[1:] = log_close[:-1] + gaps[1:]
    bridge_var = 2.0 * diffusive_var
    log_high = log_open + 0.5 * (
        returns + np.sqrt(returns**2 + bridge_var * rng_range.exponential(1.0, (T, N)))
    )
    log_low = log_open + 0.5 * (
        returns - np.sqrt(returns**2 + bridge_var * rng_range.exponential(1.0, (T, N)))
    )
    open_, close = np.exp(log_open), np.exp(log_close)
    open_[0] = start_prices
    high = np.maximum(np.exp(log_high), np.maximum(open_, close))
    low = np.minimum(np.exp(log_low), np.minimum(open_, close))
    del log_open, log_high, log_low, bridge_var

    # Volume: seasonal log-normal, rising with |r| / unconditional bar volatility.
    seasonal_vol = np.sqrt(timeline.weight / session_share)  # s_b
    surprise = np.abs(returns - mu[:, None]) / np.sqrt(var_bar)[:, None]
    nu = cfg.volume_noise
    noise = np.exp(nu * rng_volume.standard_normal((T, N)) - 0.5 * nu * nu)
    base = cfg.volume_per_minute * timeline.minutes * seasonal_vol**cfg.volume_seasonality
    volume = np.maximum(
        np.round(base[:, None] * (1.0 + cfg.volume_return_sensitivity * surprise) * noise), 1.0
    )

    timestamps = pl.Series("timestamp", timeline.open_minute * 60_000_000, dtype=pl.Int64).cast(
        pl.Datetime("us", "UTC")
    )
    frames: dict[str, pl.DataFrame] = {}
    n_dropped = n_duplicated = 0
    for i, symbol in enumerate(cfg.symbols):
        frame = pl.DataFrame(
            {
                "timestamp": timestamps,
                "open": open_[:, i],
                "high": high[:, i],
                "low": low[:, i],
                "close": close[:, i],
                "volume": volume[:, i],
            },
            schema={
                "timestamp": pl.Datetime("us", "UTC"),
                **{c: pl.Float64 for c in BAR_COLUMNS[1:]},
            },
        )
        frame, dropped, duplicated = _inject_warts(frame, cfg, rng_warts)
        n_dropped += dropped
        n_duplicated += duplicated
        frames[symbol] = frame
    logger.info(
        "synthetic bars: %d symbols x %d %s bars (%s session, %d days from %s), seed %d, "
        "%d bars dropped, %d rows duplicated (%.2fs)",
        N,
        T,
        cfg.timeframe,
        cfg.session,
        cfg.n_days,
        cfg.start.isoformat(),
        cfg.seed,
        n_dropped,
        n_duplicated,
        time.perf_counter() - started,
    )
    return frames


def bars_to_csv(
    frames: Mapping[str, pl.DataFrame],
    folder: str | Path,
    separator: str = "\t",
    timeframe: str | None = None,
) -> list[Path]:
    """Write each symbol's bars as ``<folder>/<SYMBOL>_<TF>.csv`` in the layout of the real
    intraday files (``BTCUSD_M30.csv``): header ``Time Open High Low Close Volume`` joined by
    ``separator``, ``Time`` as ``YYYY-MM-DD HH:MM:SS`` in UTC without a zone, prices in
    shortest round-trip form, whole volumes as integers.

    ``timeframe`` names the files; when None it is the modal timestamp step of the frames.
    Each file is written atomically. Returns the paths in ``frames`` order.
    """
    if not frames:
        raise ValueError("bars_to_csv: no frames to write")
    if len(separator) != 1:
        raise ValueError(f"bars_to_csv: separator must be one character, got {separator!r}")
    for symbol, frame in frames.items():
        missing = [c for c in BAR_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"bars_to_csv: frame of {symbol!r} lacks column(s) {missing}")
    if timeframe is None:
        timeframe = _infer_timeframe(frames)
    tf_label = timeframe_name(timeframe_minutes(timeframe)).upper()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for symbol, frame in frames.items():
        volume = pl.col("volume")
        time_utc = pl.col("timestamp")
        if getattr(
            frame.schema["timestamp"], "time_zone", None
        ):  # naive timestamps are UTC already
            time_utc = time_utc.dt.convert_time_zone("UTC")
        integral = frame.height == 0 or bool((frame["volume"] == frame["volume"].round(0)).all())
        out = frame.select(
            time_utc.dt.strftime(CSV_TIME_FORMAT).alias("Time"),
            pl.col("open").alias("Open"),
            pl.col("high").alias("High"),
            pl.col("low").alias("Low"),
            pl.col("close").alias("Close"),
            (volume.cast(pl.Int64) if integral else volume).alias("Volume"),
        )
        path = folder / f"{symbol}_{tf_label}.csv"
        with atomic_path(path) as tmp:
            out.write_csv(tmp, separator=separator)
        paths.append(path)
    logger.info("wrote %d synthetic bar file(s) (%s) to %s", len(paths), tf_label, folder)
    return paths


# ---------------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class _Timeline:
    open_minute: np.ndarray  # [T] int64 minutes since the epoch (UTC) of each bar's open
    weight: np.ndarray  # [T] W_b: share of the day's seasonal diffusive variance in the bar
    minutes: np.ndarray  # [T] L_b: session minutes in the bar
    session_start: np.ndarray  # [T] bool: first bar of a session after a gap (equity)
    session_minutes: int


def _timeline(cfg: SyntheticBarsConfig) -> _Timeline:
    tf = cfg.timeframe_minutes
    start = int((cfg.start - _EPOCH).total_seconds()) // 60
    end = start + cfg.n_days * MINUTES_PER_DAY
    if cfg.session == "24h":
        open_m, close_m = 0, MINUTES_PER_DAY
        opens = np.arange(start, end, tf, dtype=np.int64)
    else:
        open_m = cfg.session_open.hour * 60 + cfg.session_open.minute
        close_m = cfg.session_close.hour * 60 + cfg.session_close.minute
        days = np.arange(start // MINUTES_PER_DAY, end // MINUTES_PER_DAY + 1, dtype=np.int64)
        days = days[(days + 3) % 7 < 5]  # 1970-01-01 was a Thursday: weekday 3 (Monday = 0)
        offsets = np.arange(open_m, close_m, tf, dtype=np.int64)
        opens = (days[:, None] * MINUTES_PER_DAY + offsets[None, :]).ravel()
        opens = opens[(opens >= start) & (opens < end)]
    if opens.size < 2:
        raise ValueError(
            f"n_days: {cfg.n_days} day(s) from {cfg.start.isoformat()} give {opens.size} "
            f"{cfg.timeframe} "
            f"bar(s) in the {cfg.session!r} session; at least 2 are needed"
        )
    session_minutes = close_m - open_m
    u = (np.arange(session_minutes) + 0.5) / session_minutes
    multiplier = 1.0 + cfg.seasonality_amplitude * (2.0 * u - 1.0) ** 2
    w_day = np.zeros(MINUTES_PER_DAY)
    w_day[open_m:close_m] = multiplier**2 / np.sum(multiplier**2)
    in_session = np.zeros(MINUTES_PER_DAY)
    in_session[open_m:close_m] = 1.0
    # Sums over [minute of day, + tf) with at most one wrap past midnight (tf <= 1 day).
    cum_w = np.concatenate([[0.0], np.cumsum(np.tile(w_day, 2))])
    cum_m = np.concatenate([[0.0], np.cumsum(np.tile(in_session, 2))])
    of_day = opens % MINUTES_PER_DAY
    weight = cum_w[of_day + tf] - cum_w[of_day]
    minutes = np.round(cum_m[of_day + tf] - cum_m[of_day])
    session_start = (
        (of_day == open_m) if cfg.session == "equity" else np.zeros(opens.size, dtype=bool)
    )
    session_start[0] = False
    return _Timeline(opens, weight, minutes, session_start, session_minutes)


def _unit_shocks(rng: np.random.Generator, df: float | None, size: tuple[int, ...]) -> np.ndarray:
    """Unit-variance Student-t(df) draws (standard normal when ``df`` is None), clipped."""
    if df is None:
        draws = rng.standard_normal(size)
    else:
        draws = rng.standard_t(df, size=size) * math.sqrt((df - 2.0) / df)
    return np.clip(draws, -_SHOCK_CLIP, _SHOCK_CLIP, out=draws)


def _common_factor_shocks(
    rng: np.random.Generator, df: float | None, correlation: float, size: tuple[int, int]
) -> np.ndarray:
    """``[T, N]`` unit-variance shocks with pairwise correlation ``correlation`` across columns."""
    factor = _unit_shocks(rng, df, (size[0], 1))
    own = _unit_shocks(rng, df, size)
    return math.sqrt(correlation) * factor + math.sqrt(1.0 - correlation) * own


def _garch_multiplier(z: np.ndarray, alpha: float, beta: float, cap: float) -> np.ndarray:
    """GARCH(1,1) variance multiplier ``h`` [T, N] for shocks ``z`` [T, N] (mean-1 target).

    ``h[t + 1] = min(omega + (alpha z[t]^2 + beta) h[t], cap)``, ``omega = 1 - alpha - beta``,
    ``h[0] = 1``; a linear recursion with a time-varying coefficient, looped over rows only.
    """
    omega = 1.0 - alpha - beta
    coef = alpha * z * z + beta
    h = np.empty_like(z)
    current = np.ones(z.shape[1])
    for t in range(z.shape[0]):
        h[t] = current
        current = np.minimum(omega + coef[t] * current, cap)
    return h


def _inject_warts(
    frame: pl.DataFrame, cfg: SyntheticBarsConfig, rng: np.random.Generator
) -> tuple[pl.DataFrame, int, int]:
    """Drop ``gap_fraction`` of the bars (never the first), then repeat ``duplicate_fraction``
    of the rows right after themselves. Returns (frame, bars dropped, rows duplicated)."""
    dropped = duplicated = 0
    if cfg.gap_fraction > 0 and frame.height > 1:
        dropped = min(round(cfg.gap_fraction * frame.height), frame.height - 1)
        drop = 1 + rng.choice(frame.height - 1, size=dropped, replace=False)
        keep = np.ones(frame.height, dtype=bool)
        keep[drop] = False
        frame = frame.filter(pl.Series(keep))
    if cfg.duplicate_fraction > 0 and frame.height > 0:
        duplicated = round(cfg.duplicate_fraction * frame.height)
        repeats = np.ones(frame.height, dtype=np.int64)
        repeats[rng.choice(frame.height, size=duplicated, replace=False)] = 2
        frame = frame[np.repeat(np.arange(frame.height), repeats)]
    return frame, dropped, duplicated


def _infer_timeframe(frames: Mapping[str, pl.DataFrame]) -> str:
    """The modal positive timestamp step (in whole minutes) over all frames, as a name."""
    steps = [
        frame["timestamp"].diff().dt.total_minutes().drop_nulls()
        for frame in frames.values()
        if frame.height > 1
    ]
    steps = [s.filter(s > 0) for s in steps]
    if not steps or sum(s.len() for s in steps) == 0:
        raise ValueError("bars_to_csv: cannot infer the timeframe from the frames; pass timeframe=")
    mode = pl.concat(steps).mode().sort()[0]
    return timeframe_name(int(mode))


def _require_int(value: object, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected a whole number >= {minimum}, got {value!r}")


def _require_real(
    value: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        bounds = " and ".join(b for b in (lo, hi) if b) or "finite"
        raise ValueError(f"{name}: expected a number {bounds}, got {value!r}")


def _require_df(value: object, name: str) -> None:
    if value is None:
        return
    _require_real(value, name, low=2.0, low_open=True)
