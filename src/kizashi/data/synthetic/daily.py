"""A deterministic synthetic daily equity market with a planted, learnable signal.

The synthetic market is kizashi's embedded default data set: tests and demos run on it, and
because the expected part of every next-day return is known (the ``oracle_*`` columns), a
test can demand that a model recovers a stated share of the oracle's IC.

Model
-----
Trading calendar: weekdays from ``start_date`` (the first weekday on or after it is always a
trading day) minus random market-wide holidays (~8 a year); ``n_days`` trading days.

Daily adjusted log close-to-close return of stock ``i`` on day ``t``::

    r[i, t] = mu[i, t] + drift
              + beta_m[i] * f_market[t]
              + beta_s[i] * f_sector[sector(i), t]
              + beta_p[i] * f_peer[peer(i), t]
              + e[i, t]

* ``f_market``, ``f_sector``, ``f_peer``: factor returns, each a GARCH(1,1) process driven by
  Student-t shocks (df = 4, scaled to unit variance, clipped at +-10 sd); hidden peer groups
  (``n_peer_groups`` clusters) are drawn independently of sectors, so they cut across them.
* ``e``: idiosyncratic return, a GARCH(1,1) per stock (own persistence and level, median
  ~1.3 %/day) with Student-t shocks, scaled up and down with the market's volatility regime.
* Each stock has its own betas; total daily volatility is ~1.4-2.5 % (median ~1.8 %).
* ``mu[i, t] = oracle_return_1d[i, t - 1]``: the planted signal, known at the close of
  ``t - 1``, is the sum of three components (each stored in its own column)::

    oracle_own    = -own_weight * S_i * tanh(idio5[i, t] / S_i)
                    short-term reversal of the stock's idiosyncratic 5-day return
                    ``idio5`` (sum of ``e`` over days t-4..t); ``S_i`` = 1.5 x the
                    stock's typical 5-day idiosyncratic move, so large moves revert less
                    than proportionally (a mild nonlinearity).
    oracle_sector = sector_weight * (L @ sector_excess[:, t])[sector(i)]
                    sector lead-lag: ``sector_excess`` is each sector's equal-weight mean
                    realized return on day t minus the market's; ``L`` mixes a sector's own
                    return (momentum) with that of one "leader" sector.
    oracle_peer   = peer_weight * mean_{j in peer(i), j != i} (beta_p[j] f_peer[t] + e[j, t])
                    correlated-peer lead-lag: the hidden peer group's mean
                    peer/idiosyncratic return today predicts the stock's return tomorrow.

  All three weights are multiplied by ``signal_strength``. With the defaults the mean daily
  cross-sectional Spearman correlation between ``oracle_return_1d`` at ``t`` and the
  realized close-to-close return from ``t`` to ``t + 1`` is ~0.11, and own + sector carry
  about two thirds of the signal's cross-sectional variance.

Prices: ``open = previous close x exp(overnight gap)`` (the gap takes ~30 % of the day's
return plus noise), ``high``/``low`` extend ``max``/``min(open, close)`` by an exponential wick
scaled to the day's volatility. Initial prices are log-uniform in [30, 2000].

Volume: lognormal around a per-stock size level, rising with ``|r| / vol`` and with the
volatility regime, plus a persistent AR(1) component; ``turnover_value`` = raw volume x the
day's typical raw price (O+H+L+C)/4.

Listings: ``late_listing_fraction`` of stocks start on a random later day (no rows before),
a few (``delisting_fraction``) stop before the end. Splits happen with
``split_probability`` per stock-year (ratios 2, 3, 4, 5, 10 for 1), J-Quants convention:
on the ex-date raw prices drop by the ratio, raw volume rises by it, and
``adjustment_factor`` = 1 / ratio (1.0 on all other days). Adjusted price =
raw / cumprod(adjustment_factor) up to and including the day; adjusted returns are the
continuous ``r`` above.

Margin balances (weekly, when ``with_margin``): one row per listed stock per week, ``date``
= the week's last trading day (record date), ``published_date`` = two trading days later
(weeks published after the last trading day are left out); long and short volumes follow a
persistent log-AR(1) around a multiple of the stock's typical volume, long balances rise
after falls, short balances after rises, both with heavy-volume weeks; raw shares (they
scale with splits like volume).

Everything is vectorized over stocks (loops run over days or weeks only) and deterministic
given ``seed``: each part of the model draws from its own child of one ``SeedSequence``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from kizashi.config import SyntheticMarketConfig, config_from_dict
from kizashi.data.schema import CODE, DATE, ORACLE_PREFIX, PUBLISHED_DATE, SECTOR

logger = logging.getLogger(__name__)

TRADING_DAYS_PER_YEAR = 245
ORACLE_COLUMNS = (
    f"{ORACLE_PREFIX}return_1d",
    f"{ORACLE_PREFIX}own",
    f"{ORACLE_PREFIX}sector",
    f"{ORACLE_PREFIX}peer",
)
QUOTE_COLUMNS = (
    CODE,
    DATE,
    "open",
    "high",
    "low",
    "close",
    "volume",
    "turnover_value",
    "adjustment_factor",
    *ORACLE_COLUMNS,
)
_SPLIT_RATIOS = np.array([2.0, 3.0, 4.0, 5.0, 10.0])
_SPLIT_RATIO_PROBS = np.array([0.55, 0.1, 0.1, 0.15, 0.1])
_SHOCK_CLIP = 10.0  # standardized shocks are clipped at +-10 sd (a daily price limit)
_VARIANCE_CAP = 16.0  # GARCH variance capped at 16x its unconditional level (4x the vol)


@dataclass(frozen=True)
class SyntheticModelParams:
    """Knobs of the return model that are not in :class:`SyntheticMarketConfig`.

    Volatilities are daily, in log-return units. The ``*_weight`` fields are the
    coefficients of the planted signal's components (multiplied by ``signal_strength``).
    """

    market_vol: float = 0.010
    sector_vol: float = 0.006
    peer_vol: float = 0.010
    idio_vol: float = 0.013  # median across stocks
    market_drift: float = 0.0002
    tail_df: float = 4.0
    own_weight: float = 0.060  # reversal of the idiosyncratic 5-day return
    sector_weight: float = 0.25  # lead-lag coefficient on the sector excess return
    peer_weight: float = 0.10  # lead-lag coefficient on the peer-group mean return
    sector_self_share: float = 0.5  # share of a sector's own return in its lead-lag predictor
    gap_share: float = 0.3  # share of the day's return realized overnight
    delisting_fraction: float = 0.02
    holidays_per_year: float = 8.0
    n_sector_groups: int | None = None  # sector_2 groups; default ceil(n_sectors / 3)


@dataclass
class SyntheticMarket:
    """One synthetic market.

    quotes: ``code`` (Utf8), ``date`` (Date), raw ``open``/``high``/``low``/``close``,
        ``volume`` (raw shares), ``turnover_value``, ``adjustment_factor`` (J-Quants
        convention), and the planted signal: ``oracle_return_1d`` (expected adjusted log
        return from this close to the next, = the sum of) ``oracle_own``, ``oracle_sector``,
        ``oracle_peer`` (all Float64). Sorted by (code, date); one row per listed stock-day.
    sectors: ``code``, ``sector`` (``Sector_A``...), ``sector_2`` (``SectorGroup_A``...: a
        coarser level, consecutive sectors grouped).
    margin: weekly ``code``, ``date`` (record date), ``published_date``,
        ``long_margin_volume``, ``short_margin_volume``; ``None`` when ``with_margin`` is off.
    peer_groups: ``code``, ``peer_group`` (Int32) — the hidden clusters, for tests only.
    config, params: what generated it.
    """

    quotes: pl.DataFrame
    sectors: pl.DataFrame
    margin: pl.DataFrame | None
    peer_groups: pl.DataFrame
    config: SyntheticMarketConfig = dataclasses.field(default_factory=SyntheticMarketConfig)
    params: SyntheticModelParams = dataclasses.field(default_factory=SyntheticModelParams)

    def copy(self) -> SyntheticMarket:
        """Shallow copy with cloned frames (cheap: Polars shares the buffers)."""
        return SyntheticMarket(
            quotes=self.quotes.clone(),
            sectors=self.sectors.clone(),
            margin=None if self.margin is None else self.margin.clone(),
            peer_groups=self.peer_groups.clone(),
            config=self.config,
            params=self.params,
        )


def generate_market(
    config: SyntheticMarketConfig | None = None, **overrides: Any
) -> SyntheticMarket:
    """Generate a synthetic market (see the module docstring for the model).

    ``overrides`` may name fields of :class:`SyntheticMarketConfig` (``n_stocks=50``) or of
    :class:`SyntheticModelParams` (``own_weight=0.0``); anything else is a ``TypeError``.
    Config overrides are validated like a config file (``ConfigError`` on bad values).
    """
    started = time.perf_counter()
    config = config or SyntheticMarketConfig()
    config_fields = set(SyntheticMarketConfig.model_fields)
    param_fields = {f.name for f in dataclasses.fields(SyntheticModelParams)}
    unknown = sorted(set(overrides) - config_fields - param_fields)
    if unknown:
        raise TypeError(
            f"generate_market() got unknown keyword(s) {unknown}; allowed: "
            f"{sorted(config_fields | param_fields)}"
        )
    config_overrides = {k: v for k, v in overrides.items() if k in config_fields}
    if config_overrides:
        config = config_from_dict(
            SyntheticMarketConfig,
            {**config.model_dump(), **config_overrides},
            source="generate_market(overrides)",
        )
    params = SyntheticModelParams(**{k: v for k, v in overrides.items() if k in param_fields})
    market = _Generator(config, params).run()
    n_splits = int((market.quotes["adjustment_factor"] != 1.0).sum())
    n_codes = market.quotes[CODE].n_unique()
    logger.info(
        "synthetic market: %d stocks x %d days -> %d quote rows, %d sectors, %d peer groups, "
        "%d splits, %d margin rows, seed %d (%.2fs)",
        n_codes,
        config.n_days,
        market.quotes.height,
        config.n_sectors,
        market.peer_groups["peer_group"].n_unique(),
        n_splits,
        0 if market.margin is None else market.margin.height,
        config.seed,
        time.perf_counter() - started,
    )
    return market


def default_market() -> SyntheticMarket:
    """The embedded default data set: ``generate_market(SyntheticMarketConfig())``.

    Generated once per process and cached; each call returns a copy with cloned frames.
    """
    return _cached_default_market().copy()


@functools.cache
def _cached_default_market() -> SyntheticMarket:
    return generate_market(SyntheticMarketConfig())


def generate_trading_days(
    start_date: dt.date, n_days: int, rng: np.random.Generator, holidays_per_year: float = 8.0
) -> np.ndarray:
    """``n_days`` trading days (``datetime64[D]``): weekdays from ``start_date`` minus random
    market-wide holidays. The first weekday on or after ``start_date`` is always kept."""
    first = np.busday_offset(np.datetime64(start_date, "D"), 0, roll="forward")
    p_holiday = min(max(holidays_per_year, 0.0) / 261.0, 0.5)
    n_candidates = int(n_days / (1.0 - p_holiday)) + 64
    while True:
        weekdays = np.busday_offset(first, np.arange(n_candidates), roll="forward")
        keep = rng.random(n_candidates) >= p_holiday
        keep[0] = True
        if keep.sum() >= n_days:
            return weekdays[keep][:n_days]
        n_candidates *= 2


def _letters(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA, ..."""
    name = ""
    index += 1
    while index > 0:
        index, rem = divmod(index - 1, 26)
        name = chr(ord("A") + rem) + name
    return name


def _student_t(rng: np.random.Generator, df: float, size: tuple[int, ...]) -> np.ndarray:
    """Student-t draws scaled to unit variance, clipped at +-_SHOCK_CLIP."""
    draws = rng.standard_t(df, size=size)
    if df > 2:
        draws *= math.sqrt((df - 2.0) / df)
    return np.clip(draws, -_SHOCK_CLIP, _SHOCK_CLIP, out=draws)


def _garch(
    shocks: np.ndarray, vol: np.ndarray, alpha: np.ndarray, beta: np.ndarray, h0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """GARCH(1,1) paths, vectorized over columns.

    shocks: [T, M] unit-variance innovations; vol, alpha, beta, h0: [M] unconditional vol,
    ARCH and GARCH coefficients, initial variance. Returns (returns [T, M], sigma [T, M]).
    """
    var_bar = vol * vol
    omega = var_bar * (1.0 - alpha - beta)
    cap = _VARIANCE_CAP * var_bar
    out = np.empty_like(shocks)
    sigma = np.empty_like(shocks)
    h = h0.copy()
    for t in range(shocks.shape[0]):
        s = np.sqrt(h)
        sigma[t] = s
        e = s * shocks[t]
        out[t] = e
        h = np.minimum(omega + alpha * e * e + beta * h, cap)
    return out, sigma


def _ar1(innovations: np.ndarray, phi: float) -> np.ndarray:
    """x[t] = phi * x[t-1] + innovations[t] along axis 0, started from the stationary scale."""
    out = np.empty_like(innovations)
    x = innovations[0] / math.sqrt(max(1.0 - phi * phi, 1e-6))
    out[0] = x
    for t in range(1, innovations.shape[0]):
        x = phi * x + innovations[t]
        out[t] = x
    return out


class _Generator:
    """Builds one market; arrays are time-major ``[T, N]`` until the frames are assembled."""

    def __init__(self, config: SyntheticMarketConfig, params: SyntheticModelParams) -> None:
        self.cfg = config
        self.p = params
        children = np.random.SeedSequence(config.seed).spawn(10)
        names = (
            "calendar",
            "universe",
            "factors",
            "idio",
            "listing",
            "splits",
            "prices",
            "volume",
            "margin",
            "signal",
        )
        self.rng = {name: np.random.default_rng(seq) for name, seq in zip(names, children)}

    # ------------------------------------------------------------------ structure
    def run(self) -> SyntheticMarket:
        cfg, p = self.cfg, self.p
        T = cfg.n_days
        self.dates = generate_trading_days(cfg.start_date, T, self.rng["calendar"], p.holidays_per_year)
        self._universe()
        self._listings()
        listed = self.listed  # [T, N] bool
        has_return = listed.copy()
        has_return[1:] &= listed[:-1]
        has_return[0] = False
        self.has_return = has_return
        self._returns()
        self._splits()
        self._prices_and_volume()
        quotes = self._quotes_frame()
        margin = self._margin_frame() if cfg.with_margin else None
        return SyntheticMarket(
            quotes=quotes,
            sectors=self._sectors_frame(),
            margin=margin,
            peer_groups=pl.DataFrame(
                {CODE: self.codes, "peer_group": self.peer.astype(np.int32)},
                schema={CODE: pl.Utf8, "peer_group": pl.Int32},
            ),
            config=cfg,
            params=p,
        )

    def _universe(self) -> None:
        cfg, rng = self.cfg, self.rng["universe"]
        N, K = cfg.n_stocks, cfg.n_sectors
        G = min(cfg.n_peer_groups, N)
        width = max(4, len(str(N)))
        self.codes = [f"S{i + 1:0{width}d}" for i in range(N)]
        # Uneven sector sizes; every sector gets a stock when there are enough stocks.
        shares = rng.dirichlet(np.full(K, 3.0))
        if N >= K:
            sector = np.concatenate([np.arange(K), rng.choice(K, size=N - K, p=shares)])
        else:
            sector = rng.choice(K, size=N, replace=False)
        self.sector = rng.permutation(sector)
        # Peer groups of near-equal size, drawn independently of sectors.
        self.peer = rng.permutation(np.arange(N) % G)
        self.n_peer_groups = G
        n_groups = self.p.n_sector_groups or max(1, math.ceil(K / 3))
        self.sector_group = (np.arange(K) * min(n_groups, K)) // K
        # Per-stock parameters.
        self.beta_m = np.clip(rng.normal(1.0, 0.25, N), 0.3, 1.8)
        self.beta_s = rng.uniform(0.6, 1.4, N)
        self.beta_p = rng.uniform(0.7, 1.3, N)
        self.idio_vol = np.clip(self.p.idio_vol * np.exp(rng.normal(0.0, 0.3, N)), 0.006, 0.035)
        persistence = rng.uniform(0.95, 0.985, N)
        self.idio_alpha = rng.uniform(0.04, 0.10, N)
        self.idio_beta = persistence - self.idio_alpha
        self.log_price0 = rng.uniform(math.log(30.0), math.log(2000.0), N)
        log_turnover = rng.normal(math.log(3e8), 1.2, N)
        self.log_volume_level = log_turnover - self.log_price0
        # Sector lead-lag: each sector's predictor mixes its own return with a leader's.
        lead_lag = np.eye(K) * (self.p.sector_self_share if K > 1 else 1.0)
        if K > 1:
            leader = (np.arange(K) + rng.integers(1, K, size=K)) % K
            lead_lag[np.arange(K), leader] += 1.0 - self.p.sector_self_share
        self.lead_lag = lead_lag

    def _listings(self) -> None:
        cfg, rng = self.cfg, self.rng["listing"]
        T, N = cfg.n_days, cfg.n_stocks
        first = np.zeros(N, dtype=np.int64)
        last = np.full(N, T - 1, dtype=np.int64)
        n_late = int(round(cfg.late_listing_fraction * N))
        if n_late:
            hi = max(2, min(int(0.8 * T), T - 20))
            late = rng.choice(N, size=n_late, replace=False)
            first[late] = rng.integers(1, hi, size=n_late)
        n_delist = int(round(self.p.delisting_fraction * N))
        if n_delist:
            who = rng.choice(N, size=n_delist, replace=False)
            lo = first[who] + 60
            ok = lo < T - 20
            who, lo = who[ok], lo[ok]
            last[who] = lo + (rng.random(who.size) * (T - 20 - lo)).astype(np.int64)
        self.first_day, self.last_day = first, last
        t = np.arange(T)[:, None]
        self.listed = (t >= first[None, :]) & (t <= last[None, :])

    # ------------------------------------------------------------------ returns + signal
    def _returns(self) -> None:
        cfg, p = self.cfg, self.p
        T, N, K, G = cfg.n_days, cfg.n_stocks, cfg.n_sectors, self.n_peer_groups
        rng_f, rng_i = self.rng["factors"], self.rng["idio"]

        # Factors: market, K sectors, G peer groups; each a GARCH(1,1) with t shocks.
        n_f = 1 + K + G
        vol = np.concatenate([[p.market_vol], np.full(K, p.sector_vol), np.full(G, p.peer_vol)])
        alpha = np.concatenate([[0.08], np.full(K, 0.06), np.full(G, 0.05)])
        beta = np.concatenate([[0.90], np.full(K, 0.92), np.full(G, 0.93)])
        h0 = vol**2 * np.exp(rng_f.normal(0.0, 0.3, n_f))
        factors, factor_sigma = _garch(_student_t(rng_f, p.tail_df, (T, n_f)), vol, alpha, beta, h0)
        f_market, f_sector, f_peer = factors[:, 0], factors[:, 1 : 1 + K], factors[:, 1 + K :]
        # Idiosyncratic returns: GARCH per stock, scaled with the market's vol regime.
        h0 = self.idio_vol**2 * np.exp(rng_i.normal(0.0, 0.3, N))
        idio, idio_sigma = _garch(
            _student_t(rng_i, p.tail_df, (T, N)), self.idio_vol, self.idio_alpha, self.idio_beta, h0
        )
        regime = np.sqrt(factor_sigma[:, :1] / p.market_vol)  # [T, 1]
        idio *= regime
        idio_sigma *= regime

        sector_part = f_sector[:, self.sector] * self.beta_s  # [T, N]
        peer_part = f_peer[:, self.peer] * self.beta_p
        market_part = p.market_drift + f_market[:, None] * self.beta_m
        exogenous = market_part + sector_part + peer_part + idio
        self.sigma = np.sqrt(
            (factor_sigma[:, :1] * self.beta_m) ** 2
            + (factor_sigma[:, 1 + self.sector] * self.beta_s) ** 2
            + (factor_sigma[:, 1 + K + self.peer] * self.beta_p) ** 2
            + idio_sigma**2
        )
        del sector_part

        m = self.has_return.astype(np.float64)
        strength = cfg.signal_strength
        # Own history: reversal of the idiosyncratic 5-day return, saturating (tanh).
        idio_seen = idio * m
        csum = np.cumsum(idio_seen, axis=0)
        idio5 = csum.copy()
        idio5[5:] -= csum[:-5]
        saturation = 1.5 * math.sqrt(5.0) * self.idio_vol
        oracle_own = -(strength * p.own_weight) * saturation * np.tanh(idio5 / saturation)
        oracle_own += 0.0  # no negative zeros
        del csum, idio5
        # Correlated peers: leave-one-out mean peer/idio return of the hidden peer group.
        peer_x = (peer_part + idio) * m
        onehot = np.zeros((N, G))
        onehot[np.arange(N), self.peer] = 1.0
        group_sum = peer_x @ onehot  # [T, G]
        group_n = m @ onehot
        numerator = group_sum[:, self.peer] - peer_x
        denominator = group_n[:, self.peer] - m
        oracle_peer = np.divide(
            numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0.5
        )
        oracle_peer *= strength * p.peer_weight
        del peer_x, numerator, denominator, peer_part

        # Sector lead-lag needs realized returns, which carry yesterday's oracle: day loop.
        returns = np.empty((T, N))
        oracle_sector = np.zeros((T, N))
        oracle = oracle_own + oracle_peer
        mu = np.zeros(N)
        coef = strength * p.sector_weight
        for t in range(T):
            r_t = mu + exogenous[t]
            returns[t] = r_t
            m_t = m[t]
            n_t = m_t.sum()
            if n_t > 0 and K > 1 and coef != 0.0:
                counts = np.bincount(self.sector, weights=m_t, minlength=K)
                sums = np.bincount(self.sector, weights=r_t * m_t, minlength=K)
                means = np.divide(sums, counts, out=np.zeros(K), where=counts > 0)
                excess = np.where(counts > 0, means - sums.sum() / n_t, 0.0)
                oracle_sector[t] = coef * (self.lead_lag @ excess)[self.sector]
                oracle[t] += oracle_sector[t]
            mu = oracle[t]
        self.returns = returns
        self.idio = idio
        self.oracle = oracle
        self.oracle_own = oracle_own
        self.oracle_sector = oracle_sector
        self.oracle_peer = oracle_peer

    # ------------------------------------------------------------------ splits, prices, volume
    def _splits(self) -> None:
        cfg, rng = self.cfg, self.rng["splits"]
        T, N = cfg.n_days, cfg.n_stocks
        p_day = cfg.split_probability / TRADING_DAYS_PER_YEAR
        factor = np.ones((T, N))
        if p_day > 0:
            events = (rng.random((T, N)) < p_day) & self.has_return
            ratios = rng.choice(_SPLIT_RATIOS, size=int(events.sum()), p=_SPLIT_RATIO_PROBS)
            factor[events] = 1.0 / ratios
        self.adjustment_factor = factor
        self.cum_factor = np.cumprod(factor, axis=0)

    def _prices_and_volume(self) -> None:
        p = self.p
        rng = self.rng["prices"]
        T, N = self.returns.shape
        step = np.where(self.has_return, self.returns, 0.0)
        log_close = self.log_price0 + np.cumsum(step, axis=0)
        del step
        gap = p.gap_share * self.returns + rng.normal(0.0, 1.0, (T, N)) * (0.3 * self.sigma)
        log_open = log_close - (self.returns - gap)  # = previous close + gap while listed
        del gap
        wick = 0.5 * self.sigma
        log_high = np.maximum(log_open, log_close) + rng.exponential(1.0, (T, N)) * wick
        log_low = np.minimum(log_open, log_close) - rng.exponential(1.0, (T, N)) * wick
        del wick
        cf = self.cum_factor
        self.open = np.exp(log_open) * cf
        self.close = np.exp(log_close) * cf
        self.high = np.exp(log_high) * cf
        self.low = np.exp(log_low) * cf
        del log_open, log_high, log_low
        # Volume (adjusted shares): size level + |return| + vol regime + persistent AR(1).
        rng_v = self.rng["volume"]
        vol_bar = np.sqrt(
            self.beta_m**2 * p.market_vol**2
            + self.beta_s**2 * p.sector_vol**2
            + self.beta_p**2 * p.peer_vol**2
            + self.idio_vol**2
        )
        persistent = _ar1(rng_v.normal(0.0, 0.2, (T, N)), 0.8)
        surprise = np.abs(self.returns) / vol_bar
        log_volume = (
            self.log_volume_level
            + 0.35 * (surprise - 0.8)
            + 0.5 * np.log(self.sigma / vol_bar)
            + persistent
            + rng_v.normal(0.0, 0.25, (T, N))
        )
        self.volume_shock = log_volume - self.log_volume_level  # for margin balances
        self.volume = np.maximum(np.round(np.exp(log_volume) / cf), 100.0)
        typical = (self.open + self.high + self.low + self.close) / 4.0
        self.turnover = self.volume * typical
        self.log_close = log_close

    # ------------------------------------------------------------------ frames
    def _stock_major(self, arr: np.ndarray) -> np.ndarray:
        return arr.T[self.listed.T]

    def _quotes_frame(self) -> pl.DataFrame:
        counts = self.listed.sum(axis=0)
        code_index = np.repeat(np.arange(len(self.codes), dtype=np.uint32), counts)
        t_index = np.broadcast_to(np.arange(self.cfg.n_days), self.listed.T.shape)[self.listed.T]
        columns: dict[str, Any] = {
            CODE: pl.Series(CODE, self.codes, dtype=pl.Utf8).gather(code_index),
            DATE: pl.Series(DATE, self.dates[t_index]).cast(pl.Date),
        }
        arrays = {
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "turnover_value": self.turnover,
            "adjustment_factor": self.adjustment_factor,
            ORACLE_COLUMNS[0]: self.oracle,
            ORACLE_COLUMNS[1]: self.oracle_own,
            ORACLE_COLUMNS[2]: self.oracle_sector,
            ORACLE_COLUMNS[3]: self.oracle_peer,
        }
        for name, arr in arrays.items():
            columns[name] = pl.Series(name, self._stock_major(arr), dtype=pl.Float64)
        return pl.DataFrame(columns).select(QUOTE_COLUMNS)

    def _sectors_frame(self) -> pl.DataFrame:
        names = np.array([f"Sector_{_letters(k)}" for k in range(self.cfg.n_sectors)])
        groups = np.array([f"SectorGroup_{_letters(g)}" for g in self.sector_group])
        return pl.DataFrame(
            {
                CODE: self.codes,
                SECTOR: names[self.sector].tolist(),
                "sector_2": groups[self.sector].tolist(),
            },
            schema={CODE: pl.Utf8, SECTOR: pl.Utf8, "sector_2": pl.Utf8},
        )

    def _margin_frame(self) -> pl.DataFrame:
        rng = self.rng["margin"]
        T, N = self.returns.shape
        week = (self.dates - np.datetime64("1970-01-05", "D")).astype(np.int64) // 7
        week_start = np.flatnonzero(np.r_[True, week[1:] != week[:-1]])
        week_end = np.r_[week_start[1:] - 1, T - 1]
        W = week_start.size
        step = np.where(self.has_return, self.returns, 0.0)
        week_return = np.add.reduceat(step, week_start, axis=0)  # [W, N]
        n_in_week = np.diff(np.r_[week_start, T])[:, None]
        week_volume = np.add.reduceat(self.volume_shock, week_start, axis=0) / n_in_week
        del step
        # log balance deviation: persistent AR(1); longs rise after falls, shorts after rises.
        phi = 0.9
        long_dev = _ar1(
            -1.5 * week_return + 0.15 * week_volume + rng.normal(0.0, 0.08, (W, N)), phi
        )
        short_dev = _ar1(
            1.5 * week_return + 0.25 * week_volume + rng.normal(0.0, 0.12, (W, N)), phi
        )
        long_level = self.log_volume_level + rng.normal(math.log(4.0), 0.5, N)
        short_level = self.log_volume_level + rng.normal(math.log(1.2), 0.6, N)
        cf = self.cum_factor[week_end]
        long_volume = np.maximum(np.round(np.exp(long_level + long_dev) / cf, -2), 100.0)
        short_volume = np.maximum(np.round(np.exp(short_level + short_dev) / cf, -2), 100.0)
        published = week_end + 2
        keep_week = published < T
        rows = self.listed[week_end] & keep_week[:, None]  # [W, N]
        rows_sm = rows.T
        code_index = np.repeat(np.arange(N, dtype=np.uint32), rows_sm.sum(axis=1))
        w_index = np.broadcast_to(np.arange(W), rows_sm.shape)[rows_sm]
        return pl.DataFrame(
            {
                CODE: pl.Series(CODE, self.codes, dtype=pl.Utf8).gather(code_index),
                DATE: pl.Series(DATE, self.dates[week_end[w_index]]).cast(pl.Date),
                PUBLISHED_DATE: pl.Series(
                    PUBLISHED_DATE, self.dates[np.minimum(published, T - 1)[w_index]]
                ).cast(pl.Date),
                "long_margin_volume": pl.Series(long_volume.T[rows_sm], dtype=pl.Float64),
                "short_margin_volume": pl.Series(short_volume.T[rows_sm], dtype=pl.Float64),
            }
        )
