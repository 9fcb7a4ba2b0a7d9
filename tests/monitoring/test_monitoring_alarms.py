"""The alarm rules on synthetic markets (tests/monitoring/monitoring_cases.py): a flipped signal, a
feature whose scale changes, shifted scores, a shrunken universe, and a stable market that
must stay quiet; plus the rolling RankIC band against direct computations.

Reference for the market tests: 250 stable days x 500 stocks (``reference_500``), daily
RankIC about +0.107 with a day-to-day noise of about 0.045 (1 / sqrt(500)).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from kizashi.monitoring import MonitorSettings, rolling_rank_ic, run_monitor
from monitoring_cases import reference_500, reference_factory, stream_factory  # noqa: F401 (fixtures)

WINDOW = MonitorSettings().rank_ic_window  # 60 RankIC days


def _dates_of(alarms, kind, severity=None):
    return [a.date for a in alarms if a.kind == kind and (severity is None or a.severity == severity)]


def test_a_flipped_signal_raises_the_rank_ic_alarm_between_half_a_window_and_a_window_after_the_flip(
        stream_factory, reference_500):
    """Stated bound (kizashi.monitoring.rank_ic), W = 60: with the flip on day T (the first
    day whose realized returns are -signal), the window of day T + k holds k + 1 flipped days
    and its expected mean 0.107 (W - 2(k + 1)) / W is negative only once k + 1 > W/2; the rule
    "upper end of the band < 0" needs a negative mean, so no alarm before k = W/2 - 1 (one day
    of slack for noise). At k = W - 1 the window holds only flipped days: mean ~ -0.107,
    upper end ~ -0.107 + 1.96 * 0.045 / sqrt(60) ~ -0.096 < 0, so the alarm is raised by then.
    Hence W/2 - 1 <= k <= W - 1; expected k ~ W/2 + 1.96 sqrt(0.045² + 0.107²) sqrt(W) / 0.214 ~ 38."""
    flip = 250
    stream = stream_factory(400, 500, seed=2, flip_day=flip)
    horizon_lag = 5  # the last 5 signal days have no realized return yet
    realized = stream.realized.filter(pl.col("date") <= stream.dates[-1 - horizon_lag])
    result = run_monitor(reference_500, stream.signals, features=stream.features, realized=realized)
    dates = stream.dates

    first = result.first_alarm("rank_ic")
    assert first is not None, "the flipped signal raised no RankIC alarm"
    offset = dates.index(first) - flip
    assert WINDOW // 2 - 1 <= offset <= WINDOW - 1, f"RankIC alarm {offset} days after the flip"
    # on every RankIC day from then on, and never before the flip
    alarm_days = _dates_of(result.alarms, "rank_ic", "alarm")
    assert alarm_days == dates[flip + offset: len(dates) - horizon_lag]
    # the weaker "decay" warning (upper end < 0.5 x reference RankIC) comes after the flip,
    # no later than the alarm
    warned = result.first_warnings["rank_ic_decay"]
    assert dates[flip] < warned <= first
    # the flip changes no distribution: no drift or coverage record at all
    assert {a.kind for a in result.alarms} == {"rank_ic", "rank_ic_decay"}
    # the latest RankIC is dated by its signal date, horizon_lag days before the stream's end,
    # and the alarm is active on it
    assert result.last_evaluated["rank_ic"] == dates[-1 - horizon_lag]
    assert result.last_evaluated["score_psi"] == dates[-1]
    assert result.status() == "alarm"
    assert {a.kind for a in result.active_alarms()} == {"rank_ic", "rank_ic_decay"}
    # the daily table agrees with the alarm: the upper end crossed 0 on the first alarm day
    day = result.daily.filter(pl.col("date") == first).row(0, named=True)
    before = result.daily.filter(pl.col("date") == dates[dates.index(first) - 1]).row(0, named=True)
    assert day["rank_ic_upper"] < 0.0 <= before["rank_ic_upper"]


def test_a_feature_whose_scale_triples_raises_the_feature_alarm_from_its_first_day(
        stream_factory, reference_500):
    """beta -> 3 beta from day T (> min_days): its PSI is ~1.0 (decile PSI of N(0,1) vs
    N(0,9)), far above feature_psi_alarm 0.25, on every day from T, and never before T."""
    change = 60
    stream = stream_factory(120, 500, seed=3, beta_scale_day=change)
    result = run_monitor(reference_500, stream.signals, features=stream.features, realized=stream.realized)
    feature_alarms = [a for a in result.alarms if a.kind == "feature_psi"]
    assert {a.subject for a in feature_alarms} == {"beta"}
    assert {a.severity for a in feature_alarms} == {"alarm"}
    assert [a.date for a in feature_alarms] == stream.dates[change:]
    assert result.first_alarm("feature_psi") == stream.dates[change]
    assert all(0.7 < a.value < 1.4 for a in feature_alarms)
    # the other features, the scores and the RankIC did not move
    assert {a.kind for a in result.alarms} == {"feature_psi"}
    worst = result.daily["feature_psi_worst"].to_list()
    assert set(worst[change:]) == {"beta"}


def test_shifted_scores_raise_the_psi_and_ks_alarms_from_their_first_day(stream_factory, reference_500):
    """score -> score + 1 from day T: the scores' sd is sqrt(1.25), so the mean moves by 0.89 sd:
    KS D = 2 Phi(0.447) - 1 ~ 0.35 > 0.2 and PSI ~ 0.75 > 0.25. Ranks, hence RankIC, do not move."""
    change = 60
    stream = stream_factory(120, 500, seed=4, score_shift_day=change)
    result = run_monitor(reference_500, stream.signals, features=stream.features, realized=stream.realized)
    for kind in ("score_psi", "score_ks"):
        assert _dates_of(result.alarms, kind, "alarm") == stream.dates[change:], kind
        assert _dates_of(result.alarms, kind, "warn") == [], kind
    ks = result.daily["score_ks"].to_numpy()[change:]
    assert np.all((ks > 0.28) & (ks < 0.42))
    assert {a.kind for a in result.alarms} == {"score_psi", "score_ks"}


def test_no_alarm_before_min_days(stream_factory, reference_500):
    """A feature scaled from the stream's first day is first reported on day min_days - 1 (the
    min_days-th day), then on every day."""
    stream = stream_factory(30, 500, seed=5, beta_scale_day=0)
    settings = MonitorSettings(min_days=7)
    result = run_monitor(reference_500, stream.signals, features=stream.features, settings=settings)
    assert _dates_of(result.alarms, "feature_psi") == stream.dates[6:]
    # the statistic itself is computed from day 0
    assert result.feature_psi["beta"][0] > settings.feature_psi_alarm


def test_a_stable_market_raises_nothing_over_500_days(stream_factory, reference_500):
    stream = stream_factory(500, 500, seed=6)
    result = run_monitor(reference_500, stream.signals, features=stream.features, realized=stream.realized)
    assert result.alarms == [], [a.message for a in result.alarms[:5]]
    assert result.status() == "ok"
    daily = result.daily
    # every statistic was computed on every day (the silence is not a no-op)
    for column in ("score_psi", "score_ks", "feature_psi_max", "coverage", "rank_ic", "rank_ic_upper"):
        assert daily[column].null_count() == 0, column
    assert daily["rank_ic_n"].max() == WINDOW
    assert daily["coverage"].min() == daily["coverage"].max() == 1.0
    # the band stays well inside (0.5 x reference, +inf): the signal is alive all along
    assert daily["rank_ic_lower"][WINDOW:].min() > 0.05
    # with no drift the mean PSI is its sampling floor (B - 1)(1/N + 1/M) ~ 0.018
    assert daily["score_psi"].mean() == pytest.approx(result.sampling_floor["psi_expected"], rel=0.25)


def test_dropping_half_the_universe_raises_the_coverage_alarm(stream_factory, reference_factory):
    """1000 stocks, the second half missing from day T: coverage 0.5 < min_coverage 0.8 on
    every day from T. The 500 left are a random half, so no drift record appears."""
    reference = reference_factory(stream_factory(120, 1000, seed=7))
    drop = 100
    stream = stream_factory(150, 1000, seed=8, drop_half_day=drop)
    result = run_monitor(reference, stream.signals, features=stream.features, realized=stream.realized)
    assert _dates_of(result.alarms, "coverage", "alarm") == stream.dates[drop:]
    assert result.first_alarm("coverage") == stream.dates[drop]
    assert result.daily["coverage"].to_list() == [1.0] * drop + [0.5] * (150 - drop)
    assert {a.kind for a in result.alarms} == {"coverage"}
    assert result.status() == "alarm"


def test_rolling_band_matches_direct_window_computations():
    rng = np.random.default_rng(11)
    x = rng.normal(0.05, 0.03, 100)
    window, z = 20, 1.96
    out = rolling_rank_ic(x, window=window, z=z)
    assert math.isnan(out["rank_ic_sd"][0]) and out["rank_ic_mean"][0] == x[0]
    for j in (1, 5, 19, 20, 57, 99):
        w = x[max(0, j - window + 1): j + 1]
        se = np.std(w, ddof=1) / math.sqrt(w.size)
        assert out["rank_ic_n"][j] == w.size
        assert out["rank_ic_mean"][j] == pytest.approx(np.mean(w), abs=1e-15)
        assert out["rank_ic_sd"][j] == pytest.approx(np.std(w, ddof=1), rel=1e-12)
        assert out["rank_ic_lower"][j] == pytest.approx(np.mean(w) - z * se, rel=1e-12)
        assert out["rank_ic_upper"][j] == pytest.approx(np.mean(w) + z * se, rel=1e-12)


def test_newey_west_band_matches_a_hand_loop_and_widens_for_overlapping_returns():
    rng = np.random.default_rng(12)
    # daily RankIC of 5-day returns: a moving sum of 5 daily shocks (MA(4), overlapping)
    shocks = rng.standard_normal(404)
    x = 0.02 * np.convolve(shocks, np.ones(5), mode="valid") + 0.05
    window, lags = 60, 4
    out = rolling_rank_ic(x, window=window, z=1.96, nw_lags=lags)
    for j in (10, 59, 200, 399):
        w = x[max(0, j - window + 1): j + 1]
        n, m = w.size, w.mean()
        gamma = [sum((w[t] - m) * (w[t - k] - m) for t in range(k, n)) / n for k in range(lags + 1)]
        long_run = n / (n - 1) * (gamma[0] + 2 * sum((1 - k / (lags + 1)) * gamma[k] for k in range(1, lags + 1)))
        assert out["rank_ic_se"][j] == pytest.approx(math.sqrt(long_run / n), rel=1e-10)
    iid = rolling_rank_ic(x, window=window, z=1.96, nw_lags=0)
    # positively autocorrelated values: the i.i.d. standard error is too small by ~sqrt(5)
    ratio = np.median(out["rank_ic_se"][window:] / iid["rank_ic_se"][window:])
    assert 1.6 < ratio < 2.6
