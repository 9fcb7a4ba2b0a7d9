"""`kizashi export alphalens`: a run's predictions as the factor and its input panel's adjusted
close as the prices, in the frames alphalens reads; the prices' forward returns are the run's
own targets. No alphalens needed here (tests/peers/ runs alphalens on the export)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import EvaluateConfig, InputConfig, config_from_dict
from kizashi.data.inputs import load_inputs
from kizashi.errors import KizashiError
from kizashi.jobs.evaluate import run_walk_forward
from kizashi.jobs.export import (
    FACTOR_CSV,
    FACTOR_PARQUET,
    GUIDE,
    PRICES_CSV,
    PRICES_PARQUET,
    export_alphalens,
)

HORIZONS = [1, 5]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    config = config_from_dict(EvaluateConfig, {
        "data": {"synthetic": {"n_stocks": 24, "n_sectors": 3, "n_days": 320, "seed": 5, "n_peer_groups": 4},
                 "targets": {"horizons": HORIZONS}, "output": {"dir": str(root / "dataset")}},
        "horizons": HORIZONS,
        "splits": {"n_folds": 2, "test_days": 30, "min_train_days": 180, "val_days": 0, "embargo_days": 5},
        "model": {"n_estimators": 20, "early_stopping_rounds": 5},
        "output": {"dir": str(root / "run")},
    })
    result = run_walk_forward(config)
    return result, config


def _input_close(config) -> pl.DataFrame:
    """The adjusted close of the run's synthetic market, generated here again."""
    return load_inputs(InputConfig(), config.data.synthetic).panel.select("code", "date", "close")


def test_export_writes_the_runs_predictions_and_input_prices(run):
    result, config = run
    out = export_alphalens(result.run_dir)
    assert out == result.run_dir / "alphalens"
    assert {p.name for p in out.iterdir()} == {FACTOR_PARQUET, FACTOR_CSV, PRICES_PARQUET, PRICES_CSV, GUIDE}

    # the factor is the 1d (shortest) prediction of every test row, nothing else
    predictions = pl.read_parquet(result.run_dir / "predictions.parquet").filter(pl.col("horizon") == 1)
    factor = pl.read_parquet(out / FACTOR_PARQUET)
    assert factor.columns == ["date", "asset", "factor"] and factor.schema["date"] == pl.Datetime("ns")
    expected = predictions.select("date", pl.col("code").alias("asset"), pl.col("prediction").alias("factor"))
    assert_frame_equal(factor.with_columns(pl.col("date").cast(pl.Date)), expected.sort("date", "asset"))

    # prices: wide, the factor's assets, every session from the first test date to 5 sessions
    # past the last one (or the panel's end), equal to the input panel's adjusted close
    prices = pl.read_parquet(out / PRICES_PARQUET).with_columns(pl.col("date").cast(pl.Date))
    assets = sorted(predictions.get_column("code").unique())
    assert prices.columns == ["date", *assets]
    close = _input_close(config)
    calendar = close.get_column("date").unique().sort()
    first, last = predictions.get_column("date").min(), predictions.get_column("date").max()
    end = calendar[min(calendar.search_sorted(last) + max(HORIZONS), calendar.len() - 1)]
    assert prices.get_column("date").to_list() == calendar.filter(calendar.is_between(first, end)).to_list()
    long = prices.unpivot(index="date", variable_name="code", value_name="price").drop_nulls("price")
    joined = long.join(close, on=["date", "code"], how="full", coalesce=True).filter(
        pl.col("date").is_between(first, end) & pl.col("code").is_in(assets))
    assert joined.height == long.height, "a price the input panel lacks, or a close left out"
    assert (joined.get_column("price") == joined.get_column("close")).all()

    # the prices' forward returns are the run's targets, wherever a target exists
    for h in HORIZONS:
        forward = prices.select("date", *[(pl.col(a).shift(-h) / pl.col(a) - 1.0) for a in assets]).unpivot(
            index="date", variable_name="code", value_name="forward")
        rows = pl.read_parquet(result.run_dir / "predictions.parquet").filter(
            (pl.col("horizon") == h) & pl.col("target").is_finite()).join(forward, on=["date", "code"], how="left")
        assert rows.height > 0
        np.testing.assert_allclose(rows.get_column("forward").to_numpy(), rows.get_column("target").to_numpy(),
                                   rtol=0, atol=1e-12)

    # the CSV files hold the same frames
    assert_frame_equal(pl.read_csv(out / FACTOR_CSV, try_parse_dates=True, schema_overrides={"asset": pl.Utf8}),
                       factor.with_columns(pl.col("date").cast(pl.Date)))
    assert_frame_equal(pl.read_csv(out / PRICES_CSV, try_parse_dates=True), prices, check_dtypes=False)
    guide = (out / GUIDE).read_text()
    assert "get_clean_factor_and_forward_returns" in guide and "create_full_tear_sheet" in guide
    assert "periods=(1, 5)" in guide


def test_the_documented_pandas_lines_give_alphalens_inputs(run, tmp_path):
    pd = pytest.importorskip("pandas")
    result, _ = run
    out = export_alphalens(result.run_dir, tmp_path / "al", horizon=5)
    factor = pd.read_parquet(out / FACTOR_PARQUET).set_index(["date", "asset"])["factor"]
    prices = pd.read_parquet(out / PRICES_PARQUET).set_index("date")
    assert isinstance(factor.index, pd.MultiIndex) and list(factor.index.names) == ["date", "asset"]
    assert isinstance(factor.index.levels[0], pd.DatetimeIndex) and factor.index.levels[0].tz is None
    assert isinstance(prices.index, pd.DatetimeIndex) and set(factor.index.levels[1]) == set(prices.columns)
    assert set(factor.index.levels[0]) <= set(prices.index)
    five = pl.read_parquet(result.run_dir / "predictions.parquet").filter(pl.col("horizon") == 5).sort("date", "code")
    np.testing.assert_array_equal(factor.to_numpy(), five.get_column("prediction").to_numpy())
    from_csv = pd.read_csv(out / FACTOR_CSV, parse_dates=["date"], dtype={"asset": str}).set_index(["date", "asset"])
    pd.testing.assert_series_equal(from_csv["factor"], factor, check_index_type=False)
    prices_csv = pd.read_csv(out / PRICES_CSV, index_col="date", parse_dates=["date"])
    np.testing.assert_array_equal(prices_csv.to_numpy(), prices.to_numpy())


def test_clear_errors_name_the_run_directory(run, tmp_path):
    result, _ = run
    with pytest.raises(KizashiError, match="not a run directory"):
        export_alphalens(tmp_path)
    with pytest.raises(KizashiError, match=r"no 3d predictions \(its horizons: \[1, 5\]\)"):
        export_alphalens(result.run_dir, tmp_path / "out", horizon=3)
    moved = tmp_path / "moved"
    shutil.copytree(result.run_dir, moved, ignore=shutil.ignore_patterns("alphalens", "fits"))
    info = json.loads((moved / "run.json").read_text())
    info["dataset"] = str(tmp_path / "gone")
    (moved / "run.json").write_text(json.dumps(info))
    with pytest.raises(KizashiError, match=f"{moved}: the prices cannot be read again"):
        export_alphalens(moved)
    (moved / "predictions.parquet").unlink()
    with pytest.raises(KizashiError, match="no predictions.parquet"):
        export_alphalens(moved)
    assert not (moved / "alphalens").exists(), "nothing written on an error"


def test_cli_export_alphalens(run, tmp_path):
    result, _ = run
    invoked = CliRunner().invoke(app, ["export", "alphalens", str(result.run_dir), "--out", str(tmp_path / "al"),
                                       "--horizon", "5"], env={"COLUMNS": "200"})
    assert invoked.exit_code == 0, invoked.output
    assert "alphalens" in invoked.output and (tmp_path / "al" / FACTOR_PARQUET).is_file()
    failed = CliRunner().invoke(app, ["export", "alphalens", str(tmp_path / "nothing")])
    assert failed.exit_code == 1 and "not a run directory" in " ".join(failed.output.split())  # rich wraps
