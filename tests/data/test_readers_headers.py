"""MetaTrader-style bar exports: ``<NAME>`` headers, ``<DATE>`` + ``<TIME>``, VOL vs TICKVOL."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from kizashi.data.bars import read_bars
from kizashi.data.panel.read import read_table
from kizashi.errors import DataValidationError

UTC = dt.UTC
MT5_HEADER = ["<DATE>", "<TIME>", "<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>", "<TICKVOL>", "<VOL>"]
MT5_ROWS = [
    ["2023.09.08", "19:45:00", "1.0701", "1.0703", "1.0699", "1.0702", "120", "0"],
    ["2023.09.08", "20:00:00", "1.0702", "1.0706", "1.0700", "1.0705", "98", "0"],
    ["2023.09.11", "00:00:00", "1.0710", "1.0712", "1.0708", "1.0711", "7", "0"],
]


def write_csv(path: Path, header: list[str], rows: list[list[str]], sep: str) -> Path:
    path.write_text("\n".join(sep.join(cells) for cells in [header, *rows]) + "\n")
    return path


def expected(times: list[dt.datetime], ohlc: list[list[float]], volume: list[float]):
    return pl.DataFrame(
        {
            "timestamp": times,
            "open": [r[0] for r in ohlc],
            "high": [r[1] for r in ohlc],
            "low": [r[2] for r in ohlc],
            "close": [r[3] for r in ohlc],
            "volume": volume,
        },
        schema={
            "timestamp": pl.Datetime("us", "UTC"),
            **{c: pl.Float64 for c in ("open", "high", "low", "close", "volume")},
        },
    )


MT5_TIMES = [
    dt.datetime(2023, 9, 8, 19, 45, tzinfo=UTC),
    dt.datetime(2023, 9, 8, 20, 0, tzinfo=UTC),
    dt.datetime(2023, 9, 11, 0, 0, tzinfo=UTC),
]
MT5_OHLC = [
    [1.0701, 1.0703, 1.0699, 1.0702],
    [1.0702, 1.0706, 1.0700, 1.0705],
    [1.0710, 1.0712, 1.0708, 1.0711],
]


@pytest.mark.parametrize("sep", ["\t", ","])
def test_mt5_date_time_columns_and_zero_vol_falls_back_to_tickvol(tmp_path, sep, caplog):
    header = [*MT5_HEADER, "<SPREAD>"]
    rows = [[*row, "5"] for row in MT5_ROWS]
    path = write_csv(tmp_path / "EURUSD_M15.csv", header, rows, sep)
    with caplog.at_level(logging.INFO, logger="kizashi.data.bars"):
        bars = read_bars(path)
    assert_frame_equal(bars, expected(MT5_TIMES, MT5_OHLC, [120.0, 98.0, 7.0]))
    text = caplog.text
    assert "'<VOL>' is all zeros; using tick volume '<TICKVOL>'" in text
    assert "timestamps: text from '<DATE> + <TIME>'" in text
    assert "volume from '<TICKVOL>' (tick volume; real volume '<VOL>' is all zeros)" in text


def test_nonzero_vol_is_preferred_to_tickvol(tmp_path, caplog):
    rows = [[*row[:7], vol] for row, vol in zip(MT5_ROWS, ["1500", "0", "2500"], strict=True)]
    path = write_csv(tmp_path / "US500.csv", MT5_HEADER, rows, ",")
    with caplog.at_level(logging.INFO, logger="kizashi.data.bars"):
        bars = read_bars(path)
    assert_frame_equal(bars, expected(MT5_TIMES, MT5_OHLC, [1500.0, 0.0, 2500.0]))
    assert "volume from '<VOL>' (real volume; tick volume '<TICKVOL>' not used)" in caplog.text


def test_all_zero_vol_without_tickvol_is_kept(tmp_path):
    header = [c for c in MT5_HEADER if c != "<TICKVOL>"]
    rows = [row[:6] + row[7:] for row in MT5_ROWS]
    bars = read_bars(write_csv(tmp_path / "x.csv", header, rows, "\t"))
    assert bars.get_column("volume").to_list() == [0.0, 0.0, 0.0]


def test_tickvol_alone(tmp_path):
    header = MT5_HEADER[:7]
    rows = [row[:7] for row in MT5_ROWS]
    bars = read_bars(write_csv(tmp_path / "x.csv", header, rows, "\t"))
    assert_frame_equal(bars, expected(MT5_TIMES, MT5_OHLC, [120.0, 98.0, 7.0]))


def test_unparsable_vol_is_reported_not_replaced(tmp_path):
    rows = [[*row[:7], vol] for row, vol in zip(MT5_ROWS, ["0", "n/a?", "0"], strict=True)]
    path = write_csv(tmp_path / "x.csv", MT5_HEADER, rows, "\t")
    with pytest.raises(DataValidationError, match=r"column '<VOL>'.*row\(s\) \[2\]"):
        read_bars(path)


def test_single_datetime_column(tmp_path):
    header = ["<DATETIME>", "<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>", "<TICKVOL>", "<VOL>"]
    rows = [
        ["2023.09.08 19:45", "1.0701", "1.0703", "1.0699", "1.0702", "120", "0"],
        ["2023.09.08 20:00:30", "1.0702", "1.0706", "1.0700", "1.0705", "98", "0"],
    ]
    bars = read_bars(write_csv(tmp_path / "x.csv", header, rows, ";"))
    times = [
        dt.datetime(2023, 9, 8, 19, 45, tzinfo=UTC),
        dt.datetime(2023, 9, 8, 20, 0, 30, tzinfo=UTC),
    ]
    assert_frame_equal(bars, expected(times, MT5_OHLC[:2], [120.0, 98.0]))


def test_daily_export_date_only(tmp_path):
    header = ["<DATE>", "<OPEN>", "<HIGH>", "<LOW>", "<CLOSE>", "<TICKVOL>", "<VOL>", "<SPREAD>"]
    rows = [
        ["2023.09.07", "1.0701", "1.0703", "1.0699", "1.0702", "52000", "0", "3"],
        ["2023.09.08", "1.0702", "1.0706", "1.0700", "1.0705", "48000", "0", "3"],
    ]
    bars = read_bars(write_csv(tmp_path / "EURUSD_D1.csv", header, rows, "\t"))
    times = [dt.datetime(2023, 9, 7, tzinfo=UTC), dt.datetime(2023, 9, 8, tzinfo=UTC)]
    assert_frame_equal(bars, expected(times, MT5_OHLC[:2], [52000.0, 48000.0]))


def test_mt5_times_in_a_server_timezone(tmp_path):
    path = write_csv(tmp_path / "x.csv", MT5_HEADER, MT5_ROWS[:1], "\t")
    bars = read_bars(path, timezone="Europe/Athens")  # EEST = UTC+3 on 2023-09-08
    assert bars.item(0, "timestamp") == dt.datetime(2023, 9, 8, 16, 45, tzinfo=UTC)


def test_parquet_tick_and_real_volume(tmp_path):
    """The layout of MetaTrader5.copy_rates_*: epoch seconds, tick_volume, real_volume."""
    path = tmp_path / "rates.parquet"
    pl.DataFrame(
        {
            "time": [1694202300, 1694203200],
            "open": [1.0701, 1.0702],
            "high": [1.0703, 1.0706],
            "low": [1.0699, 1.0700],
            "close": [1.0702, 1.0705],
            "tick_volume": [120, 98],
            "spread": [5, 5],
            "real_volume": [0, 0],
        }
    ).write_parquet(path)
    assert_frame_equal(read_bars(path), expected(MT5_TIMES[:2], MT5_OHLC[:2], [120.0, 98.0]))


def test_read_table_keeps_bracketed_names(tmp_path):
    frame = read_table(write_csv(tmp_path / "x.csv", MT5_HEADER, MT5_ROWS, "\t"))
    assert frame.columns == MT5_HEADER
    assert frame.row(0) == tuple(MT5_ROWS[0])


@pytest.mark.parametrize(
    "text",
    [
        "<!DOCTYPE html>\n<html><body>Too many requests</body></html>\n",
        '<html lang="en">\n<head><title>502</title></head>\n',
        '<?xml version="1.0"?>\n<Error><Code>AccessDenied</Code></Error>\n',
        "<html><head>,<title>x</title>\n",
    ],
)
def test_html_and_xml_are_still_refused(tmp_path, text):
    path = tmp_path / "x.csv"
    path.write_text(text)
    with pytest.raises(DataValidationError, match="not a CSV table: the file holds HTML/XML"):
        read_bars(path)


def test_bracketed_header_missing_a_column_names_it(tmp_path):
    header = ["<DATE>", "<TIME>", "<OPEN>", "<HIGH>", "<CLOSE>", "<TICKVOL>"]
    rows = [["2023.09.08", "19:45:00", "1.0701", "1.0703", "1.0702", "120"]]
    with pytest.raises(DataValidationError, match=r"missing bar column\(s\) \['low'\]"):
        read_bars(write_csv(tmp_path / "x.csv", header, rows, "\t"))
