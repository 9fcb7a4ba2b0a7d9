"""PSI and KS against independent computations, the quantile sketch's error bound, the
reference's JSON round trip and the input checks."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import ks_2samp, norm

from kizashi.errors import KizashiError
from kizashi.monitoring import (
    MonitorReference,
    MonitorSettings,
    build_reference,
    daily_ks,
    daily_psi,
    ks_statistic,
    psi_of_samples,
    quantile_edges,
    run_monitor,
)
from kizashi.monitoring.drift import bin_shares, quantile_sketch
from kizashi.monitoring.reference import distribution_reference
from monitoring_cases import reference_factory, stream_factory  # noqa: F401 (fixtures)


def _psi_by_hand(reference: np.ndarray, sample: np.ndarray, n_bins: int, eps: float) -> float:
    """PSI with explicit bin membership tests (no searchsorted / bincount); edge ``k`` is the
    ``ceil(k n / B)``-th smallest reference value."""
    ordered = sorted(reference.tolist())
    edges = sorted({ordered[math.ceil(k * len(ordered) / n_bins) - 1] for k in range(1, n_bins)})
    bounds = [-math.inf, *edges, math.inf]
    total = 0.0
    for lo, hi in itertools.pairwise(bounds):
        q = max(float(np.mean((reference >= lo) & (reference < hi))), eps)
        p = max(float(np.mean((sample >= lo) & (sample < hi))), eps)
        total += (p - q) * math.log(p / q)
    return total


def test_psi_matches_a_hand_computation_on_a_small_case():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(400)
    sample = 1.3 * rng.standard_normal(150) + 0.2
    expected = _psi_by_hand(reference, sample, n_bins=10, eps=1e-4)
    assert psi_of_samples(reference, sample, n_bins=10) == pytest.approx(expected, rel=1e-12)
    # a sample with an empty bin (all values above the reference median) uses the floor
    high = np.abs(sample) + reference.max()
    assert psi_of_samples(reference, high, n_bins=5) == pytest.approx(
        _psi_by_hand(reference, high, n_bins=5, eps=1e-4), rel=1e-12)


def test_psi_of_a_tripled_scale_matches_the_normal_distribution():
    """N(0, 1) reference vs N(0, 9) sample on decile bins: the analytic PSI is ~1.0025."""
    rng = np.random.default_rng(1)
    reference = rng.standard_normal(400_000)
    sample = 3.0 * rng.standard_normal(400_000)
    true_edges = [-math.inf, *norm.ppf(np.arange(1, 10) / 10).tolist(), math.inf]
    analytic = 0.0
    for lo, hi in itertools.pairwise(true_edges):
        q = norm.cdf(hi) - norm.cdf(lo)  # 0.1
        p = norm.cdf(hi / 3.0) - norm.cdf(lo / 3.0)
        analytic += (p - q) * math.log(p / q)
    assert analytic == pytest.approx(1.0025, abs=0.01)
    assert psi_of_samples(reference, sample) == pytest.approx(analytic, abs=0.02)


def test_psi_of_the_same_distribution_is_near_its_sampling_floor():
    rng = np.random.default_rng(2)
    value = psi_of_samples(rng.standard_normal(100_000), rng.standard_normal(2_000))
    assert 0.0 <= value < 5 * 9 / 2_000  # E[PSI] ~ (B - 1) / N = 0.0045


@pytest.mark.parametrize("ties", [False, True])
def test_ks_statistic_matches_scipy(ties):
    rng = np.random.default_rng(3)
    reference = rng.standard_normal(300)
    sample = 0.8 * rng.standard_normal(120) + 0.3
    if ties:  # many equal values on both sides
        reference, sample = np.round(reference * 2) / 2, np.round(sample * 2) / 2
    expected = ks_2samp(reference, sample).statistic
    assert ks_statistic(np.sort(reference), sample) == pytest.approx(expected, abs=1e-12)


def test_daily_psi_and_ks_match_a_loop_over_days():
    rng = np.random.default_rng(4)
    reference = np.round(rng.standard_normal(500), 1)  # ties in the reference and the days
    ref = distribution_reference(reference, n_bins=8, max_values=10_000)
    sizes = [50, 0, 7, 1, 200]  # day 1 has no value, day 3 one value
    day = np.repeat(np.arange(len(sizes)), sizes)
    values = np.round(rng.standard_normal(day.size) * (1 + day / 3) + day / 5, 1)
    values[3] = np.nan  # a non-finite value is ignored
    psi_days = daily_psi(day, values, len(sizes), ref)
    ks_days = daily_ks(day, values, len(sizes), ref.value_array())
    for d, size in enumerate(sizes):
        x = values[day == d]
        x = x[np.isfinite(x)]
        if size == 0:
            assert math.isnan(psi_days[d]) and math.isnan(ks_days[d])
            continue
        assert psi_days[d] == pytest.approx(_psi_by_hand(reference, x, 8, 1e-4), rel=1e-12)
        assert ks_days[d] == pytest.approx(ks_2samp(reference, x).statistic, abs=1e-12)


def test_quantile_sketch_keeps_ks_within_half_a_step():
    rng = np.random.default_rng(5)
    reference = rng.standard_normal(50_000)
    sample = 1.1 * rng.standard_normal(3_000) + 0.05
    m = 256
    sketch = quantile_sketch(reference, m)
    assert sketch.size == m and np.all(np.diff(sketch) >= 0)
    full = ks_2samp(reference, sample).statistic
    assert abs(ks_statistic(sketch, sample) - full) <= 1 / (2 * m) + 1e-12


def test_quantile_edges_collapse_ties():
    reference = np.array([0.0] * 80 + [1.0] * 20)
    edges = quantile_edges(reference, n_bins=10)
    np.testing.assert_array_equal(edges, [0.0, 1.0])  # 3 bins: (-inf, 0), [0, 1), [1, inf)
    np.testing.assert_array_equal(bin_shares(reference, edges), [0.0, 0.8, 0.2])


def test_reference_json_round_trip(tmp_path, stream_factory, reference_factory):
    stream = stream_factory(40, 60, seed=7)
    reference = reference_factory(stream, max_reference_values=64)
    assert len(reference.scores.values) == 64 and set(reference.features) == {"alpha", "beta", "gamma"}
    assert reference.universe_size == 60 and reference.n_days == 40 and reference.rank_ic_n == 40
    again = MonitorReference.from_json(reference.to_json())
    assert again == reference
    assert again.scores.edges == reference.scores.edges  # exact floats
    path = reference.save(tmp_path / "monitor_reference.json")
    loaded = MonitorReference.load(path)
    assert loaded == reference
    # the loaded reference monitors a stream exactly as the original
    new = stream_factory(30, 60, seed=8)
    first = run_monitor(reference, new.signals, features=new.features, realized=new.realized)
    second = run_monitor(loaded, new.signals, features=new.features, realized=new.realized)
    assert first.daily.equals(second.daily) and first.feature_psi.equals(second.feature_psi)
    assert [a.to_dict() for a in first.alarms] == [a.to_dict() for a in second.alarms]


def test_a_bad_reference_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(KizashiError, match="not a kizashi monitor reference"):
        MonitorReference.load(bad)
    with pytest.raises(KizashiError, match="not found"):
        MonitorReference.load(tmp_path / "missing.json")


def test_input_errors_name_the_problem(stream_factory):
    stream = stream_factory(5, 10, seed=9)
    doubled = pl.concat([stream.signals, stream.signals.head(2)])
    with pytest.raises(KizashiError, match=r"reference signals: 2 \(date, code\) key\(s\) on more than one row \(4 rows\)"):
        build_reference(doubled)
    with pytest.raises(KizashiError, match="missing column"):
        build_reference(stream.signals.rename({"score": "prediction"}))
    reference = build_reference(stream.signals, features=stream.features, feature_names=["beta"])
    with pytest.raises(KizashiError, match="pass the features frame"):
        run_monitor(reference, stream.signals)
    with pytest.raises(KizashiError, match="beta"):
        run_monitor(reference, stream.signals, features=stream.features.drop("beta"))
    with pytest.raises(KizashiError, match="realized returns: column 'date' is String"):
        run_monitor(reference, stream.signals, features=stream.features,
                    realized=stream.realized.with_columns(pl.col("date").cast(pl.Utf8)))
    with pytest.raises(KizashiError, match="no finite 'score'"):
        build_reference(stream.signals.with_columns(score=pl.lit(float("nan"))))


def test_settings_reject_inverted_thresholds():
    with pytest.raises(ValueError, match="psi_warn"):
        MonitorSettings(psi_warn=0.3, psi_alarm=0.2)
    with pytest.raises(ValueError, match="rank_ic_min_days"):
        MonitorSettings(rank_ic_window=10, rank_ic_min_days=20)
    with pytest.raises(ValueError):
        MonitorSettings(ks_alarm_typo=0.1)  # unknown keys are errors (StrictModel)


def test_non_finite_scores_are_counted_not_scored(stream_factory, reference_factory):
    stream = stream_factory(10, 40, seed=10)
    reference = reference_factory(stream)
    day0 = stream.dates[0]
    holes = stream.signals.with_columns(
        score=pl.when((pl.col("date") == day0) & (pl.col("code") < "S0010")).then(None)
        .otherwise(pl.col("score")))
    daily = run_monitor(reference, holes, features=stream.features).daily
    row = daily.filter(pl.col("date") == day0).row(0, named=True)
    assert (row["n_rows"], row["n_scored"]) == (40, 30)
    assert row["coverage"] == pytest.approx(30 / 40)
    assert daily["date"].to_list() == stream.dates and daily["date"].dtype == pl.Date
    assert isinstance(daily["date"][0], dt.date)
