"""Config errors name the file and the dotted key, and come before any expensive work:
duplicate YAML keys, empty files, ``data_config`` files, ``targets.horizons``,
``graph.min_periods``, model presets, too-short calendars; and ``kizashi --version``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kizashi import __version__
from kizashi.datasets import build as build_module
from kizashi.cli import app
from kizashi.config import (
    DataBuildConfig,
    GraphConfig,
    load_config,
    load_evaluate_config,
    read_yaml,
)
from kizashi.errors import ConfigError
from kizashi.jobs.evaluate import run_walk_forward

runner = CliRunner()
SMALL = {
    "synthetic": {"n_stocks": 30, "n_sectors": 3, "n_days": 400, "seed": 5, "n_peer_groups": 5},
    "output": {"chunk_rows": 4000},
}


def config_error(file: Path, model: type = DataBuildConfig) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(file, model)
    return str(info.value)


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


# --------------------------------------------------------------------------- YAML


def test_duplicate_yaml_keys_are_errors_naming_key_and_line(tmp_path: Path) -> None:
    file = tmp_path / "dup.yaml"
    file.write_text("graph:\n  window: 30\n  top_k: 3\n  window: 40\n")
    message = config_error(file)
    assert str(file) in message and "duplicate key" in message
    assert "graph.window" in message and "line 4" in message and "line 2" in message
    file.write_text("splits:\n  n_folds: 2\ngraphs: {}\nsplits:\n  n_folds: 3\n")
    message = config_error(file)
    assert "`splits`" in message and "line 4" in message


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    file = tmp_path / "merge.yaml"
    file.write_text("base: &base {window: 30, top_k: 3}\ngraph:\n  <<: *base\n  window: 40\n")
    assert read_yaml(file)["graph"] == {"window": 40, "top_k": 3}


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_yaml_file_is_an_error(tmp_path: Path, text: str) -> None:
    file = tmp_path / "empty.yaml"
    file.write_text(text)
    message = config_error(file)
    assert str(file) in message and "empty" in message


# --------------------------------------------------------------------------- keys


def test_a_negative_horizon_is_reported_at_targets_horizons(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("targets:\n  horizons: [5, -1]\n")
    message = config_error(file)
    assert str(file) in message and "key `targets.horizons`" in message and "-1" in message


@pytest.mark.parametrize(
    ("graph", "fragment"),
    [
        ({"min_periods": 0}, "at least 20"),
        ({"min_periods": 19}, "at least 20"),
        ({"window": 30, "min_periods": 31}, "at most graph.window (30)"),
        ({"window": 30, "min_periods": 14}, "at least 15"),
        ({"window": 9}, "graph.window"),
    ],
)
def test_graph_min_periods_is_checked_against_the_window(
    tmp_path: Path, graph: dict, fragment: str
) -> None:
    file = tmp_path / "graph.yaml"
    file.write_text(json.dumps({"graph": graph}))
    message = config_error(file)
    key = "graph.min_periods" if "min_periods" in graph else "graph.window"
    assert str(file) in message and f"key `{key}`" in message and fragment in message


def test_graph_min_periods_accepted_values() -> None:
    assert GraphConfig(window=60, min_periods=20).min_periods == 20
    assert GraphConfig(window=60, min_periods=60).min_periods == 60
    assert GraphConfig(window=30, min_periods=15).min_periods == 15
    assert GraphConfig(window=10).min_periods is None  # null = 2/3 of the window, always allowed


def test_graph_min_periods_beyond_the_window_is_a_cli_config_error(tmp_path: Path) -> None:
    file = tmp_path / "graph.yaml"
    file.write_text(json.dumps(SMALL | {"graph": {"window": 30, "min_periods": 45}}))
    result = runner.invoke(
        app, ["data", "build", "--config", str(file), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2, result.output
    assert "graph.min_periods" in flat(result.output) and not (tmp_path / "out").exists()


def test_an_error_in_the_data_config_file_names_that_file(tmp_path: Path) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("graph:\n  windw: 3\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"data_config: {data}\nseed: 1\n")
    with pytest.raises(ConfigError) as info:
        load_evaluate_config(job)
    message = str(info.value)
    assert message.startswith(f"{data}:") and "key `graph.windw`" in message
    assert f"data_config of {job}" in message
    # an error in the job file's own data section stays with the job file
    data.write_text("graph:\n  window: 30\n")
    job.write_text(f"data_config: {data}\ndata:\n  graph:\n    windw: 3\n")
    with pytest.raises(ConfigError) as info:
        load_evaluate_config(job)
    message = str(info.value)
    assert message.startswith(f"{job}:") and "key `data.graph.windw`" in message


def test_an_unknown_model_preset_names_the_key_before_any_data_is_built(tmp_path: Path) -> None:
    file = tmp_path / "train.yaml"
    file.write_text(
        json.dumps(
            {
                "data": SMALL | {"output": {"dir": str(tmp_path / "dataset")}},
                "model": {"preset": "huge"},
                "output": {"dir": str(tmp_path / "run")},
            }
        )
    )
    result = runner.invoke(app, ["train", "--config", str(file)])
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert (
        str(file) in text and "key `model.preset`" in text and "'huge'" in text and "small" in text
    )
    assert not (tmp_path / "dataset").exists()
    file.write_text(
        json.dumps({"model": {"name": "nope", "preset": None}, "data": {"text": str(file)}})
    )
    result = runner.invoke(app, ["lm", "train", "--config", str(file)])
    assert result.exit_code == 2, result.output
    assert "key `model.name`" in flat(result.output) and "bk_phase2" in flat(result.output)


# --------------------------------------------------------------------------- splits


def test_a_too_short_calendar_names_file_and_keys_before_graphs_and_features_are_built(
    tmp_path: Path, monkeypatch
) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the split check must come before the graphs and features are built")

    monkeypatch.setattr(build_module, "context_tables", never)
    monkeypatch.setattr(build_module, "iter_feature_chunks", never)
    file = tmp_path / "short.yaml"
    data = SMALL | {"output": {**SMALL["output"], "dir": str(tmp_path / "out")}}
    file.write_text(json.dumps({"data": data, "splits": {"n_folds": 8, "test_days": 100, "val_days": 0}}))
    with pytest.raises(ConfigError) as info:
        run_walk_forward(load_evaluate_config(file))
    message = flat(str(info.value))
    assert message.startswith(f"{file}:")
    for fragment in (
        "calendar too short",
        "splits.min_train_days 250",
        "splits.n_folds 8 x splits.test_days 100",
        "splits.embargo_days 20",
        "1,090 trading days needed",
        "400 available",
    ):
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- --version


def test_version_prints_and_exits_zero() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"kizashi {__version__}"


def test_splits_in_a_data_config_is_refused_with_where_it_belongs(tmp_path: Path) -> None:
    """One home per key: the walk-forward folds are set in the evaluate / train config."""
    data = tmp_path / "data.yaml"
    data.write_text("splits:\n  n_folds: 2\n")
    message = config_error(data)
    assert str(data) in message and "`splits` is not a data setting" in message and "evaluate or train" in message
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({"data": {"splits": {"n_folds": 2}}}))
    with pytest.raises(ConfigError, match="`splits` is not a data setting"):
        load_evaluate_config(job)
