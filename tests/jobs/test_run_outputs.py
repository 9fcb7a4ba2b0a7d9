"""What a walk-forward run writes: ``run.json`` records the folds (train / validation / test
date ranges), and the evaluation tables are byte-identical between two identical runs."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest

from kizashi.config import EvaluateConfig, MetricsConfig, config_from_dict
from kizashi.evaluation.run_dir import (
    DAILY,
    DECILES,
    FOLDS,
    PREDICTION_SCHEMA,
    RUN_INFO,
    SUMMARY_CSV,
    SUMMARY_JSON,
    RunInfo,
    read_run_info,
)
from kizashi.features.targets import target_return_name
from kizashi.jobs.common import ORACLE_COLUMN, fold_row, oracle_reference, write_run
from kizashi.jobs.evaluate import run_walk_forward
from kizashi.splits import Fold

TABLES = (SUMMARY_CSV, SUMMARY_JSON, DECILES, DAILY)

SPLITS = {"n_folds": 2, "test_days": 60, "min_train_days": 150, "val_days": 40, "embargo_days": 5}


def _signal_config(tmp_path, name: str) -> EvaluateConfig:
    """The one-feature reversal signal (nothing is fitted) on a small synthetic market."""
    raw = {
        "data": {
            "synthetic": {"n_stocks": 40, "n_days": 420, "seed": 3},
            "graph": {"enabled": False},
            "output": {"dir": str(tmp_path / "dataset")},
        },
        "horizons": [1, 5],
        "splits": SPLITS,
        "signal": {"feature": "return_5d", "sign": -1},
        "output": {"dir": str(tmp_path / name)},
    }
    return config_from_dict(EvaluateConfig, raw)


@pytest.fixture(scope="module")
def signal_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run_outputs")
    return run_walk_forward(_signal_config(tmp, "a")), run_walk_forward(_signal_config(tmp, "b"))


def test_run_json_records_the_folds(signal_runs):
    run, _ = signal_runs
    info = read_run_info(run.run_dir)
    raw = json.loads((run.run_dir / RUN_INFO).read_text(encoding="utf-8"))
    assert raw["folds"] == info.folds and len(info.folds) == info.n_folds == 2
    # the folds the runner used (Fold.to_dict), the same spans as folds.csv
    folds_csv = pl.read_csv(run.run_dir / FOLDS).filter(pl.col("horizon") == 1).sort("fold")
    for fold, row in zip(info.folds, folds_csv.iter_rows(named=True), strict=True):
        assert fold["index"] == row["fold"]
        assert (fold["train_first"], fold["train_last"]) == (row["train_start"], row["train_end"])
        assert (fold["val_first"], fold["val_last"]) == (row["valid_start"], row["valid_end"])
        assert (fold["test_first"], fold["test_last"]) == (row["test_start"], row["test_end"])
        assert fold["test_n_days"] == row["n_test_days"] == SPLITS["test_days"]
        assert fold["embargo_days"] == SPLITS["embargo_days"] and fold["purge_days"] >= 5
        assert fold["train_n_days"] >= SPLITS["min_train_days"] and fold["val_n_days"] == SPLITS["val_days"]
        spans = [fold[key] for key in ("train_last", "val_first", "val_last", "test_first", "test_last")]
        assert spans[0] < spans[1] <= spans[2] < spans[3] <= spans[4], spans
    days = pl.read_parquet(run.run_dir / DAILY).get_column("date").unique().sort()

    def in_test_range(fold: dict) -> np.ndarray:
        first, last = (dt.date.fromisoformat(fold[key]) for key in ("test_first", "test_last"))
        return days.is_between(first, last).to_numpy()

    in_test = np.any([in_test_range(fold) for fold in info.folds], axis=0)
    assert in_test.all() and days.len() == sum(f["test_n_days"] for f in info.folds), (
        "the test ranges of run.json cover exactly the evaluated days"
    )


def test_two_identical_walk_forward_runs_write_identical_tables(signal_runs):
    first, second = signal_runs
    for name in TABLES:
        assert (first.run_dir / name).read_bytes() == (second.run_dir / name).read_bytes(), name


def _predictions(n_days: int = 400, n_codes: int = 200, horizons=(1, 5), seed: int = 0) -> pl.DataFrame:
    """PREDICTION_SCHEMA rows with random predictions and returns (sorted by horizon, date, code)."""
    rng = np.random.default_rng(seed)
    days = [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(n_days)]
    codes = [f"C{i:03d}" for i in range(n_codes)]
    n = n_days * n_codes
    frames = [
        pl.DataFrame(
            {
                "date": np.repeat(np.array(days, dtype="datetime64[D]"), n_codes),
                "code": codes * n_days,
                "fold": np.zeros(n, dtype=np.int32),
                "horizon": np.full(n, h, dtype=np.int32),
                "prediction": rng.normal(size=n),
                "target": 0.01 * rng.normal(size=n),
                "forward_return_1d": 0.01 * rng.normal(size=n),
            },
            schema=PREDICTION_SCHEMA,
        )
        for h in horizons
    ]
    return pl.concat(frames)


def test_write_run_is_byte_identical_across_repeats(tmp_path):
    """The aggregations run on Polars' thread pool: any order that depends on hashing or on
    thread scheduling shows as different last digits between repeats of the same evaluation.
    Five repeats on 160,000 rows (the summary and deciles differed in every repeat before
    the aggregation order was fixed)."""
    predictions = _predictions()
    info = RunInfo(model="random", dataset="none", horizons=[1, 5], seed=0, n_folds=1)
    written = []
    for repeat in range(5):
        out = tmp_path / f"run_{repeat}"
        shuffled = predictions.sample(fraction=1.0, shuffle=True, seed=repeat)  # write_run sorts its input
        write_run(out, shuffled, info, MetricsConfig(), fold_rows=[], cost_bps=10.0)
        written.append({name: (out / name).read_bytes() for name in TABLES})
    for other in written[1:]:
        for name in TABLES:
            assert other[name] == written[0][name], f"{name} differs between two runs of the same evaluation"


def _without_sorted_flag(frame: pl.DataFrame) -> pl.DataFrame:
    """The same rows in the same order, with a ``date`` column Polars does not know is sorted."""
    return frame.with_columns(pl.Series("date", frame.get_column("date").to_list(), dtype=pl.Date))


def test_fold_means_do_not_depend_on_how_polars_chunked_the_days():
    """The oracle reference in run.json and a folds.csv row average a daily series out of a
    ``group_by``; on a frame sorted by date Polars returns that series in several chunks (one
    per thread's share of the days) and sums a Float64 series chunk by chunk, so ``Series.mean``
    moved in the last digit with the chunk layout (a resumed run's run.json once differed from
    the uninterrupted run's by one ulp on a 2-core CI machine). The same rows in the same order,
    with and without Polars' sorted flag on ``date``, give the same bits."""
    predictions = _predictions(n_days=383, n_codes=40, horizons=(1,)).sort("date", "code")
    days = np.unique(predictions.get_column("date").to_numpy().astype("datetime64[D]"))
    fold = Fold(index=0, train_dates=days[:0], val_dates=days[:0], test_dates=days)
    frame = predictions.select(
        "date", "code",
        pl.col("prediction").alias(ORACLE_COLUMN),
        (pl.col("target") + 0.01 * pl.col("prediction")).alias(target_return_name(1)),
    )
    assert oracle_reference(frame, [fold], [1]) == oracle_reference(_without_sorted_flag(frame), [fold], [1])
    assert fold_row(fold, 1, 0, predictions) == fold_row(fold, 1, 0, _without_sorted_flag(predictions))
    assert oracle_reference(frame, [fold], [1])["oracle_rank_ic_mean"]["1"] > 0.5, "the planted oracle is strong"
