"""benchmarks/bench_tft_peer.py: the frame pytorch-forecasting's TFT reads (no peer needed).

Row ``(s, stock)`` carries the features of session ``s`` and, as label, the centred rank target
of session ``s - 1`` (the return from ``s - 1`` to ``s``); nothing after the frame's last
session reaches it, and the RankIC is the per-day Spearman correlation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_tft_peer", REPO / "benchmarks" / "bench_tft_peer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def fake_cache(seed: int = 0) -> SimpleNamespace:
    """T = 8 sessions, N = 3 stocks, F = 2 features, horizons (1, 5); stock 2 misses session
    4, stock 0's rank target of session 2 is unknown, one feature value is missing."""
    rng = np.random.default_rng(seed)
    t, n = 8, 3
    alive = np.ones((t, n), dtype=bool)
    alive[4, 2] = False
    features = rng.normal(size=(t, n, 2)).astype(np.float32)
    features[5, 1, 0] = np.nan
    ranks = rng.uniform(size=(t, n, 2)).astype(np.float32)
    ranks[2, 0, 0] = np.nan
    ranks[~alive] = np.nan
    targets = rng.normal(size=(t, n, 2)).astype(np.float32)
    return SimpleNamespace(horizons=[1, 5], alive=alive, features=features, target_ranks=ranks, targets=targets)


def test_rows_carry_the_features_of_s_and_the_target_of_s_minus_1(bench):
    cache = fake_cache()
    frame = bench.tft_frame(cache, first=4, last=6, window=2)
    expected = [(s, k) for s in range(2, 7) for k in range(3)
                if cache.alive[s, k] and np.isfinite(cache.target_ranks[s - 1, k, 0])]
    got = list(zip(frame["time_idx"].tolist(), frame["code"].astype(int).tolist(), strict=True))
    assert got == expected
    assert (3, 0) not in got  # its label (the target of session 2) is unknown
    assert (4, 2) not in got  # no row that session
    for i, (s, k) in enumerate(got):
        assert frame["label"].iloc[i] == pytest.approx(cache.target_ranks[s - 1, k, 0] - 0.5)
        want = np.where(np.isfinite(cache.features[s, k]), cache.features[s, k], 0.0)
        np.testing.assert_array_equal(frame[["f0", "f1"]].iloc[i].to_numpy(), want)


def test_nothing_after_the_last_session_reaches_the_frame(bench):
    cache = fake_cache()
    before = bench.tft_frame(cache, first=4, last=6, window=2)
    changed = fake_cache()
    changed.features[7:] += 100.0  # features after the last session
    changed.target_ranks[6:] = 0.123  # targets known only after the last session's close
    after = bench.tft_frame(changed, first=4, last=6, window=2)
    assert before.equals(after)
    changed.target_ranks[5, 0, 0] = 0.9  # the label of session 6: inside the frame
    assert not bench.tft_frame(changed, first=4, last=6, window=2).equals(before)


def test_daily_rank_ic_is_the_mean_per_day_spearman(bench):
    cache = fake_cache()
    rng = np.random.default_rng(1)
    t, n = 30, 12
    cache.targets = rng.normal(size=(t, n, 2)).astype(np.float32)
    day = np.repeat(np.arange(t), n)
    code = np.tile(np.arange(n), t)
    prediction = cache.targets[day, code, 0] + rng.normal(scale=2.0, size=t * n)
    frame = pl.DataFrame({"day": day, "code_index": code, "prediction": prediction})
    mean, icir, tstat, days = bench.daily_rank_ic(frame, cache)
    from scipy.stats import spearmanr

    per_day = np.array([spearmanr(prediction[day == d], cache.targets[d, :, 0]).statistic for d in range(t)])
    assert days == t
    assert mean == pytest.approx(per_day.mean(), abs=1e-12)
    assert icir == pytest.approx(per_day.mean() / per_day.std(ddof=1), abs=1e-9)
    assert tstat == pytest.approx(icir * np.sqrt(t), abs=1e-9)
