"""`kizashi fit-final` and `kizashi predict`: the final LightGBM refit with the walk-forward's
rounds, and one day's signals equal to scoring a full rebuild's rows of that day; each bad
input refused with a message that says what is wrong."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import EvaluateConfig, config_from_dict
from kizashi.data.synthetic import generate_market
from kizashi.datasets.store import scan_features
from kizashi.errors import KizashiError
from kizashi.jobs.evaluate import run_walk_forward
from kizashi.jobs.fit_final import final_rounds, fit_final
from kizashi.jobs.predict import predict_day
from kizashi.training.final_model import MANIFEST, load_final_model


def write_quotes(folder: Path, drop_last_day_codes: int = 0) -> tuple[Path, Path]:
    market = generate_market(n_stocks=30, n_sectors=3, n_days=420, seed=4, split_probability=0.0)
    quotes = market.quotes.select("date", "code", "open", "high", "low", "close", "volume")
    if drop_last_day_codes:
        last = quotes.get_column("date").max()
        dropped = quotes.get_column("code").unique().sort().head(drop_last_day_codes)
        quotes = quotes.filter(~((pl.col("date") == last) & pl.col("code").is_in(dropped.implode())))
    folder.mkdir(parents=True, exist_ok=True)
    quotes.write_csv(folder / "quotes.csv")
    market.sectors.select("code", "sector").write_csv(folder / "sectors.csv")
    return folder / "quotes.csv", folder / "sectors.csv"


@pytest.fixture(scope="module")
def final(tmp_path_factory):
    root = tmp_path_factory.mktemp("final")
    quotes, sectors = write_quotes(root / "data")
    config = config_from_dict(EvaluateConfig, {
        "data": {"input": {"path": str(quotes), "sectors": str(sectors)}, "targets": {"horizons": [1, 5]},
                 "output": {"dir": str(root / "dataset")}},
        "horizons": [1, 5],
        "splits": {"fit_to_data": True},
        "model": {"n_estimators": 60, "early_stopping_rounds": 10},
        "output": {"dir": str(root / "run")},
    })
    run = run_walk_forward(config)
    folder, model = fit_final(run.run_dir)
    return root, run, folder, model


def test_final_rounds_are_the_median_best_iteration_per_horizon():
    folds = pl.DataFrame({"horizon": [1, 1, 1, 5, 5], "best_iteration": [3, 10, 7, 4, 5]})
    assert final_rounds(folds, [1, 5]) == {1: 7, 5: 5}  # median 4.5 rounds half up


def test_fit_final_refits_on_every_labelled_row(final):
    root, run, folder, model = final
    folds = pl.read_csv(run.run_dir / "folds.csv")
    assert model.rounds == final_rounds(folds, [1, 5])
    for horizon in (1, 5):
        assert model.boosters[horizon].current_iteration() == model.rounds[horizon]
    loaded = load_final_model(folder)
    assert loaded.features == run.info.features and loaded.horizons == [1, 5]
    rows = scan_features(root / "dataset").sort("date", "code").collect()
    x = rows.select(loaded.features).to_numpy().astype(np.float32)
    np.testing.assert_array_equal(loaded.boosters[5].predict(x[:50]), model.boosters[5].predict(x[:50]))
    assert model.train_rows == rows.height


def test_predict_scores_a_day_like_a_full_rebuild(final, tmp_path):
    root, run, folder, model = final
    full = scan_features(root / "dataset").sort("date", "code").collect()
    for day in (full.get_column("date").max(), full.get_column("date").unique().sort()[200]):
        result = predict_day(folder, date=day, out_dir=tmp_path / f"signals_{day}")
        expected_rows = full.filter(pl.col("date") == day)
        x = expected_rows.select(model.features).to_numpy().astype(np.float32)
        for horizon in (1, 5):
            got = result.signals.filter(pl.col("horizon") == horizon).sort("code")
            assert got.get_column("code").to_list() == expected_rows.get_column("code").to_list()
            np.testing.assert_array_equal(got.get_column("score").to_numpy(), model.boosters[horizon].predict(x))
            assert sorted(got.get_column("rank").to_list()) == list(range(1, len(x) + 1))
            best = got.sort("rank").row(0, named=True)
            assert best["score"] == got.get_column("score").max() and best["percentile"] == 1.0
    written = pl.read_parquet(result.out_dir / "signals.parquet")
    assert written.equals(result.signals)
    assert pl.read_csv(result.out_dir / "signals.csv").height == written.height
    summary = json.loads((result.out_dir / "signals.json").read_text())
    assert summary["n_stocks"] == x.shape[0] and len(summary["model_digest"]) == 64 and summary["input_hashes"]


def test_predict_refuses_bad_inputs(final, tmp_path):
    root, _, folder, model = final
    last = dt.date.fromisoformat(model.train_last)
    with pytest.raises(KizashiError, match=r"stale data .*--date"):
        predict_day(folder, out_dir=tmp_path / "a", as_of=last + dt.timedelta(days=30))
    assert predict_day(folder, out_dir=tmp_path / "b", as_of=last + dt.timedelta(days=3)).date == last

    shrunk, _ = write_quotes(tmp_path / "shrunk", drop_last_day_codes=20)  # 10 of 30 stocks left on the last day
    with pytest.raises(KizashiError, match=r"10 stocks to score, fewer than 1[0-9] .*partial or broken"):
        predict_day(folder, data=shrunk, date=last, out_dir=tmp_path / "c")

    with pytest.raises(Exception, match="not a date of the data"):
        predict_day(folder, date=dt.date(1999, 1, 4), out_dir=tmp_path / "d")

    other = tmp_path / "reordered"
    other.mkdir()
    for file in folder.iterdir():
        (other / file.name).write_bytes(file.read_bytes())
    manifest = json.loads((other / MANIFEST).read_text())
    manifest["features"] = manifest["features"][::-1]
    (other / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(KizashiError, match="differ from the model's .*another order"):
        predict_day(other, date=last, out_dir=tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_the_commands(final, tmp_path):
    root, run, folder, model = final
    runner = CliRunner()
    result = runner.invoke(app, ["fit-final", "--run", str(run.run_dir), "--out", str(tmp_path / "final")])
    assert result.exit_code == 0, result.output
    assert load_final_model(tmp_path / "final").rounds == model.rounds
    result = runner.invoke(app, ["predict", "--model", str(tmp_path / "final"), "--date", model.train_last,
                                 "--out", str(tmp_path / "signals"), "--top", "3"])
    assert result.exit_code == 0, result.output
    assert f"{model.train_last}: top 3 of" in result.output and (tmp_path / "signals" / "signals.csv").is_file()
    result = runner.invoke(app, ["predict", "--model", str(tmp_path / "final"), "--date", "yesterday"])
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output


def test_monitor_watches_the_final_model_on_later_days(final, tmp_path):
    """fit-final writes a monitoring reference per horizon (stock-level features only); the
    monitor scores the days asked for with the final model and writes its report."""
    from kizashi.jobs.monitor import monitor_model
    from kizashi.monitoring import MonitorReference

    root, run, folder, model = final
    reference = MonitorReference.load(folder / "monitor_reference_5d.json")
    assert reference.features
    rows = scan_features(root / "dataset").collect()
    per_day = rows.group_by("date").agg(pl.len().alias("_n"), *(pl.col(f).n_unique() for f in reference.features))
    for name in reference.features:  # stock-level features only: many values a day
        assert per_day.get_column(name).median() >= per_day.get_column("_n").median() / 2, name
    assert not {"sector_return_1d", "sector_return_5d", "sector_breadth"} & set(reference.features)
    daily = pl.read_parquet(run.run_dir / "daily.parquet").filter(pl.col("horizon") == 5)
    assert reference.rank_ic_mean == pytest.approx(daily.get_column("rank_ic").drop_nans().mean())

    dates = scan_features(root / "dataset").select("date").unique().sort("date").collect().get_column("date")
    since = dates[-120]
    out, result = monitor_model(folder, since, horizon=5, out_dir=tmp_path / "monitor",
                                settings={"psi_alarm": 5.0, "psi_warn": 4.0})
    assert (out / "monitor.json").is_file() and (out / "monitor.html").is_file()
    assert result.daily.get_column("date").min() == since and result.daily.height == 120
    assert not [a for a in result.alarms if a.kind == "score_psi"], "thresholds set with settings are used"
    report = json.loads((out / "monitor.json").read_text())
    assert report["settings"]["rank_ic_nw_lags"] == 4  # 5-day returns overlap: h - 1 lags
    with pytest.raises(KizashiError, match="no 10d model"):
        monitor_model(folder, since, horizon=10, out_dir=tmp_path / "m2")
