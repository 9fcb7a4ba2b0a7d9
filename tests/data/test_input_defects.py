"""Input defects found by hostile testing: isolated price jumps that reverse, ticker-code
normalization, duplicates among invalid rows, non-UTF-8 bytes past the sniffed head, and
``[...]`` text in ``data check``'s rich output."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import polars as pl
import pytest
from conftest import CLEAN_PANEL_START, clean_panel, validate
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import InputConfig
from kizashi.data.panel.adjust import adjust_prices
from kizashi.data.panel.read import read_panel, read_table
from kizashi.data.panel.validate import validate_margin, validate_panel, validate_sectors
from kizashi.errors import DataValidationError

runner = CliRunner()
START = CLEAN_PANEL_START
PRICES = ("open", "high", "low", "close")


def make_panel(codes: tuple[str, ...] = ("AAA", "BBB"), n_days: int = 10) -> pl.DataFrame:
    return clean_panel(codes, n_days)


def is_row(code: str, day: int) -> pl.Expr:
    return (pl.col("code") == code) & (pl.col("date") == START + dt.timedelta(days=day))


def scale_prices(df: pl.DataFrame, where: pl.Expr, factor: float) -> pl.DataFrame:
    """Multiply open, high, low and close by ``factor`` on the rows ``where`` (volume unchanged)."""
    return df.with_columns(
        [pl.when(where).then(pl.col(c) * factor).otherwise(pl.col(c)).alias(c) for c in PRICES]
    )


# --------------------------------------------------------------------------- price jumps


def thousandfold_day() -> pl.DataFrame:
    """The issue's defect: AAA's 6th day (input row 6) has every price x1000, volume unchanged."""
    return scale_prices(make_panel(), is_row("AAA", 5), 1000.0)


def test_a_thousandfold_day_is_an_error_with_its_row() -> None:
    with pytest.raises(DataValidationError) as info:
        validate_panel(thousandfold_day(), "prices.csv", InputConfig())
    message = str(info.value)
    for fragment in (
        "prices.csv",
        "price_jump",
        "input.on_price_jump",
        "AAA",
        "2021-01-09",
        "| 6 ",
    ):
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    _, report = validate_panel(
        thousandfold_day(), "prices.csv", InputConfig(), raise_on_error=False
    )
    issue = report.issue("price_jump")
    assert issue.action == "error" and issue.count == 1 and issue.column == "close"


def test_data_check_no_longer_passes_a_thousandfold_day(tmp_path: Path) -> None:
    file = tmp_path / "quotes.csv"
    thousandfold_day().write_csv(file)
    result = runner.invoke(app, ["data", "check", str(file)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "ERRORS" in text and "error price_jump [close]: 1" in text and "2021-01-09" in text


def test_a_thousandfold_day_is_dropped_and_counted_under_drop() -> None:
    panel = thousandfold_day()
    clean, report = validate(panel, on_price_jump="drop")
    issue = report.issue("price_jump")
    assert issue.action == "dropped" and issue.count == 1 and report.n_dropped == 1
    assert clean.height == panel.height - 1
    assert clean.filter(is_row("AAA", 5)).height == 0
    adjusted, _ = adjust_prices(clean)
    returns = adjusted.sort("code", "date").select(
        (pl.col("close") / pl.col("close").shift(1).over("code")).log()
    )
    assert returns.to_series().drop_nulls().abs().max() < math.log(1.1)


def test_a_thousandfold_day_is_kept_and_reported_under_keep() -> None:
    panel = thousandfold_day()
    clean, report = validate(panel, on_price_jump="keep")
    issue = report.issue("price_jump")
    assert (
        report.ok and issue.action == "info" and issue.count == 1 and "2021-01-09" in issue.examples
    )
    assert clean.height == panel.height
    assert clean.filter(is_row("AAA", 5)).get_column("close").item() == pytest.approx(105_000.0)


def test_a_split_day_with_its_factor_is_not_a_price_jump() -> None:
    # J-Quants convention: a 1-for-10 consolidation then a 10-for-1 split on the next day,
    # each with its adjustment factor: as extreme and as opposite as the x1000 day, but explained.
    panel = make_panel().with_columns(pl.lit(1.0).alias("adjustment_factor"))
    panel = scale_prices(panel, is_row("AAA", 5), 10.0).with_columns(
        pl.when(is_row("AAA", 5))
        .then(10.0)
        .when(is_row("AAA", 6))
        .then(0.1)
        .otherwise(pl.col("adjustment_factor"))
        .alias("adjustment_factor")
    )
    clean, report = validate(panel)
    assert report.ok and report.issue("price_jump") is None and clean.height == panel.height


def test_split_coefficient_and_adjusted_close_conventions() -> None:
    # AlphaVantage layout (the S&P 500 file): a genuine 4-for-1 split, then a x1000 day.
    panel = make_panel().with_columns(
        pl.lit(1.0).alias("split_coefficient"), pl.lit(0.0).alias("dividend_amount")
    )
    split = pl.col("code").eq("BBB") & (pl.col("date") >= START + dt.timedelta(days=4))
    panel = scale_prices(panel, split, 0.25).with_columns(
        pl.when(is_row("BBB", 4))
        .then(4.0)
        .otherwise(pl.col("split_coefficient"))
        .alias("split_coefficient")
    )
    panel = panel.with_columns(pl.col("close").alias("adjusted_close"))
    clean, report = validate(panel)
    assert report.issue("price_jump") is None
    bad = scale_prices(panel, is_row("AAA", 3), 1000.0)
    _, report = validate_panel(bad, "prices.csv", InputConfig(), raise_on_error=False)
    assert (
        report.issue("price_jump").count == 1
        and "2021-01-07" in report.issue("price_jump").examples
    )
    # adjusted_close alone: the checked series is the vendor's adjusted close
    only_adjusted = panel.drop("split_coefficient", "dividend_amount").with_columns(
        (pl.col("close") * pl.when(split).then(4.0).otherwise(1.0)).alias("adjusted_close")
    )
    _, report = validate(only_adjusted)
    assert report.issue("price_jump") is None
    jumped = scale_prices(only_adjusted, is_row("AAA", 3), 1000.0).with_columns(
        pl.when(is_row("AAA", 3))
        .then(pl.col("close"))
        .otherwise(pl.col("adjusted_close"))
        .alias("adjusted_close")
    )
    _, report = validate_panel(jumped, "prices.csv", InputConfig(), raise_on_error=False)
    assert report.issue("price_jump").count == 1


def test_price_jump_threshold_and_one_way_moves() -> None:
    # x2.5 and back: below the default factor of 3; flagged with price_jump_factor 2
    panel = scale_prices(make_panel(), is_row("AAA", 5), 2.5)
    assert validate(panel)[1].issue("price_jump") is None
    _, report = validate_panel(
        panel, "prices.csv", InputConfig(price_jump_factor=2.0), raise_on_error=False
    )
    assert report.issue("price_jump").count == 1
    # a x10 level shift that stays (no reversal) and a x10 last day are not this rule's business
    shifted = scale_prices(
        make_panel(),
        pl.col("code").eq("AAA") & (pl.col("date") >= START + dt.timedelta(days=5)),
        10.0,
    )
    last = scale_prices(make_panel(), is_row("AAA", 9), 10.0)
    assert validate(shifted)[1].issue("price_jump") is None
    assert validate(last)[1].issue("price_jump") is None
    # x10 then back to only a third of the start: the moves do not cancel
    partial = scale_prices(
        scale_prices(make_panel(), is_row("AAA", 5), 10.0),
        pl.col("code").eq("AAA") & (pl.col("date") >= START + dt.timedelta(days=6)),
        1 / 3,
    )
    assert validate(partial)[1].issue("price_jump") is None


# --------------------------------------------------------------------------- ticker codes


def test_code_whitespace_is_stripped_and_reported() -> None:
    panel = make_panel(("AAA", "BBB")).with_columns(
        pl.when(pl.col("code").eq("BBB") & (pl.col("date") < START + dt.timedelta(days=3)))
        .then(pl.lit(" BBB "))
        .otherwise(pl.col("code"))
        .alias("code")
    )
    clean, report = validate(panel)
    assert sorted(clean.get_column("code").unique()) == ["AAA", "BBB"]
    issue = report.issue("code_normalized")
    assert issue.action == "repaired" and issue.count == 3
    assert "' BBB '" in issue.examples and "whitespace" in issue.message
    collision = report.issue("code_collision")
    assert collision is not None and "BBB" in collision.message


def test_code_case_is_kept_by_default_and_reported() -> None:
    panel = pl.concat(
        [
            make_panel(("AAL",), 4),
            make_panel(("aal",), 4).with_columns(pl.col("date") + dt.timedelta(days=10)),
        ]
    )
    clean, report = validate(panel)
    assert sorted(clean.get_column("code").unique()) == ["AAL", "aal"]
    variants = report.issue("code_case_variants")
    assert (
        variants.action == "info" and variants.count == 2 and "input.code_case" in variants.message
    )
    assert report.issue("code_normalized") is None


def test_code_case_upper_merges_and_collisions_hit_the_duplicate_rule() -> None:
    panel = pl.concat([make_panel(("AAL",), 4), make_panel(("aal",), 6)])  # 4 common dates
    clean, report = validate_panel(
        panel, "prices.csv", InputConfig(code_case="upper"), raise_on_error=False
    )
    issue = report.issue("code_normalized")
    assert issue.action == "repaired" and issue.count == 6 and "upper" in issue.message
    assert "'aal'" in issue.examples and "'AAL'" in issue.examples
    assert "AAL" in report.issue("code_collision").message
    assert (
        report.issue("duplicate_rows").action == "error"
        and report.issue("duplicate_rows").count == 8
    )
    clean, report = validate(panel, code_case="upper", on_duplicate="first")
    assert clean.get_column("code").unique().to_list() == ["AAL"] and clean.height == 6
    lower, _ = validate(make_panel(("AbC",), 3), code_case="lower")
    assert lower.get_column("code").unique().to_list() == ["abc"]


def test_sector_and_margin_codes_are_normalized_the_same_way() -> None:
    config = InputConfig(code_case="upper")
    panel, _ = validate_panel(make_panel(("AAA", "bbb")), "prices.csv", config)
    sectors = pl.DataFrame({"code": [" aaa", "BBB"], "sector": ["Tech", "Energy"]})
    table, report = validate_sectors(
        sectors, panel.get_column("code").unique(), "sectors.csv", config
    )
    assert report.ok and sorted(table.get_column("code")) == ["AAA", "BBB"]
    assert report.issue("code_normalized").count == 1
    margin = pl.DataFrame(
        {
            "code": ["bbb ", "AAA"],
            "date": [START, START],
            "published_date": [START + dt.timedelta(days=2)] * 2,
            "long_margin_volume": [1.0, 2.0],
            "short_margin_volume": [1.0, 2.0],
        }
    )
    table, report = validate_margin(margin, "margin.csv", config)
    assert (
        sorted(table.get_column("code")) == ["AAA", "BBB"]
        and report.issue("code_normalized").count == 1
    )


# --------------------------------------------------------------------------- duplicates among invalid rows


@pytest.mark.parametrize("policy", ["first", "last"])
def test_a_duplicated_key_with_one_valid_row_keeps_that_row(policy: str) -> None:
    valid = make_panel().filter(is_row("AAA", 3)).with_columns(pl.col("close") + 0.25)
    invalid = valid.with_columns(pl.lit(1.0).alias("high"))  # high < low
    rows = [valid, invalid] if policy == "last" else [invalid, valid]
    panel = pl.concat([make_panel(), *rows])
    clean, report = validate(panel, on_duplicate=policy, on_bad_price="drop")
    kept = clean.filter(is_row("AAA", 3))
    assert kept.get_column("close").to_list() == ([103.0] if policy == "first" else [103.25])
    assert (
        report.issue("high_below_low").count == 1
        and report.issue("high_below_low").action == "dropped"
    )
    assert (
        report.issue("duplicate_rows").action == "dropped"
        and report.issue("duplicate_rows").count == 1
    )
    assert "invalid" in report.issue("duplicate_rows").message
    assert report.n_dropped == 2 and clean.height == make_panel().height


def test_a_key_whose_only_other_row_is_invalid_is_not_a_duplicate() -> None:
    valid = make_panel().filter(is_row("AAA", 3))
    invalid = valid.with_columns(pl.lit(-1.0).alias("low"))
    panel = pl.concat([make_panel().filter(~is_row("AAA", 3)), valid, invalid])
    clean, report = validate(panel, on_duplicate="last", on_bad_price="drop")
    assert clean.filter(is_row("AAA", 3)).get_column("low").to_list() == [102.0]
    assert report.issue("non_positive_price").count == 1
    duplicate = report.issue("duplicate_rows")
    assert duplicate.action == "info" and "invalid" in duplicate.message
    assert clean.height == make_panel().height


def test_a_dropped_duplicate_does_not_move_its_factor_onto_its_twin() -> None:
    panel = make_panel().with_columns(
        pl.when(is_row("AAA", 3)).then(0.5).otherwise(1.0).alias("adjustment_factor")
    )
    panel = panel.with_columns(
        [
            pl.when(pl.col("code").eq("AAA") & (pl.col("date") >= START + dt.timedelta(days=3)))
            .then(pl.col(c) / 2)
            .otherwise(pl.col(c))
            .alias(c)
            for c in PRICES
        ]
    )
    twin = panel.filter(is_row("AAA", 3)).with_columns(
        pl.lit(0.0).alias("volume"), *(pl.lit(51.5).alias(c) for c in PRICES)
    )
    clean, report = validate(pl.concat([panel, twin]), on_duplicate="first")
    assert report.issue("no_trade_rows").count == 1
    assert clean.filter(is_row("AAA", 3)).get_column("adjustment_factor").item() == 0.5
    assert clean.get_column("adjustment_factor").product() == 0.5


# --------------------------------------------------------------------------- non-UTF-8 bytes


def test_a_bad_byte_past_the_sniffed_head_is_reported_with_its_position(tmp_path: Path) -> None:
    lines = ["code,date,open,high,low,close,volume"]
    day = 0
    while sum(len(line) + 1 for line in lines) < 100_000:
        lines.append(f"AAA,{(START + dt.timedelta(days=day)).isoformat()},10,11,9,10.5,100")
        day += 1
    lines.append("AB\x00C,2040-01-02,10,11,9,10.5,100")
    data = ("\n".join(lines) + "\n").encode().replace(b"AB\x00C", b"AB\x93C")
    offset = data.index(b"\x93")
    assert offset > 64 * 1024
    file = tmp_path / "quotes.csv"
    file.write_bytes(data)
    with pytest.raises(DataValidationError) as info:
        read_table(file)
    message = str(info.value)
    for fragment in (str(file), "not UTF-8", f"byte {offset:,}", f"line {len(lines):,}", r"\x93"):
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_a_bad_byte_in_the_head_keeps_its_position(tmp_path: Path) -> None:
    file = tmp_path / "quotes.csv"
    file.write_bytes(b"code,date,open,high,low,close,volume\nA\x82\xa0,2021-01-04,1,1,1,1,1\n")
    with pytest.raises(DataValidationError, match=r"byte 38 \(line 2\).*x82"):
        read_panel(file)


# --------------------------------------------------------------------------- rich markup


def test_data_check_shows_bracketed_text_literally(tmp_path: Path) -> None:
    file = tmp_path / "quotes.csv"
    file.write_text(
        "code,date,open,high,low,close,volume\nA,2020-01-02,10,11,9,10.5,100\nA,2020-01-03,10,11,9,12.5,100\n"
    )
    result = runner.invoke(app, ["data", "check", str(file)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "close outside [low, high]" in text and "close_outside_range [close]" in text
    result = runner.invoke(
        app, ["data", "build", "--data", str(file), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "- [close_outside_range] column `close`" in text and "[low, high]" in text


def test_first_invalid_utf8_agrees_with_a_whole_file_decode_for_any_block_size(
    tmp_path: Path,
) -> None:
    from kizashi.data.panel.read import first_invalid_utf8

    good = "a,b\né,日本\n".encode()
    cases = [
        good,
        good + b"x\n\xff\n",
        good + "語".encode()[:2],
        b"\n\n" + "日".encode() + b"\x80z",
        good * 3,
    ]
    for k, data in enumerate(cases):
        file = tmp_path / f"case{k}.csv"
        file.write_bytes(data)
        try:
            data.decode("utf-8")
            expected = None
        except UnicodeDecodeError as err:
            expected = (err.start, data.count(b"\n", 0, err.start) + 1, data[err.start : err.end])
        for block_size in range(1, 9):
            assert first_invalid_utf8(file, block_size) == expected, (data, block_size)


def test_data_check_prints_each_finding_once(tmp_path: Path) -> None:
    file = tmp_path / "quotes.csv"
    file.write_text(
        "code,date,open,high,low,close,volume\nA,2020-01-02,10,11,9,10.5,100\nA,2020-01-03,10,11,9,12.5,100\n"
    )
    result = runner.invoke(app, ["data", "check", str(file)])
    text = " ".join(result.output.split())
    assert text.count("close_outside_range [close]") == 1, text
    assert text.count("row(s) with close outside") == 1, text
    assert "WARNING" not in text, "the findings are the command's output, not also log lines"
