"""Books chosen without peeking: an evaluate run keeps each fit's validation-slice predictions
and ends with a book chosen on them alone, fold by fold, on the run's own market data; the
test figures are shown beside the choice, never read by it (`kizashi strategies` redoes it)."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import EvaluateConfig, PortfolioSettings, config_from_dict
from kizashi.errors import ConfigError, KizashiError
from kizashi.evaluation.run_dir import STRATEGIES, STRATEGY_DAILY, WALK_FORWARD_CHOICE, read_run_info
from kizashi.jobs.evaluate import run_walk_forward
from kizashi.jobs.strategies import choose_strategies
from kizashi.portfolio import CostSettings, run_strategies, strategy_stats, strategy_table
from kizashi.portfolio.overview import median_universe, overview_strategies
from kizashi.portfolio.run_books import run_market, run_portfolio_settings, write_run_strategies


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


def test_the_run_ends_with_the_choice_and_the_choice_reads_validation_only(run, tmp_path):
    # the evaluate run wrote the books already; the command redoes the same choice
    written = pl.read_csv(run.run_dir / STRATEGIES)
    (choice,) = choose_strategies(run.run_dir)
    assert_frame_equal(choice.table.select(written.columns), written, check_dtypes=False)
    selection = choice.selection
    assert choice.horizon == 1
    table = choice.table
    assert set(table.get_column("part")) == {"validation", "test"} and table.height == 2 * 5 + 1
    assert table.get_column("horizon").unique().to_list() == [1]
    validation = table.filter(pl.col("part") == "validation")
    best = validation.sort("net_sharpe", descending=True, nulls_last=True).row(0, named=True)["strategy"]
    assert selection.selected == best
    assert table.filter(pl.col("selected")).get_column("strategy").unique().to_list() == [best]

    # independent: each fold's own book on its slice, on the market frame of the run's inputs
    # (tradability enforced: no trade on a day without volume or without a row), 10 bp
    info = read_run_info(run.run_dir)
    market = run_market(info, PortfolioSettings())
    assert market is not None and {"can_buy", "can_sell", "dollar_volume", "sector"} <= set(market.columns)
    preds = pl.read_parquet(run.run_dir / "validation_predictions.parquet")
    candidates = overview_strategies(median_universe(pl.read_parquet(run.run_dir / "predictions.parquet")))
    daily = run_strategies(preds, candidates, market=market, costs=CostSettings(cost_bps=10.0), by=("fold",)).daily
    expected = strategy_table(daily).sort("strategy")
    np.testing.assert_allclose(validation.sort("strategy").get_column("net_sharpe").to_numpy(),
                               expected.get_column("net_sharpe").to_numpy())

    # the test days cannot change the choice: scramble every test prediction, same selection
    scrambled = tmp_path / "scrambled"
    shutil.copytree(run.run_dir, scrambled)
    test = pl.read_parquet(scrambled / "predictions.parquet")
    test.with_columns(prediction=pl.Series(np.random.default_rng(1).permutation(test.get_column("prediction").to_numpy()))) \
        .write_parquet(scrambled / "predictions.parquet")
    (again,) = choose_strategies(scrambled)
    assert again.selection.selected == selection.selected and again.per_fold == choice.per_fold

    # fold by fold: fold k's choice reads the slices of folds 0..k only
    for k, name in choice.per_fold.items():
        seen = strategy_table(daily.filter(pl.col("fold") <= k)).sort("net_sharpe", descending=True, nulls_last=True)
        assert name == seen.row(0, named=True)["strategy"]
    assert choice.per_fold[max(choice.per_fold)] == selection.selected  # the last fold has seen every slice
    # the walk-forward series: fold k's test days from its choice's test book
    test_daily = run_strategies(pl.read_parquet(run.run_dir / "predictions.parquet"), candidates, market=market,
                                costs=CostSettings(cost_bps=10.0)).daily
    parts = []
    for fold in run.info.folds:
        first, last = (dt.date.fromisoformat(fold[f"test_{end}"]) for end in ("first", "last"))
        parts.append(test_daily.filter((pl.col("strategy") == choice.per_fold[fold["index"]])
                                       & pl.col("date").is_between(first, last)))
    spliced = pl.concat(parts)
    assert choice.walk_forward["net_sharpe"] == pytest.approx(strategy_stats(spliced)["net_sharpe"])
    # strategy_daily.parquet: every candidate's test series and the spliced one
    series = pl.read_parquet(run.run_dir / STRATEGY_DAILY)
    assert series.columns == ["horizon", "strategy", "date", "gross", "net", "turnover"]
    chosen = series.filter(pl.col("strategy") == WALK_FORWARD_CHOICE).sort("date")
    np.testing.assert_allclose(chosen.get_column("net").to_numpy(), spliced.sort("date").get_column("net").to_numpy())
    assert set(series.get_column("strategy")) == {*candidates, WALK_FORWARD_CHOICE}


def test_impact_and_cost_settings_come_from_one_home(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    base = run_portfolio_settings(read_run_info(copy))
    assert base.costs.cost_bps == 10.0 and base.costs.impact is None
    # --set portfolio.*: impact at a stated book size; capacity and participation are reported
    result = CliRunner().invoke(
        app, ["strategies", str(copy), "--set", "portfolio.costs.impact.book_size=1e9",
              "--set", "portfolio.costs.cost_bps=5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    table = pl.read_csv(copy / STRATEGIES).filter(pl.col("part") == "test")
    assert (table.get_column("impact_cost_annual") > 0).all()
    assert (table.get_column("participation_mean") > 0).all()
    assert (table.get_column("linear_cost_annual") < pl.read_csv(run.run_dir / STRATEGIES)
            .filter(pl.col("part") == "test").get_column("linear_cost_annual") * 0.75).all()
    # a run written before the portfolio section existed: its metrics.long_short.cost_bps is the cost
    info = json.loads((copy / "run.json").read_text())
    del info["config"]["portfolio"]
    info["config"]["metrics"]["long_short"]["cost_bps"] = 3.0
    (copy / "run.json").write_text(json.dumps(info))
    assert run_portfolio_settings(read_run_info(copy)).costs.cost_bps == 3.0
    # the key has one home in a job config: the old spelling is an error naming the new one
    with pytest.raises(ConfigError, match="portfolio.costs.cost_bps"):
        config_from_dict(EvaluateConfig, {"metrics": {"long_short": {"cost_bps": 5}}})


def test_without_the_inputs_books_trade_on_the_predictions(run, tmp_path, caplog):
    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    info = json.loads((copy / "run.json").read_text())
    info["dataset"] = str(tmp_path / "gone")
    (copy / "run.json").write_text(json.dumps(info))
    with caplog.at_level("WARNING"):
        (choice,) = write_run_strategies(copy)
    assert "every trade allowed" in caplog.text and choice.selection.selected
    impact = PortfolioSettings.model_validate({"costs": {"impact": {"book_size": 1e8}}})
    with pytest.raises(KizashiError, match="needs the run's input panel"):
        write_run_strategies(copy, impact)


def test_the_command_and_its_errors(run, tmp_path):
    result = CliRunner().invoke(app, ["strategies", str(run.run_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "chosen on validation" in result.output and WALK_FORWARD_CHOICE in result.output
    result = CliRunner().invoke(app, ["strategies", str(run.run_dir), "--set", "model.num_leaves=3"])
    assert result.exit_code != 0 and "only `portfolio.*` keys" in result.output
    with pytest.raises(KizashiError, match="no \\[5\\]d predictions"):
        choose_strategies(run.run_dir, [5])
    (tmp_path / "bare").mkdir()
    shutil.copytree(run.run_dir, tmp_path / "bare" / "run")
    (tmp_path / "bare" / "run" / "validation_predictions.parquet").unlink()
    with pytest.raises(KizashiError, match="no validation-slice predictions"):
        choose_strategies(tmp_path / "bare" / "run")
