"""`kizashi ensemble`: the per-day rank average of several runs' predictions (and of their
validation slices), written as a run directory. Members are written by hand through
``write_run`` (known predictions) and, for the file list, the report and the books chosen on
validation slices, by small real walk-forward runs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import rankdata

from kizashi.config import EvaluateConfig, MetricsConfig, config_from_dict, dump_config
from kizashi.errors import KizashiError
from kizashi.evaluation.metrics import daily_ic
from kizashi.evaluation.report import write_report
from kizashi.evaluation.run_dir import (
    DAILY,
    FEATURE_IMPORTANCE,
    FOLDS,
    PREDICTION_SCHEMA,
    PREDICTIONS,
    RUN_INFO,
    STRATEGIES,
    STRATEGY_DAILY,
    VALIDATION_PREDICTIONS,
    WALK_FORWARD_CHOICE,
    RunInfo,
    read_run_info,
    read_summary,
    require_run_dir,
)
from kizashi.jobs.common import fold_row, write_run
from kizashi.jobs.ensemble import run_ensemble
from kizashi.jobs.evaluate import run_walk_forward
from kizashi.jobs.strategies import choose_strategies
from kizashi.splits import Fold

N_DAYS = 300
N_CODES = 60
HORIZONS = (1, 5)
CAVEAT = "Universe = today's members: survivorship bias"


# --------------------------------------------------------------------------------------
# hand-written members
# --------------------------------------------------------------------------------------


def _business_days(n: int, start: dt.date = dt.date(2021, 1, 4)) -> list[dt.date]:
    days, day = [], start
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


DATES = _business_days(N_DAYS)
CODES = [f"{1300 + i}" for i in range(N_CODES)]


def _folds(purge_days: int = 5) -> list[Fold]:
    """Two folds; their test windows (days 100-199, 200-299) are the predictions' days."""
    d = np.array(DATES, dtype="datetime64[D]")
    return [
        Fold(0, d[:80], d[85:95], d[100:200], purge_days=purge_days, embargo_days=2),
        Fold(1, d[:180], d[185:195], d[200:300], purge_days=purge_days, embargo_days=2),
    ]


def _market(seed: int = 0, noise: float = 2.0) -> pl.DataFrame:
    """The test days' (date, code, horizon) rows with two planted signals ``s1``, ``s2``: the
    target is ``s1 + s2 + noise``; ``fold`` from the test windows of :func:`_folds`."""
    rng = np.random.default_rng(seed)
    days = DATES[100:]
    n = len(days) * N_CODES
    s1, s2 = rng.normal(size=n), rng.normal(size=n)
    next_day = 0.01 * (s1 + s2) + 0.02 * rng.normal(size=n)
    frames = []
    for h in HORIZONS:
        frames.append(
            pl.DataFrame(
                {
                    "date": np.repeat(np.array(days, dtype="datetime64[D]"), N_CODES),
                    "code": CODES * len(days),
                    "fold": np.repeat([0] * 100 + [1] * 100, N_CODES).astype(np.int32),
                    "horizon": np.full(n, h, dtype=np.int32),
                    "s1": s1,
                    "s2": s2,
                    "target": 0.01 * (s1 + s2 + noise * rng.normal(size=n)),
                    "forward_return_1d": next_day,
                }
            ).with_columns(pl.col("date").cast(pl.Date))
        )
    return pl.concat(frames)


def write_member(
    path: Path,
    predictions: pl.DataFrame,
    *,
    model: str = "lightgbm",
    control: bool = False,
    folds: list[Fold] | None = None,
    caveats: list[str] | None = None,
    references: dict[str, dict[str, float]] | None = None,
    seed: int = 0,
    validation: pl.DataFrame | None = None,
) -> Path:
    """A run directory of ``predictions`` (PREDICTION_SCHEMA columns), written as a job does;
    with ``validation`` (the same columns) its validation slices too."""
    folds = folds if folds is not None else _folds()
    predictions = predictions.select(list(PREDICTION_SCHEMA)).cast(PREDICTION_SCHEMA)
    horizons = sorted(predictions.get_column("horizon").unique().to_list())
    rows = [
        fold_row(f, h, 1, predictions.filter((pl.col("fold") == f.index) & (pl.col("horizon") == h)))
        for f in folds
        for h in horizons
    ]
    info = RunInfo(
        model=model,
        dataset="/data/market",
        horizons=horizons,
        seed=seed,
        control=control,
        n_folds=len(folds),
        folds=[f.to_dict() for f in folds],
        features=["return_5d", "volume_20d"] if model == "lightgbm" else ["return_5d", "graph_degree"],
        config={"metrics": dump_config(MetricsConfig()), "seed": seed},
        caveats=[CAVEAT] if caveats is None else caveats,
        source="synthetic",
        references={"oracle_rank_ic_mean": {"1": 0.2, "5": 0.1}} if references is None else references,
    )
    write_run(path, predictions, info, MetricsConfig(), fold_rows=rows, cost_bps=10.0)
    if validation is not None:
        validation.select(list(PREDICTION_SCHEMA)).cast(PREDICTION_SCHEMA).write_parquet(path / VALIDATION_PREDICTIONS)
    return path


def _validation_market(seed: int = 5) -> pl.DataFrame:
    """Validation-slice rows of both folds of :func:`_folds` (days 85-94 and 185-194) at
    HORIZONS with the labels; ``s1`` a signal of the target."""
    rng = np.random.default_rng(seed)
    frames = []
    for fold, days in ((0, DATES[85:95]), (1, DATES[185:195])):
        n = len(days) * N_CODES
        s1, next_day = rng.normal(size=n), 0.02 * rng.normal(size=n)
        for h in HORIZONS:
            frames.append(
                pl.DataFrame(
                    {
                        "date": np.repeat(np.array(days, dtype="datetime64[D]"), N_CODES),
                        "code": CODES * len(days),
                        "fold": np.full(n, fold, dtype=np.int32),
                        "horizon": np.full(n, h, dtype=np.int32),
                        "s1": s1,
                        "target": 0.01 * (s1 + rng.normal(size=n)),
                        "forward_return_1d": next_day,
                    }
                ).with_columns(pl.col("date").cast(pl.Date))
            )
    return pl.concat(frames)


def _noisy(market: pl.DataFrame, signal: pl.Expr, scale: float, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return market.with_columns((signal + scale * pl.Series(rng.normal(size=market.height))).alias("prediction"))


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    return _market()


@pytest.fixture(scope="module")
def three(tmp_path_factory, market):
    """Three members of one market: on s1, on s2 (another scale, with ties), on both."""
    root = tmp_path_factory.mktemp("ensemble_members")
    a = write_member(root / "a", _noisy(market, pl.col("s1"), 0.5, 1))
    # another scale and many ties (rounded to tens): ranks must not care
    b = write_member(
        root / "b",
        _noisy(market, 100 * pl.col("s2"), 50.0, 2).with_columns((pl.col("prediction") / 10).round() * 10),
        model="atft_gat_fan:small",
        seed=7,
    )
    c = write_member(root / "c", _noisy(market, pl.col("s1") + pl.col("s2"), 2.0, 3), caveats=[CAVEAT, "other"])
    return a, b, c


def _rank_ic(run: Path, horizon: int) -> float:
    return read_summary(run)[horizon]["rank_ic_mean"]


# --------------------------------------------------------------------------------------
# the combination
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 1.0]])
def test_prediction_is_the_weighted_mean_of_per_day_percentile_ranks(tmp_path, three, weights):
    result = run_ensemble(three, tmp_path / "ens", weights=weights)
    ensemble = pl.read_parquet(result.run_dir / PREDICTIONS)
    day, horizon = DATES[150], 5
    w = np.array(weights or [1.0, 1.0, 1.0])
    w = w / w.sum()
    expected = np.zeros(N_CODES)
    for weight, member in zip(w, three):
        rows = pl.read_parquet(member / PREDICTIONS).filter(
            (pl.col("date") == day) & (pl.col("horizon") == horizon)
        ).sort("code")
        values = rows.get_column("prediction").to_numpy()
        expected += weight * rankdata(values, method="average") / len(values)  # ties share their mean rank
    got = ensemble.filter((pl.col("date") == day) & (pl.col("horizon") == horizon)).sort("code")
    assert got.get_column("code").to_list() == CODES
    np.testing.assert_allclose(got.get_column("prediction").to_numpy(), expected, rtol=0, atol=1e-12)
    # the member b has ties on that day, so the average-rank rule is exercised
    b_day = pl.read_parquet(three[1] / PREDICTIONS).filter((pl.col("date") == day) & (pl.col("horizon") == horizon))
    assert b_day.get_column("prediction").n_unique() < N_CODES
    # fold and labels are the members' (every member has the same)
    a = pl.read_parquet(three[0] / PREDICTIONS).sort("horizon", "date", "code")
    assert ensemble.select("date", "code", "fold", "horizon", "target", "forward_return_1d").equals(
        a.select("date", "code", "fold", "horizon", "target", "forward_return_1d")
    )
    assert ensemble.schema == pl.Schema(PREDICTION_SCHEMA)
    ranks = ensemble.get_column("prediction")
    assert ranks.min() > 0 and ranks.max() <= 1


def test_ensemble_of_a_run_with_itself_has_the_same_rank_ic(tmp_path, three):
    a = three[1]  # the member with ties
    result = run_ensemble([a, a], tmp_path / "self")
    for h in HORIZONS:
        assert result.summary[h]["rank_ic_mean"] == pytest.approx(_rank_ic(a, h), abs=1e-12)
    ours = pl.read_parquet(result.run_dir / DAILY).get_column("rank_ic").to_numpy()
    theirs = pl.read_parquet(a / DAILY).get_column("rank_ic").to_numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_two_complementary_predictors_beat_each_of_them(tmp_path, market):
    """The target is s1 + s2 + noise; one member sees s1, the other s2 (each with its own
    noise). Their rank average carries both signals: its RankIC is higher in expectation
    (about 0.41 against 0.29 per member here), and over 200 days by many standard errors."""
    one = write_member(tmp_path / "one", _noisy(market, pl.col("s1"), 0.5, 11))
    two = write_member(tmp_path / "two", _noisy(market, pl.col("s2"), 0.5, 12), model="atft_gat_fan", seed=1)
    result = run_ensemble([one, two], tmp_path / "ens")
    ensemble = pl.read_parquet(result.run_dir / DAILY).sort("horizon", "date")
    for member in (one, two):
        daily = pl.read_parquet(member / DAILY).sort("horizon", "date")
        for h in HORIZONS:
            gain = (
                ensemble.filter(pl.col("horizon") == h).get_column("rank_ic")
                - daily.filter(pl.col("horizon") == h).get_column("rank_ic")
            ).to_numpy()
            standard_error = gain.std(ddof=1) / np.sqrt(len(gain))
            assert gain.mean() > 5 * standard_error, (member, h, gain.mean(), standard_error)
            assert result.summary[h]["rank_ic_mean"] > _rank_ic(member, h) + 0.05


def test_missing_member_prediction_gives_no_ensemble_prediction(tmp_path, market, caplog):
    a = write_member(tmp_path / "a", _noisy(market, pl.col("s1"), 0.5, 1))
    holed = _noisy(market, pl.col("s2"), 0.5, 2).with_columns(
        pl.when((pl.col("date") == DATES[120]) & (pl.col("code") == CODES[3]))
        .then(float("nan"))
        .otherwise(pl.col("prediction"))
        .alias("prediction")
    )
    b = write_member(tmp_path / "b", holed)
    with caplog.at_level(logging.WARNING, logger="kizashi.jobs.ensemble"):
        result = run_ensemble([a, b], tmp_path / "ens")
    ensemble = pl.read_parquet(result.run_dir / PREDICTIONS)
    missing = ensemble.filter(pl.col("prediction").is_null())
    assert sorted(missing.get_column("horizon").to_list()) == list(HORIZONS)
    assert set(missing.get_column("code")) == {CODES[3]} and set(missing.get_column("date")) == {DATES[120]}
    assert "2 of" in caplog.text and "no ensemble prediction" in caplog.text
    # on that day the others are ranked among the 59 finite predictions of b
    day = ensemble.filter((pl.col("date") == DATES[120]) & (pl.col("horizon") == 1)).drop_nulls("prediction")
    a_day = pl.read_parquet(a / PREDICTIONS).filter((pl.col("date") == DATES[120]) & (pl.col("horizon") == 1))
    b_day = pl.read_parquet(b / PREDICTIONS).filter(
        (pl.col("date") == DATES[120]) & (pl.col("horizon") == 1) & pl.col("prediction").is_not_nan()
    )
    assert b_day.height == N_CODES - 1
    expected = (
        a_day.select("code", (pl.col("prediction").rank() / N_CODES).alias("ra"))
        .join(b_day.select("code", (pl.col("prediction").rank() / (N_CODES - 1)).alias("rb")), on="code")
        .select("code", ((pl.col("ra") + pl.col("rb")) / 2).alias("expected"))
    )
    joined = day.join(expected, on="code")
    assert joined.height == N_CODES - 1
    np.testing.assert_allclose(joined.get_column("prediction"), joined.get_column("expected"), atol=1e-12)


def test_rows_and_horizons_not_in_every_member_are_left_out_and_said(tmp_path, market, caplog):
    a = write_member(tmp_path / "a", _noisy(market, pl.col("s1"), 0.5, 1))
    # b: horizon 1 only, and without one stock on the last 50 days
    b_rows = _noisy(market, pl.col("s2"), 0.5, 2).filter(
        (pl.col("horizon") == 1) & ~((pl.col("code") == CODES[0]) & (pl.col("date") >= DATES[250]))
    )
    b = write_member(tmp_path / "b", b_rows, references={"oracle_rank_ic_mean": {"1": 0.2}})
    with caplog.at_level(logging.INFO, logger="kizashi.jobs.ensemble"):
        result = run_ensemble([a, b], tmp_path / "ens")
    assert result.info.horizons == [1]
    assert f"{a}: horizon(s) [5] not in every member" in caplog.text
    common = 200 * N_CODES - 50
    assert pl.read_parquet(result.run_dir / PREDICTIONS).height == common
    said = f"{a}: {common:,} of its {200 * N_CODES:,} rows at horizon(s) [1] are common to all, 50 left out"
    assert said in caplog.text
    assert f"{b}: {common:,} of its {common:,} rows at horizon(s) [1] are common to all, 0 left out" in caplog.text
    lost = [c for c in result.info.caveats if "rows common to all 2 members" in c]
    assert len(lost) == 1 and f"{a}: 50 of {200 * N_CODES:,}" in lost[0]
    assert str(b) not in lost[0]
    assert result.info.references == {"oracle_rank_ic_mean": {"1": 0.2}}
    assert set(read_summary(result.run_dir)) == {1}


def test_run_json_of_the_ensemble(tmp_path, three):
    result = run_ensemble(three, tmp_path / "ens", weights=[2, 1, 1])
    info = read_run_info(result.run_dir)
    assert info == result.info
    assert info.model == "ensemble(lightgbm, atft_gat_fan:small, lightgbm)"
    assert info.horizons == list(HORIZONS) and info.n_folds == 2
    assert info.folds == [f.to_dict() for f in _folds()]
    assert info.caveats[:2] == [CAVEAT, "other"] and info.caveats.count(CAVEAT) == 1
    assert any("chosen after looking at their test-window results" in c for c in info.caveats)
    assert not any("rows common to all" in c for c in info.caveats)  # no row was left out
    assert info.features == ["return_5d", "volume_20d", "graph_degree"]
    assert info.references == {"oracle_rank_ic_mean": {"1": 0.2, "5": 0.1}}
    members = info.config["ensemble"]["members"]
    assert [m["run_dir"] for m in members] == [str(r) for r in three]
    assert [m["weight"] for m in members] == pytest.approx([0.5, 0.25, 0.25])
    assert [m["seed"] for m in members] == [0, 7, 0]
    assert info.config["metrics"] == dump_config(MetricsConfig())
    assert not info.control
    folds = pl.read_csv(result.run_dir / FOLDS)
    assert folds.select("fold", "horizon").rows() == [(0, 1), (0, 5), (1, 1), (1, 5)]
    assert folds.get_column("best_iteration").to_list() == [0, 0, 0, 0]
    member = pl.read_csv(three[0] / FOLDS)
    spans = ["train_start", "train_end", "valid_start", "valid_end", "test_start", "test_end", "n_test_days"]
    assert folds.select(spans).equals(member.select(spans))
    # the fold's RankIC is the ensemble's on the fold's test days
    ensemble = pl.read_parquet(result.run_dir / PREDICTIONS)
    fold1 = daily_ic(ensemble.filter((pl.col("fold") == 1) & (pl.col("horizon") == 5))).get_column("rank_ic").mean()
    assert folds.filter((pl.col("fold") == 1) & (pl.col("horizon") == 5)).item(0, "rank_ic_mean") == pytest.approx(
        fold1, abs=1e-12
    )


def test_references_that_differ_between_members_are_left_out(tmp_path, market, caplog):
    a = write_member(tmp_path / "a", _noisy(market, pl.col("s1"), 0.5, 1))
    b = write_member(
        tmp_path / "b", _noisy(market, pl.col("s2"), 0.5, 2), references={"oracle_rank_ic_mean": {"1": 0.2, "5": 0.3}}
    )
    with caplog.at_level(logging.WARNING, logger="kizashi.jobs.ensemble"):
        result = run_ensemble([a, b], tmp_path / "ens")
    assert result.info.references == {"oracle_rank_ic_mean": {"1": 0.2}}
    assert "oracle_rank_ic_mean at 5d differs" in caplog.text


# --------------------------------------------------------------------------------------
# validation slices
# --------------------------------------------------------------------------------------


def test_validation_slices_are_rank_averaged_per_fold_day_and_horizon(tmp_path, market, caplog):
    """The slices are combined as the test rows are, by hand on one day of each fold: b has
    ties and lacks one stock on one day (left out of the ranks of every member there)."""
    slices = _validation_market()
    a = write_member(tmp_path / "a", _noisy(market, pl.col("s1"), 0.5, 1),
                     validation=_noisy(slices, pl.col("s1"), 0.5, 11))
    hole = (pl.col("date") == DATES[90]) & (pl.col("code") == CODES[5])
    b_slices = _noisy(slices, 100 * pl.col("s1"), 80.0, 12).with_columns((pl.col("prediction") / 10).round() * 10)
    b = write_member(tmp_path / "b", _noisy(market, pl.col("s2"), 0.5, 2), validation=b_slices.filter(~hole),
                     model="atft_gat_fan:small")
    weights = np.array([1.0, 3.0]) / 4
    with caplog.at_level(logging.INFO, logger="kizashi.jobs.ensemble"):
        result = run_ensemble([a, b], tmp_path / "ens", weights=[1, 3])
    ensemble = pl.read_parquet(result.run_dir / VALIDATION_PREDICTIONS)
    assert ensemble.schema == pl.Schema(PREDICTION_SCHEMA)
    assert ensemble.height == slices.height - len(HORIZONS)  # b's missing stock-day, at both horizons
    assert f"{a}: {ensemble.height:,} of its {slices.height:,} validation-slice rows" in caplog.text

    members = [pl.read_parquet(m / VALIDATION_PREDICTIONS) for m in (a, b)]
    for fold, day, horizon in ((0, DATES[90], 5), (0, DATES[91], 1), (1, DATES[188], 5)):
        common = [c for c in CODES if not (day == DATES[90] and c == CODES[5])]
        expected = np.zeros(len(common))
        for weight, rows in zip(weights, members):
            rows = rows.filter(
                (pl.col("fold") == fold) & (pl.col("date") == day) & (pl.col("horizon") == horizon)
                & pl.col("code").is_in(common)
            ).sort("code")
            assert rows.get_column("code").to_list() == sorted(common)
            values = rows.get_column("prediction").to_numpy()
            expected += weight * rankdata(values, method="average") / len(values)
        got = ensemble.filter(
            (pl.col("fold") == fold) & (pl.col("date") == day) & (pl.col("horizon") == horizon)
        ).sort("code")
        assert got.get_column("code").to_list() == sorted(common)
        np.testing.assert_allclose(got.get_column("prediction").to_numpy(), expected, rtol=0, atol=1e-12)
    # b's ties are exercised; labels and folds are the members'
    assert b_slices.filter((pl.col("date") == DATES[188]) & (pl.col("horizon") == 5)).get_column(
        "prediction").n_unique() < N_CODES
    keys = ["fold", "horizon", "date", "code"]
    labels = ["date", "code", "fold", "horizon", "target", "forward_return_1d"]
    assert ensemble.sort(keys).select(labels).equals(
        members[0].join(members[1].select(keys), on=keys).sort(keys).select(labels)
    )
    # the ensemble ends with books chosen on those slices, and the command reads it as any run
    written = pl.read_csv(result.run_dir / STRATEGIES)
    assert set(written.get_column("horizon")) == set(HORIZONS)
    assert (result.run_dir / STRATEGY_DAILY).is_file()
    assert read_run_info(result.run_dir).config["portfolio"]["costs"]["cost_bps"] == 10.0
    (choice, _) = choose_strategies(result.run_dir)
    assert sorted(choice.per_fold) == [0, 1]


def test_no_validation_slices_when_a_member_lacks_them(tmp_path, market, caplog):
    slices = _validation_market()
    a = write_member(tmp_path / "a", _noisy(market, pl.col("s1"), 0.5, 1),
                     validation=_noisy(slices, pl.col("s1"), 0.5, 11))
    b = write_member(tmp_path / "b", _noisy(market, pl.col("s2"), 0.5, 2))
    with caplog.at_level(logging.WARNING, logger="kizashi.jobs.ensemble"):
        result = run_ensemble([a, b], tmp_path / "ens")
    written = set(os.listdir(result.run_dir))
    assert not written & {VALIDATION_PREDICTIONS, STRATEGIES, STRATEGY_DAILY}
    said = [r.getMessage() for r in caplog.records if VALIDATION_PREDICTIONS in r.getMessage()]
    assert said == [f"ensemble: no {VALIDATION_PREDICTIONS} written: {b} has none (an ensemble combines "
                    "validation slices only when every member has them)"]
    assert read_summary(result.run_dir)  # the test rows are combined all the same
    with pytest.raises(KizashiError, match="validation-slice predictions"):
        choose_strategies(result.run_dir)


def test_no_validation_slices_when_they_disagree_with_the_folds(tmp_path, market, caplog):
    slices = _validation_market()
    a = write_member(tmp_path / "a", _noisy(market, pl.col("s1"), 0.5, 1),
                     validation=_noisy(slices, pl.col("s1"), 0.5, 11))
    # b kept no slice of fold 1
    b = write_member(tmp_path / "b", _noisy(market, pl.col("s2"), 0.5, 2),
                     validation=_noisy(slices, pl.col("s1"), 0.5, 12).filter(pl.col("fold") == 0))
    # c's fold-0 rows reach into the fold's test window
    late = slices.with_columns(
        pl.when(pl.col("date") == DATES[94]).then(pl.lit(DATES[100])).otherwise("date").alias("date")
    )
    c = write_member(tmp_path / "c", _noisy(market, pl.col("s2"), 0.5, 3), validation=_noisy(late, pl.col("s1"), 0.5, 13))
    with caplog.at_level(logging.WARNING, logger="kizashi.jobs.ensemble"):
        result = run_ensemble([a, b], tmp_path / "ab")
    assert not (result.run_dir / VALIDATION_PREDICTIONS).exists()
    assert f"{b} and {a} have validation slices of different (fold, horizon)s" in caplog.text
    assert "only in " + str(a) + ": [(1, 1), (1, 5)]" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kizashi.jobs.ensemble"):
        result = run_ensemble([a, c], tmp_path / "ac")
    assert not (result.run_dir / VALIDATION_PREDICTIONS).exists()
    assert (f"{c}'s validation rows of fold 0 ({DATES[85]} .. {DATES[100]}) are not inside the fold's validation "
            f"days ({DATES[85]} .. {DATES[94]}") in caplog.text


def test_validation_slices_with_other_labels_are_refused(tmp_path, market):
    slices = _validation_market()
    a = write_member(tmp_path / "a", _noisy(market, pl.col("s1"), 0.5, 1),
                     validation=_noisy(slices, pl.col("s1"), 0.5, 11))
    moved = (pl.col("date") == DATES[187]) & (pl.col("code") == CODES[2]) & (pl.col("horizon") == 1)
    other = _noisy(slices, pl.col("s1"), 0.5, 12).with_columns(
        pl.when(moved).then(pl.col("target") + 1e-3).otherwise("target").alias("target")
    )
    b = write_member(tmp_path / "b", _noisy(market, pl.col("s2"), 0.5, 2), validation=other)
    with pytest.raises(KizashiError, match="different `target` on 1 common rows") as err:
        run_ensemble([a, b], tmp_path / "ens")
    assert f"date {DATES[187]}, code {CODES[2]}, horizon 1d" in str(err.value)


# --------------------------------------------------------------------------------------
# what is refused
# --------------------------------------------------------------------------------------


def test_control_mixed_with_real_runs_is_refused(tmp_path, market):
    real = write_member(tmp_path / "real", _noisy(market, pl.col("s1"), 0.5, 1))
    control = write_member(tmp_path / "control", _noisy(market, pl.col("s2"), 0.5, 2), control=True)
    with pytest.raises(KizashiError, match="control") as err:
        run_ensemble([real, control], tmp_path / "ens")
    assert str(control) in str(err.value) and str(real) in str(err.value)
    assert not (tmp_path / "ens").exists()
    # controls only: allowed, and the ensemble is a control
    other = write_member(tmp_path / "control2", _noisy(market, pl.col("s1"), 0.5, 3), control=True)
    result = run_ensemble([control, other], tmp_path / "ens")
    assert result.info.control and read_run_info(result.run_dir).control


def test_different_targets_are_refused_naming_a_row(tmp_path, market):
    a = write_member(tmp_path / "a", _noisy(market, pl.col("s1"), 0.5, 1))
    moved = (pl.col("date") == DATES[123]) & (pl.col("code") == CODES[7]) & (pl.col("horizon") == 5)
    b_rows = _noisy(market, pl.col("s2"), 0.5, 2)

    def shifted(by: float) -> pl.DataFrame:
        return b_rows.with_columns(pl.when(moved).then(pl.col("target") + by).otherwise("target").alias("target"))

    b = write_member(tmp_path / "b", shifted(1e-6))
    with pytest.raises(KizashiError, match="different `target` on 1 common rows") as err:
        run_ensemble([a, b], tmp_path / "ens")
    message = str(err.value)
    assert str(a) in message and str(b) in message
    assert f"date {DATES[123]}, code {CODES[7]}, horizon 5d" in message
    # a difference within 1e-9 (a float round trip) is the same target
    c = write_member(tmp_path / "c", shifted(1e-12))
    run_ensemble([a, c], tmp_path / "ens")
    # forward_return_1d is a label too
    d = write_member(
        tmp_path / "d",
        b_rows.with_columns(pl.when(moved).then(None).otherwise("forward_return_1d").alias("forward_return_1d")),
    )
    with pytest.raises(KizashiError, match="different `forward_return_1d`"):
        run_ensemble([a, d], tmp_path / "ens")


def test_runs_without_common_rows_are_refused(tmp_path, market):
    a = write_member(tmp_path / "a", _noisy(market, pl.col("s1"), 0.5, 1))
    b = write_member(
        tmp_path / "b", _noisy(market, pl.col("s2"), 0.5, 2).with_columns(("X" + pl.col("code")).alias("code"))
    )
    with pytest.raises(KizashiError, match=r"share no \(date, code, horizon\) row") as err:
        run_ensemble([a, b], tmp_path / "ens")
    assert str(a) in str(err.value) and str(b) in str(err.value)
    c = write_member(tmp_path / "c", _noisy(market, pl.col("s2"), 0.5, 2).filter(pl.col("horizon") == 5))
    d = write_member(tmp_path / "d", _noisy(market, pl.col("s2"), 0.5, 3).filter(pl.col("horizon") == 1))
    with pytest.raises(KizashiError, match="share no horizon") as err:
        run_ensemble([c, d], tmp_path / "ens")
    assert str(c) in str(err.value) and str(d) in str(err.value)


def test_different_folds_are_refused_naming_the_first_difference(tmp_path, market):
    a = write_member(tmp_path / "a", _noisy(market, pl.col("s1"), 0.5, 1))
    b = write_member(tmp_path / "b", _noisy(market, pl.col("s2"), 0.5, 2), folds=_folds(purge_days=10))
    with pytest.raises(KizashiError, match="different folds") as err:
        run_ensemble([a, b], tmp_path / "ens")
    message = str(err.value)
    assert str(a) in message and str(b) in message and "fold 0 purge_days: 5 vs 10" in message


def test_fold_column_that_differs_is_refused(tmp_path, market):
    a = write_member(tmp_path / "a", _noisy(market, pl.col("s1"), 0.5, 1))
    b = write_member(tmp_path / "b", _noisy(market, pl.col("s2"), 0.5, 2))
    # same run.json folds, but b's predictions put one day in the other fold
    rows = pl.read_parquet(b / PREDICTIONS)
    rows.with_columns(
        pl.when(pl.col("date") == DATES[199]).then(pl.lit(1, pl.Int32)).otherwise("fold").alias("fold")
    ).write_parquet(b / PREDICTIONS)
    with pytest.raises(KizashiError, match="different folds, e.g. date") as err:
        run_ensemble([a, b], tmp_path / "ens")
    assert str(a) in str(err.value) and str(b) in str(err.value) and str(DATES[199]) in str(err.value)


def test_bad_arguments_are_refused(tmp_path, three):
    a, b, _ = three
    with pytest.raises(KizashiError, match="at least two run directories"):
        run_ensemble([a], tmp_path / "ens")
    with pytest.raises(KizashiError, match="2 weights for 3 run directories"):
        run_ensemble(three, tmp_path / "ens", weights=[1, 1])
    with pytest.raises(KizashiError, match="non-negative"):
        run_ensemble([a, b], tmp_path / "ens", weights=[1, -1])
    with pytest.raises(KizashiError, match="not all zero"):
        run_ensemble([a, b], tmp_path / "ens", weights=[0, 0])
    before = sorted(os.listdir(a))
    with pytest.raises(KizashiError, match=f"would overwrite the member run {a}"):
        run_ensemble([a, b], a)
    with pytest.raises(KizashiError, match="would overwrite the member run"):
        run_ensemble([a, b], a.parent)
    assert sorted(os.listdir(a)) == before
    with pytest.raises(KizashiError, match="no such run directory"):
        run_ensemble([a, tmp_path / "missing"], tmp_path / "ens")


# --------------------------------------------------------------------------------------
# real walk-forward members: the directory has what a run has, and the report reads it
# --------------------------------------------------------------------------------------


def _evaluate_config(tmp: Path, **overrides) -> EvaluateConfig:
    raw = {
        "data": {
            "synthetic": {"n_stocks": 40, "n_days": 420, "seed": 3},
            "graph": {"enabled": False},
            "output": {"dir": str(tmp / "dataset")},
        },
        "horizons": [1, 5],
        "splits": {"n_folds": 2, "test_days": 60, "min_train_days": 150, "val_days": 40, "embargo_days": 5},
        "features": ["return_1d", "return_5d", "return_20d", "momentum_20_5d", "realized_vol_10d"],
        "model": {"n_estimators": 30, "min_data_in_leaf": 50, "early_stopping_rounds": 10, "num_threads": 1},
        **overrides,
    }
    return config_from_dict(EvaluateConfig, raw)


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """LightGBM, the one-feature reversal signal and LightGBM's control on one small market."""
    tmp = tmp_path_factory.mktemp("ensemble_real")
    lightgbm = run_walk_forward(_evaluate_config(tmp), out_dir=tmp / "lightgbm")
    signal = run_walk_forward(
        _evaluate_config(tmp, signal={"feature": "return_5d", "sign": -1}), out_dir=tmp / "signal"
    )
    control = run_walk_forward(_evaluate_config(tmp), control=True, out_dir=tmp / "control")
    return tmp, lightgbm.run_dir, signal.run_dir, control.run_dir


# Written by a member's own job only (an ensemble writes validation_predictions.parquet and
# the books chosen on it when every member has validation slices, as these members do).
MODEL_SPECIFIC = {FEATURE_IMPORTANCE, "fits", "checkpoints", "logs"}


def test_ensemble_of_real_runs_is_a_complete_run_directory(real_runs):
    tmp, lightgbm, signal, _ = real_runs
    result = run_ensemble([lightgbm, signal], tmp / "ensemble")
    written = set(os.listdir(result.run_dir))
    for member in (lightgbm, signal):
        assert written == set(os.listdir(member)) - MODEL_SPECIFIC
    assert FEATURE_IMPORTANCE in os.listdir(lightgbm) and "fits" in os.listdir(lightgbm)
    require_run_dir(result.run_dir)
    info = read_run_info(result.run_dir)
    assert info.model == "ensemble(lightgbm, signal: -return_5d)"
    assert info.folds == read_run_info(lightgbm).folds and info.n_folds == 2
    assert sum("Synthetic market" in c for c in info.caveats) == 1
    assert info.references["oracle_rank_ic_mean"] == read_run_info(lightgbm).references["oracle_rank_ic_mean"]
    assert set(read_summary(result.run_dir)) == {1, 5}
    assert json.loads((result.run_dir / RUN_INFO).read_text())["config"]["ensemble"]["weights"] == [0.5, 0.5]
    assert pl.read_parquet(result.run_dir / PREDICTIONS).height == pl.read_parquet(lightgbm / PREDICTIONS).height
    # the report reads it as any run (no feature importance: that part says so)
    index = write_report(result.run_dir)
    assert index.is_file() and "ensemble(lightgbm, signal: -return_5d)" in index.read_text(encoding="utf-8")


def test_books_are_chosen_on_the_validation_slices_of_an_ensemble_of_real_runs(real_runs):
    tmp, lightgbm, signal, _ = real_runs
    result = run_ensemble([lightgbm, signal], tmp / "ensemble_books")
    ensemble = pl.read_parquet(result.run_dir / VALIDATION_PREDICTIONS)
    member = pl.read_parquet(lightgbm / VALIDATION_PREDICTIONS)
    keys = ["fold", "horizon", "date", "code"]
    assert ensemble.select(keys).sort(keys).equals(member.select(keys).sort(keys))  # same slices, every row
    for fold in result.info.folds:
        dates = ensemble.filter(pl.col("fold") == fold["index"]).get_column("date")
        assert (str(dates.min()), str(dates.max())) == (fold["val_first"], fold["val_last"])
    written = pl.read_csv(result.run_dir / STRATEGIES)
    choices = choose_strategies(result.run_dir)
    assert [c.horizon for c in choices] == [1, 5]
    assert all(sorted(c.per_fold) == [0, 1] for c in choices)
    assert WALK_FORWARD_CHOICE in written.get_column("strategy").to_list()


def test_real_control_run_is_not_mixed_in(real_runs):
    tmp, lightgbm, signal, control = real_runs
    with pytest.raises(KizashiError, match="shuffled-target control") as err:
        run_ensemble([lightgbm, control, signal], tmp / "mixed")
    assert f"{control} is a shuffled-target control run" in str(err.value)
    assert f"{lightgbm}, {signal} are not" in str(err.value)
