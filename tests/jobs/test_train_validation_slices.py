"""`kizashi train` keeps each fold's validation-slice predictions (the early-stopping days,
purged from training and test), predicted by the weights that predicted the fold's test
days: per fold beside its checkpoints, and all folds in ``RUN_DIR/validation_predictions.parquet``,
on which the run (and ``kizashi strategies``) chooses a book. Two folds of the tiny synthetic market and the
tiny ATFT-GAT-FAN of ``tests/training/test_trainer.py``, one short epoch each."""

from __future__ import annotations

import datetime as dt
import logging
import shutil

import numpy as np
import polars as pl
import pytest
import torch

from kizashi.datasets import DayPanelCache, DayPanelDataset, FeatureStats, fold_day_indices
from kizashi.evaluation.run_dir import (
    PREDICTION_SCHEMA,
    PREDICTIONS,
    STRATEGIES,
    VALIDATION_PREDICTIONS,
    WALK_FORWARD_CHOICE,
    read_run_info,
)
from kizashi.jobs.strategies import choose_strategies
from kizashi.jobs.train import HorizonTargets, fold_checkpoint_dir, run_training
from kizashi.models import load_pretrained_model
from kizashi.splits import walk_forward_folds
from tests.training.test_trainer import HORIZONS, SPLITS, WINDOW, dataset_dir, train_config  # noqa: F401

TWO_FOLDS = {**SPLITS, "n_folds": 2, "val_days": 20}
# one short epoch: the slices, not the fit, are under test
SHORT = {"max_epochs": 1, "limit_train_batches": 4}
KEYS = ["fold", "horizon", "date", "code"]


@pytest.fixture(scope="module")
def trained(dataset_dir, tmp_path_factory):  # noqa: F811  (the imported fixture)
    out = tmp_path_factory.mktemp("slices") / "atft"
    config = train_config(dataset_dir, out, splits=TWO_FOLDS, trainer=SHORT)
    return config, run_training(config)


@pytest.fixture(scope="module")
def cache(dataset_dir):  # noqa: F811
    return DayPanelCache(dataset_dir)


def _slices(run) -> pl.DataFrame:
    return pl.read_parquet(run / VALIDATION_PREDICTIONS).sort(KEYS)


def _dates(frame: pl.DataFrame) -> list[dt.date]:
    return sorted(frame.get_column("date").unique().to_list())


def test_run_dir_holds_every_folds_validation_slice(trained, cache):
    config, result = trained
    run = result.run_dir
    slices = _slices(run)
    assert dict(slices.schema) == PREDICTION_SCHEMA
    info = read_run_info(run)
    assert [f["index"] for f in info.folds] == [0, 1]
    assert sorted(slices.get_column("fold").unique().to_list()) == [0, 1]
    folds = walk_forward_folds(cache.dates, config.splits, max(HORIZONS))
    test = pl.read_parquet(run / PREDICTIONS)
    for recorded, fold in zip(info.folds, folds):
        rows = slices.filter(pl.col("fold") == fold.index)
        # exactly the fold's validation days, as run.json records them
        val_dates = [d.astype(dt.date) for d in fold.val_dates]
        assert _dates(rows) == val_dates
        assert len(val_dates) == recorded["val_n_days"] == TWO_FOLDS["val_days"]
        assert (str(val_dates[0]), str(val_dates[-1])) == (recorded["val_first"], recorded["val_last"])
        # never in the fold's test window, nor among its test rows
        test_first, test_last = (dt.date.fromisoformat(recorded[f"test_{end}"]) for end in ("first", "last"))
        assert val_dates[-1] < test_first
        assert not rows.filter(pl.col("date").is_between(test_first, test_last)).height
        assert not set(_dates(rows)) & set(_dates(test.filter(pl.col("fold") == fold.index)))
        # every stock alive on those days, at every horizon
        days = fold_day_indices(cache, fold).val
        assert rows.height == int(cache.alive[days].sum()) * len(HORIZONS)
        # the fold's own file beside its checkpoints holds the same rows
        # (its targets are the day-panel cache's float32 copies; the run's are the dataset's)
        saved = pl.read_parquet(fold_checkpoint_dir(run, fold.index) / VALIDATION_PREDICTIONS).sort(KEYS)
        assert saved.drop("target", "forward_return_1d").equals(rows.drop("target", "forward_return_1d"))
        for column in ("target", "forward_return_1d"):
            np.testing.assert_allclose(saved.get_column(column).to_numpy(), rows.get_column(column).to_numpy(),
                                       rtol=1e-6, atol=1e-9)
    assert slices.get_column("prediction").is_finite().all()
    assert slices.select(pl.struct(KEYS).is_unique().all()).item()
    # target = the raw forward return over the horizon; forward_return_1d = the 1-day one
    row = slices.filter(pl.col("horizon") == 5).row(7, named=True)
    t, n = int(cache.day_indices(np.datetime64(row["date"], "D"))[0]), cache.codes.index(row["code"])
    assert row["target"] == pytest.approx(float(cache.targets[t, n, cache.horizons.index(5)]))
    assert row["forward_return_1d"] == pytest.approx(float(cache.targets[t, n, cache.horizons.index(1)]))


def test_slice_is_what_the_saved_fold_model_predicts(trained, cache):
    """checkpoints/fold_k/model/ (the weights that predicted the test days, EMA on) predicts
    the fold's validation days as the run's slice says."""
    config, result = trained
    slices = _slices(result.run_dir)
    collate = HorizonTargets([cache.horizons.index(h) for h in HORIZONS], centre_ranks=config.target == "rank")
    per_batch = config.trainer.days_per_batch
    for fold in walk_forward_folds(cache.dates, config.splits, max(HORIZONS)):
        fold_dir = fold_checkpoint_dir(result.run_dir, fold.index)
        model = load_pretrained_model(fold_dir / "model")
        stats = FeatureStats.load(fold_dir / "feature_stats.json")
        dataset = DayPanelDataset(cache, fold_day_indices(cache, fold).val, window=WINDOW, stats=stats,
                                  target=config.target)
        parts = []
        with torch.no_grad():
            for start in range(0, len(dataset), per_batch):
                batch = collate(dataset.__getitems__(list(range(start, min(start + per_batch, len(dataset))))))
                point = model(batch)["point"].numpy().astype(np.float64)  # [N, H]
                day = np.asarray(batch["days"])[batch["batch_day"].numpy()]
                for j, h in enumerate(HORIZONS):
                    parts.append(pl.DataFrame({
                        "date": pl.Series(cache.dates[day]).cast(pl.Date),
                        "code": np.asarray(cache.codes, dtype=object)[batch["codes"].numpy()].astype(str),
                        "horizon": np.full(len(day), h, dtype=np.int32),
                        "expected": point[:, j],
                    }))
        expected = pl.concat(parts)
        got = slices.filter(pl.col("fold") == fold.index).join(expected, on=["date", "code", "horizon"], how="full")
        assert got.height == expected.height and got.get_column("prediction").is_not_null().all()
        np.testing.assert_allclose(got.get_column("prediction"), got.get_column("expected"), rtol=1e-5, atol=1e-6)


# the copied run's checkpoints name their old directory; Lightning says so when predict loads one
@pytest.mark.filterwarnings("ignore:The dirpath has changed")
def test_resume_reuses_the_slices_and_predicts_missing_ones_again(trained, tmp_path, caplog):
    config, result = trained
    before, test_before = _slices(result.run_dir), pl.read_parquet(result.run_dir / PREDICTIONS).sort(KEYS)
    again = run_training(config, resume=True)  # both folds done: reused as saved
    assert all(fold.resumed for fold in again.folds)
    assert _slices(again.run_dir).equals(before)

    # a run made before slices were kept: predicted again from best.ckpt, without refitting
    copy = tmp_path / "older"
    shutil.copytree(result.run_dir, copy)
    for k in (0, 1):
        (fold_checkpoint_dir(copy, k) / VALIDATION_PREDICTIONS).unlink()
    (copy / VALIDATION_PREDICTIONS).unlink()
    recomputed = run_training(config, out_dir=copy, resume=True)
    assert [f.global_step for f in recomputed.folds] == [f.global_step for f in result.folds]
    slices = _slices(copy)
    assert slices.select(KEYS).equals(before.select(KEYS))
    np.testing.assert_allclose(slices.get_column("prediction"), before.get_column("prediction"), rtol=1e-5, atol=1e-7)
    test_after = pl.read_parquet(copy / PREDICTIONS).sort(KEYS)
    np.testing.assert_allclose(test_after.get_column("prediction"), test_before.get_column("prediction"),
                               rtol=1e-5, atol=1e-7)

    # ... and when fold 1's best checkpoint is gone too, its slice is left out, with a warning
    (fold_checkpoint_dir(copy, 1) / VALIDATION_PREDICTIONS).unlink()
    (fold_checkpoint_dir(copy, 1) / "best.ckpt").unlink()
    with caplog.at_level(logging.WARNING, logger="kizashi.jobs.train"):
        run_training(config, out_dir=copy, resume=True)
    assert "fold 1: predicted by a run that kept no validation slice" in caplog.text
    assert _slices(copy).equals(slices.filter(pl.col("fold") == 0))
    assert pl.read_parquet(copy / PREDICTIONS).sort(KEYS).equals(test_after)


def test_books_are_chosen_on_the_slices_of_a_train_run(trained):
    """The run ends with the fold-by-fold choice (as an evaluate run does); the command redoes it."""
    _, result = trained
    written = pl.read_csv(result.run_dir / STRATEGIES)
    assert sorted(written.get_column("horizon").unique().to_list()) == HORIZONS
    choices = choose_strategies(result.run_dir)
    assert [c.horizon for c in choices] == HORIZONS
    for choice in choices:
        assert sorted(choice.per_fold) == [0, 1]
        assert WALK_FORWARD_CHOICE in choice.table.get_column("strategy").to_list()
    again = pl.read_csv(result.run_dir / STRATEGIES)
    assert again.equals(written)


def test_targets_are_the_datasets_own_float64_returns(trained, dataset_dir):  # noqa: F811
    """Test and validation rows carry the dataset's forward returns exactly (not the day-panel
    cache's float32 copies), so a train run and an evaluate run on one dataset agree on every
    target and can be ensembled."""
    from kizashi.datasets.store import scan_features

    _, result = trained
    exact = scan_features(dataset_dir).select("date", "code", "target_return_1d", "target_return_5d").collect()
    for name in (PREDICTIONS, VALIDATION_PREDICTIONS):
        rows = pl.read_parquet(result.run_dir / name).join(exact, on=["date", "code"], how="inner")
        assert rows.height > 0
        for h in HORIZONS:
            part = rows.filter((pl.col("horizon") == h) & pl.col(f"target_return_{h}d").is_finite())
            assert part.height > 0
            np.testing.assert_array_equal(part.get_column("target").to_numpy(),
                                          part.get_column(f"target_return_{h}d").cast(pl.Float64).to_numpy())
        known = rows.filter(pl.col("target_return_1d").is_finite())
        np.testing.assert_array_equal(known.get_column("forward_return_1d").to_numpy(),
                                      known.get_column("target_return_1d").cast(pl.Float64).to_numpy())
