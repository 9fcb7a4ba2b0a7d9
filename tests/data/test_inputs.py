"""Readers and validation of raw inputs: every rule ends in a clear error or a counted repair."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import check_ledger, clean_panel, validate

from kizashi.config import InputConfig
from kizashi.data.panel.adjust import adjust_prices
from kizashi.data.panel.read import (
    apply_column_mapping,
    read_margin,
    read_panel,
    read_sectors,
    read_table,
)
from kizashi.data.panel.validate import validate_margin, validate_panel, validate_sectors
from kizashi.errors import ConfigError, DataValidationError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SP500_REGEX = r"DA-(.+)-T-\d{4}-\d{2}-\d{2}"


# --------------------------------------------------------------------------- helpers


def make_panel(codes: tuple[str, ...] = ("AAA", "BBB"), n_days: int = 6) -> pl.DataFrame:
    return clean_panel(codes, n_days)


def set_value(df: pl.DataFrame, row: int, column: str, value: object) -> pl.DataFrame:
    """Return ``df`` with ``df[row, column] = value`` (dtype widened to fit nulls/strings)."""
    values = df.get_column(column).to_list()
    values[row] = value
    return df.with_columns(pl.Series(column, values, strict=False))


def raises_validation(df: pl.DataFrame, *fragments: str, **config: object) -> str:
    with pytest.raises(DataValidationError) as info:
        validate_panel(df, "prices.csv", InputConfig(**config))
    message = str(info.value)
    assert "prices.csv" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    return message


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- readers


@pytest.mark.parametrize("separator", [",", ";", "\t", "|"])
def test_read_table_sniffs_any_separator(tmp_path: Path, separator: str) -> None:
    lines = [
        "code,date,open,high,low,close,volume",
        "X,2021-01-04,1.5,2,1,1.5,10",
        "X,2021-01-05,1.5,2,1,1.75,11",
    ]
    path = write_csv(
        tmp_path / "p.csv", "\n".join(line.replace(",", separator) for line in lines) + "\n"
    )
    frame = read_table(path)
    assert frame.columns == ["code", "date", "open", "high", "low", "close", "volume"]
    assert frame.get_column("close").to_list() == ["1.5", "1.75"]  # raw strings; validation casts


def test_read_table_parquet_and_explicit_separator(tmp_path: Path) -> None:
    panel = make_panel()
    panel.write_parquet(tmp_path / "p.parquet")
    assert read_table(tmp_path / "p.parquet").equals(panel)
    panel.write_csv(tmp_path / "p.txt", separator=";")
    assert read_table(tmp_path / "p.txt", separator=";").height == panel.height


def test_read_table_names_a_json_body(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "DA-X-T-2021-04-21.csv", '{\n"Error Message": "Invalid API call"\n}\n'
    )
    with pytest.raises(DataValidationError, match=r"DA-X-T-2021-04-21\.csv.*JSON"):
        read_table(path)


def test_read_table_rejects_duplicated_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "dup.csv", "code,date,close,close\nA,2021-01-04,1,2\n")
    with pytest.raises(DataValidationError, match=r"dup\.csv.*duplicated column.*'close'"):
        read_table(path)


def test_read_table_missing_file_and_single_column(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="not found"):
        read_table(tmp_path / "absent.csv")
    path = write_csv(tmp_path / "one.csv", "close\n1\n2\n")
    with pytest.raises(DataValidationError, match=r"one\.csv"):
        read_table(path)


def test_mapping_two_sources_to_one_canonical_is_an_error() -> None:
    frame = pl.DataFrame({"symbol": ["A"], "ticker": ["A"], "timestamp": ["2021-01-04"]})
    with pytest.raises(DataValidationError, match=r"prices\.csv.*'symbol', 'ticker'.*'code'"):
        apply_column_mapping(
            frame, {"symbol": "code", "ticker": "code", "timestamp": "date"}, "prices.csv"
        )


def test_mapping_onto_an_existing_column_is_an_error() -> None:
    frame = pl.DataFrame({"Code": ["A"], "code": ["B"]})
    with pytest.raises(DataValidationError, match=r"'Code' maps to 'code'"):
        apply_column_mapping(frame, {"Code": "code"}, "prices.csv")
    # absent sources are ignored, a complete mapping renames
    renamed = apply_column_mapping(
        pl.DataFrame({"Code": ["A"]}), {"Code": "code", "Date": "date"}, "x"
    )
    assert renamed.columns == ["code"]


def test_unknown_preset_is_a_config_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "code,date\nA,2021-01-04\n")
    with pytest.raises(ConfigError, match="jquants"):
        read_panel(path, preset="nope")


JQUANTS_CSV = (
    (
        "Date,Code,Open,High,Low,Close,UpperLimit,LowerLimit,Volume,TurnoverValue,"
        "AdjustmentFactor,AdjustmentClose\n"
    )
    + """2023-01-04,86970,2000,2010,1990,2005,0,0,1000,2005000,1.0,1002.5
2023-01-05,86970,2005,2030,2000,2020,0,0,1200,2424000,1.0,1010
2023-01-06,86970,,,,,0,0,0,0,0.5,
2023-01-10,86970,1010,1020,1000,1015,0,0,2600,2639000,1.0,1015
2023-01-04,13010,300,310,295,305,0,0,500,152500,1.0,305
2023-01-05,13010,305,306,300,301,0,0,400,120400,1.0,301
2023-01-06,13010,301,305,299,304,0,0,450,136800,1.0,304
2023-01-10,13010,304,304,304,304,0,0,0,0,1.0,304
"""
)


def test_jquants_export_loads_with_the_preset(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "daily_quotes.csv", JQUANTS_CSV)
    raw, notes = read_panel(path, preset="jquants")
    assert notes == []
    assert {"code", "date", "adjustment_factor", "turnover_value"} <= set(raw.columns)
    clean, report = validate_panel(raw, str(path), InputConfig(preset="jquants"))
    check_ledger(report)
    assert clean.schema["code"] == pl.Utf8 and clean.schema["date"] == pl.Date
    assert set(clean.get_column("code")) == {"86970", "13010"}  # numbers kept as strings
    # the halt row (null prices, volume 0) and the flat zero-volume bar are dropped and counted
    assert report.counts()["no_trade_rows"] == 2
    assert report.n_rows_out == 6
    # the 2-for-1 factor of the dropped halt row moved onto the next trading row
    assert report.issue("moved_adjustment_events").count == 1
    factors = clean.filter(pl.col("code") == "86970").get_column("adjustment_factor").to_list()
    assert factors == [1.0, 1.0, 0.5]
    # clean frame is sorted by (code, date)
    assert clean.get_column("code").to_list() == ["13010"] * 3 + ["86970"] * 3
    adjusted, _ = adjust_prices(clean)
    jpx = adjusted.filter(pl.col("code") == "86970")
    assert jpx.get_column("close").to_list() == pytest.approx([2005.0, 2020.0, 2030.0])


def test_jquants_limit_flags_reach_the_market_frame(tmp_path: Path) -> None:
    """UpperLimit / LowerLimit are carried through validation and adjustment unchanged, and
    a book cannot buy on an upper-limit day or sell on a lower-limit day."""
    from kizashi.portfolio import market_frame

    text = JQUANTS_CSV.replace("2023-01-05,86970,2005,2030,2000,2020,0,0,", "2023-01-05,86970,2005,2030,2000,2020,1,0,")
    text = text.replace("2023-01-06,13010,301,305,299,304,0,0,", "2023-01-06,13010,301,305,299,304,0,1,")
    path = write_csv(tmp_path / "daily_quotes.csv", text)
    raw, _ = read_panel(path, preset="jquants")
    clean, _ = validate_panel(raw, str(path), InputConfig(preset="jquants"))
    adjusted, _ = adjust_prices(clean)
    assert adjusted.schema["upper_limit"] == pl.Float64 and adjusted.get_column("upper_limit").sum() == 1
    market = market_frame(adjusted).sort("code", "date")
    blocked_buy = market.filter(~pl.col("can_buy")).select("code", "date").rows()
    blocked_sell = market.filter(~pl.col("can_sell")).select("code", "date").rows()
    assert blocked_buy == [("86970", dt.date(2023, 1, 5))]
    assert blocked_sell == [("13010", dt.date(2023, 1, 6))]


def test_dates_as_yyyymmdd_strings_integers_and_datetimes() -> None:
    base = make_panel(("A",), 3)
    expected = base.get_column("date").to_list()
    as_text = base.with_columns(pl.col("date").dt.strftime("%Y%m%d"))
    as_int = as_text.with_columns(pl.col("date").cast(pl.Int64))
    as_datetime = base.with_columns(pl.col("date").cast(pl.Datetime("us")))
    for frame in (as_text, as_int, as_datetime):
        clean, _ = validate(frame)
        assert clean.get_column("date").to_list() == expected


def _sample_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "raw"
    folder.mkdir()
    header = (
        "timestamp,open,high,low,close,adjusted_close,volume,dividend_amount,split_coefficient\n"
    )
    write_csv(
        folder / "DA-AAA-T-2021-04-21.csv",
        header + "2021-01-05,10,11,9,10.5,10.5,100,0,1\n2021-01-04,10,11,9,10,10,90,0,1\n",
    )
    write_csv(folder / "DA-BF.B-T-2021-04-21.csv", "{\nError Message\n}\n")
    write_csv(folder / "DA-CCC-T-2021-04-21.csv", header + "2021-01-04,20,21,19,20,20,50,0,1\n")
    return folder


def test_folder_with_a_bad_file_names_it(tmp_path: Path) -> None:
    folder = _sample_folder(tmp_path)
    with pytest.raises(DataValidationError) as info:
        read_panel(folder, preset="sp500", code_from_filename=SP500_REGEX)
    message = str(info.value)
    assert "DA-BF.B-T-2021-04-21.csv" in message and "skip_bad_files" in message
    assert "DA-AAA" not in message


def test_folder_skip_bad_files_loads_the_rest_and_notes_it(tmp_path: Path) -> None:
    folder = _sample_folder(tmp_path)
    raw, notes = read_panel(
        folder, preset="sp500", code_from_filename=SP500_REGEX, skip_bad_files=True
    )
    assert len(notes) == 1 and "DA-BF.B-T-2021-04-21.csv" in notes[0]
    clean, report = validate(raw, preset="sp500")
    assert sorted(clean.get_column("code").unique()) == ["AAA", "CCC"]
    assert report.issue("unsorted") is not None  # AAA's rows were in reverse order


def test_folder_without_code_from_filename_is_a_clear_error(tmp_path: Path) -> None:
    folder = _sample_folder(tmp_path)
    (folder / "DA-BF.B-T-2021-04-21.csv").unlink()
    with pytest.raises(DataValidationError, match="code_from_filename"):
        read_panel(folder, preset="sp500")
    with pytest.raises(ConfigError, match="one group"):
        read_panel(folder, preset="sp500", code_from_filename=r"DA-.+\.csv")


# --------------------------------------------------------------------------- panel rules


def test_clean_panel_passes_and_report_is_json_safe() -> None:
    panel = make_panel().with_columns(
        pl.lit("x").alias("oracle_note"), pl.lit(0.1).alias("oracle_alpha")
    )
    clean, report = validate(panel)
    assert report.ok and report.n_rows_out == panel.height and report.n_codes == 2
    assert report.date_min == dt.date(2021, 1, 4)
    assert clean.get_column("oracle_note").to_list() == ["x"] * panel.height  # oracle_* untouched
    assert clean.schema["oracle_note"] == pl.Utf8
    assert "row" not in clean.columns
    json.dumps(report.to_dict())


def test_missing_required_columns_lists_missing_and_present() -> None:
    panel = make_panel().drop("high", "volume")
    raises_validation(panel, "missing_columns", "['high', 'volume']", "columns present", "'close'")


def test_duplicated_columns_are_an_error() -> None:
    panel = make_panel().with_columns(pl.col("close").alias("close_duplicated_0"))
    raises_validation(panel, "duplicated_columns", "close_duplicated_0")


def test_unparsable_numbers_name_column_value_and_row() -> None:
    panel = make_panel().with_columns(pl.col("close").cast(pl.Utf8))
    panel = set_value(panel, 3, "close", "1O3.5")  # letter O
    message = raises_validation(panel, "unparsable_values", "`close`", "'1O3.5'")
    assert "| 4 " in message  # the 1-based input row is shown


def test_unparsable_dates_are_an_error() -> None:
    panel = make_panel().with_columns(pl.col("date").cast(pl.Utf8))
    panel = set_value(panel, 2, "date", "2021-13-45")
    raises_validation(panel, "unparsable_values", "`date`", "2021-13-45")


def test_float_codes_must_be_integral() -> None:
    panel = make_panel().with_columns(pl.lit(86970.0).alias("code"))
    clean, _ = validate(panel.filter(pl.col("date") <= dt.date(2021, 1, 4)).head(1))
    assert clean.get_column("code").to_list() == ["86970"]
    bad = set_value(panel.head(2), 1, "code", 1.5)
    raises_validation(bad, "unparsable_values", "`code`")


def test_null_prices_are_an_error_with_rows() -> None:
    panel = set_value(make_panel(), 2, "close", None)
    raises_validation(panel, "null_values", "`close`", "| 3 ")
    no_code = set_value(make_panel(), 1, "code", None)
    raises_validation(no_code, "null_values", "`code`")


def test_nan_is_read_as_null() -> None:
    panel = set_value(make_panel(), 2, "high", float("nan"))
    raises_validation(panel, "null_values", "`high`")


def test_no_trade_rows_are_dropped_and_counted() -> None:
    panel = make_panel()
    for column in ("open", "high", "low", "close"):
        panel = set_value(panel, 2, column, None)
    panel = set_value(panel, 2, "volume", 0.0)
    panel = set_value(panel, 8, "volume", None)  # null volume, every price null
    for column in ("open", "high", "low", "close"):
        panel = set_value(panel, 8, column, None)
    flat = make_panel().row(4, named=True)["close"]
    for column in ("open", "high", "low"):
        panel = set_value(panel, 4, column, flat)  # flat bar with zero volume
    panel = set_value(panel, 4, "volume", 0.0)
    panel = set_value(panel, 5, "volume", 0.0)  # zero volume but a range: kept, info
    clean, report = validate(panel)
    assert report.issue("no_trade_rows").action == "dropped"
    assert report.issue("no_trade_rows").count == 3
    assert report.issue("zero_volume_with_range").count == 1
    assert clean.height == panel.height - 3


def test_no_trade_rows_kept_when_drop_zero_volume_is_false() -> None:
    panel = make_panel()
    for column in ("open", "high", "low", "close"):
        panel = set_value(panel, 2, column, None)
    panel = set_value(panel, 2, "volume", 0.0)
    raises_validation(panel, "null_values", "drop_zero_volume", drop_zero_volume=False)
    flat = make_panel()
    value = flat.row(4, named=True)["close"]
    for column in ("open", "high", "low"):
        flat = set_value(flat, 4, column, value)
    flat = set_value(flat, 4, "volume", 0.0)
    clean, report = validate(flat, drop_zero_volume=False)
    assert clean.height == flat.height and report.issue("no_trade_rows").action == "info"


def test_duplicates_are_an_error_with_example_rows() -> None:
    panel = pl.concat([make_panel(), make_panel().slice(3, 1).with_columns(pl.col("close") + 0.25)])
    message = raises_validation(panel, "duplicate_rows", "on_duplicate", "AAA", "2021-01-07")
    assert "| 4 " in message and "| 13 " in message


@pytest.mark.parametrize(("policy", "close"), [("first", 103.0), ("last", 103.25)])
def test_duplicates_keep_first_or_last_in_input_order(policy: str, close: float) -> None:
    panel = pl.concat([make_panel(), make_panel().slice(3, 1).with_columns(pl.col("close") + 0.25)])
    clean, report = validate(panel, on_duplicate=policy)
    assert (
        report.issue("duplicate_rows").count == 1
        and report.issue("duplicate_rows").action == "dropped"
    )
    row = clean.filter((pl.col("code") == "AAA") & (pl.col("date") == dt.date(2021, 1, 7)))
    assert row.get_column("close").to_list() == [close]
    assert clean.height == make_panel().height


BAD_PRICES = [
    ("non_positive_price", "low", -1.0),
    ("high_below_low", "high", 50.0),
    ("close_outside_range", "close", 150.0),
    ("open_outside_range", "open", 10.0),
    ("negative_volume", "volume", -5.0),
]


@pytest.mark.parametrize(("rule", "column", "value"), BAD_PRICES)
def test_bad_prices_are_errors_with_rows(rule: str, column: str, value: float) -> None:
    panel = set_value(make_panel(), 3, column, value)
    raises_validation(panel, rule, "on_bad_price", "| 4 ")


@pytest.mark.parametrize(("rule", "column", "value"), BAD_PRICES)
def test_bad_prices_dropped_and_counted(rule: str, column: str, value: float) -> None:
    panel = set_value(make_panel(), 3, column, value)
    clean, report = validate(panel, on_bad_price="drop")
    assert report.issue(rule).action == "dropped" and report.issue(rule).count == 1
    assert clean.height == panel.height - 1


def test_a_row_breaking_two_rules_is_dropped_once() -> None:
    panel = set_value(make_panel(), 3, "high", 50.0)  # high < low and close > high
    clean, report = validate(panel, on_bad_price="drop")
    assert report.n_dropped == 1 and clean.height == panel.height - 1
    with pytest.raises(DataValidationError) as info:
        validate_panel(panel, "prices.csv", InputConfig())
    assert "high_below_low" in str(info.value) and "close_outside_range" in str(info.value)


def test_bad_adjustment_values_are_errors() -> None:
    panel = make_panel().with_columns(pl.lit(1.0).alias("adjustment_factor"))
    raises_validation(set_value(panel, 2, "adjustment_factor", 0.0), "bad_adjustment")


def test_null_adjustment_fields_are_read_as_no_event() -> None:
    panel = make_panel().with_columns(
        pl.lit(1.0).alias("split_coefficient"), pl.lit(0.0).alias("dividend_amount")
    )
    panel = set_value(set_value(panel, 1, "split_coefficient", None), 2, "dividend_amount", None)
    clean, report = validate(panel)
    assert report.counts()["null_adjustment"] == 2
    assert clean.get_column("split_coefficient").null_count() == 0


def test_unsorted_input_is_sorted_and_reported() -> None:
    panel = make_panel().sample(fraction=1.0, shuffle=True, seed=3)
    clean, report = validate(panel)
    assert report.issue("unsorted").action == "info"
    assert clean.equals(make_panel())


def test_short_histories_are_counted_not_dropped() -> None:
    """min_history is a point-in-time universe rule (features pipeline), not a filter on a
    stock's row count over the whole file: validation keeps every row and reports how many
    come before their stock's min_history-th row."""
    panel = pl.concat([make_panel(), make_panel(("NEW",), 2)])
    clean, report = validate(panel, min_history=3)
    issue = report.issue("short_history")
    # AAA and BBB: their first 2 rows each; NEW: both of its rows (it never reaches 3).
    assert issue.count == 6 and issue.action == "info" and "NEW" in issue.examples
    assert clean.height == panel.height and "NEW" in clean.get_column("code").to_list()


def test_empty_panel_is_an_error() -> None:
    raises_validation(make_panel().head(0), "empty_panel", "no rows")
    no_trade = make_panel().with_columns(
        *(pl.col("close").alias(name) for name in ("open", "high", "low")), pl.lit(0.0).alias("volume")
    )
    raises_validation(no_trade, "empty_panel", "every row was dropped")


def test_gaps_are_reported_not_filled() -> None:
    panel = make_panel().filter(
        ~((pl.col("code") == "BBB") & pl.col("date").is_in([dt.date(2021, 1, 6)]))
    )
    clean, report = validate(panel)
    assert report.issue("gaps").count == 1 and clean.height == panel.height


def test_all_errors_are_raised_together() -> None:
    panel = set_value(make_panel(), 1, "close", None)
    panel = set_value(panel, 4, "low", -3.0)
    panel = pl.concat([panel, make_panel().tail(1)])
    message = raises_validation(panel, "null_values", "non_positive_price", "duplicate_rows")
    assert message.count("- [") == 3
    _, report = validate_panel(panel, "prices.csv", InputConfig(), raise_on_error=False)
    assert not report.ok and len(report.errors) == 3
    with pytest.raises(DataValidationError):
        report.raise_if_errors()


def test_ledger_holds_under_every_dropping_policy() -> None:
    panel = make_panel(("A", "B", "C"), 8)
    panel = set_value(panel, 2, "high", 1.0)
    panel = set_value(panel, 5, "volume", 0.0)
    for column in ("open", "high", "low"):
        panel = set_value(panel, 5, column, panel.row(5, named=True)["close"])
    panel = pl.concat([panel, panel.slice(10, 2), make_panel(("D",), 2)])
    clean, report = validate(panel, on_bad_price="drop", on_duplicate="last", min_history=4)
    assert report.n_rows_in == report.n_rows_out + report.n_dropped
    assert {"no_trade_rows", "high_below_low", "duplicate_rows", "short_history"} <= set(
        report.counts()
    )


# --------------------------------------------------------------------------- sectors


def test_sectors_ok_with_integer_codes_and_unused_codes() -> None:
    sectors = pl.DataFrame(
        {"code": [86970, 13010, 99990], "sector": ["Financials", "Fishery", "Other"]}
    )
    clean, report = validate_sectors(sectors, ["86970", "13010"], "sectors.csv", InputConfig())
    assert clean.schema["code"] == pl.Utf8 and report.issue("unused_sectors").count == 1


def test_sectors_duplicate_codes_are_an_error() -> None:
    sectors = pl.DataFrame({"code": ["A", "A", "B", "B"], "sector": ["X", "Y", "Z", "Z"]})
    with pytest.raises(DataValidationError, match=r"(?s)sectors\.csv.*duplicate_rows.*\['A'\]"):
        validate_sectors(sectors, ["A", "B"], "sectors.csv", InputConfig())
    clean, report = validate_sectors(sectors.slice(2), ["B"], "sectors.csv", InputConfig())
    assert clean.height == 1 and report.issue("duplicate_rows").action == "dropped"  # exact repeat


def test_sectors_missing_codes_error_or_unknown() -> None:
    sectors = pl.DataFrame({"code": ["A", "B"], "sector": ["X", None]})
    with pytest.raises(DataValidationError, match=r"(?s)missing_sector.*'C'.*'B'"):
        validate_sectors(sectors, ["A", "B", "C"], "sectors.csv", InputConfig())
    clean, report = validate_sectors(
        sectors, ["A", "B", "C"], "sectors.csv", InputConfig(missing_sector="unknown")
    )
    check_ledger(report)
    assert dict(clean.select("code", "sector").iter_rows()) == {
        "A": "X",
        "B": "UNKNOWN",
        "C": "UNKNOWN",
    }
    assert report.issue("missing_sector").count == 2 and report.n_rows_added == 1


def test_sector_level_column_must_exist(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "sectors.csv", "Code,Sector33CodeName,CompanyName\n86970,Other Financing,JPX\n"
    )
    sectors = read_sectors(path, preset="sectors_jquants")
    config = InputConfig(sector_level="sector_2")
    with pytest.raises(DataValidationError, match=r"(?s)sectors\.csv.*missing_columns.*sector_2"):
        validate_sectors(sectors, ["86970"], str(path), config)
    clean, _ = validate_sectors(sectors, ["86970"], str(path), InputConfig())
    assert clean.row(0, named=True) == {"code": "86970", "sector": "Other Financing", "name": "JPX"}


# --------------------------------------------------------------------------- margin


MARGIN_CSV = """Date,Code,PublishedDate,LongMarginTradeVolume,ShortMarginTradeVolume
2023-01-06,86970,2023-01-11,1000,200
2023-01-13,86970,2023-01-18,1100,250
2023-01-06,13010,2023-01-11,50,10
"""


def test_margin_loads_with_the_preset(tmp_path: Path) -> None:
    margin = read_margin(write_csv(tmp_path / "margin.csv", MARGIN_CSV), preset="jquants_margin")
    clean, report = validate_margin(margin, "margin.csv", InputConfig())
    assert report.ok and clean.schema["published_date"] == pl.Date
    assert clean.get_column("code").to_list() == ["13010", "86970", "86970"]


def test_margin_published_before_date_is_an_error(tmp_path: Path) -> None:
    text = MARGIN_CSV.replace("2023-01-13,86970,2023-01-18", "2023-01-13,86970,2023-01-12")
    margin = read_margin(write_csv(tmp_path / "margin.csv", text), preset="jquants_margin")
    with pytest.raises(
        DataValidationError, match=r"(?s)margin\.csv.*published_before_date.*2023-01-12"
    ):
        validate_margin(margin, "margin.csv", InputConfig())


def test_margin_duplicates_are_an_error(tmp_path: Path) -> None:
    text = MARGIN_CSV + "2023-01-06,13010,2023-01-12,55,10\n"
    margin = read_margin(write_csv(tmp_path / "margin.csv", text), preset="jquants_margin")
    with pytest.raises(DataValidationError, match=r"(?s)margin\.csv.*duplicate_rows.*13010"):
        validate_margin(margin, "margin.csv", InputConfig())


# --------------------------------------------------------------------------- real data (opt-in)


@pytest.mark.shared_data
def test_sp500_parquet_reads_validates_and_adjusts() -> None:
    if not (SHARED_DATA / "sp500").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    path = SHARED_DATA / "sp500" / "daily_1999_2018.parquet"
    start = time.perf_counter()
    raw, _ = read_panel(path, preset="sp500")
    clean, report = validate_panel(raw, str(path), InputConfig(preset="sp500"))
    adjusted, issues = adjust_prices(clean)
    elapsed = time.perf_counter() - start
    check_ledger(report)
    assert report.ok and report.n_rows_in == 2_112_014 and report.n_codes == 496
    # the real file's warts: halt/holiday rows with zero volume and a flat bar, one zero-volume
    # bar with a range, gaps inside some stocks' histories; nothing else fires
    assert {i.rule: i.action for i in report.issues} == {
        "no_trade_rows": "dropped",
        "zero_volume_with_range": "info",
        "gaps": "info",
    }
    assert report.issue("no_trade_rows").count == 184
    assert report.n_rows_out == 2_112_014 - 184
    by_rule = {issue.rule: issue for issue in issues}
    mismatch = by_rule["adjusted_close_mismatch"]
    assert (
        0 < mismatch.count < 0.0001 * adjusted.height
    )  # splits/dividends agree with adjusted_close
    assert (
        "TRMB" in mismatch.examples
    )  # a 2-for-1 split (2007-02-23) missing from split_coefficient
    assert adjusted.get_column("close").is_finite().all()
    assert (adjusted.get_column("adjustment_multiplier") > 0).all()
    assert elapsed < 20, f"read+validate+adjust took {elapsed:.1f}s"
    sectors = read_sectors(SHARED_DATA / "sp500" / "sectors.csv", preset="sectors_sp500")
    sector_table, sector_report = validate_sectors(
        sectors, clean.get_column("code").unique(), "sectors.csv", InputConfig()
    )
    assert sector_report.ok and sector_report.issue("unused_sectors").count == 9


@pytest.mark.shared_data
def test_sp500_raw_sample_folder(tmp_path: Path) -> None:
    folder = SHARED_DATA / "sp500" / "raw_sample"
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder}")
    with pytest.raises(DataValidationError, match=r"DA-BF\.B-T-2021-04-21\.csv.*JSON"):
        read_panel(folder, preset="sp500", code_from_filename=SP500_REGEX)
    raw, notes = read_panel(
        folder, preset="sp500", code_from_filename=SP500_REGEX, skip_bad_files=True
    )
    assert len(notes) == 1 and "DA-BF.B" in notes[0]
    clean, report = validate_panel(raw, str(folder), InputConfig(preset="sp500"))
    assert report.ok and sorted(clean.get_column("code").unique()) == ["AAPL", "MSFT", "NVDA"]
    adjusted, issues = adjust_prices(clean)
    assert next(i for i in issues if i.rule == "adjusted_close_mismatch").count == 0
    # AAPL's 4-for-1 split (2020-08-31) leaves the adjusted close continuous
    aapl = adjusted.filter(pl.col("code") == "AAPL").with_columns(
        pl.col("close").pct_change().alias("ret")
    )
    split_day = aapl.filter(pl.col("date") == dt.date(2020, 8, 31)).get_column("ret").item()
    assert abs(split_day) < 0.1
    # copying the folder elsewhere works the same (nothing depends on the shared path)
    shutil.copytree(folder, tmp_path / "copy")
    assert (
        read_panel(
            tmp_path / "copy", preset="sp500", code_from_filename=SP500_REGEX, skip_bad_files=True
        )[0].height
        == raw.height
    )
