"""`kizashi data build` end to end on a small synthetic market: layout, metadata, atomic
writes, and the CLI."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from kizashi import build as build_module
from kizashi.build import build_dataset, read_metadata, scan_features, scan_graphs
from kizashi.cli import app
from kizashi.config import DataBuildConfig, config_from_dict

SMALL = {
    "synthetic": {"n_stocks": 30, "n_sectors": 3, "n_days": 400, "seed": 5, "n_peer_groups": 5},
    "splits": {"n_folds": 2, "test_days": 40, "min_train_days": 150},
    "output": {"chunk_rows": 4000},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "dataset"
    result = build_dataset(config_from_dict(DataBuildConfig, SMALL), out)
    return result


def test_layout_and_metadata(built):
    out = built.out_dir
    meta = read_metadata(out)
    years = sorted(p.name for p in (out / "features").iterdir())
    assert years == [f"year={y}" for y in range(2016, 2016 + len(years))] and len(years) >= 2
    frame = scan_features(out).collect()
    assert frame.height == meta["n_rows"] == built.n_rows
    assert frame.select("code", "date").is_duplicated().sum() == 0
    assert set(meta["feature_columns"]) <= set(frame.columns)
    assert len(meta["feature_columns"]) >= 350 and len(meta["columns"]) == len(meta["feature_columns"])
    assert {c["family"] for c in meta["columns"]} == set(meta["families"])
    assert meta["target_columns"] == [f"target_{k}_{h}d" for h in (1, 5, 10, 20) for k in ("return", "rank")]
    assert meta["oracle_columns"] and all(c in frame.columns for c in meta["oracle_columns"])
    assert meta["input_hashes"]["synthetic_config"]
    assert len(meta["folds"]) == 2 and meta["folds"][0]["embargo_days"] == 20
    assert meta["config"]["splits"]["n_folds"] == 2
    # rows of each file are sorted by (date, code)
    first = pl.read_parquet(next((out / "features" / years[0]).glob("*.parquet")))
    assert first.select("date", "code").equals(first.select("date", "code").sort("date", "code"))


def test_graphs_saved_with_dataset(built):
    edges = scan_graphs(built.out_dir).collect()
    assert edges.height == built.n_edges > 0
    assert {"date", "src_code", "dst_code", "correlation", "abs_correlation", "same_sector"} <= set(edges.columns)
    assert (edges.get_column("src_code") != edges.get_column("dst_code")).all()
    assert edges.group_by("date", "dst_code").len().get_column("len").max() <= 10


def test_no_partial_output_after_a_crash(tmp_path, monkeypatch):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "keep.txt").write_text("previous build")

    writes = []
    original = build_module._write_partitioned

    def explode_on_graphs(frame, root, part):
        """Features are on disk (in the temporary directory) when the graphs fail."""
        writes.append(root.name)
        if root.name == build_module.GRAPHS_DIR:
            raise RuntimeError("disk on fire")
        original(frame, root, part)

    monkeypatch.setattr(build_module, "_write_partitioned", explode_on_graphs)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_dataset(config_from_dict(DataBuildConfig, SMALL), out)
    assert build_module.FEATURES_DIR in writes, "the crash came after partial output was written"
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"], "no temporary directory left behind"
    assert [p.name for p in out.iterdir()] == ["keep.txt"], "the previous output is untouched"


runner = CliRunner()


def test_cli_help_for_every_command():
    commands = (
        [], ["data"], ["data", "build"], ["data", "columns"], ["data", "check"],
        ["evaluate"], ["train"], ["report"], ["models"], ["models", "list"], ["demo"],
    )
    for args in commands:
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output


def test_cli_columns_lists_family_and_lookback():
    result = runner.invoke(app, ["data", "columns", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # logs go to stderr
    assert len(rows) >= 350
    by_name = {r["name"]: r for r in rows}
    assert by_name["return_20d"] == {"name": "return_20d", "family": "returns", "lookback": 20, "kind": "continuous", "normalized": True}
    assert by_name["realized_vol_60d"]["lookback"] == 60


def test_cli_build_with_config(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(json.dumps(SMALL | {"graph": {"enabled": False}}))  # JSON is YAML
    result = runner.invoke(app, ["data", "build", "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "walk-forward folds" in result.output
    assert (tmp_path / "out" / "metadata.json").is_file()


def test_cli_config_error_exit_code(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("graph:\n  windw: 3\n")
    result = runner.invoke(app, ["data", "build", "--config", str(config)])
    assert result.exit_code == 2
    assert "graph.windw" in result.output


def test_cli_check_reports_bad_rows(tmp_path):
    file = tmp_path / "quotes.csv"
    file.write_text(
        "code;date;open;high;low;close;volume\n"
        "A;2020-01-02;10;11;9;10.5;100\n"
        "A;2020-01-03;10;9;11;10.5;100\n"
        "A;2020-01-03;10;11;9;10.5;100\n"
    )
    result = runner.invoke(app, ["data", "check", str(file)])
    assert result.exit_code == 1
    assert "duplicate_rows" in result.output and "high_below_low" in result.output
    assert str(file.name) in result.output


def test_cli_too_short_calendar_is_a_config_error(tmp_path):
    config = tmp_path / "short.yaml"
    config.write_text(json.dumps(SMALL | {"splits": {"n_folds": 8, "test_days": 100}}))
    result = runner.invoke(app, ["data", "build", "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())  # rich wraps long messages
    assert "calendar too short" in text and "trading days needed" in text
    assert not (tmp_path / "out").exists()


def test_cli_models_list_counts_parameters():
    from kizashi.models import create_model

    result = runner.invoke(app, ["models", "list", "--n-features", "100"])
    assert result.exit_code == 0, result.output
    small = sum(p.numel() for p in create_model("atft_gat_fan", preset="small", n_features=100).parameters())
    assert f"{small:,}" in result.output and "base" in result.output
