"""The Stage-1 fine-tuning label and the train/validation purge, proven by perturbation.

A window's label (``forward_return``) is the log return from the anchor close (the base bar
closing exactly at the anchor) to the base bar closing ``horizon`` later. For both window
modes, on synthetic bars through the real dataset path (validate -> build_timeframes ->
MultiTimeframeWindows):

* changing every base bar that closes after the anchor (and so every coarse bar built from
  one) leaves every input tensor of the item bit-identical (and moves the label);
* changing every base bar that closes at or before the anchor, except the anchor's close,
  leaves the label unchanged (and moves the inputs);
* on martingale bars, the last bars' returns of every timeframe explain nothing of the
  label (a label overlapping the inputs is explained in large part);
* the label equals a brute-force computation, NaN where the horizon's bar is missing.

The purge: no training window's label or input span reaches the validation windows' inputs,
for aligned and async windows, also when a data gap stretches a validation window back in
time; ``pretrain.json`` and ``stats.json`` record the gap.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from kizashi.config import PretrainConfig, config_from_dict
from kizashi.data.synthetic.intraday import SyntheticBarsConfig, generate_bars
from kizashi.data.timeframes import timeframe_minutes
from kizashi.datasets.multi_timeframe import MaskConfig, MultiTimeframeWindows
from kizashi.datasets.statistics import fit_window_stats
from kizashi.errors import ConfigError
from test_multi_timeframe import TIMEFRAMES, make_series  # tests/datasets is on sys.path

LABEL = "forward_return"
US_PER_MINUTE = 60_000_000
BASE_US = 5 * US_PER_MINUTE
PRICES = ("open", "high", "low", "close")
ASYNC_STRIDES = {"m5": 13, "m15": 5, "h1": 2, "h4": 2}
ASYNC_START = np.datetime64("2021-01-07T00:00", "us")
TENSOR_KEYS = ("inputs", "targets", "masked", "valid", "groups", "complete")


@pytest.fixture(scope="module")
def frames():
    return generate_bars(SyntheticBarsConfig(n_days=10, timeframe="m5", symbols=("A", "B"), seed=7))


@pytest.fixture(scope="module")
def series(frames):
    return make_series(frames)


@pytest.fixture(scope="module", params=["24h", "equity"])
def session_frames(request):
    """24 h bars, and equity-session bars (nights and weekends are gaps: coarse bars are
    partial, and many horizons end outside the session)."""
    n_days = 10 if request.param == "24h" else 28  # 20 sessions of 6.5 h: 24 h4 bars need ~10
    return generate_bars(SyntheticBarsConfig(n_days=n_days, timeframe="m5", symbols=("A", "B"), seed=7,
                                             session=request.param))


def build(series, mode, stats=None):
    mask = MaskConfig(ratio=0.2, min_span=2, max_span=5)
    if mode == "aligned":
        return MultiTimeframeWindows(series, TIMEFRAMES, 24, anchor_stride=53, mask=mask, stats=stats, seed=2)
    # every timeframe's windows end inside one range, so the items' timeframes end at different times
    return MultiTimeframeWindows(series, TIMEFRAMES, 24, mode="async", seq_lens={"m5": 36, "h4": 12},
                                 strides=ASYNC_STRIDES, time_range=(ASYNC_START, None), mask=mask, stats=stats, seed=2)


def close_us(frame: pl.DataFrame) -> pl.Expr:
    return pl.col("timestamp").dt.epoch("us") + BASE_US  # raw bars are labelled by their open time


def assert_items_equal(a, b):
    for key in TENSOR_KEYS:
        if key in a:
            for tf in a[key]:
                assert torch.equal(a[key][tf], b[key][tf]), (key, tf)


def sample_indices(ds, n=12):
    return sorted(set(np.linspace(0, len(ds) - 1, n).astype(int).tolist()))


@pytest.mark.parametrize("mode", ["aligned", "async"])
def test_bars_closing_after_the_anchor_do_not_change_the_inputs(session_frames, mode):
    frames = session_frames
    ds = build(make_series(frames), mode)
    ds.stats = fit_window_stats(ds, max_windows=200)
    moved = 0
    for index in sample_indices(ds, 24):
        symbol, t, _ = ds.window_indices(index)
        late = close_us(frames[symbol]) > t
        perturbed = dict(frames)
        perturbed[symbol] = frames[symbol].with_columns(
            [pl.when(late).then(pl.col(c) * 1.5).otherwise(pl.col(c)).alias(c) for c in PRICES]
            + [pl.when(late).then(pl.col("volume") * 3.0).otherwise(pl.col("volume")).alias("volume")])
        a, b = ds[index], build(make_series(perturbed), mode, stats=ds.stats)[index]
        assert a["anchor_time"] == b["anchor_time"] == t
        assert_items_equal(a, b)
        if np.isfinite(a[LABEL]):  # the perturbation does reach the label: log(1.5) added
            assert b[LABEL] == pytest.approx(a[LABEL] + np.log(1.5))
            moved += 1
    assert moved >= 5


@pytest.mark.parametrize("mode", ["aligned", "async"])
def test_bars_closing_at_or_before_the_anchor_leave_the_label_unchanged(session_frames, mode):
    frames = session_frames
    ds = build(make_series(frames), mode)
    finite = 0
    for index in sample_indices(ds, 24):
        symbol, t, _ = ds.window_indices(index)
        closes = close_us(frames[symbol])
        before, anchor_bar = closes < t, closes == t
        # every earlier bar scaled (a consistent bar); the anchor bar keeps its close only
        perturbed = dict(frames)
        perturbed[symbol] = frames[symbol].with_columns(
            pl.when(before).then(pl.col("open") * 1.5).when(anchor_bar).then(pl.col("close"))
            .otherwise(pl.col("open")).alias("open"),
            pl.when(before).then(pl.col("high") * 1.5).when(anchor_bar).then(pl.col("high") * 1.01)
            .otherwise(pl.col("high")).alias("high"),
            pl.when(before).then(pl.col("low") * 1.5).when(anchor_bar).then(pl.col("low") * 0.99)
            .otherwise(pl.col("low")).alias("low"),
            pl.when(before).then(pl.col("close") * 1.5).otherwise(pl.col("close")).alias("close"),
            pl.when(before | anchor_bar).then(pl.col("volume") * 3.0).otherwise(pl.col("volume")).alias("volume"),
        )
        a, b = ds[index], build(make_series(perturbed), mode)[index]
        assert a["anchor_time"] == b["anchor_time"] == t
        assert not torch.equal(a["inputs"][TIMEFRAMES[-1]], b["inputs"][TIMEFRAMES[-1]])  # the inputs did move
        if np.isfinite(a[LABEL]):
            finite += 1
            assert b[LABEL] == a[LABEL], (mode, index)
        else:
            assert np.isnan(b[LABEL])
    assert finite >= 5


def _last_returns(item, timeframes, n_last=3):
    """[n_tf * n_last] close-to-close log returns of each timeframe's last bars."""
    out = []
    for tf in timeframes:
        close = item["channels"][tf][:, 3]  # log(close / anchor): differences are log returns
        out.extend(np.diff(close[-n_last - 1:]))
    return out


def test_window_inputs_do_not_explain_the_label_on_martingale_bars():
    """On synthetic bars without a planted signal, ordinary least squares of the label on the
    last bars' returns of every timeframe (about 1700 labels, one every 17 base bars, so
    adjacent h4 horizons barely overlap) explains next to nothing (R^2 ~ 9 / 1700). A label
    that starts at the last closed coarse bar instead of the anchor overlaps the fine bars
    after that close, and they explain a large part of it."""
    timeframes = ["m15", "h1", "h4"]
    frames = generate_bars(SyntheticBarsConfig(n_days=100, timeframe="m15", symbols=("A", "B", "C"), seed=3))
    ds = MultiTimeframeWindows(make_series(frames, timeframes), timeframes, 8, anchor_stride=17,  # 17 base bars:
                               mask=MaskConfig(ratio=0.0))  # anchors at every phase of the h4 bars
    rows, labels = [], []
    for index in range(len(ds)):
        label = ds[index][LABEL]
        if np.isfinite(label):
            rows.append(_last_returns(ds.raw_item(index), timeframes))
            labels.append(label)
    x, y = np.asarray(rows), np.asarray(labels)
    assert len(y) >= 1500 and np.isfinite(x).all()
    design = np.column_stack([np.ones(len(y)), (x - x.mean(0)) / x.std(0)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    r2 = 1 - np.sum((y - design @ coef) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2 < 0.02, r2


@pytest.mark.parametrize("mode", ["aligned", "async"])
def test_label_is_the_anchor_to_horizon_log_return(series, mode):
    """Brute force: log(close of the base bar closing at t + horizon / close of the one closing
    at t); NaN when either is missing. The default horizon is one bar of the coarsest
    timeframe; ``LabelConfig`` changes it."""
    from kizashi.datasets.multi_timeframe import LabelConfig

    for label, horizon_minutes in ((LabelConfig(), 240), (LabelConfig(timeframe="m15", bars=5), 75)):
        ds = MultiTimeframeWindows(series, TIMEFRAMES, 24, mode=mode, label=label,
                                   **({"anchor_stride": 7} if mode == "aligned" else
                                      {"seq_lens": {"m5": 36, "h4": 12}, "strides": ASYNC_STRIDES,
                                       "time_range": (ASYNC_START, None)}))
        assert ds.label_horizon_us == horizon_minutes * US_PER_MINUTE
        finite = missing = 0
        for index in sorted({*range(0, len(ds), 3), *range(len(ds) - 12, len(ds))}):
            symbol, t, _ = ds.window_indices(index)
            base = ds.data[symbol]["m5"]
            at = {int(c): float(p) for c, p in zip(base.close_us, base.ohlc[:, 3])}
            end = t + horizon_minutes * US_PER_MINUTE
            got = ds[index][LABEL]
            if t in at and end in at:
                assert got == pytest.approx(np.log(at[end] / at[t]), abs=1e-12)
                finite += 1
            else:
                assert np.isnan(got)
                missing += 1
        assert finite > 10 and missing >= 1  # the last windows' horizon runs past the data
        labels = ds.labels()  # every item's label at once, equal to the items'
        picks = range(0, len(ds), 17)
        np.testing.assert_array_equal(labels[list(picks)], [ds[i][LABEL] for i in picks])


def test_label_settings_are_validated(series):
    from kizashi.datasets.multi_timeframe import LabelConfig

    with pytest.raises(ValueError, match="label.timeframe"):
        MultiTimeframeWindows(series, TIMEFRAMES, 24, label=LabelConfig(timeframe="m7"))  # not whole base bars
    with pytest.raises(ValueError, match="label.bars"):
        MultiTimeframeWindows(series, TIMEFRAMES, 24, label=LabelConfig(bars=0))
    with pytest.raises(ConfigError, match=r"label\.timeframe"):
        config_from_dict(PretrainConfig, {"label": {"timeframe": "hour"}})
    with pytest.raises(ConfigError, match=r"label\.bars"):
        config_from_dict(PretrainConfig, {"label": {"bars": 0}})
    assert config_from_dict(PretrainConfig, {"label": {"timeframe": "h1", "bars": 4}}).label.bars == 4


# --------------------------------------------------------------------------------------
# the purge between the training and the validation windows
# --------------------------------------------------------------------------------------

PURGE_BASE = {
    "data": {"synthetic": {"symbols": ["A", "B"], "timeframe": "m15", "n_days": 30, "seed": 1}},
    "timeframes": ["m15", "h1", "h4"],
    "windows": {"seq_len": 16, "anchor_stride": 3, "val_anchor_stride": 1, "stats_windows": 100},
}
ASYNC_WINDOWS = {"mode": "async", "seq_len": 16, "seq_lens": {"h1": 8, "h4": 8}, "strides": {"m15": 3},
                 "anchor_stride": 1, "val_anchor_stride": 1, "stats_windows": 100}


def _window_times(ds):
    """Per item: (anchor, first input bar's open time) in epoch us."""
    out = []
    for index in range(len(ds)):
        symbol, t, rows = ds.window_indices(index)
        first_open = min(int(ds.data[symbol][tf].close_us[r[0]]) - timeframe_minutes(tf) * US_PER_MINUTE
                         for tf, r in rows.items())
        out.append((t, first_open))
    return np.asarray(out, dtype=np.int64)


def _check_purge(config, bars, base):
    from kizashi.datasets.stage1_windows import stage1_timeframes, window_datasets

    split = window_datasets(config, bars, base, stage1_timeframes(config, base), config.windows.seq_len, MaskConfig())
    train, val = split[0], split[1]
    horizon = timeframe_minutes(config.timeframes[-1]) * US_PER_MINUTE  # default: one coarsest bar
    train_times, val_times = _window_times(train), _window_times(val)
    latest_train_label_end = train_times[:, 0].max() + horizon
    earliest_val_input = val_times[:, 1].min()
    assert len(train) > 50 and len(val) > 10
    assert latest_train_label_end <= earliest_val_input, (
        f"a training label reaches {np.datetime64(int(latest_train_label_end), 'us')}, after the first validation "
        f"input bar opens at {np.datetime64(int(earliest_val_input), 'us')}")
    assert train_times[:, 0].max() <= earliest_val_input  # and the training inputs end before it
    return split


@pytest.mark.parametrize("windows", [PURGE_BASE["windows"], ASYNC_WINDOWS], ids=["aligned", "async"])
def test_validation_inputs_start_after_every_training_label(windows):
    from kizashi.datasets.stage1_windows import load_bar_series

    config = config_from_dict(PretrainConfig, {**PURGE_BASE, "windows": windows})
    bars, _, base = load_bar_series(config)
    _check_purge(config, bars, base)


def test_purge_holds_when_a_data_gap_stretches_a_validation_window_back():
    """Validation windows are counted in bars: a window just after a gap in the data holds
    bars from before the gap, so a time gap alone would not keep it clear of the training
    labels; those windows are left out."""
    from kizashi.datasets.stage1_windows import load_bar_series

    config = config_from_dict(PretrainConfig, {**PURGE_BASE, "train_end": "2021-01-25T00:00:00"})
    bars, _, base = load_bar_series(config)
    split = _check_purge(config, bars, base)
    val_start = split.val_start  # train_end + 4 h label horizon + 17 h4 bars = 2021-01-28T00:00
    assert val_start == np.datetime64("2021-01-28T00:00", "us")
    # no bars for the two days before the validation range: the first validation windows' h4
    # bars would reach back across the gap, over the training labels
    cut_from = pl.lit(val_start - np.timedelta64(2, "D")).cast(pl.Datetime("us", "UTC"))
    cut_to = pl.lit(val_start + np.timedelta64(2, "h")).cast(pl.Datetime("us", "UTC"))
    gapped = {s: f.filter((pl.col("timestamp") < cut_from) | (pl.col("timestamp") >= cut_to)) for s, f in bars.items()}
    split = _check_purge(config, gapped, base)
    first_val = _window_times(split.val)[:, 0].min()
    assert first_val > int((val_start + np.timedelta64(36, "h")).astype(np.int64))  # those windows were left out
