"""`kizashi strategies`: an evaluate run keeps each fit's validation-slice predictions, and a
book is chosen on them alone; the test figures are shown beside the choice, never read by it."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import EvaluateConfig, config_from_dict
from kizashi.errors import KizashiError
from kizashi.jobs.evaluate import run_walk_forward
from kizashi.jobs.strategies import STRATEGIES_FILE, choose_strategy
from kizashi.portfolio import CostSettings, run_strategies, strategy_stats, strategy_table
from kizashi.portfolio.overview import median_universe, overview_strategies


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("strategies")
    config = config_from_dict(EvaluateConfig, {
        "data": {"synthetic": {"n_stocks": 40, "n_sectors": 4, "n_days": 500, "seed": 9, "n_peer_groups": 5},
                 "targets": {"horizons": [1, 5]}, "output": {"dir": str(root / "dataset")}},
        "horizons": [1],
        "splits": {"n_folds": 3, "test_days": 60, "min_train_days": 200, "val_days": 40, "embargo_days": 10},
        "model": {"n_estimators": 60, "early_stopping_rounds": 10},
        "output": {"dir": str(root / "run")},
    })
    return run_walk_forward(config)


def test_the_run_keeps_each_fits_validation_slice(run):
    validation = pl.read_parquet(run.run_dir / "validation_predictions.parquet")
    for fold in run.info.folds:
        rows = validation.filter(pl.col("fold") == fold["index"])
        dates = rows.get_column("date").unique().sort()
        assert dates.len() == fold["val_n_days"]
        assert str(dates[0]) == fold["val_first"] and str(dates[-1]) == fold["val_last"]
        assert str(dates[-1]) < fold["test_first"], "a fold's slice lies before its own test days"


def test_the_choice_reads_validation_only(run, tmp_path):
    choice = choose_strategy(run.run_dir)
    selection = choice.selection
    assert choice.horizon == 1 and choice.cost_bps == 10.0
    table = selection.table
    assert set(table.get_column("part")) == {"validation", "test"} and table.height == 2 * 5 + 1
    validation = table.filter(pl.col("part") == "validation")
    best = validation.sort("net_sharpe", descending=True, nulls_last=True).row(0, named=True)["strategy"]
    assert selection.selected == best
    assert table.filter(pl.col("selected")).get_column("strategy").unique().to_list() == [best]
    assert (run.run_dir / STRATEGIES_FILE).is_file()

    # independent: the validation figures are each fold's own book on its slice
    preds = pl.read_parquet(run.run_dir / "validation_predictions.parquet")
    candidates = overview_strategies(median_universe(pl.read_parquet(run.run_dir / "predictions.parquet")))
    daily = run_strategies(preds, candidates, costs=CostSettings(cost_bps=10.0), by=("fold",)).daily
    expected = strategy_table(daily).sort("strategy")
    np.testing.assert_allclose(validation.sort("strategy").get_column("net_sharpe").to_numpy(),
                               expected.get_column("net_sharpe").to_numpy())

    # the test days cannot change the choice: scramble every test prediction, same selection
    scrambled = tmp_path / "scrambled"
    shutil.copytree(run.run_dir, scrambled)
    test = pl.read_parquet(scrambled / "predictions.parquet")
    test.with_columns(prediction=pl.Series(np.random.default_rng(1).permutation(test.get_column("prediction").to_numpy()))) \
        .write_parquet(scrambled / "predictions.parquet")
    again = choose_strategy(scrambled)
    assert again.selection.selected == selection.selected and again.per_fold == choice.per_fold

    # fold by fold: fold k's choice reads the slices of folds 0..k only
    for k, name in choice.per_fold.items():
        seen = strategy_table(daily.filter(pl.col("fold") <= k)).sort("net_sharpe", descending=True, nulls_last=True)
        assert name == seen.row(0, named=True)["strategy"]
    assert choice.per_fold[max(choice.per_fold)] == selection.selected  # the last fold has seen every slice
    # the walk-forward series: fold k's test days from its choice's test book
    test_daily = run_strategies(pl.read_parquet(run.run_dir / "predictions.parquet"), candidates,
                                costs=CostSettings(cost_bps=10.0)).daily
    parts = []
    for fold in run.info.folds:
        first, last = (dt.date.fromisoformat(fold[f"test_{end}"]) for end in ("first", "last"))
        parts.append(test_daily.filter((pl.col("strategy") == choice.per_fold[fold["index"]])
                                       & pl.col("date").is_between(first, last)))
    assert choice.walk_forward["net_sharpe"] == pytest.approx(strategy_stats(pl.concat(parts))["net_sharpe"])


def test_the_command_and_its_errors(run, tmp_path):
    result = CliRunner().invoke(app, ["strategies", str(run.run_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "chosen on validation" in result.output and "walk-forward choice" in result.output
    with pytest.raises(KizashiError, match="no 5d predictions"):
        choose_strategy(run.run_dir, 5)
    (tmp_path / "bare").mkdir()
    shutil.copytree(run.run_dir, tmp_path / "bare" / "run")
    (tmp_path / "bare" / "run" / "validation_predictions.parquet").unlink()
    with pytest.raises(KizashiError, match="no validation-slice predictions"):
        choose_strategy(tmp_path / "bare" / "run")
