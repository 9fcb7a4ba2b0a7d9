"""Reading a quotes file without a config: the column preset and other spellings of the
required columns (``Date``, ``Ticker``, ``Close`` ...) are guessed from the header."""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import pytest

from kizashi.config import InputConfig
from kizashi.data.panel.read import guess_columns, guess_input_settings
from kizashi.data.inputs import load_inputs


def _write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


ROWS = [
    "2024-01-02,AAA,10,11,9,10.5,1000",
    "2024-01-03,AAA,10.5,11,10,10.8,1200",
    "2024-01-02,BBB,20,21,19,20.5,500",
    "2024-01-03,BBB,20.5,21,20,20.1,700",
]


@pytest.mark.parametrize(
    "header",
    [
        "Date,Ticker,Open,High,Low,Close,Volume",
        "DATE,SYMBOL,OPEN,HIGH,LOW,CLOSE,VOLUME",
        "trade_date,instrument,open,high,low,close,vol",
    ],
)
def test_other_spellings_of_the_required_columns_are_read(tmp_path, header, caplog):
    caplog.set_level(logging.INFO, logger="kizashi")
    file = _write(tmp_path / "quotes.csv", header, ROWS)
    settings = guess_input_settings(file)
    assert settings["preset"] == "canonical"
    read_as = [settings["columns"].get(name, name) for name in header.split(",")]
    assert sorted(read_as) == sorted(["date", "code", "open", "high", "low", "close", "volume"])
    assert "columns read as" in caplog.text  # said once, with the mapping

    loaded = load_inputs(InputConfig(path=file, **settings))
    assert loaded.panel.get_column("code").unique().sort().to_list() == ["AAA", "BBB"]
    assert loaded.panel.filter(pl.col("code") == "AAA").get_column("close").to_list() == [10.5, 10.8]


def test_canonical_names_need_no_mapping_and_ambiguous_ones_are_left_to_the_check(tmp_path):
    canonical = _write(tmp_path / "a.csv", "date,code,open,high,low,close,volume", ROWS)
    assert guess_columns(canonical, "canonical") == {}
    # two columns that could both be the code: neither is guessed (the check names what is missing)
    ambiguous = _write(tmp_path / "b.csv", "Date,Ticker,Symbol,Open,High,Low,Close,Volume",
                       [r.replace(",AAA,", ",AAA,AAA,").replace(",BBB,", ",BBB,BBB,") for r in ROWS])
    guessed = guess_columns(ambiguous, "canonical")
    assert "Ticker" not in guessed and "Symbol" not in guessed and guessed["Date"] == "date"
    # a preset's own mapping is not second-guessed
    jquants = _write(tmp_path / "c.csv", "Date,Code,Open,High,Low,Close,Volume", ROWS)
    assert guess_input_settings(jquants) == {"preset": "jquants"}
