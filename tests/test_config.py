"""Configs: YAML in, typed model out; unknown keys, wrong types and missing files are
errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kizashi.config import (
    DataBuildConfig,
    load_config,
    load_evaluate_config,
    load_experiment_config,
    load_lm_config,
    load_pretrain_config,
    load_train_config,
)
from kizashi.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "data").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path, DataBuildConfig)
    assert config.targets.horizons


COMMAND_LOADERS = {
    "data": lambda path: load_config(path, DataBuildConfig),
    "evaluate": load_evaluate_config,
    "train": load_train_config,
    "pretrain": load_pretrain_config,
    "lm": load_lm_config,
    "experiments": load_experiment_config,
}


def test_configs_has_one_folder_per_command():
    """Every shipped YAML lies in the folder of the command that reads it."""
    stray = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")
                   if p.parent.parent != REPO / "configs" or p.parent.name not in COMMAND_LOADERS)
    assert not stray, f"configs outside configs/<command>/: {stray}"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*/*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads_with_its_command(path, monkeypatch):
    monkeypatch.chdir(REPO)  # the shipped configs name their data config relative to the repository
    assert COMMAND_LOADERS[path.parent.name](path) is not None


def test_unknown_key_names_key_and_file(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("graph:\n  windw: 30\n")
    with pytest.raises(ConfigError) as err:
        load_config(file, DataBuildConfig)
    message = str(err.value)
    assert str(file) in message and "graph.windw" in message and "unknown key" in message


def test_wrong_type_names_key_value_and_file(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("splits:\n  embargo_days: twenty\n")
    with pytest.raises(ConfigError) as err:
        load_evaluate_config(file)
    message = str(err.value)
    assert str(file) in message and "splits.embargo_days" in message and "twenty" in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml", DataBuildConfig)
    file = tmp_path / "broken.yaml"
    file.write_text("graph: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(file, DataBuildConfig)
    file.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(file, DataBuildConfig)


def test_semantic_checks(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("graph:\n  top_k: null\n  threshold: null\ntargets:\n  horizons: [0, 5]\n")
    with pytest.raises(ConfigError) as err:
        load_config(file, DataBuildConfig)
    assert "graph" in str(err.value) and "targets" in str(err.value)


def test_overrides_merge_into_file(tmp_path):
    file = tmp_path / "ok.yaml"
    file.write_text("graph:\n  window: 30\n")
    config = load_config(file, DataBuildConfig, {"graph": {"top_k": 3}})
    assert (config.graph.window, config.graph.top_k) == (30, 3)
