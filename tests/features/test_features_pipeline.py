"""Feature pipeline: count, chunked == whole-panel, stock isolation, split continuity,
targets, margin publication lag, per-day normalization, fold statistics."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from kizashi.config import GraphConfig, InputConfig
from kizashi.data.inputs import inputs_from_frames
from kizashi.features.normalization import FoldStatistics, cross_sectional_normalize
from kizashi.features.pipeline import compute_features, context_tables, iter_feature_chunks, prepare_base
from kizashi.features.registry import FAMILY_NAMES

HORIZONS = (1, 5, 10, 20)

STOCK_LEVEL_FAMILIES = ["returns", "volatility", "range_gap", "volume", "technical", "distribution"]


def _inputs(market, **config):
    return inputs_from_frames(market.quotes, market.sectors, market.margin, InputConfig(**config), "test")


@pytest.fixture(scope="module")
def inputs(small_market):
    return _inputs(small_market)


def _assert_frames_close(a: pl.DataFrame, b: pl.DataFrame, columns, rtol=1e-9, atol=1e-12):
    assert a.select("code", "date").equals(b.select("code", "date"))
    for name in columns:
        x = a.get_column(name).to_numpy().astype(float)
        y = b.get_column(name).to_numpy().astype(float)
        assert np.array_equal(np.isnan(x), np.isnan(y)), f"{name}: null pattern differs"
        assert np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True), f"{name}: max diff {np.nanmax(np.abs(x - y)):.3g}"


def test_at_least_350_features_in_every_family(inputs):
    frame, specs = compute_features(inputs.panel, inputs.margin, graph=GraphConfig())
    assert len(specs) >= 350
    assert {s.family for s in specs} == set(FAMILY_NAMES)
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert all(frame.schema[n] == pl.Float32 for n in names)
    # every feature is finite or null
    values = frame.select(names).to_numpy()
    assert not np.isinf(values).any()


@pytest.mark.parametrize("min_history", [1, 60])
def test_chunked_build_equals_whole_panel(inputs, min_history):
    """Chunks carry enough warm-up: also with a point-in-time universe and a stock whose
    rows stop for 30 sessions (the warm-up is counted in rows, the masks in sessions)."""
    panel = inputs.panel
    if min_history > 1:
        dates = panel.get_column("date").unique().sort()
        code = panel.get_column("code").unique().sort()[0]
        panel = panel.filter(~((pl.col("code") == code) & pl.col("date").is_between(dates[80], dates[109])))
    kwargs = dict(dtype=pl.Float64(), graph=GraphConfig(), min_history=min_history)
    whole, specs = compute_features(panel, inputs.margin, **kwargs)
    chunked, _ = compute_features(panel, inputs.margin, chunk_days=45, **kwargs)
    assert any(s.family == "peers" for s in specs)
    names = [s.name for s in specs] + ["target_return_5d", "target_rank_5d"]
    _assert_frames_close(whole.sort("code", "date"), chunked.sort("code", "date"), names)


def test_context_tables_attached_per_chunk_equal_whole_panel(inputs):
    """The build's path: base panel + per-date tables joined per chunk == whole panel."""
    whole, specs = compute_features(inputs.panel, inputs.margin, dtype=pl.Float64())
    base = prepare_base(inputs.panel, HORIZONS)
    assert not any(n.startswith(("_mkt_", "_sec_", "_margin_")) for n in base.columns)
    tables = context_tables(base, inputs.margin)
    chunks = iter_feature_chunks(base, specs, HORIZONS, tables=tables, chunk_days=45, dtype=pl.Float64())
    chunked = pl.concat(list(chunks))
    assert chunked.columns == whole.columns
    names = [s.name for s in specs] + ["target_return_5d", "target_rank_5d"]
    _assert_frames_close(whole.sort("code", "date"), chunked.sort("code", "date"), names)


def test_stock_level_features_depend_only_on_the_stock(inputs):
    """Stock-level time-series features of a stock are the same whether the panel has one
    stock or all of them (no window reaches into a neighbouring stock's rows)."""
    kwargs = dict(families=STOCK_LEVEL_FAMILIES, normalization="none", dtype=pl.Float64())
    whole, specs = compute_features(inputs.panel, None, **kwargs)
    names = [s.name for s in specs if s.family in STOCK_LEVEL_FAMILIES]
    codes = inputs.panel.get_column("code").unique().sort().to_list()
    for code in (codes[0], codes[len(codes) // 2], codes[-1]):
        alone, _ = compute_features(inputs.panel.filter(pl.col("code") == code), None, **kwargs)
        _assert_frames_close(whole.filter(pl.col("code") == code).sort("date"), alone.sort("date"), names)


def test_two_for_one_split_leaves_features_continuous(small_market):
    """A 2-for-1 split in the raw data (prices halve, volume doubles, adjustment_factor 0.5
    on the ex-date) gives the same features as the unsplit data."""
    quotes = small_market.quotes
    code = quotes.filter(pl.col("adjustment_factor") == 1.0).group_by("code").len().sort("len").get_column("code")[-1]
    dates = quotes.filter(pl.col("code") == code).get_column("date")
    ex_date = dates[len(dates) // 2]
    after = (pl.col("code") == code) & (pl.col("date") >= ex_date)
    split = quotes.with_columns(
        *(pl.when(after).then(pl.col(c) / 2.0).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")),
        pl.when(after).then(pl.col("volume") * 2.0).otherwise(pl.col("volume")).alias("volume"),
        pl.when((pl.col("code") == code) & (pl.col("date") == ex_date))
        .then(pl.col("adjustment_factor") * 0.5)
        .otherwise(pl.col("adjustment_factor"))
        .alias("adjustment_factor"),
    )
    kwargs = dict(normalization="none", dtype=pl.Float64(), exclude=["margin"])
    base_inputs = inputs_from_frames(quotes, small_market.sectors, None, InputConfig(), "base")
    split_inputs = inputs_from_frames(split, small_market.sectors, None, InputConfig(), "split")
    base, specs = compute_features(base_inputs.panel, None, **kwargs)
    with_split, _ = compute_features(split_inputs.panel, None, **kwargs)
    names = [s.name for s in specs] + ["target_return_1d", "target_return_20d"]
    # returns around the split are continuous (no -50% day)
    row = with_split.filter((pl.col("code") == code) & (pl.col("date") == ex_date))
    assert abs(row.get_column("return_1d")[0]) < 0.3
    _assert_frames_close(base.sort("code", "date"), with_split.sort("code", "date"), names, rtol=1e-7, atol=1e-9)


def test_targets_are_forward_adjusted_returns(inputs):
    frame, _ = compute_features(inputs.panel, None, families=["returns"], normalization="none", dtype=pl.Float64())
    code = frame.get_column("code")[0]
    one = frame.filter(pl.col("code") == code).sort("date")
    panel = inputs.panel.filter(pl.col("code") == code).sort("date")
    close = panel.get_column("close").to_numpy()
    for h in (1, 5, 10, 20):
        target = one.get_column(f"target_return_{h}d").to_numpy()
        expected = close[h:] / close[:-h] - 1.0
        np.testing.assert_allclose(target[:-h], expected, rtol=1e-12)
        assert np.isnan(target[-h:]).all(), "the last h rows have no forward return"
        ranks = frame.get_column(f"target_rank_{h}d").drop_nulls()
        assert ranks.min() >= 0.0 and ranks.max() <= 1.0
    # the 1-day target of t is the 1-day return of t+1
    np.testing.assert_allclose(one.get_column("target_return_1d").to_numpy()[:-1], one.get_column("return_1d").to_numpy()[1:], rtol=1e-12)


def test_margin_is_used_only_after_publication(small_market, inputs):
    frame, _ = compute_features(inputs.panel, inputs.margin, families=["margin"], normalization="none", dtype=pl.Float64())
    margin = small_market.margin
    code = margin.get_column("code")[0]
    record = margin.filter(pl.col("code") == code).sort("date").row(3, named=True)
    rows = frame.filter(pl.col("code") == code).sort("date")
    on_publication = rows.filter(pl.col("date") == record["published_date"])
    next_day = rows.filter(pl.col("date") > record["published_date"]).head(1)
    expected_ratio = np.log(record["long_margin_volume"] / record["short_margin_volume"])
    # on the publication day itself the balance is not yet usable; from the next day it is
    assert on_publication.get_column("margin_log_ratio")[0] != pytest.approx(expected_ratio)
    assert next_day.get_column("margin_log_ratio")[0] == pytest.approx(expected_ratio)
    assert (rows.get_column("margin_age_days").drop_nulls() > 0).all()


def test_robust_and_zscore_normalization_by_hand():
    frame = pl.DataFrame(
        {"date": [1, 1, 1, 1, 1, 2, 2, 2], "x": [1.0, 2.0, 3.0, 4.0, 100.0, 5.0, 5.0, 5.0]}
    )
    robust = cross_sectional_normalize(frame, ["x"], "robust", clip=3.0).get_column("x").to_list()
    # day 1: median 3, MAD 1 -> (x - 3) / 1.4826, 100 clipped to 3; day 2: all equal -> 0
    expected = [(v - 3.0) / 1.4826 for v in (1.0, 2.0, 3.0, 4.0)] + [3.0, 0.0, 0.0, 0.0]
    assert robust == pytest.approx(expected)
    zscore = cross_sectional_normalize(frame, ["x"], "zscore", clip=10.0).get_column("x").to_list()
    day1 = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    assert zscore[:5] == pytest.approx(list((day1 - day1.mean()) / day1.std(ddof=1)))
    with pytest.raises(ValueError, match="unknown normalization"):
        cross_sectional_normalize(frame, ["x"], "minmax")


def test_robust_spread_falls_back_to_std_when_mad_is_zero():
    frame = pl.DataFrame({"date": [1] * 5, "x": [0.0, 0.0, 0.0, 1.0, 2.0]})
    out = cross_sectional_normalize(frame, ["x"], "robust", clip=10.0).get_column("x").to_numpy()
    np.testing.assert_allclose(out, frame.get_column("x").to_numpy() / np.std([0, 0, 0, 1, 2], ddof=1))


def _normalize_by_hand(values: np.ndarray, method: str, clip: float) -> np.ndarray:
    """One day's normalization in numpy (nan = null)."""
    ok = ~np.isnan(values)
    out = np.full_like(values, np.nan)
    x = values[ok]
    if x.size == 0:
        return out
    std = x.std(ddof=1) if x.size > 1 else np.nan
    if method == "zscore":
        center, spread = x.mean(), std
    else:
        center = np.median(x)
        mad = 1.4826 * np.median(np.abs(x - center))
        spread = mad if mad > 1e-12 else std
    scaled = (x - center) / spread if np.isfinite(spread) and spread > 1e-12 else np.zeros_like(x)
    out[ok] = np.clip(scaled, -clip, clip)
    return out


@pytest.mark.parametrize("method", ["zscore", "robust"])
def test_normalization_matches_numpy_per_day(method):
    rng = np.random.default_rng(3)
    n_days, n_stocks = 7, 40
    dates = np.repeat(np.arange(n_days), n_stocks)
    columns = {f"x{i}": rng.standard_t(3, dates.size) for i in range(70)}  # > one batch of 64
    columns["x0"][dates == 2] = 1.5  # a constant day
    columns["x1"][rng.random(dates.size) < 0.3] = np.nan  # nulls
    columns["x2"][(dates == 4)] = np.nan  # an all-null day
    columns["x3"][(dates == 5) & (np.arange(dates.size) % n_stocks > 0)] = np.nan  # one stock
    frame = pl.DataFrame({"date": dates, **columns}).with_columns(pl.all().exclude("date").fill_nan(None))
    shuffled = frame.with_row_index("row").sample(fraction=1.0, shuffle=True, seed=0)
    out = cross_sectional_normalize(shuffled, list(columns), method, clip=4.0).sort("row")
    for name, values in columns.items():
        expected = np.concatenate([_normalize_by_hand(values[dates == d], method, 4.0) for d in range(n_days)])
        got = out.get_column(name).to_numpy().astype(float)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=name)
    assert out.get_column("x0").filter(out.get_column("date") == 2).to_list() == [0.0] * n_stocks


def test_fold_statistics_use_training_rows_only():
    rng = np.random.default_rng(0)
    train = pl.DataFrame({"a": rng.normal(2.0, 3.0, 500), "b": rng.normal(-1.0, 0.5, 500)})
    test = pl.DataFrame({"a": rng.normal(50.0, 9.0, 100), "b": [None] * 100}, schema={"a": pl.Float64, "b": pl.Float64})
    stats = FoldStatistics.fit(train, ["a", "b"])
    assert stats.center["a"] == pytest.approx(train.get_column("a").mean())
    assert stats.scale["b"] == pytest.approx(train.get_column("b").std())
    moved = FoldStatistics.fit(train, ["a", "b"])
    assert moved.to_dict() == stats.to_dict(), "fitting is deterministic and ignores the test rows"
    out = stats.transform(test)
    assert out.get_column("b").to_list() == [0.0] * 100  # nulls filled with the train centre (0 after scaling)
    np.testing.assert_allclose(out.get_column("a").to_numpy(), (test.get_column("a").to_numpy() - stats.center["a"]) / stats.scale["a"])
    robust = FoldStatistics.fit(train, ["a"], method="robust")
    assert robust.center["a"] == pytest.approx(train.get_column("a").median())
    with pytest.raises(ValueError, match="empty"):
        FoldStatistics.fit(train.head(0), ["a"])
