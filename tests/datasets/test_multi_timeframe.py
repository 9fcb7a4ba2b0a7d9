"""Aligned multi-timeframe windows: no look-ahead (future perturbation), window shapes,
training-range statistics, consistency maps against brute force, and the consistency loss
is zero on the true bars (coarse bars are exact aggregates of their fine bars)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest
import torch

from kizashi.data.bars import build_timeframes, validate_bars
from kizashi.data.synthetic.intraday import SyntheticBarsConfig, generate_bars
from kizashi.datasets.multi_timeframe import MaskConfig, MultiTimeframeWindows, collate_windows
from kizashi.datasets.statistics import FittedStatistics, TimeframeStats, WindowStats, fit_window_stats
from kizashi.models.stage1 import grouped_consistency

TIMEFRAMES = ["m5", "m15", "h1", "h4"]
SEQ = 24


def make_series(frames, timeframes=TIMEFRAMES):
    """Validated bars of each symbol built into ``timeframes`` (the first is the base)."""
    series = {}
    for symbol, frame in frames.items():
        bars, report = validate_bars(frame, source=symbol)
        series[symbol] = build_timeframes(bars, report.base_timeframe, timeframes[1:])
    return series


@pytest.fixture(scope="module")
def frames():
    return generate_bars(SyntheticBarsConfig(n_days=12, timeframe="m5", symbols=("A", "B"), seed=4))


@pytest.fixture(scope="module")
def series(frames):
    return make_series(frames)


def test_windows_have_seq_len_bars_closed_by_the_anchor(series):
    ds = MultiTimeframeWindows(series, TIMEFRAMES, SEQ, anchor_stride=37)
    for index in range(len(ds)):
        _, t, rows = ds.window_indices(index)
        item = ds.raw_item(index)
        for tf in TIMEFRAMES:
            closes = item["close_us"][tf]
            assert len(closes) == SEQ and (np.diff(closes) > 0).all()
            assert closes[-1] <= t  # closed by the anchor
            nxt = ds.data[item["symbol"]][tf].close_us
            after = nxt[rows[tf][-1] + 1] if rows[tf][-1] + 1 < len(nxt) else None
            assert after is None or after > t  # and the most recent such bar


def test_future_perturbation_leaves_items_unchanged(frames, series):
    ds = MultiTimeframeWindows(series, TIMEFRAMES, SEQ, anchor_stride=211, seed=1)
    for index in range(0, len(ds), 3):
        symbol, t, _ = ds.window_indices(index)
        perturbed = dict(frames)
        frame = frames[symbol]
        # every base bar that has not closed by t (open time + 5 min > t) is changed
        open_us = frame["timestamp"].dt.epoch("us")
        late = (open_us + 5 * 60_000_000) > t
        perturbed[symbol] = frame.with_columns(
            [pl.when(late).then(pl.col(c) * 1.5).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close", "volume")]
        )
        ds2 = MultiTimeframeWindows(make_series(perturbed), TIMEFRAMES, SEQ, anchor_stride=211, seed=1)
        a, b = ds[index], ds2[index]
        for tf in TIMEFRAMES:
            assert torch.equal(a["inputs"][tf], b["inputs"][tf]), tf
            assert torch.equal(a["masked"][tf], b["masked"][tf])


def test_statistics_from_the_training_range_only(frames, series):
    cut = np.datetime64("2021-01-10T00:00", "us")
    train = MultiTimeframeWindows(series, TIMEFRAMES, SEQ, time_range=(None, cut))
    stats = fit_window_stats(train, max_windows=300)
    changed = {s: f.with_columns(pl.when(pl.col("timestamp") >= pl.lit(cut).cast(pl.Datetime("us", "UTC")))
                                 .then(pl.col("volume") * 10).otherwise(pl.col("volume")).alias("volume"))
               for s, f in frames.items()}
    train2 = MultiTimeframeWindows(make_series(changed), TIMEFRAMES, SEQ, time_range=(None, cut))
    assert fit_window_stats(train2, max_windows=300) == stats
    assert all(st.price_scale > 0 and st.volume_std > 0 for st in stats.values())
    # coarser bars move more: the price scale grows with the timeframe
    scales = [stats[tf].price_scale for tf in TIMEFRAMES]
    assert scales == sorted(scales)


def test_stats_json_round_trip(series, tmp_path):
    ds = MultiTimeframeWindows(series, TIMEFRAMES, SEQ, anchor_stride=5)
    stats = WindowStats.fit(ds, max_windows=100)
    assert isinstance(stats, FittedStatistics) and stats == fit_window_stats(ds, max_windows=100)
    path = stats.save(tmp_path / "stats.json", train_range=["start", "end"])
    loaded = WindowStats.load(path)
    assert loaded == stats and list(loaded) == TIMEFRAMES
    # the file: {"timeframes": {tf: the five fields}, **info}, as pretraining runs have written it
    raw = json.loads(path.read_text())
    assert raw == {"timeframes": {tf: dataclasses.asdict(s) for tf, s in stats.items()}, "train_range": ["start", "end"]}
    assert list(raw["timeframes"]["m5"]) == ["price_scale", "volume_mean", "volume_std", "range_mean", "range_std"]
    # encoder.pt's "stats" is to_dict(); the per-timeframe form loads back the same
    assert stats.to_dict() == raw["timeframes"]
    assert WindowStats.from_dict(stats.to_dict()) == {tf: TimeframeStats(**v) for tf, v in raw["timeframes"].items()}
    with pytest.raises(ValueError, match="timeframes"):
        stats.save(tmp_path / "other.json", timeframes=TIMEFRAMES)
    # apply: the same normalized channels after the round trip, and what the dataset feeds the model
    channels = ds.raw_item(3)["channels"]
    applied, reloaded = stats.apply(channels), loaded.apply(channels)
    for tf in TIMEFRAMES:
        np.testing.assert_array_equal(applied[tf], reloaded[tf])
        st, x = stats[tf], channels[tf]
        expected = np.column_stack([x[:, :4] / st.price_scale, (x[:, 4] - st.volume_mean) / st.volume_std,
                                    (x[:, 5] - st.range_mean) / st.range_std])
        np.testing.assert_array_equal(applied[tf], np.nan_to_num(expected, nan=0.0, posinf=0.0, neginf=0.0))
    ds.stats = loaded
    item = ds[3]
    for tf in TIMEFRAMES:
        np.testing.assert_array_equal(item["inputs"][tf].numpy(), applied[tf].astype(np.float32))


def test_consistency_maps_and_zero_loss_on_true_bars(series):
    ds = MultiTimeframeWindows(series, TIMEFRAMES, SEQ, anchor_stride=97,
                               mask=MaskConfig(ratio=0.15, synchronized=True))
    ds.stats = fit_window_stats(ds, max_windows=200)
    batch = collate_windows([ds[i] for i in range(min(16, len(ds)))])
    compared = 0
    for fine, coarse in zip(TIMEFRAMES, TIMEFRAMES[1:]):
        # brute force: a fine bar belongs to the coarse bar whose (close - duration, close] holds its close
        for b in range(batch["groups"][fine].shape[0]):
            item = ds.raw_item(b)  # the batch holds items 0..15 in order
            fc, cc = item["close_us"][fine], item["close_us"][coarse]
            dur = ds.minutes[coarse] * 60_000_000
            expected = np.array([next((j for j, c in enumerate(cc) if c - dur < f <= c), -1) for f in fc])
            assert np.array_equal(batch["groups"][fine][b].numpy(), expected)
        scale = lambda tf: ds.stats[tf].price_scale  # noqa: E731
        loss = grouped_consistency(batch["targets"][fine].double(), batch["targets"][coarse].double(),
                                   batch["groups"][fine], batch["complete"][coarse],
                                   fine_scale=scale(fine), coarse_scale=scale(coarse), kind="mse")
        assert loss.item() < 1e-10  # float32 inputs: exact up to rounding
        compared += int(batch["complete"][coarse].sum())
    assert compared > 0


def test_masks_hide_valid_bars_only():
    frames = generate_bars(SyntheticBarsConfig(n_days=8, timeframe="m5", symbols=("A",), seed=2))
    frame = frames["A"]
    # one bar with high < low: kept, flagged, never masked or compared
    bad_row = 1500  # late enough that every window holding it has 24 h4 bars before it
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == bad_row).then(pl.col("low") * 0.5).otherwise(pl.col("high")).alias("high"))
    series = make_series({"A": frame})
    ds = MultiTimeframeWindows(series, TIMEFRAMES, SEQ, mask=MaskConfig(ratio=0.5))
    hits = 0
    for index in range(len(ds)):
        item = ds[index]
        valid = item["valid"]["m5"]
        assert not (item["masked"]["m5"] & ~valid).any()
        if not valid.all():
            hits += 1
            assert (item["inputs"]["m5"][~valid] == 0).all()
    assert hits == SEQ  # the flagged bar is in SEQ consecutive windows
