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
def test_every_shipped_config_loads_with_its_command(path, tmp_path, monkeypatch):
    """From any working directory: a config's paths are relative to the config file."""
    monkeypatch.chdir(tmp_path)
    assert COMMAND_LOADERS[path.parent.name](path) is not None


def _input_paths(config) -> list[Path]:
    data = getattr(config, "data", config)
    found = [getattr(config, "data_config", None)]
    if isinstance(data, DataBuildConfig):
        found += [data.input.path, data.input.sectors, data.input.margin]
    found += list(getattr(data, "paths", []) or [])
    return [Path(p) for p in found if p is not None]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*/*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_paths_point_at_the_files(path, tmp_path, monkeypatch):
    """The input files a shipped config names exist where they should: in the repository or
    in ../shared/data (checked only where ../shared is present); J-Quants data is the user's."""
    monkeypatch.chdir(tmp_path)
    config = COMMAND_LOADERS[path.parent.name](path)
    for file in _input_paths(config):
        assert file.is_absolute(), f"{path.name}: {file} was not anchored"
        inside_shared = (REPO.parent / "shared") in file.parents
        if "jquants" in file.parts or (inside_shared and not (REPO.parent / "shared" / "data").is_dir()):
            continue
        assert file.exists(), f"{path.relative_to(REPO)}: {file} does not exist"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_paths_in_a_config_are_relative_to_its_file(tmp_path, monkeypatch):
    """Input paths in each file are relative to that file; --set paths to the working
    directory; output.dir stays relative to the working directory; ~ is expanded."""
    project = tmp_path / "project"
    data_yaml = _write(project / "configs" / "data" / "mine.yaml",
                       "input:\n  path: ../../quotes/prices.csv\n  sectors: ~/sectors.csv\noutput:\n  dir: ds/mine\n")
    job = _write(project / "configs" / "evaluate" / "job.yaml",
                 "data_config: ../data/mine.yaml\noutput:\n  dir: runs/job\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    config = load_evaluate_config(job)
    assert config.data_config == project / "configs" / "data" / "mine.yaml"
    assert config.data.input.path == project / "quotes" / "prices.csv"
    assert config.data.input.sectors == tmp_path / "home" / "sectors.csv"
    assert config.output.dir == Path("runs/job") and config.data.output.dir == Path("ds/mine")

    from kizashi.config import parse_overrides

    overridden = load_evaluate_config(job, parse_overrides(["data.input.path=other.csv"]))
    assert overridden.data.input.path == elsewhere / "other.csv"

    direct = load_config(data_yaml, DataBuildConfig)
    assert direct.input.path == project / "quotes" / "prices.csv"


def test_a_missing_data_config_names_the_job_file_and_the_rule(tmp_path, monkeypatch):
    job = _write(tmp_path / "configs" / "job.yaml", "data_config: configs/data/sp500.yaml\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_evaluate_config(job)
    message = str(err.value)
    assert str(job) in message and "data_config" in message and "relative to that file" in message
    assert str(tmp_path / "configs" / "configs" / "data" / "sp500.yaml") in message


def test_experiment_paths_are_relative_to_the_experiment_file(tmp_path, monkeypatch):
    _write(tmp_path / "cfg" / "pretrain" / "base.yaml", "data:\n  paths: [../../bars/a.csv]\n")
    experiment = _write(
        tmp_path / "cfg" / "experiments" / "exp.yaml",
        "base: ../pretrain/base.yaml\n"
        "settings:\n  one: {}\n  two: {data: {paths: [../../bars/b.csv]}}\n",
    )
    monkeypatch.chdir(tmp_path / "cfg")
    config = load_experiment_config(experiment)
    assert config.base == tmp_path / "cfg" / "pretrain" / "base.yaml"
    assert config.settings["two"]["data"]["paths"] == [str(tmp_path / "bars" / "b.csv")]
    same_data = _write(tmp_path / "cfg" / "experiments" / "same.yaml",
                       "base: ../pretrain/base.yaml\nsettings:\n  one: {}\n  two: {}\n")
    settings = load_experiment_config(same_data).setting_configs()
    assert settings["one"].data.paths == [tmp_path / "bars" / "a.csv"]  # relative to base.yaml


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
