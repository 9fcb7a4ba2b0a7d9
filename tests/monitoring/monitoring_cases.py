"""A synthetic market for the monitor's tests: a planted signal, scores, features and
realized returns, generated with numpy (fast, deterministic).

Per day ``t`` and stock ``i``: signal ``s ~ N(0, 1)``; score ``= s + 0.5 · e`` (``e ~ N(0, 1)``);
features ``alpha = s``, ``beta ~ N(0, 1)``, ``gamma ~ N(0, 1)``; realized return
``= sign_t · 0.12 · s + u`` (``u ~ N(0, 1)``), so the daily RankIC is about ``sign_t · 0.107``
with a day-to-day noise of about ``1 / sqrt(n_stocks)``. Days are numbered from 0; the
perturbations start on day ``T`` of their argument (``flip_day``: ``sign_t = −1`` from ``T``;
``beta_scale_day``: ``beta → 3 · beta``; ``score_shift_day``: ``score → score + 1``;
``drop_half_day``: only the first half of the codes from ``T``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest

FEATURES = ("alpha", "beta", "gamma")
SIGNAL_SLOPE = 0.12
SCORE_NOISE = 0.5


@dataclass
class Stream:
    signals: pl.DataFrame   # date, code, score
    features: pl.DataFrame  # date, code, alpha, beta, gamma
    realized: pl.DataFrame  # date, code, realized
    dates: list[dt.date]


def make_stream(n_days: int, n_stocks: int, seed: int, *, start: dt.date = dt.date(2024, 1, 1),
                flip_day: int | None = None, beta_scale_day: int | None = None,
                score_shift_day: int | None = None, drop_half_day: int | None = None) -> Stream:
    rng = np.random.default_rng(seed)
    shape = (n_days, n_stocks)
    signal = rng.standard_normal(shape)
    score = signal + SCORE_NOISE * rng.standard_normal(shape)
    beta = rng.standard_normal(shape)
    gamma = rng.standard_normal(shape)
    sign = np.ones((n_days, 1))
    if flip_day is not None:
        sign[flip_day:] = -1.0
    realized = sign * SIGNAL_SLOPE * signal + rng.standard_normal(shape)
    if beta_scale_day is not None:
        beta[beta_scale_day:] *= 3.0
    if score_shift_day is not None:
        score[score_shift_day:] += 1.0
    dates = [start + dt.timedelta(days=d) for d in range(n_days)]
    keep = np.ones(shape, dtype=bool)
    if drop_half_day is not None:
        keep[drop_half_day:, n_stocks // 2:] = False
    day_of, stock_of = np.nonzero(keep)
    base = pl.DataFrame({
        "date": pl.Series([dates[d] for d in range(n_days)])[day_of],
        "code": pl.Series([f"S{i:04d}" for i in range(n_stocks)])[stock_of],
    })
    return Stream(
        signals=base.with_columns(score=score[keep]),
        features=base.with_columns(alpha=signal[keep], beta=beta[keep], gamma=gamma[keep]),
        realized=base.with_columns(realized=realized[keep]),
        dates=dates,
    )


def reference_for(stream: Stream, **settings):
    """The monitor reference of ``stream`` (all three features watched), with the reference
    RankIC computed from its own realized returns."""
    from kizashi.evaluation.metrics import daily_ic
    from kizashi.monitoring import MonitorSettings, build_reference

    joined = stream.signals.join(stream.realized, on=["date", "code"])
    rank_ic = daily_ic(joined, prediction="score", target="realized", by=("date",))["rank_ic"]
    return build_reference(stream.signals, features=stream.features, feature_names=FEATURES,
                           reference_rank_ic=rank_ic, settings=MonitorSettings(**settings))


@pytest.fixture(scope="session")
def reference_500():
    """Reference of a 250-day, 500-stock stable market (seed 1)."""
    return reference_for(make_stream(250, 500, seed=1))


@pytest.fixture(scope="session")
def stream_factory():
    """:func:`make_stream`, for tests (conftest modules are not imported by tests)."""
    return make_stream


@pytest.fixture(scope="session")
def reference_factory():
    """:func:`reference_for`."""
    return reference_for
