"""`kizashi data build` end to end on a small synthetic market: layout, metadata, atomic
writes, and the CLI."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from kizashi.datasets import build as build_module
from kizashi.datasets.build import build_dataset
from kizashi.datasets.store import read_metadata, scan_features, scan_graphs
from kizashi.cli import app
from kizashi.config import DataBuildConfig, config_from_dict

SMALL = {
    "synthetic": {"n_stocks": 30, "n_sectors": 3, "n_days": 400, "seed": 5, "n_peer_groups": 5},
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
    assert frame.height == meta.n_rows == built.n_rows
    assert frame.select("code", "date").is_duplicated().sum() == 0
    assert set(meta.feature_columns) <= set(frame.columns)
    assert len(meta.feature_columns) >= 350 and len(meta.columns) == len(meta.feature_columns)
    assert {c["family"] for c in meta.columns} == set(meta.families)
    assert meta.target_columns == [f"target_{k}_{h}d" for h in (1, 5, 10, 20) for k in ("return", "rank")]
    assert meta.oracle_columns and all(c in frame.columns for c in meta.oracle_columns)
    assert meta.input_hashes["synthetic_config"]
    assert "splits" not in meta.config, "the folds are a job setting, not a dataset one"
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
    original = build_module.write_partitioned

    def explode_on_graphs(frame, root, part):
        """Features are on disk (in the temporary directory) when the graphs fail."""
        writes.append(root.name)
        if root.name == build_module.GRAPHS_DIR:
            raise RuntimeError("disk on fire")
        original(frame, root, part)

    monkeypatch.setattr(build_module, "write_partitioned", explode_on_graphs)
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
    assert "kizashi dataset" in result.output and "rows (stock-days)" in result.output
    assert "walk-forward" not in result.output, "the folds are cut by evaluate / train, not by the build"
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
    data = SMALL | {"output": {**SMALL["output"], "dir": str(tmp_path / "out")}}
    config.write_text(json.dumps({"data": data, "splits": {"n_folds": 8, "test_days": 100}}))
    result = runner.invoke(app, ["evaluate", "--config", str(config), "--out", str(tmp_path / "run")])
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


def _squeezed(text: str) -> str:
    """CLI output without whitespace (rich wraps long messages and paths)."""
    return "".join(text.split())


def _write_config(path, raw: dict):
    path.write_text(json.dumps(raw), encoding="utf-8")  # JSON is YAML
    return path


def test_cli_columns_list_exactly_the_columns_the_build_writes(built, tmp_path):
    meta = read_metadata(built.out_dir)
    config = _write_config(tmp_path / "small.yaml", SMALL)
    listed = runner.invoke(app, ["data", "columns", "--config", str(config), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert rows == meta.columns, "name, family, lookback, kind and normalization of every column, in order"
    assert "peers" in {r["family"] for r in rows}
    # ... and in the order of the feature columns in the files themselves
    first = next((built.out_dir / "features").rglob("*.parquet"))
    names = [r["name"] for r in rows]
    assert [c for c in pl.read_parquet_schema(first) if c in set(names)] == names
    assert len(names) == built.n_features

    peers = runner.invoke(app, ["data", "columns", "--config", str(config), "--family", "peers", "--json"])
    assert peers.exit_code == 0, peers.output
    assert [r["name"] for r in json.loads(peers.stdout)] == [r["name"] for r in rows if r["family"] == "peers"] != []


def test_cli_columns_of_a_built_dataset_folder(built):
    meta = read_metadata(built.out_dir)
    for args in ([str(built.out_dir)], ["--dataset", str(built.out_dir)]):
        listed = runner.invoke(app, ["data", "columns", *args, "--json"])
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.stdout) == meta.columns
    table = runner.invoke(app, ["data", "columns", str(built.out_dir), "--family", "peers"])
    assert table.exit_code == 0, table.output
    assert f"{meta.families['peers']} feature columns" in table.output


def test_cli_columns_family_that_builds_nothing_is_an_error(built, tmp_path):
    no_graph = _write_config(tmp_path / "no_graph.yaml", SMALL | {"graph": {"enabled": False}})
    result = runner.invoke(app, ["data", "columns", "--config", str(no_graph), "--family", "peers"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "'peers' builds no column" in text and "graph.enabled" in text
    assert "returns" in text and "sector" in text, "the families that do build columns are named"
    excluded = _write_config(tmp_path / "excluded.yaml", SMALL | {"features": {"exclude_families": ["margin"]}})
    result = runner.invoke(app, ["data", "columns", "--config", str(excluded), "--family", "margin"])
    assert result.exit_code == 2 and "features.exclude_families" in " ".join(result.output.split()), result.output
    # an optional family (alpha158) is not built by `all`: the error says how to add it
    result = runner.invoke(app, ["data", "columns", "--config", str(excluded), "--family", "alpha158"])
    assert result.exit_code == 2 and "[all, alpha158]" in " ".join(result.output.split()), result.output
    listed = _write_config(tmp_path / "alpha.yaml", SMALL | {"features": {"families": ["all", "alpha158"]}})
    result = runner.invoke(app, ["data", "columns", "--config", str(listed), "--family", "alpha158", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 157
    # a built dataset without that family says so too
    result = runner.invoke(app, ["data", "columns", str(built.out_dir), "--family", "no_such_family"])
    assert result.exit_code == 2 and "'no_such_family'" in " ".join(result.output.split()), result.output


def test_a_second_concurrent_build_into_the_same_out_is_refused(tmp_path):
    import os
    import threading

    from kizashi.atomic import atomic_path

    out = tmp_path / "out"
    config = _write_config(tmp_path / "small.yaml", SMALL | {"graph": {"enabled": False}})
    writing, release = threading.Event(), threading.Event()

    def first_build_writing() -> None:
        """Holds the output as a build in the middle of writing it does."""
        with atomic_path(out) as tmp:
            tmp.mkdir()
            (tmp / "metadata.json").write_text("{}")
            writing.set()
            release.wait(120)

    first = threading.Thread(target=first_build_writing)
    first.start()
    try:
        assert writing.wait(60)
        second = runner.invoke(app, ["data", "build", "--config", str(config), "--out", str(out)])
    finally:
        release.set()
        first.join(120)
    assert second.exit_code == 1, second.output
    assert f"anotherwriter(pid{os.getpid()})" in _squeezed(second.output) and _squeezed(str(out)) in _squeezed(second.output)
    assert (out / "metadata.json").read_text() == "{}", "the first build's output, untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "small.yaml"]


@pytest.mark.parametrize("chunk_rows", [4000, 10_000_000])  # many chunks / one chunk in the full build
def test_the_features_of_some_days_equal_a_full_build(tmp_path, chunk_rows):
    """build_feature_rows (what `kizashi predict` builds: the days asked for, with warm-up)
    gives the full build's rows of those days bit for bit, features and targets alike."""
    from kizashi.datasets.build import build_feature_rows

    config = config_from_dict(DataBuildConfig, {**SMALL, "output": {"chunk_rows": chunk_rows}})
    full = scan_features(build_dataset(config, tmp_path / "full").out_dir).collect().sort("date", "code")
    dates = full.get_column("date").unique().sort()
    for first, last in [(dates[-1], dates[-1]), (dates[150], dates[152]), (dates[0], dates[0])]:
        rows = build_feature_rows(config, first, last)
        expected = full.filter(pl.col("date").is_between(first, last))
        assert rows.frame.columns == expected.columns
        assert rows.frame.equals(expected), f"{first} .. {last}"
        assert rows.feature_columns == read_metadata(tmp_path / "full").feature_columns
    assert build_feature_rows(config).frame.get_column("date").unique().to_list() == [dates[-1]]
