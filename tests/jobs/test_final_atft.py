"""`kizashi fit-final`, `kizashi predict` and `kizashi monitor` for ATFT-GAT-FAN runs of
`kizashi train`: the refit on every labelled day for the median best epoch, saved as a
self-describing folder; one day's scores from that day's window of incrementally built
features and its graph equal to the scores of the same day through the full dataset path
(DayPanelCache + DayPanelDataset); the refusals; the monitor. Two folds of the tiny
synthetic market and the tiny ATFT-GAT-FAN of ``tests/training/test_trainer.py``, one short
epoch each."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import dump_config
from kizashi.datasets import DayPanelCache, DayPanelDataset, FeatureStats, collate_days
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import FOLDS
from kizashi.jobs.fit_final import final_epochs, fit_final, labelled_days
from kizashi.jobs.monitor import monitor_model
from kizashi.jobs.predict import predict_day
from kizashi.jobs.train import run_training
from kizashi.models import load_pretrained_model
from kizashi.monitoring import MonitorReference
from kizashi.training.final_model import MANIFEST, load_final_model
from tests.training.test_trainer import HORIZONS, SPLITS, WINDOW, dataset_dir, train_config  # noqa: F401

TWO_FOLDS = {**SPLITS, "n_folds": 2, "val_days": 20}
SHORT = {"max_epochs": 1, "limit_train_batches": 4}
# predict's window of incrementally built features vs the cache's: same float32 inputs, same
# network; only the summation order of a differently sized batch may differ
SCORE_ATOL = 1e-5
# the same network in float32 on CUDA and on the CPU (cuDNN's kernels sum in another order;
# an H200 differed by 1.2e-5 at most on scores up to 0.74)
CUDA_ATOL = 1e-4


@pytest.fixture(scope="module")
def final(dataset_dir, tmp_path_factory):  # noqa: F811  (the imported fixture)
    root = tmp_path_factory.mktemp("final_atft")
    config = train_config(dataset_dir, root / "run", splits=TWO_FOLDS, trainer=SHORT)
    run = run_training(config)
    folder, model = fit_final(run.run_dir)
    return config, run, folder, model


@pytest.fixture(scope="module")
def cache(dataset_dir):  # noqa: F811
    return DayPanelCache(dataset_dir)


def full_path_scores(cache, folder, day: int) -> tuple[list[str], np.ndarray]:
    """Day ``day``'s codes and [N, H] points through the cache, as `kizashi train` predicts:
    the saved network and statistics, a DayPanelDataset over the full build."""
    network = load_pretrained_model(folder / "model", map_location="cpu")
    stats = FeatureStats.load(folder / "feature_stats.json")
    batch = collate_days(DayPanelDataset(cache, [day], window=WINDOW, stats=stats).__getitems__([0]))
    assert batch["edge_index"].shape[1] > 0 or day < 30, "a day after the graph's first window has a graph"
    with torch.no_grad():
        point = network(batch)["point"].numpy()
    return [cache.codes[c] for c in batch["codes"].tolist()], point


def test_final_epochs_are_the_median_best_epoch():
    folds = pl.DataFrame({"fold": [0, 0, 1, 1, 2, 2], "horizon": [1, 5] * 3, "best_iteration": [2, 2, 3, 3, 6, 6]})
    assert final_epochs(folds) == 3
    assert final_epochs(folds.filter(pl.col("fold") < 2).with_columns(best_iteration=pl.col("fold") + 1)) == 2  # 1.5 up
    with pytest.raises(KizashiError, match="best_iteration"):
        final_epochs(folds.with_columns(best_iteration=pl.lit(None, pl.Int64)))


def test_fit_final_refits_on_every_labelled_day(final, cache):
    config, run, folder, model = final
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["kind"] == "atft_gat_fan" and manifest["rounds"] == {}
    assert manifest["epochs"] == final_epochs(pl.read_csv(run.run_dir / FOLDS)) == 1
    assert manifest["window"] == WINDOW and manifest["label"] == config.target == "rank"
    assert manifest["features"] == list(cache.feature_columns) == run.info.features
    assert manifest["horizons"] == HORIZONS
    assert manifest["train_config"] == {**dump_config(config), "trainer": {**dump_config(config)["trainer"], "devices": 1}}
    assert manifest["data_config"]["synthetic"] == dump_config(config.data)["synthetic"]
    assert manifest["input_hashes"] and manifest["run_dir"] == str(run.run_dir)
    # every day with a known 5d target, the last 5 days have none
    days = labelled_days(cache, HORIZONS, "rank")
    assert days.tolist() == list(range(cache.n_days - max(HORIZONS)))
    assert manifest["train_days"] == len(days) and manifest["labelled_last"] == str(cache.dates[days[-1]])
    assert manifest["train_rows"] == int(np.asarray(cache.alive)[days].sum())
    assert not list(folder.glob("lightgbm_*"))

    stats = FeatureStats.load(folder / "feature_stats.json")
    assert stats.to_dict() == FeatureStats.fit(cache, days).to_dict()
    network = load_pretrained_model(folder / "model")
    saved = network.state_dict()
    for name, value in model.network.state_dict().items():
        torch.testing.assert_close(saved[name], value.cpu(), rtol=0, atol=0)
    loaded = load_final_model(folder, map_location="cpu")
    assert loaded.features == model.features and loaded.window == WINDOW and loaded.epochs == 1
    assert loaded.device() == torch.device("cpu")
    for horizon in HORIZONS:
        reference = MonitorReference.load(folder / f"monitor_reference_{horizon}d.json")
        assert reference.features and set(reference.features) <= set(model.features)


def test_predict_scores_a_day_like_the_full_dataset_path(final, cache, tmp_path):
    """The day's window of features built from that window's days only, its graph, the saved
    statistics and network: the scores of the same day through DayPanelCache + DayPanelDataset
    over the full build, to SCORE_ATOL (float32)."""
    _, _, folder, _ = final
    alive = np.asarray(cache.alive).sum(axis=1)
    early = next(d for d in range(WINDOW - 1) if alive[d] >= 20)  # a window reaching before the calendar
    for day in (cache.n_days - 1, cache.n_days // 2, early):
        date = cache.dates[day].astype(dt.date)
        result = predict_day(folder, date=date, out_dir=tmp_path / f"signals_{day}", device="cpu")
        codes, point = full_path_scores(cache, folder, day)
        for j, horizon in enumerate(HORIZONS):
            got = result.signals.filter(pl.col("horizon") == horizon).sort("code")
            assert got.get_column("code").to_list() == codes
            assert (got.get_column("date") == date).all()
            np.testing.assert_allclose(got.get_column("score").to_numpy(), point[:, j], rtol=0, atol=SCORE_ATOL)
            assert sorted(got.get_column("rank").to_list()) == list(range(1, len(codes) + 1))
    summary = json.loads((result.out_dir / "signals.json").read_text())
    assert summary["device"] == "cpu" and summary["n_stocks"] == len(codes)
    assert pl.read_parquet(result.out_dir / "signals.parquet").equals(result.signals)


def test_predict_refuses_bad_inputs(final, cache, tmp_path):
    _, _, folder, model = final
    with pytest.raises(Exception, match="not a date of the data"):
        predict_day(folder, date=dt.date(1999, 1, 4), out_dir=tmp_path / "a", device="cpu")
    last = dt.date.fromisoformat(model.train_last)
    with pytest.raises(KizashiError, match=r"stale data .*--date"):
        predict_day(folder, out_dir=tmp_path / "b", as_of=last + dt.timedelta(days=30), device="cpu")

    other = tmp_path / "other_features"
    shutil.copytree(folder, other)
    manifest = json.loads((other / MANIFEST).read_text())
    manifest["data_config"]["features"]["exclude_families"] = ["interactions"]
    (other / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(KizashiError, match=r"differ from the model's \(missing \["):
        predict_day(other, date=last, out_dir=tmp_path / "c", device="cpu")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_monitor_and_the_commands(final, cache, tmp_path):
    _, run, folder, model = final
    since = cache.dates[-30].astype(dt.date)
    out, result = monitor_model(folder, since, horizon=5, out_dir=tmp_path / "monitor", device="cpu",
                                settings={"psi_alarm": 5.0, "psi_warn": 4.0})
    assert (out / "monitor.json").is_file() and (out / "monitor.html").is_file()
    assert result.daily.get_column("date").min() == since and result.daily.height == 30

    runner = CliRunner()
    outcome = runner.invoke(app, ["predict", "--model", str(folder), "--date", str(since), "--device", "cpu",
                                  "--out", str(tmp_path / "signals"), "--top", "3"])
    assert outcome.exit_code == 0, outcome.output
    assert f"{since}: top 3 of" in outcome.output
    watched = runner.invoke(app, ["monitor", "--model", str(folder), "--since", str(since), "--horizon", "5",
                                  "--device", "cpu", "--set", "psi_alarm=5.0", "--set", "psi_warn=4.0",
                                  "--out", str(tmp_path / "monitor_cli")])
    assert watched.exit_code == 0, watched.output
    assert "monitor status:" in watched.output and (tmp_path / "monitor_cli" / "monitor.json").is_file()


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device("cuda")


@pytest.mark.gpu
def test_fit_final_and_predict_on_cuda(cuda, final, tmp_path):
    """The refit on CUDA (bf16-mixed, as `trainer.precision: auto` picks there); its scores of
    one day in float32 on CUDA and on the CPU agree to CUDA_ATOL."""
    _, run, _, _ = final
    folder, model = fit_final(run.run_dir, tmp_path / "final_gpu", accelerator="gpu")
    assert load_final_model(folder).device().type == "cuda"
    day = dt.date.fromisoformat(model.train_last)
    on_cuda = predict_day(folder, date=day, out_dir=tmp_path / "cuda", device="cuda")
    on_cpu = predict_day(folder, date=day, out_dir=tmp_path / "cpu", device="cpu")
    assert on_cuda.summary["device"].startswith("cuda") and on_cpu.summary["device"] == "cpu"
    keys = ["horizon", "code"]
    cuda_scores, cpu_scores = on_cuda.signals.sort(keys), on_cpu.signals.sort(keys)
    assert cuda_scores.select(keys).equals(cpu_scores.select(keys))
    np.testing.assert_allclose(cuda_scores.get_column("score").to_numpy(), cpu_scores.get_column("score").to_numpy(),
                               rtol=0, atol=CUDA_ATOL)
