"""Intraday bars: reading (CSV any delimiter / Parquet), validation, no-look-ahead resampling."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import require_shared_data
from polars.testing import assert_frame_equal

from kizashi.data.bars import (
    RESAMPLED_COLUMNS,
    Gap,
    bar_close_times,
    build_timeframes,
    read_bars,
    resample_bars,
    validate_bars,
    visible_coarse_index,
)
from kizashi.data.timeframes import timeframe_minutes
from kizashi.errors import DataValidationError

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)


def make_bars(
    minutes: list[int] | np.ndarray,
    *,
    close: list[float] | np.ndarray | None = None,
    start: dt.datetime = T0,
) -> pl.DataFrame:
    """Bars at ``start + minutes`` in the given (input) order; prices from ``close``."""
    minutes = [int(m) for m in minutes]
    close = np.asarray(close if close is not None else [100.0 + i for i in range(len(minutes))])
    return pl.DataFrame(
        {
            "timestamp": [start + dt.timedelta(minutes=m) for m in minutes],
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.arange(1.0, len(minutes) + 1.0),
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )


def random_m1_bars(seed: int, n_minutes: int = 3 * 1440 + 257) -> pl.DataFrame:
    """Validated-looking m1 bars from 2024-03-01 01:07 UTC (off every bucket edge): random
    holes on March 1 and 4, an outage of 200 minutes on March 2 and a complete March 3, so
    every timeframe has both partial and full buckets."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 3, 1, 1, 7, tzinfo=UTC)
    minute = np.arange(n_minutes)
    march_2, march_4 = 1440 - 67, 3 * 1440 - 67
    keep = (rng.random(n_minutes) > 0.1) | ((minute >= march_2) & (minute < march_4))
    keep[1500:1700] = False  # an outage of 200 minutes on March 2
    minutes = np.flatnonzero(keep)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, minutes.size)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 2e-4, minutes.size))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 1e-3, minutes.size))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 1e-3, minutes.size))
    return pl.DataFrame(
        {
            "timestamp": [start + dt.timedelta(minutes=int(m)) for m in minutes],
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.integers(0, 1000, minutes.size).astype(float),
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )


# --------------------------------------------------------------------------- validation


def test_duplicates_error_by_default_and_names_the_timestamp():
    frame = make_bars([0, 1, 2, 3, 2, 4])
    with pytest.raises(DataValidationError) as err:
        validate_bars(frame, source="dup.csv")
    message = str(err.value)
    assert "dup.csv" in message
    assert "1 timestamp(s) on 2 rows" in message
    assert "2024-01-01 00:02:00" in message
    assert "rows (3, 5)" in message  # 1-based input rows of the duplicated timestamp


@pytest.mark.parametrize("policy, kept_close", [("first", 102.0), ("last", 555.0)])
def test_duplicate_policies_keep_the_chosen_row(policy, kept_close):
    frame = make_bars([0, 1, 2, 3, 2, 4], close=[100.0, 101.0, 102.0, 103.0, 555.0, 104.0])
    bars, report = validate_bars(frame, duplicates=policy)
    assert bars.height == 5
    assert bars["timestamp"].is_unique().all()
    row = bars.filter(pl.col("timestamp") == T0 + dt.timedelta(minutes=2))
    assert row["close"].to_list() == [kept_close]
    assert row["volume"].to_list() == [3.0 if policy == "first" else 5.0]  # not summed
    assert report.n_duplicate_timestamps == 1
    assert report.n_duplicate_rows_dropped == 1
    assert report.n_conflicting_duplicates == 1
    assert report.n_rows_in == 6 and report.n_bars == 5
    assert report.duplicate_examples[0].timestamp == T0 + dt.timedelta(minutes=2)
    assert "2 different versions" in report.duplicate_examples[0].detail


def test_identical_duplicates_are_still_counted_and_dropped_only_by_policy():
    frame = pl.concat([make_bars([0, 1, 2]), make_bars([0, 1, 2]).slice(1, 2)])
    with pytest.raises(DataValidationError, match="0 timestamp\\(s\\) with differing values"):
        validate_bars(frame)
    bars, report = validate_bars(frame, duplicates="last")
    assert (report.n_duplicate_timestamps, report.n_duplicate_rows_dropped) == (2, 2)
    assert report.n_conflicting_duplicates == 0
    assert report.n_out_of_order == 1  # the repeated block jumps back in time once
    assert_frame_equal(bars.drop("invalid_range"), make_bars([0, 1, 2]))


def test_out_of_order_rows_are_counted_and_sorted():
    order = [0, 1, 5, 2, 3, 4, 9, 6, 7, 8]
    frame = make_bars(order)
    bars, report = validate_bars(frame)
    assert report.n_out_of_order == 2  # 5 -> 2 and 9 -> 6
    assert [e.row for e in report.out_of_order_examples] == [4, 8]
    assert report.out_of_order_examples[0].timestamp == T0 + dt.timedelta(minutes=2)
    assert bars["timestamp"].is_sorted()
    assert_frame_equal(bars.drop("invalid_range"), frame.sort("timestamp"))
    assert report.n_gaps == 0 and report.base_timeframe == "m1"


def test_invalid_ranges_are_kept_and_flagged():
    frame = make_bars(range(8)).with_row_index()
    frame = frame.with_columns(
        pl.when(pl.col("index") == 1)
        .then(90.0)
        .otherwise(pl.col("high"))
        .alias("high"),  # high < low
        pl.when(pl.col("index") == 3)
        .then(200.0)
        .otherwise(pl.col("open"))
        .alias("open"),  # open > high
        pl.when(pl.col("index") == 5).then(0.0).otherwise(pl.col("low")).alias("low"),  # low = 0
    ).drop("index")
    bars, report = validate_bars(frame)
    assert bars.height == 8  # kept, not dropped
    assert bars["invalid_range"].to_list() == [False, True, False, True, False, True, False, False]
    assert report.n_invalid_range == 3
    assert report.n_high_below_low == 1
    assert report.n_open_outside_range == 2  # row 2 (open 100.5 > high 90) and row 4
    assert report.n_close_outside_range == 1  # row 2: close 101 > high 90
    assert report.n_nonpositive_price == 1
    assert [e.row for e in report.invalid_range_examples] == [2, 4, 6]
    assert "high=90.0" in report.invalid_range_examples[0].detail
    assert "invalid price range: 3 bar(s)" in report.summary()


def test_nulls_and_negative_volume_are_errors_reported_together():
    frame = make_bars(range(6)).with_row_index()
    frame = frame.with_columns(
        pl.when(pl.col("index") == 2).then(None).otherwise(pl.col("close")).alias("close"),
        pl.when(pl.col("index") == 4).then(-3.0).otherwise(pl.col("volume")).alias("volume"),
    ).drop("index")
    with pytest.raises(DataValidationError) as err:
        validate_bars(frame, source="bad.csv")
    message = str(err.value)
    assert "2 error(s)" in message
    assert "null, NaN or infinite values (close: 1)" in message and "row 3 @" in message
    assert "negative volume on 1 row(s)" in message and "row 5 @" in message


def test_gaps_are_counted_exactly():
    # m1 bars with holes: 3 missing after minute 4, 1 after 10, 10 after 20.
    minutes = [*range(5), *range(8, 11), *range(12, 21), *range(31, 40)]
    _, report = validate_bars(make_bars(minutes))
    assert report.base_timeframe == "m1"
    assert report.n_gaps == 3
    assert report.n_missing_bars == 3 + 1 + 10
    assert report.largest_gaps == (
        Gap(T0 + dt.timedelta(minutes=20), T0 + dt.timedelta(minutes=31), 10),
        Gap(T0 + dt.timedelta(minutes=4), T0 + dt.timedelta(minutes=8), 3),
        Gap(T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(minutes=12), 1),
    )
    assert report.n_bars + report.n_missing_bars == 40  # the full grid from 0 to 39


@pytest.mark.parametrize("step, name", [(1, "m1"), (15, "m15"), (30, "m30"), (240, "h4")])
def test_base_timeframe_is_read_from_the_data(step, name):
    rng = np.random.default_rng(step)
    slots = np.flatnonzero(rng.random(400) > 0.3)  # holes everywhere, yet the mode is one step
    _, report = validate_bars(make_bars(slots * step))
    assert report.base_timeframe == name
    assert report.n_missing_bars == (slots[-1] - slots[0] + 1) - slots.size
    assert report.n_off_grid == 0


def test_expected_timeframe_mismatch_is_an_error():
    frame = make_bars(np.arange(50) * 15)
    _, report = validate_bars(frame, expected_timeframe="m15")
    assert report.base_timeframe == "m15"
    with pytest.raises(
        DataValidationError, match="expected m30, but the data's most common interval is m15"
    ):
        validate_bars(frame, expected_timeframe="m30")


def test_off_grid_bars_are_reported_and_refused_by_resampling():
    frame = make_bars([0, 30, 60, 75, 120])  # 75 is off the m30 grid
    bars, report = validate_bars(frame)
    assert report.base_timeframe == "m30"
    assert report.n_off_grid == 1 and report.off_grid_examples[0].row == 4
    with pytest.raises(DataValidationError, match="off the m30 grid"):
        resample_bars(bars, "m30", "h1")


def test_report_is_json_safe_and_summarized():
    frame = make_bars([0, 1, 2, 2, 6, 3, 7])
    _, report = validate_bars(frame, source="x.csv", duplicates="first")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["n_duplicate_rows_dropped"] == 1
    assert data["largest_gaps"] == [
        {
            "start": "2024-01-01T00:03:00+00:00",
            "end": "2024-01-01T00:06:00+00:00",
            "missing_bars": 2,
        }
    ]
    summary = report.summary()
    assert summary.startswith("x.csv: 7 rows in, 6 bars out, base timeframe m1")
    assert "out of order: 1 row(s)" in summary and "gaps: 1, 2 m1 bar(s) missing" in summary


# --------------------------------------------------------------------------- resampling


def reference_resample(bars: pl.DataFrame, base: str, target: str) -> pl.DataFrame:
    """Straightforward loop: bucket = floor(open time / target) since the epoch."""
    target_us = timeframe_minutes(target) * 60_000_000
    full = timeframe_minutes(target) // timeframe_minutes(base)
    buckets: dict[int, list[tuple]] = defaultdict(list)
    for row in bars.iter_rows(named=True):
        micros = int(row["timestamp"].timestamp() * 1_000_000)
        buckets[micros // target_us].append(row)
    records = []
    for key in sorted(buckets):
        rows = buckets[key]
        start = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=key * target_us)
        records.append(
            {
                "timestamp": start + dt.timedelta(microseconds=target_us),
                "open_time": start,
                "open": rows[0]["open"],
                "high": max(r["high"] for r in rows),
                "low": min(r["low"] for r in rows),
                "close": rows[-1]["close"],
                "volume": sum(r["volume"] for r in rows),
                "n_bars": len(rows),
                "partial": len(rows) < full,
                "invalid_range": any(r["invalid_range"] for r in rows),
            }
        )
    return pl.DataFrame(
        records,
        schema={
            "timestamp": pl.Datetime("us", "UTC"),
            "open_time": pl.Datetime("us", "UTC"),
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Float64,
            "n_bars": pl.Int32,
            "partial": pl.Boolean,
            "invalid_range": pl.Boolean,
        },
    )


@pytest.fixture(scope="module")
def m1_bars() -> pl.DataFrame:
    frame = random_m1_bars(seed=3)
    # One bad tick, to check that the flag reaches every coarse bar containing it.
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 700)
        .then(pl.col("low") * 0.99)
        .otherwise(pl.col("high"))
        .alias("high")
    )
    bars, report = validate_bars(frame, expected_timeframe="m1")
    assert report.n_invalid_range == 1 and report.n_gaps > 10
    return bars


@pytest.mark.parametrize("target", ["m5", "h1", "h4", "d1"])
def test_resampling_matches_a_loop_reference(m1_bars, target):
    got = resample_bars(m1_bars, "m1", target)
    expected = reference_resample(m1_bars, "m1", target)
    assert got.columns == list(RESAMPLED_COLUMNS)
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-12)
    assert got["partial"].any() and not got["partial"].all()
    assert got["invalid_range"].sum() == 1
    assert got["n_bars"].sum() == m1_bars.height  # every base bar in exactly one bucket
    minutes = timeframe_minutes(target)
    assert (got["open_time"].dt.epoch("s") % (minutes * 60) == 0).all()  # epoch-aligned
    if target == "h4":
        assert set(got["open_time"].dt.hour().to_list()) <= {0, 4, 8, 12, 16, 20}
    if target == "d1":
        assert (got["open_time"].dt.hour() == 0).all()


def test_resampling_from_an_m15_base_with_sessions():
    # Stock-like sessions 14:30-21:00 UTC: every h1 bucket at the session edges is partial.
    days = [T0 + dt.timedelta(days=d) for d in range(3)]
    stamps = [d + dt.timedelta(hours=14, minutes=30 + 15 * k) for d in days for k in range(26)]
    frame = make_bars([(s - T0) // dt.timedelta(minutes=1) for s in stamps])
    bars, report = validate_bars(frame)
    assert report.base_timeframe == "m15" and report.n_gaps == 2
    h1 = resample_bars(bars, "m15", "h1")
    assert h1.height == 3 * 7
    first = h1.row(0, named=True)
    assert first["open_time"] == T0 + dt.timedelta(hours=14)
    assert first["timestamp"] == T0 + dt.timedelta(hours=15)
    assert (first["n_bars"], first["partial"]) == (2, True)
    assert h1["partial"].sum() == 3  # the 14:00 bucket of each day; 20:00 is full
    d1 = resample_bars(bars, "m15", "d1")
    assert d1["timestamp"].to_list() == [d + dt.timedelta(days=1) for d in days]
    assert d1["n_bars"].to_list() == [26, 26, 26] and d1["partial"].all()
    full = resample_bars(bars, "m15", "h1", drop_partial=True)
    assert full.height == 18 and not full["partial"].any()


def test_resample_refuses_bad_targets_and_unvalidated_input(m1_bars):
    with pytest.raises(ValueError, match="whole multiple"):
        resample_bars(m1_bars, "m15", "m20")
    with pytest.raises(ValueError, match="whole multiple"):
        resample_bars(m1_bars, "h1", "m30")
    with pytest.raises(DataValidationError, match="not after the previous one"):
        resample_bars(m1_bars.reverse(), "m1", "h1")
    with pytest.raises(ValueError, match="already resampled"):
        resample_bars(resample_bars(m1_bars, "m1", "h1"), "h1", "h4")


def test_build_timeframes_gives_every_coarser_timeframe_in_one_layout(m1_bars):
    out = build_timeframes(m1_bars, "m1")
    assert list(out) == ["m1", "m5", "m15", "m30", "h1", "h4", "d1"]
    for name, frame in out.items():
        assert frame.schema == out["m1"].schema, name
        delta = frame["timestamp"] - frame["open_time"]
        assert (delta == dt.timedelta(minutes=timeframe_minutes(name))).all(), name
    base = out["m1"]
    assert base.height == m1_bars.height
    assert (base["n_bars"] == 1).all() and not base["partial"].any()
    assert base["timestamp"].to_list() == bar_close_times(m1_bars, "m1").to_list()
    assert_frame_equal(
        base.select("open", "high", "low", "close", "volume"),
        m1_bars.select("open", "high", "low", "close", "volume"),
    )
    m30_base = validate_bars(
        random_m1_bars(seed=5).filter(pl.col("timestamp").dt.minute() % 30 == 0)
    )[0]
    assert list(build_timeframes(m30_base, "m30")) == ["m30", "h1", "h4", "d1"]
    assert list(build_timeframes(m30_base, "m30", ["h4", "m5", "d1"])) == ["m30", "h4", "d1"]


# --------------------------------------------------------------------------- no look-ahead


def perturb_after(bars: pl.DataFrame, cutoff: dt.datetime, seed: int) -> pl.DataFrame:
    """Change every base bar not closed by ``cutoff`` (prices, volume) and drop some of them."""
    rng = np.random.default_rng(seed)
    future = (bars["timestamp"] + dt.timedelta(minutes=1)) > cutoff
    factor = pl.Series(rng.uniform(0.5, 2.0, bars.height))
    changed = bars.with_columns(
        [
            pl.when(future).then(pl.col(c) * factor).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        ]
        + [pl.when(future).then(pl.col("volume") + 7.0).otherwise(pl.col("volume")).alias("volume")]
    )
    drop = future & pl.Series(rng.random(bars.height) < 0.3)
    return changed.filter(~drop)


@pytest.mark.parametrize("offset_minutes", [1, 59, 60, 61, 239, 240, 1439, 1440, 2500.5])
def test_no_look_ahead_under_future_perturbation(m1_bars, offset_minutes):
    origin = m1_bars["timestamp"][0]
    cutoff = origin.replace(minute=0) + dt.timedelta(minutes=offset_minutes)
    perturbed = perturb_after(m1_bars, cutoff, seed=int(offset_minutes * 2))
    assert perturbed.height < m1_bars.height
    base_close = bar_close_times(m1_bars, "m1")
    known = base_close <= cutoff
    for target in ("m5", "h1", "h4", "d1"):
        clean = resample_bars(m1_bars, "m1", target)
        dirty = resample_bars(perturbed, "m1", target)
        visible_clean = clean.filter(pl.col("timestamp") <= cutoff)
        visible_dirty = dirty.filter(pl.col("timestamp") <= cutoff)
        assert_frame_equal(visible_clean, visible_dirty)
        # The perturbation does reach the coarse bars that close after the cutoff.
        later = clean.filter(pl.col("timestamp") > cutoff).height
        assert later == 0 or not clean.tail(later).equals(dirty.tail(later))

        index = visible_coarse_index(base_close, clean["timestamp"])
        close_ns = clean["timestamp"].dt.epoch("us").to_numpy()
        base_ns = base_close.dt.epoch("us").to_numpy()
        seen = index >= 0
        assert (close_ns[index[seen]] <= base_ns[seen]).all()  # never a bar closing later
        nxt = index + 1
        has_next = nxt < close_ns.size
        assert (close_ns[nxt[has_next]] > base_ns[has_next]).all()  # the latest closed one
        dirty_index = visible_coarse_index(bar_close_times(perturbed, "m1"), dirty["timestamp"])
        n_known = int(known.sum())
        np.testing.assert_array_equal(index[:n_known], dirty_index[:n_known])
        rows = clean[index[:n_known][index[:n_known] >= 0]]
        dirty_rows = dirty[dirty_index[:n_known][dirty_index[:n_known] >= 0]]
        assert_frame_equal(rows, dirty_rows)


def test_visible_coarse_index_edges():
    coarse = pl.Series([T0 + dt.timedelta(hours=h) for h in (1, 2, 3)])
    base = pl.Series([T0 + dt.timedelta(minutes=m) for m in (30, 60, 61, 119, 120, 180, 500)])
    np.testing.assert_array_equal(visible_coarse_index(base, coarse), [-1, 0, 0, 0, 1, 2, 2])
    as_numpy = visible_coarse_index(
        base.dt.replace_time_zone(None).to_numpy(), coarse.dt.replace_time_zone(None).to_numpy()
    )
    np.testing.assert_array_equal(as_numpy, [-1, 0, 0, 0, 1, 2, 2])
    with pytest.raises(ValueError, match="strictly increasing"):
        visible_coarse_index(base, coarse.reverse())


# --------------------------------------------------------------------------- reading


SAMPLE_ROWS = [
    ("2024-01-02 00:30:00", 1.5, 2.0, 1.0, 1.75, 10),
    ("2024-01-02 00:00:00", 1.0, 1.6, 0.9, 1.5, 12),
    ("2024-01-02 01:00:00", 1.75, 1.8, 1.7, 1.8, 0),
]


def expected_sample() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": [dt.datetime.fromisoformat(r[0]).replace(tzinfo=UTC) for r in SAMPLE_ROWS],
            "open": [r[1] for r in SAMPLE_ROWS],
            "high": [r[2] for r in SAMPLE_ROWS],
            "low": [r[3] for r in SAMPLE_ROWS],
            "close": [r[4] for r in SAMPLE_ROWS],
            "volume": [float(r[5]) for r in SAMPLE_ROWS],
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )


def write_csv(path: Path, header: list[str], rows, separator: str) -> Path:
    lines = [separator.join(header)] + [separator.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "separator, header",
    [
        ("\t", ["Time", "Open", "High", "Low", "Close", "Volume"]),
        (",", ["timestamp", "open", "high", "low", "close", "volume"]),
        (";", ["DateTime", "OPEN", "High", "Low", "Close", "Vol"]),
    ],
)
def test_csv_with_any_delimiter_and_parquet_read_the_same(tmp_path, separator, header):
    csv = read_bars(write_csv(tmp_path / "bars.csv", header, SAMPLE_ROWS, separator))
    assert_frame_equal(csv, expected_sample())  # file order kept (not sorted)
    parquet_path = tmp_path / "bars.parquet"
    expected_sample().with_columns(pl.col("timestamp").dt.replace_time_zone(None)).rename(
        {"timestamp": "Time", "volume": "Volume"}
    ).write_parquet(parquet_path)
    assert_frame_equal(read_bars(parquet_path), csv)


def test_read_bars_other_timestamp_layouts(tmp_path):
    expected = expected_sample()
    # MetaTrader-style separate date and time columns.
    split = [(r[0][:10].replace("-", "."), r[0][11:16], *r[1:]) for r in SAMPLE_ROWS]
    path = write_csv(
        tmp_path / "mt.csv", ["DATE", "TIME", "OPEN", "HIGH", "LOW", "CLOSE", "TICKVOL"], split, ","
    )
    assert_frame_equal(read_bars(path), expected)
    # Epoch milliseconds.
    epoch = [
        (int(dt.datetime.fromisoformat(r[0]).replace(tzinfo=UTC).timestamp() * 1000), *r[1:])
        for r in SAMPLE_ROWS
    ]
    path = write_csv(tmp_path / "epoch.csv", ["open_time", "o", "h", "l", "c", "v"], epoch, ",")
    assert_frame_equal(read_bars(path), expected)
    # Offsets in the text win; naive text is read in `timezone`.
    shifted = [(r[0].replace(" ", "T") + "+02:00", *r[1:]) for r in SAMPLE_ROWS]
    path = write_csv(
        tmp_path / "offset.csv", ["Time", "Open", "High", "Low", "Close", "Volume"], shifted, ","
    )
    got = read_bars(path)
    assert_frame_equal(got.with_columns(pl.col("timestamp") + dt.timedelta(hours=2)), expected)
    path = write_csv(
        tmp_path / "tokyo.csv", ["Time", "Open", "High", "Low", "Close", "Volume"], SAMPLE_ROWS, ","
    )
    got = read_bars(path, timezone="Asia/Tokyo")
    assert_frame_equal(got.with_columns(pl.col("timestamp") + dt.timedelta(hours=9)), expected)


def test_read_bars_names_file_column_rows_and_values_of_bad_cells(tmp_path):
    rows = [list(r) for r in SAMPLE_ROWS] + [["2024-01-02 01:30:00", 1, 2, 1, 1.5, 3]]
    rows[1][0] = "2024-13-02 00:00:00"
    rows[3][4] = "1.5x"
    path = write_csv(
        tmp_path / "broken.csv", ["Time", "Open", "High", "Low", "Close", "Volume"], rows, "\t"
    )
    with pytest.raises(DataValidationError) as err:
        read_bars(path)
    message = str(err.value)
    assert str(path) in message
    assert "column 'Time': 1 value(s) cannot be read as a timestamp" in message
    assert "data row(s) [2]" in message and "2024-13-02 00:00:00" in message
    assert "column 'Close': 1 value(s) cannot be read as a number" in message
    assert "data row(s) [4]" in message and "1.5x" in message


def test_read_bars_missing_column_lists_what_is_there(tmp_path):
    path = write_csv(
        tmp_path / "x.csv",
        ["Time", "Open", "High", "Low", "Close"],
        [r[:5] for r in SAMPLE_ROWS],
        ",",
    )
    with pytest.raises(DataValidationError, match=r"missing bar column\(s\) \['volume'\].*Close"):
        read_bars(path)


# --------------------------------------------------------------------------- real files (opt-in)


@pytest.mark.shared_data
def test_real_btc_m30_file():
    path = require_shared_data("intraday", "BTCUSD_M30.csv")
    raw = read_bars(path)
    assert raw.height == 78_408
    bars, report = validate_bars(
        raw, source=path.name, duplicates="first", expected_timeframe="m30"
    )
    assert report.base_timeframe == "m30"
    assert report.n_duplicate_timestamps >= 0 and report.n_out_of_order >= 0
    assert report.n_bars + report.n_duplicate_rows_dropped == raw.height == report.n_rows_in
    assert bars["timestamp"].diff().drop_nulls().min() > dt.timedelta(0)  # strictly increasing
    assert report.n_gaps > 0 and report.n_missing_bars >= report.n_gaps
    span = report.last_timestamp - report.first_timestamp
    assert report.n_bars + report.n_missing_bars == span // dt.timedelta(minutes=30) + 1
    out = build_timeframes(bars, report.base_timeframe)
    assert list(out) == ["m30", "h1", "h4", "d1"]
    assert all(frame["n_bars"].sum() == bars.height for frame in out.values())


@pytest.mark.shared_data
def test_real_sol_m30_duplicates():
    path = require_shared_data("intraday", "SOLUSDT_M30.csv")
    raw = read_bars(path)
    with pytest.raises(DataValidationError, match="7 timestamp\\(s\\) on 35 rows"):
        validate_bars(raw, source=path.name)
    bars, report = validate_bars(raw, source=path.name, duplicates="first")
    assert (report.n_duplicate_timestamps, report.n_duplicate_rows_dropped) == (7, 28)
    assert report.n_conflicting_duplicates == 0 and report.n_out_of_order == 4
    assert bars.height == raw.height - 28 and bars["timestamp"].is_unique().all()
