"""The command line's shared options: ``--set`` dotted overrides (validated like the YAML,
errors naming the key) and ``--print-config`` (the resolved config as YAML, nothing run); the
demo end to end on a CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import parse_overrides
from kizashi.errors import ConfigError

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def test_parse_overrides_reads_dotted_keys_and_yaml_values():
    assert parse_overrides(["splits.n_folds=2", "splits.test_days=60", "horizons=[1, 5]", "seed=7",
                            "signal=null", "data.graph.enabled=false", "model.preset=base"]) == {
        "splits": {"n_folds": 2, "test_days": 60}, "horizons": [1, 5], "seed": 7, "signal": None,
        "data": {"graph": {"enabled": False}}, "model": {"preset": "base"},
    }
    assert parse_overrides(None) == {} and parse_overrides(["a.b="]) == {"a": {"b": None}}
    for bad in ("splits", "=3", "splits..n_folds=2", "a=[1,"):
        with pytest.raises(ConfigError, match="--set"):
            parse_overrides([bad])


def _job(tmp_path: Path) -> Path:
    file = tmp_path / "job.yaml"
    file.write_text(json.dumps({
        "data": {"synthetic": {"n_stocks": 20, "n_days": 300}, "output": {"dir": str(tmp_path / "dataset")}},
        "splits": {"n_folds": 2, "test_days": 40},
        "output": {"dir": str(tmp_path / "run")},
    }))
    return file


def test_evaluate_print_config_shows_the_overrides_and_runs_nothing(tmp_path):
    result = runner.invoke(app, ["evaluate", "--config", str(_job(tmp_path)), "--set", "splits.n_folds=3",
                                 "--set", "model.n_estimators=50", "--set", "data.graph.window=30", "--print-config"])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.output)
    assert resolved["splits"]["n_folds"] == 3 and resolved["splits"]["test_days"] == 40
    assert resolved["model"]["n_estimators"] == 50 and resolved["data"]["graph"]["window"] == 30
    assert not (tmp_path / "dataset").exists() and not (tmp_path / "run").exists()


def test_a_bad_override_is_a_config_error_naming_the_key(tmp_path):
    job = _job(tmp_path)
    result = runner.invoke(app, ["evaluate", "--config", str(job), "--set", "splits.n_fold=3"])
    assert result.exit_code == 2 and "key `splits.n_fold`: unknown key (given by --set)" in flat(result.output)
    result = runner.invoke(app, ["evaluate", "--config", str(job), "--set", "splits.n_folds=many"])
    assert result.exit_code == 2 and "splits.n_folds" in flat(result.output) and "many" in flat(result.output)
    result = runner.invoke(app, ["train", "--config", str(job), "--set", "splits"])
    assert result.exit_code == 2 and "expected KEY=VALUE" in flat(result.output)
    assert not (tmp_path / "dataset").exists()


def test_data_build_and_train_take_the_same_options(tmp_path):
    result = runner.invoke(app, ["data", "build", "--set", "graph.window=30", "--set", "targets.horizons=[1, 5]",
                                 "--out", str(tmp_path / "ds"), "--print-config"])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.output)
    assert resolved["graph"]["window"] == 30 and resolved["targets"]["horizons"] == [1, 5]
    assert resolved["output"]["dir"] == str(tmp_path / "ds") and not (tmp_path / "ds").exists()
    result = runner.invoke(app, ["train", "--config", str(_job(tmp_path)), "--set", "trainer.max_epochs=1",
                                 "--devices", "1", "--print-config"])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.output)
    assert resolved["trainer"]["max_epochs"] == 1 and resolved["trainer"]["devices"] == 1


@pytest.mark.slow
def test_demo_on_a_csv_ends_with_strategies_and_signals(tmp_path):
    """`kizashi demo --data`: the walk-forward table, the books chosen on validation slices
    (the walk-forward choice first, each candidate's test row as strategies.csv has it), the
    final model and the signals of the data's last day."""
    import polars as pl

    from kizashi.data.synthetic import generate_market

    market = generate_market(n_stocks=40, n_sectors=4, n_days=450, seed=2, split_probability=0.0)
    market.quotes.select("date", "code", "open", "high", "low", "close", "volume").write_csv(tmp_path / "q.csv")
    market.sectors.select("code", "sector").write_csv(tmp_path / "s.csv")
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--data", str(tmp_path / "q.csv"), "--sectors", str(tmp_path / "s.csv"),
                                      "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "chosen on validation slices" in text and "walk-forward choice" in text and "TopkDropout" in text
    assert "signals for the day after" in text
    books = pl.read_csv(out / "run" / "strategies.csv").filter(pl.col("horizon") == 1)
    decile = books.filter((pl.col("strategy") == "daily decile long-short") & (pl.col("part") == "test")).row(0, named=True)
    line = [row for row in result.output.splitlines() if "daily decile long-short" in row and " test " in row][0]
    assert f"{decile['net_sharpe']:+.2f}" in line
    signals = pl.read_parquet(out / "signals" / "signals.parquet")
    last = pl.read_csv(tmp_path / "q.csv", try_parse_dates=True).get_column("date").max()
    assert signals.get_column("date").unique().to_list() == [last]
    assert (out / "final" / "final_model.json").is_file()
