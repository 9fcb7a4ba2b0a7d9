"""`kizashi evaluate --resume`: a walk-forward run killed after some (fold, horizon) fits
continues from them, and its run directory equals an uninterrupted run's."""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest

from kizashi.config import EvaluateConfig, config_from_dict
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import (
    FEATURE_IMPORTANCE,
    FOLDS,
    PREDICTIONS,
    RUN_INFO,
    SUMMARY_JSON,
)
from kizashi.jobs import evaluate
from kizashi.jobs.evaluate import FITS_DIR, STATE_FILE, fit_dir, run_walk_forward

SMALL_SPLITS = {"n_folds": 2, "test_days": 60, "min_train_days": 150, "val_days": 40, "embargo_days": 5}
SMALL_DATA = {"synthetic": {"n_stocks": 40, "n_days": 420, "seed": 3}, "graph": {"window": 40, "top_k": 5}}
SMALL_MODEL = {"n_estimators": 60, "min_data_in_leaf": 50, "num_threads": 1}
N_FITS = 4  # 2 folds x 2 horizons


class Killed(Exception):
    """Stands for the kill of the process in the middle of a fit."""


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("resume") / "dataset"


def _config(dataset_dir, **extra) -> EvaluateConfig:
    raw = {
        "data": {**SMALL_DATA, "output": {"dir": str(dataset_dir)}},
        "horizons": [1, 5],
        "splits": SMALL_SPLITS,
        "model": SMALL_MODEL,
        **extra,
    }
    return config_from_dict(EvaluateConfig, raw)


@pytest.fixture
def fits(monkeypatch):
    """Counts the LightGBM fits; ``fits.kill_at = n`` makes the n-th fit of a run raise."""

    class Counter:
        calls = 0
        kill_at: int | None = None

    real = evaluate.fit_booster

    def counted(*args, **kwargs):
        Counter.calls += 1
        if Counter.kill_at is not None and Counter.calls == Counter.kill_at:
            raise Killed(f"killed in fit {Counter.calls}")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "fit_booster", counted)

    def reset(kill_at=None):
        Counter.calls, Counter.kill_at = 0, kill_at

    Counter.reset = staticmethod(reset)
    return Counter


def _state(run) -> dict:
    return json.loads((run / FITS_DIR / STATE_FILE).read_text(encoding="utf-8"))


def _saved_fits(run) -> list[str]:
    return sorted(p.name for p in (run / FITS_DIR).iterdir() if p.is_dir())


def _assert_same_run(a, b) -> None:
    assert pl.read_parquet(a / PREDICTIONS).equals(pl.read_parquet(b / PREDICTIONS))
    assert json.loads((a / SUMMARY_JSON).read_text()) == json.loads((b / SUMMARY_JSON).read_text())
    assert pl.read_csv(a / FOLDS).equals(pl.read_csv(b / FOLDS))
    assert (a / FOLDS).read_bytes() == (b / FOLDS).read_bytes()
    assert (a / FEATURE_IMPORTANCE).read_bytes() == (b / FEATURE_IMPORTANCE).read_bytes()
    info_a, info_b = (json.loads((run / RUN_INFO).read_text()) for run in (a, b))
    info_a.pop("created"), info_b.pop("created")
    assert info_a == info_b


@pytest.mark.parametrize("control", [False, True], ids=["lightgbm", "control"])
def test_a_killed_run_resumes_from_its_finished_fits_to_the_same_run(tmp_path, dataset_dir, fits, control):
    config = _config(dataset_dir)
    fits.reset()
    whole = run_walk_forward(config, control=control, out_dir=tmp_path / "whole")
    assert fits.calls == N_FITS

    fits.reset(kill_at=3)
    with pytest.raises(Killed):
        run_walk_forward(config, control=control, out_dir=tmp_path / "killed")
    killed = tmp_path / "killed"
    assert _saved_fits(killed) == ["fold_0_h1", "fold_0_h5"], "the two finished fits are saved"
    assert _state(killed)["status"] == "running", "a partial run directory says so"
    assert not (killed / PREDICTIONS).exists()

    fits.reset()
    resumed = run_walk_forward(config, control=control, out_dir=killed, resume=True)
    assert fits.calls == N_FITS - 2, "only the fits not saved are computed"
    _assert_same_run(whole.run_dir, resumed.run_dir)
    assert resumed.summary == whole.summary
    assert _state(killed)["status"] == "complete"
    assert _saved_fits(killed) == _saved_fits(whole.run_dir) == ["fold_0_h1", "fold_0_h5", "fold_1_h1", "fold_1_h5"]


def test_resume_refuses_fits_made_with_other_settings(tmp_path, dataset_dir, fits):
    config = _config(dataset_dir)
    out = tmp_path / "run"
    fits.reset(kill_at=2)
    with pytest.raises(Killed):
        run_walk_forward(config, out_dir=out)
    changed = _config(dataset_dir, model={**SMALL_MODEL, "learning_rate": 0.05})
    fits.reset()
    with pytest.raises(KizashiError, match=r"cannot resume.*model\.learning_rate") as err:
        run_walk_forward(changed, out_dir=out, resume=True)
    assert str(out) in str(err.value) and fits.calls == 0
    with pytest.raises(KizashiError, match=r"differing: control"):
        run_walk_forward(config, control=True, out_dir=out, resume=True)
    with pytest.raises(KizashiError, match=r"differing: fold\."):  # other folds: other fold dates
        run_walk_forward(_config(dataset_dir, splits={**SMALL_SPLITS, "test_days": 50}), out_dir=out, resume=True)
    assert _saved_fits(out) == ["fold_0_h1"], "a refused resume leaves the saved fits alone"

    # without --resume: a fresh run, the old fits removed
    fits.reset()
    run_walk_forward(changed, out_dir=out)
    assert fits.calls == N_FITS and _state(out)["status"] == "complete"
    saved = json.loads((fit_dir(out, 0, 1) / "fit.json").read_text())
    assert saved["fingerprint"]["config"]["model"]["learning_rate"] == 0.05


def test_resume_of_a_finished_run_refits_nothing_and_metrics_may_change(tmp_path, dataset_dir, fits):
    config = _config(dataset_dir)
    out = tmp_path / "run"
    fits.reset()
    first = run_walk_forward(config, out_dir=out)
    before = pl.read_parquet(out / PREDICTIONS)
    # evaluation-only keys and the output place are not part of a fit
    other_metrics = _config(dataset_dir, metrics={"n_quantiles": 5}, caveats=["a note"])
    fits.reset()
    again = run_walk_forward(other_metrics, out_dir=out, resume=True)
    assert fits.calls == 0
    assert pl.read_parquet(out / PREDICTIONS).equals(before)
    assert again.summary[1]["rank_ic_mean"] == first.summary[1]["rank_ic_mean"]
    assert pl.read_csv(out / "deciles.csv").get_column("decile").max() == 5, "re-evaluated with the new metrics"


def test_fits_set_aside_by_a_kill_inside_the_final_write_come_back(tmp_path, dataset_dir, fits):
    """The run directory is replaced as a whole; ``fits/`` waits beside it meanwhile. A
    process killed then leaves it there: the next run puts it back and reuses it."""
    config = _config(dataset_dir)
    out = tmp_path / "run"
    fits.reset()
    run_walk_forward(config, out_dir=out)
    os.replace(out / FITS_DIR, tmp_path / f".run.{FITS_DIR}")  # as _write_run_keeping_fits does
    fits.reset()
    run_walk_forward(config, out_dir=out, resume=True)
    assert fits.calls == 0 and _saved_fits(out) == ["fold_0_h1", "fold_0_h5", "fold_1_h1", "fold_1_h5"]
    assert not (tmp_path / f".run.{FITS_DIR}").exists()


def test_a_stale_fit_of_another_task_set_is_dropped_after_the_run(tmp_path, dataset_dir, fits):
    out = tmp_path / "run"
    fits.reset()
    run_walk_forward(_config(dataset_dir), out_dir=out)
    # the same folds (the longest horizon, hence the purge, is unchanged) without the 1d fits
    fits.reset()
    run_walk_forward(_config(dataset_dir, horizons=[5]), out_dir=out, resume=True)
    assert fits.calls == 0
    assert _saved_fits(out) == ["fold_0_h5", "fold_1_h5"]


def test_the_control_permutation_of_a_fit_is_the_one_an_uninterrupted_run_draws():
    """Fit k of a run draws its permutation keys after the n_rows draws of fits 0..k-1 from one
    default_rng(seed): a resumed run that skips fits gets the same keys."""
    n_rows = 7
    sequential = np.random.default_rng(3)
    uninterrupted = [sequential.random(n_rows) for _ in range(4)]
    for position in (3, 0, 2, 1):  # any order, any subset
        np.testing.assert_array_equal(evaluate._control_rng(3, position, n_rows).random(n_rows), uninterrupted[position])
    assert not np.array_equal(evaluate._control_rng(4, 1, n_rows).random(n_rows), uninterrupted[1])
    assert len(evaluate._control_rng(-3, 0, 1).random(5)) == 5, "a negative seed works too"
