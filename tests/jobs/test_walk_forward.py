"""The walk-forward runner: acceptance on the synthetic market, the shuffled-target control,
determinism, the one-feature baseline and the CLI."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import EvaluateConfig, config_from_dict
from kizashi.evaluation.run_dir import (
    DAILY,
    FEATURE_IMPORTANCE,
    FOLDS,
    PREDICTIONS,
    SUMMARY_FIELDS,
    read_run_info,
    read_summary,
)
from kizashi.jobs.evaluate import _day_shuffled, run_walk_forward


def _config(tmp_path, **overrides) -> EvaluateConfig:
    """The embedded default market (300 stocks x 1000 days), its dataset in tmp_path."""
    data = {"output": {"dir": str(tmp_path / "dataset")}}
    raw = {"data": data, "horizons": [1], "output": {"dir": str(tmp_path / "run")}, **overrides}
    return config_from_dict(EvaluateConfig, raw)


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    """LightGBM and its shuffled-target control on the default synthetic market, 1d."""
    tmp = tmp_path_factory.mktemp("walk_forward")
    config = _config(tmp)
    model = run_walk_forward(config, out_dir=tmp / "lightgbm")
    control = run_walk_forward(config, control=True, out_dir=tmp / "control")
    return model, control


@pytest.mark.slow
def test_lightgbm_recovers_half_of_the_oracle_rank_ic(default_runs):
    model, _ = default_runs
    rank_ic = model.summary[1]["rank_ic_mean"]
    oracle = model.info.references["oracle_rank_ic_mean"]["1"]
    assert oracle == pytest.approx(0.11, abs=0.01), "the planted signal's oracle on the test days"
    assert rank_ic >= 0.5 * oracle, f"out-of-sample RankIC@1d {rank_ic:.4f} < 50% of the oracle's {oracle:.4f}"
    assert model.summary[1]["n_days"] == 4 * 120


@pytest.mark.slow
def test_shuffled_target_control_has_no_signal(default_runs):
    model, control = default_runs
    assert control.info.control and not model.info.control
    assert abs(control.summary[1]["rank_ic_mean"]) <= 0.005
    # same test rows, same real targets: only the training labels were shuffled
    a = pl.read_parquet(model.run_dir / PREDICTIONS).select("date", "code", "target")
    b = pl.read_parquet(control.run_dir / PREDICTIONS).select("date", "code", "target")
    assert a.equals(b)


@pytest.mark.slow
def test_run_directory_contents(default_runs):
    model, _ = default_runs
    run = model.run_dir
    assert set(read_summary(run)[1]) == set(SUMMARY_FIELDS)
    info = read_run_info(run)
    assert info.model == "lightgbm" and info.horizons == [1] and info.n_folds == 4
    assert any("Synthetic market" in c for c in info.caveats)
    assert "oracle_return_1d" not in info.features and all(not f.startswith("target_") for f in info.features)
    folds = pl.read_csv(run / FOLDS)
    assert folds.height == 4 and (folds.get_column("best_iteration") >= 1).all()
    # train < validation < test in every fold, with gaps (purge, embargo) between them
    spans = folds.select(pl.col(c).str.to_date() for c in ("train_end", "valid_start", "valid_end", "test_start"))
    assert (spans.get_column("train_end") < spans.get_column("valid_start")).all()
    assert ((spans.get_column("test_start") - spans.get_column("valid_end")).dt.total_days() > 20).all()
    importance = pl.read_csv(run / FEATURE_IMPORTANCE)
    assert importance.height == 4 * len(info.features)
    daily = pl.read_parquet(run / DAILY)
    assert daily.height == 4 * 120


def test_day_shuffle_permutes_within_days_only():
    day = np.repeat(np.arange(5), 7)
    labels = np.arange(35, dtype=float)
    shuffled = _day_shuffled(labels, day, np.random.default_rng(0))
    assert not np.array_equal(shuffled, labels)
    for d in range(5):
        assert sorted(shuffled[day == d]) == sorted(labels[day == d])


SMALL_SPLITS = {"n_folds": 2, "test_days": 60, "min_train_days": 150, "val_days": 40, "embargo_days": 5}
SMALL_DATA = {
    "synthetic": {"n_stocks": 40, "n_days": 420, "seed": 3},
    "graph": {"window": 40, "top_k": 5},
}
SMALL_MODEL = {"n_estimators": 60, "min_data_in_leaf": 50, "num_threads": 1}


def _small(tmp_path, name: str, **extra) -> EvaluateConfig:
    raw = {
        "data": {**SMALL_DATA, "output": {"dir": str(tmp_path / "dataset")}},
        "horizons": [1, 5],
        "splits": SMALL_SPLITS,
        "model": SMALL_MODEL,
        "output": {"dir": str(tmp_path / name)},
        **extra,
    }
    return config_from_dict(EvaluateConfig, raw)


def test_runs_are_deterministic_given_the_seed(tmp_path):
    first = run_walk_forward(_small(tmp_path, "a"))
    second = run_walk_forward(_small(tmp_path, "b"))
    a = pl.read_parquet(first.run_dir / PREDICTIONS)
    b = pl.read_parquet(second.run_dir / PREDICTIONS)
    assert a.equals(b)
    other_seed = run_walk_forward(_small(tmp_path, "c", seed=5))
    c = pl.read_parquet(other_seed.run_dir / PREDICTIONS)
    assert not a.get_column("prediction").equals(c.get_column("prediction"))


def test_one_feature_reversal_baseline(tmp_path):
    result = run_walk_forward(_small(tmp_path, "reversal", signal={"feature": "return_5d", "sign": -1}))
    assert result.info.model == "signal: -return_5d" and result.info.features == ["return_5d"]
    predictions = pl.read_parquet(result.run_dir / PREDICTIONS)
    features = pl.scan_parquet(tmp_path / "dataset" / "features" / "**" / "*.parquet").select("date", "code", "return_5d")
    joined = predictions.join(features.collect(), on=["date", "code"])
    np.testing.assert_allclose(joined.get_column("prediction"), -joined.get_column("return_5d").cast(pl.Float64))
    assert not (result.run_dir / FEATURE_IMPORTANCE).exists()


def test_unknown_feature_or_horizon_is_a_config_error(tmp_path):
    from kizashi.errors import ConfigError

    with pytest.raises(ConfigError, match="not in the dataset"):
        run_walk_forward(_small(tmp_path, "x", features=["no_such_feature"]))
    with pytest.raises(ConfigError, match="horizons"):
        run_walk_forward(_small(tmp_path, "y", horizons=[3]))


def test_cli_evaluate_and_report(tmp_path):
    config = _small(tmp_path, "cli")
    path = tmp_path / "evaluate.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")  # JSON is YAML
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "--config", str(path), "--json", "--no-report"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(payload["summary"]) == {"1", "5"}
    report = runner.invoke(app, ["report", payload["run_dir"]])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "cli" / "report" / "index.html").exists()
    missing = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no such run directory" in " ".join(missing.output.split())


def test_dataset_is_reused_only_when_built_from_the_same_config(tmp_path):
    from kizashi.datasets.store import read_metadata
    from kizashi.jobs.common import ensure_dataset

    job = _small(tmp_path, "unused")
    out = ensure_dataset(job)
    stamp = lambda: (out / "metadata.json").stat().st_mtime_ns  # noqa: E731
    first = stamp()
    ensure_dataset(job)
    assert stamp() == first, "same config: reused"
    # keys that do not change the dataset's content, and the job's own keys, keep it
    neutral = job.model_copy(update={
        "data": job.data.model_copy(update={"output": job.data.output.model_copy(update={"chunk_rows": 5000})}),
        "splits": job.splits.model_copy(update={"n_folds": 1}),
        "horizons": [1],
    })
    ensure_dataset(neutral)
    assert stamp() == first, "output.chunk_rows, splits and horizons do not change the dataset: reused"
    changed = job.model_copy(update={"data": job.data.model_copy(update={"synthetic": job.data.synthetic.model_copy(update={"seed": 4})})})
    ensure_dataset(changed)
    assert read_metadata(out).config["synthetic"]["seed"] == 4, "another config: rebuilt"


def test_dataset_is_rebuilt_when_its_input_file_changes_in_place(tmp_path):
    """Same config, same path, new content: the inputs' hashes decide, not the path."""
    from kizashi.config import SyntheticMarketConfig
    from kizashi.data.synthetic import generate_market
    from kizashi.datasets.store import read_metadata
    from kizashi.jobs.common import ensure_dataset

    quotes = tmp_path / "quotes.parquet"
    generate_market(SyntheticMarketConfig(n_stocks=30, n_days=420, seed=1)).quotes.write_parquet(quotes)
    job = config_from_dict(EvaluateConfig, {
        "data": {"input": {"path": str(quotes)}, "graph": {"enabled": False},
                 "output": {"dir": str(tmp_path / "dataset")}},
        "splits": SMALL_SPLITS,
    })
    out = ensure_dataset(job)
    first = read_metadata(out).input_hashes
    generate_market(SyntheticMarketConfig(n_stocks=30, n_days=420, seed=2)).quotes.write_parquet(quotes)
    ensure_dataset(job)
    assert read_metadata(out).input_hashes != first, "the edited file was read again"
