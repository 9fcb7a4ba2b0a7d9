"""The device-resident feature panel: its batches equal the CPU loader's, bit for bit, and
training with it gives the same run as without (on the CPU, where "the device" is RAM)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from kizashi.datasets import (
    DayPanelCache,
    DayPanelDataset,
    DeviceFeaturePanel,
    collate_days,
    fit_feature_stats,
    panel_bytes,
)
from kizashi.training.module import ForecastModule
from tests.training.test_trainer import TINY_MODEL, dataset_dir, train_config  # noqa: F401  (fixture)

WINDOW = 10


@pytest.fixture(scope="module")
def cache(dataset_dir):  # noqa: F811
    return DayPanelCache(dataset_dir)


@pytest.mark.parametrize("with_stats", [True, False])
@pytest.mark.parametrize("min_history", [1, 5])
def test_gathered_windows_equal_the_cpu_batches(cache, with_stats, min_history):
    # the first days (windows reaching before the calendar), days with listings and gaps
    days = np.r_[0:3, 40:44, cache.n_days - 5 : cache.n_days]
    stats = fit_feature_stats(cache, np.arange(20, 150)) if with_stats else None
    cpu = DayPanelDataset(cache, days, window=WINDOW, stats=stats, min_history=min_history)
    lean = DayPanelDataset(cache, days, window=WINDOW, stats=stats, min_history=min_history, with_features=False)
    panel = DeviceFeaturePanel(cache, WINDOW)
    assert len(cpu) == len(lean) >= 9
    for batch_days in np.array_split(np.arange(len(cpu)), 3):
        full = cpu.__getitems__(batch_days)[0]
        indices = lean.__getitems__(batch_days)[0]
        assert "x" not in indices and "mask" not in indices
        for key in ("y", "y_mask", "codes", "node_day", "edge_index", "edge_attr", "batch_day", "node_ptr"):
            assert torch.equal(full[key], indices[key]), key
        x, mask = panel.gather(indices["node_day"], indices["codes"], stats)
        assert torch.equal(mask, full["mask"])
        assert torch.equal(x, full["x"])  # same float32 operations in the same order
    assert panel.nbytes == panel_bytes(cache, WINDOW)
    assert not pickle.loads(pickle.dumps(panel))._tensors  # pickles without its tensors


def test_module_fills_feature_less_batches(cache):
    days = np.arange(30, 38)
    stats = fit_feature_stats(cache, np.arange(20, 150))
    cpu = DayPanelDataset(cache, days, window=WINDOW, stats=stats)
    lean = DayPanelDataset(cache, days, window=WINDOW, stats=stats, with_features=False)
    batch = collate_days(lean.__getitems__(range(4)))
    from kizashi.models import create_model

    module = ForecastModule(create_model("atft_gat_fan", "small", n_features=cache.n_features, window=WINDOW,
                                         horizons=(1, 5), **TINY_MODEL), (1, 5))
    with pytest.raises(RuntimeError, match="attach_panel"):
        module.on_after_batch_transfer(batch, 0)
    module.attach_panel(DeviceFeaturePanel(cache, WINDOW), stats)
    filled = module.on_after_batch_transfer(batch, 0)
    expected = cpu.__getitems__(range(4))[0]
    assert torch.equal(filled["x"], expected["x"]) and torch.equal(filled["mask"], expected["mask"])


@pytest.mark.usefixtures("torch_single_thread")
def test_training_with_the_panel_on_device_matches_the_cpu_loader(dataset_dir, tmp_path):  # noqa: F811
    from kizashi.jobs.train import run_training
    import polars as pl

    runs = {}
    for setting in ("off", "on"):
        config = train_config(dataset_dir, tmp_path / setting, trainer={"panel_on_device": setting})
        result = run_training(config)
        runs[setting] = pl.read_parquet(result.run_dir / "predictions.parquet").sort(["horizon", "date", "code"])
    assert runs["on"].equals(runs["off"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gather_on_cuda_equals_the_cpu_batches(cache):
    days = np.r_[0:3, cache.n_days - 5 : cache.n_days]
    stats = fit_feature_stats(cache, np.arange(20, 150))
    cpu = DayPanelDataset(cache, days, window=WINDOW, stats=stats)
    lean = DayPanelDataset(cache, days, window=WINDOW, stats=stats, with_features=False)
    panel = DeviceFeaturePanel(cache, WINDOW)
    full, indices = cpu.__getitems__(range(len(days)))[0], lean.__getitems__(range(len(days)))[0]
    x, mask = panel.gather(indices["node_day"].cuda(), indices["codes"].cuda(), stats)
    assert x.is_cuda
    torch.testing.assert_close(x.cpu(), full["x"], rtol=0, atol=0)
    assert torch.equal(mask.cpu(), full["mask"])
