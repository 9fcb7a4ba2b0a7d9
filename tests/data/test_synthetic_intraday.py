"""Tests for kizashi.data.synthetic.intraday: synthetic intraday bars and their stylized facts.

The stylized-fact tests use fixed seeds; their thresholds keep a margin over what seeds 0-9
of the same configs give: |return| autocorrelation at lags 1-10 >= 0.097 (threshold 0.05),
|return autocorrelation| <= 0.021 (0.05), pairwise return correlation 0.41-0.51 for a
configured 0.5 (+-0.1), edge / midday mean |return| >= 1.48 (1.4), pooled max |return| / sd
>= 30 with jumps and <= 21 without (25, and 1.3x), excess kurtosis >= 3.9 without jumps (1).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kizashi.data.synthetic.intraday import (
    BAR_COLUMNS,
    CSV_COLUMNS,
    SyntheticBarsConfig,
    bars_to_csv,
    generate_bars,
)
from kizashi.data.timeframes import timeframe_minutes

UTC = dt.UTC
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


# ------------------------------------------------------------------------------ helpers
def _log_returns(frame: pl.DataFrame) -> np.ndarray:
    """Close-to-close log returns, ``[T - 1]``."""
    return np.diff(np.log(frame["close"].to_numpy()))


def _returns_matrix(frames: dict[str, pl.DataFrame]) -> np.ndarray:
    return np.column_stack([_log_returns(f) for f in frames.values()])


def _acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float(np.dot(x[:-lag], x[lag:]) / np.dot(x, x))


def _excess_kurtosis(x: np.ndarray) -> float:
    x = x - x.mean()
    return float(np.mean(x**4) / np.mean(x**2) ** 2 - 3.0)


def _steps_minutes(frame: pl.DataFrame) -> np.ndarray:
    return frame["timestamp"].diff().dt.total_minutes().drop_nulls().to_numpy()


def _modal(values: np.ndarray) -> int:
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[np.argmax(counts)])


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def bars() -> dict[str, pl.DataFrame]:
    """Default config: 4 symbols x 30 days of m1 bars, 24h session (43,200 bars each)."""
    return generate_bars(SyntheticBarsConfig())


@pytest.fixture(scope="module")
def bars_no_jumps() -> dict[str, pl.DataFrame]:
    """Same seed and shocks as ``bars``, jumps off."""
    return generate_bars(SyntheticBarsConfig(jump_rate_per_day=0.0))


@pytest.fixture(scope="module")
def equity_bars() -> dict[str, pl.DataFrame]:
    return generate_bars(SyntheticBarsConfig(session="equity", n_days=42, seed=5))


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"symbols": ()}, "symbols"),
        ({"symbols": ("A", "A")}, "symbols"),
        ({"symbols": ("A/B",)}, "symbols"),
        ({"timeframe": "x5"}, "timeframe"),
        ({"timeframe": "d2"}, "timeframe"),
        ({"n_days": 0}, "n_days"),
        ({"seed": -1}, "seed"),
        ({"start": dt.datetime(2021, 1, 4, 0, 0, 30)}, "start"),
        ({"session": "weekly"}, "session"),
        (
            {"session": "equity", "session_open": dt.time(21), "session_close": dt.time(14)},
            "session_open",
        ),
        ({"annual_volatility": 0.0}, "annual_volatility"),
        ({"garch_alpha": -0.1}, "garch_alpha"),
        ({"garch_alpha": 0.1, "garch_beta": 0.9}, "garch_alpha + garch_beta"),
        ({"shock_df": 2.0}, "shock_df"),
        ({"jump_df": 1.5}, "jump_df"),
        ({"correlation": 1.0}, "correlation"),
        ({"correlation": float("nan")}, "correlation"),
        ({"seasonality_amplitude": -1.0}, "seasonality_amplitude"),
        ({"jump_rate_per_day": -1.0}, "jump_rate_per_day"),
        ({"jump_variance_share": 1.0}, "jump_variance_share"),
        (
            {"session": "equity", "jump_variance_share": 0.5, "overnight_variance_share": 0.5},
            "overnight_variance_share",
        ),
        ({"start_prices": (1.0, 2.0)}, "start_prices"),
        ({"start_prices": -5.0}, "start_prices"),
        ({"volume_per_minute": 0.0}, "volume_per_minute"),
        ({"volume_noise": -0.1}, "volume_noise"),
        ({"duplicate_fraction": 1.5}, "duplicate_fraction"),
        ({"gap_fraction": 1.0}, "gap_fraction"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        SyntheticBarsConfig(**overrides)


def test_config_normalizes_timeframe_start_and_prices():
    cfg = SyntheticBarsConfig(
        timeframe="m60",
        start=dt.datetime(2021, 1, 4, 9, 0),
        symbols=["X", "Y"],
        start_prices=(10, 20),
    )
    assert cfg.timeframe == "h1"
    assert cfg.start == dt.datetime(2021, 1, 4, 9, 0, tzinfo=UTC)
    assert cfg.symbols == ("X", "Y")
    np.testing.assert_array_equal(cfg.start_price_array(), [10.0, 20.0])
    assert cfg.garch_omega == pytest.approx(1.0 - cfg.garch_alpha - cfg.garch_beta)
    frames = generate_bars(cfg)
    assert [f["open"][0] for f in frames.values()] == [10.0, 20.0]
    assert frames["X"]["timestamp"][0] == dt.datetime(2021, 1, 4, 9, 0, tzinfo=UTC)


def test_too_short_window_is_a_clear_error():
    with pytest.raises(ValueError, match="n_days"):
        generate_bars(
            SyntheticBarsConfig(
                session="equity", timeframe="d1", n_days=1, start=dt.datetime(2021, 1, 9)
            )
        )


# ------------------------------------------------------------------------------ structure
def test_determinism_and_seed_sensitivity(bars):
    again = generate_bars(SyntheticBarsConfig())
    assert list(again) == list(bars) == ["SYN_A", "SYN_B", "SYN_C", "SYN_D"]
    for symbol, frame in bars.items():
        assert frame.equals(again[symbol])
    other = generate_bars(SyntheticBarsConfig(seed=1, n_days=2))
    same_window = bars["SYN_A"].head(other["SYN_A"].height)
    assert other["SYN_A"]["timestamp"].equals(same_window["timestamp"])
    assert not np.allclose(other["SYN_A"]["close"].to_numpy(), same_window["close"].to_numpy())


def test_schema_and_ohlc_consistency(bars, equity_bars):
    for frames in (bars, equity_bars):
        for frame in frames.values():
            assert frame.columns == list(BAR_COLUMNS)
            assert frame.schema["timestamp"] == pl.Datetime("us", "UTC")
            assert all(frame.schema[c] == pl.Float64 for c in BAR_COLUMNS[1:])
            o, h, lo, c, v = (frame[name].to_numpy() for name in BAR_COLUMNS[1:])
            assert np.all(lo > 0) and np.all(np.isfinite(h))
            assert np.all(lo <= np.minimum(o, c))
            assert np.all(np.maximum(o, c) <= h)
            assert np.all(v >= 1) and np.all(v == np.round(v))
    # 24h: every bar opens exactly at the previous close.
    for frame in bars.values():
        np.testing.assert_array_equal(frame["open"].to_numpy()[1:], frame["close"].to_numpy()[:-1])


def test_24h_timestamps_are_regular_without_gaps(bars):
    for frame in bars.values():
        ts = frame["timestamp"]
        assert ts.is_sorted() and ts.n_unique() == frame.height
        steps = _steps_minutes(frame)
        assert _modal(steps) == 1 and np.all(steps == 1)
        assert frame.height == 30 * 1440
        assert ts[0] == dt.datetime(2021, 1, 4, tzinfo=UTC)
    m15 = generate_bars(SyntheticBarsConfig(timeframe="m15", n_days=3, symbols=("ONE",)))["ONE"]
    assert m15.height == 3 * 96 and np.all(_steps_minutes(m15) == 15)


def test_equity_session_stays_in_session_with_overnight_and_weekend_gaps(equity_bars):
    for frame in equity_bars.values():
        ts = frame["timestamp"]
        assert ts.is_sorted() and ts.n_unique() == frame.height
        steps = _steps_minutes(frame)
        assert _modal(steps) == 1
        minute_of_day = (
            ts.dt.hour().cast(pl.Int32) * 60 + ts.dt.minute().cast(pl.Int32)
        ).to_numpy()
        assert minute_of_day.min() == 14 * 60 + 30 and minute_of_day.max() == 21 * 60 - 1
        assert ts.dt.weekday().max() <= 5  # polars: Monday = 1 ... Sunday = 7
        assert frame.height == 30 * 390  # 42 calendar days from a Monday = 30 weekdays
        # Overnight gaps (17.5 h) and weekend gaps (65.5 h), nothing else besides 1 minute.
        assert set(np.unique(steps).tolist()) == {1, 17 * 60 + 31, 65 * 60 + 31}
        assert np.sum(steps == 65 * 60 + 31) == 5
        # Within a session a bar opens at the previous close; across a gap it does not.
        o, c = frame["open"].to_numpy()[1:], frame["close"].to_numpy()[:-1]
        within = steps == 1
        np.testing.assert_array_equal(o[within], c[within])
        assert np.all(o[~within] != c[~within])


def test_range_scales_with_bar_volatility():
    """E[log(H / L)] ~ 1.5 x std of returns, and grows like sqrt(bar length) across timeframes."""
    ranges, stds = {}, {}
    for tf in ("m1", "m15"):
        frames = generate_bars(
            SyntheticBarsConfig(timeframe=tf, n_days=20, jump_rate_per_day=0.0, seed=3)
        )
        ranges[tf] = np.mean([np.log(f["high"] / f["low"]).mean() for f in frames.values()])
        stds[tf] = np.mean([_log_returns(f).std() for f in frames.values()])
        assert 1.2 < ranges[tf] / stds[tf] < 1.8
    ratio = ranges["m15"] / ranges["m1"]
    assert 0.85 * np.sqrt(15) < ratio < 1.15 * np.sqrt(15)


# ------------------------------------------------------------------------------ stylized facts
def test_volatility_clusters_while_returns_are_uncorrelated(bars):
    returns = _returns_matrix(bars)
    for i in range(returns.shape[1]):
        abs_acf = [_acf(np.abs(returns[:, i]), lag) for lag in range(1, 11)]
        acf = [_acf(returns[:, i], lag) for lag in range(1, 11)]
        assert min(abs_acf) > 0.05, abs_acf
        assert max(abs(a) for a in acf) < 0.05, acf


def test_intraday_seasonality_is_u_shaped(bars, equity_bars):
    for frames, bucket_minutes in ((bars, 60), (equity_bars, 30)):
        for frame in frames.values():
            ts = frame["timestamp"]
            minute = (ts.dt.hour().cast(pl.Int32) * 60 + ts.dt.minute().cast(pl.Int32)).to_numpy()[
                1:
            ]
            abs_r = np.abs(_log_returns(frame))
            within = _steps_minutes(frame) == 1  # leave out overnight gap returns
            bucket = (minute - minute.min()) // bucket_minutes
            means = np.array(
                [abs_r[within & (bucket == b)].mean() for b in range(bucket.max() + 1)]
            )
            middle = means[len(means) // 2 - 1 : len(means) // 2 + 1].mean()
            assert means[0] > 1.4 * middle and means[-1] > 1.4 * middle, means
            # Volume follows the same U.
            vol = frame["volume"].to_numpy()[1:]
            vmeans = np.array([vol[bucket == b].mean() for b in range(bucket.max() + 1)])
            vmiddle = vmeans[len(vmeans) // 2 - 1 : len(vmeans) // 2 + 1].mean()
            assert vmeans[0] > 1.3 * vmiddle and vmeans[-1] > 1.3 * vmiddle, vmeans


def test_heavy_tails_and_jumps(bars, bars_no_jumps):
    with_jumps, without = _returns_matrix(bars), _returns_matrix(bars_no_jumps)
    for i in range(with_jumps.shape[1]):
        assert _excess_kurtosis(with_jumps[:, i]) > 1.0
        assert _excess_kurtosis(without[:, i]) > 1.0  # Student-t shocks + GARCH alone
    pooled_with = with_jumps / with_jumps.std(axis=0)
    pooled_without = without / without.std(axis=0)
    assert _excess_kurtosis(pooled_with.ravel()) > 2.0 * _excess_kurtosis(pooled_without.ravel())
    # Jumps: far larger extremes and many more > 10 sd moves than the diffusion alone.
    max_with, max_without = np.abs(pooled_with).max(), np.abs(pooled_without).max()
    assert max_with > 25.0 and max_with > 1.3 * max_without, (max_with, max_without)
    n_with, n_without = (np.abs(pooled_with) > 10).sum(), (np.abs(pooled_without) > 10).sum()
    assert n_with >= 2 * n_without, (n_with, n_without)


def test_cross_symbol_correlation_matches_config(bars):
    corr = np.corrcoef(_returns_matrix(bars).T)
    pairs = corr[np.triu_indices(corr.shape[0], 1)]
    assert np.all(np.abs(pairs - 0.5) < 0.1), pairs
    independent = generate_bars(SyntheticBarsConfig(correlation=0.0, n_days=10, seed=2))
    pairs0 = np.corrcoef(_returns_matrix(independent).T)[np.triu_indices(4, 1)]
    assert np.all(np.abs(pairs0) < 0.1), pairs0


def test_volume_rises_with_absolute_return(bars):
    for frame in bars.values():
        abs_r = np.abs(np.log(frame["close"] / frame["open"]).to_numpy())
        vol = frame["volume"].to_numpy()
        big = abs_r > np.quantile(abs_r, 0.9)
        small = abs_r < np.quantile(abs_r, 0.1)
        assert vol[big].mean() > 1.5 * vol[small].mean()


# ------------------------------------------------------------------------------ warts
def test_duplicate_fraction_creates_duplicated_timestamps():
    cfg = SyntheticBarsConfig(n_days=2, timeframe="m5", duplicate_fraction=0.05)
    clean = generate_bars(SyntheticBarsConfig(n_days=2, timeframe="m5"))
    for symbol, frame in generate_bars(cfg).items():
        n_clean = clean[symbol].height
        assert frame.height == n_clean + round(0.05 * n_clean)
        assert frame["timestamp"].n_unique() == n_clean
        assert frame["timestamp"].is_sorted()
        assert frame.unique(maintain_order=True).equals(clean[symbol])


def test_gap_fraction_removes_bars():
    cfg = SyntheticBarsConfig(n_days=2, timeframe="m5", gap_fraction=0.1)
    clean = generate_bars(SyntheticBarsConfig(n_days=2, timeframe="m5"))
    for symbol, frame in generate_bars(cfg).items():
        n_clean = clean[symbol].height
        assert frame.height == n_clean - round(0.1 * n_clean)
        assert frame["timestamp"][0] == clean[symbol]["timestamp"][0]
        steps = _steps_minutes(frame)
        assert _modal(steps) == 5 and steps.max() > 5
        kept = clean[symbol].join(frame.select("timestamp"), on="timestamp", how="semi")
        assert kept.equals(frame)


# ------------------------------------------------------------------------------ CSV
def test_bars_to_csv_round_trip(tmp_path, equity_bars):
    frames = {k: v.head(500) for k, v in equity_bars.items()}
    paths = bars_to_csv(frames, tmp_path / "intraday")
    assert [p.name for p in paths] == [f"{s}_M1.csv" for s in frames]
    lines = paths[0].read_text().splitlines()
    assert lines[0] == "\t".join(CSV_COLUMNS)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\t[\d.]+\t[\d.]+\t[\d.]+\t[\d.]+\t\d+", lines[1]
    )
    assert lines[1].startswith("2021-01-04 14:30:00\t100.0\t")
    for path, (symbol, frame) in zip(paths, frames.items(), strict=True):
        back = pl.read_csv(path, separator="\t")
        assert back.columns == list(CSV_COLUMNS)
        times = (
            back["Time"]
            .str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us")
            .dt.replace_time_zone("UTC")
        )
        assert times.equals(frame["timestamp"], check_names=False)
        for csv_col, col in zip(CSV_COLUMNS[1:], BAR_COLUMNS[1:], strict=True):
            np.testing.assert_allclose(
                back[csv_col].cast(pl.Float64).to_numpy(), frame[col].to_numpy(), rtol=1e-12
            )
    m15 = generate_bars(SyntheticBarsConfig(timeframe="m15", n_days=2, symbols=("BTCSYN",)))
    (path,) = bars_to_csv(m15, tmp_path, separator=",")
    assert path.name == "BTCSYN_M15.csv"
    assert path.read_text().splitlines()[0] == "Time,Open,High,Low,Close,Volume"


@pytest.mark.shared_data
def test_bars_to_csv_header_and_time_format_match_real_files(tmp_path):
    real = sorted((SHARED_DATA / "intraday").glob("*.csv"))
    if not real:
        pytest.skip(f"shared intraday data not available under {SHARED_DATA / 'intraday'}")
    with real[0].open() as handle:
        real_header, real_row = handle.readline().rstrip("\n"), handle.readline().rstrip("\n")
    tf = re.search(r"_([MHD]\d+)\.csv$", real[0].name)
    frames = generate_bars(
        SyntheticBarsConfig(
            timeframe=tf.group(1).lower() if tf else "m30", n_days=2, symbols=("SYN",)
        )
    )
    (path,) = bars_to_csv(frames, tmp_path)
    with path.open() as handle:
        header, row = handle.readline().rstrip("\n"), handle.readline().rstrip("\n")
    assert header == real_header
    assert len(row.split("\t")[0]) == len(real_row.split("\t")[0])
    assert timeframe_minutes(path.stem.split("_")[-1].lower()) == timeframe_minutes(
        tf.group(1).lower() if tf else "m30"
    )


def test_bars_to_csv_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        bars_to_csv({}, tmp_path)
    frames = generate_bars(SyntheticBarsConfig(n_days=1, timeframe="h1", symbols=("S",)))
    with pytest.raises(ValueError, match="volume"):
        bars_to_csv({"S": frames["S"].drop("volume")}, tmp_path)
