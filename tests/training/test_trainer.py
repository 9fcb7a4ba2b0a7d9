"""The Lightning trainer (issue 4): the walk-forward training job end to end, its callbacks
(gradient-flow audit, NaN/Inf guard, EMA teacher, OOM recovery) and interrupt-and-resume,
on a tiny synthetic market (30 stocks x 260 days) and a tiny ATFT-GAT-FAN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import pytest
import torch
from torch.utils.data import DataLoader

from kizashi.config import SplitConfig, TrainConfig, config_from_dict, dump_config, load_train_config
from kizashi.datasets import DayPanelCache, DayPanelDataset, fit_feature_stats, fold_day_indices
from kizashi.errors import ConfigError
from kizashi.evaluation.report import write_report
from kizashi.evaluation.run_dir import (
    FOLDS,
    PREDICTION_SCHEMA,
    PREDICTIONS,
    SUMMARY_FIELDS,
    read_run_info,
    read_summary,
    require_run_dir,
)
from kizashi.models import create_model
from kizashi.models.losses import LossConfig
from kizashi.splits import walk_forward_folds
from kizashi.training.callbacks import (
    EMACallback,
    GradientFlowAudit,
    GradientFlowError,
    NonFiniteGuard,
    NonFiniteTrainingError,
    OOMRecovery,
)
from kizashi.training.module import ForecastModule, split_day_batch
from kizashi.datasets.samplers import EpochShuffleSampler
from kizashi.jobs.train import HorizonTargets, fold_checkpoint_dir, run_training
from kizashi.training.runtime import TrainingInterrupted, checkpoint_position, make_logger, resolve_precision
from kizashi.jobs.common import ensure_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
HORIZONS = [1, 5]
WINDOW = 10
SPLITS = {"n_folds": 1, "test_days": 30, "min_train_days": 120, "embargo_days": 5}
DATA = {"synthetic": {"n_stocks": 30, "n_days": 260, "seed": 3}, "graph": {"window": 30, "top_k": 5}}
# dropout off: training is a deterministic function of the data order (resume test, OOM test)
TINY_MODEL = {"hidden": 16, "attn_heads": 2, "gat_heads": 2, "gat_layers": 1, "dropout": 0.0}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("trainer") / "dataset"
    return ensure_dataset(config_from_dict(TrainConfig, {"data": {**DATA, "output": {"dir": str(out)}}, "splits": SPLITS}))


def train_config(dataset_dir, out_dir, **sections) -> TrainConfig:
    raw = {
        "data": {**DATA, "output": {"dir": str(dataset_dir)}},
        "horizons": HORIZONS,
        "window": WINDOW,
        "splits": {**SPLITS, "val_days": 20},
        "model": {"name": "atft_gat_fan", "preset": "small", "overrides": TINY_MODEL},
        "loss": {"horizon_weights": [1.0, 0.8], "huber_delta": 0.5},
        "optimizer": {"lr": 3e-3, "warmup_steps": 5},
        # CPU on every machine: bitwise-reproducible training (the resume tests compare predictions)
        "trainer": {"max_epochs": 2, "days_per_batch": 4, "ema_decay": 0.9, "early_stopping_patience": None,
                    "limit_train_batches": 12, "accelerator": "cpu"},
        "output": {"dir": str(out_dir)},
    }
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return config_from_dict(TrainConfig, raw)


@pytest.fixture(scope="module")
def cache(dataset_dir):
    return DayPanelCache(dataset_dir)


@pytest.fixture(scope="module")
def batches(cache):
    """Six 4-day training batches of the fold (with graphs), targets cut to HORIZONS, ranks centred."""
    fold = walk_forward_folds(cache.dates, SplitConfig(**SPLITS, val_days=20), max(HORIZONS))[0]
    days = fold_day_indices(cache, fold).train
    stats = fit_feature_stats(cache, days)
    dataset = DayPanelDataset(cache, days[-24:], window=WINDOW, stats=stats, target="rank")
    collate = HorizonTargets([cache.horizons.index(h) for h in HORIZONS], centre_ranks=True)
    out = [collate(dataset.__getitems__(list(range(i, i + 4)))) for i in range(0, 24, 4)]
    assert all(b["edge_index"].shape[1] > 0 for b in out)
    return out


def tiny_module(cache, **overrides) -> ForecastModule:
    torch.manual_seed(0)
    model = create_model(
        "atft_gat_fan", preset="small", n_features=cache.n_features, horizons=tuple(HORIZONS), window=WINDOW,
        **{**TINY_MODEL, **overrides},
    )
    return ForecastModule(model, HORIZONS, LossConfig(horizon_weights=(1.0, 0.8), rank_weight=0.5), lr=3e-3)


def _identity(item):
    return item


def fit(module, batches, callbacks, *, max_steps=None, max_epochs=1, val=None) -> L.Trainer:
    """A bare Lightning fit over pre-collated batches (no logger, no checkpoints)."""
    trainer = L.Trainer(
        max_steps=max_steps if max_steps is not None else -1,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        accelerator="cpu",
        gradient_clip_val=1.0,
    )
    loader = DataLoader(batches, batch_size=None, collate_fn=_identity)
    val_loader = DataLoader(val, batch_size=None, collate_fn=_identity) if val is not None else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
        trainer.fit(module, loader, val_loader)
    return trainer


# --------------------------------------------------------------------------------------
# the job end to end
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(dataset_dir, tmp_path_factory):
    """One uninterrupted run of the default test config (also the reference of the resume tests)."""
    out = tmp_path_factory.mktemp("run") / "atft"
    config = train_config(dataset_dir, out)
    return config, run_training(config)


@pytest.fixture(scope="module")
def reference_predictions(trained):
    return _sorted_predictions(trained[1].run_dir)


def _sorted_predictions(run_dir) -> pl.DataFrame:
    return pl.read_parquet(run_dir / PREDICTIONS).sort("horizon", "date", "code")


def assert_same_predictions(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.select("date", "code", "horizon").equals(b.select("date", "code", "horizon"))
    np.testing.assert_allclose(a.get_column("prediction").to_numpy(), b.get_column("prediction").to_numpy(),
                               rtol=1e-4, atol=1e-6)


def test_run_training_writes_a_run_directory(trained, cache):
    config, result = trained
    run = require_run_dir(result.run_dir)
    summary = read_summary(run)
    assert sorted(summary) == HORIZONS and set(summary[1]) == set(SUMMARY_FIELDS)
    assert summary[1]["n_days"] == SPLITS["test_days"]
    info = read_run_info(run)
    assert info.model == "atft_gat_fan:small" and info.horizons == HORIZONS and info.n_folds == 1
    assert info.features == cache.feature_columns and any("Synthetic market" in c for c in info.caveats)
    assert set(info.references["oracle_rank_ic_mean"]) == {"1", "5"}
    predictions = pl.read_parquet(run / PREDICTIONS)
    assert dict(predictions.schema) == PREDICTION_SCHEMA
    test_days = cache.day_indices(walk_forward_folds(cache.dates, config.splits, 5)[0].test_dates)
    assert predictions.height == int(cache.alive[test_days].sum()) * len(HORIZONS)
    assert predictions.get_column("prediction").is_finite().all()
    # target = the forward return over the horizon; forward_return_1d = the 1-day one
    row = predictions.filter(pl.col("horizon") == 5).row(0, named=True)
    t, n = int(cache.day_indices(np.datetime64(row["date"], "D"))[0]), cache.codes.index(row["code"])
    assert row["target"] == pytest.approx(float(cache.targets[t, n, cache.horizons.index(5)]))
    assert row["forward_return_1d"] == pytest.approx(float(cache.targets[t, n, 0]))
    folds = pl.read_csv(run / FOLDS)
    assert folds.height == len(HORIZONS) and (folds.get_column("best_iteration") >= 1).all()
    # the training artefacts survive write_run's atomic replacement of the run directory
    fold_dir = fold_checkpoint_dir(run, 0)
    for name in ("best.ckpt", "last.ckpt", "fit.json", "predictions.parquet", "feature_stats.json"):
        assert (fold_dir / name).is_file(), name
    assert list((run / "logs" / "fold_0").glob("version_*/events.out.tfevents.*"))
    fold = result.folds[0]
    assert fold.global_step == 2 * 12 and fold.epochs == 2 and not fold.resumed
    assert (run / "report" / "index.html") == write_report(run)


def test_resume_of_a_finished_run(trained, reference_predictions):
    config, first = trained
    again = run_training(config, resume=True)  # every fold done: reused
    assert again.folds[0].resumed and again.folds[0].global_step == first.folds[0].global_step
    assert again.summary[1]["rank_ic_mean"] == pytest.approx(first.summary[1]["rank_ic_mean"])
    # fit done but not predicted: predicts from best.ckpt (its EMA) = what the live run predicted
    (fold_checkpoint_dir(first.run_dir, 0) / "predictions.parquet").unlink()
    again = run_training(config, resume=True)
    assert_same_predictions(_sorted_predictions(again.run_dir), reference_predictions)


def test_config_errors(dataset_dir, tmp_path):
    with pytest.raises(ConfigError, match="horizon_weights has 3 entries"):
        run_training(train_config(dataset_dir, tmp_path, loss={"horizon_weights": [1.0, 0.5, 0.2]}))
    with pytest.raises(ConfigError, match=r"folds: \[7\]"):
        run_training(train_config(dataset_dir, tmp_path, folds=[7]))
    with pytest.raises(ConfigError, match="model.overrides.window"):
        run_training(train_config(dataset_dir, tmp_path, model={"overrides": {**TINY_MODEL, "window": 5}}))
    assert resolve_precision("auto", "cpu") == "32-true" and resolve_precision("16-mixed") == "16-mixed"
    if not torch.cuda.is_available():
        assert resolve_precision("auto") == "32-true"
    assert make_logger("none", tmp_path, "x") is False
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="wandb"):
            make_logger("wandb", tmp_path, "x")


def test_shipped_config_builds():
    config = load_train_config(REPO_ROOT / "configs" / "train" / "atft_gat_fan.yaml")
    assert config.model.name == "atft_gat_fan" and config.window == 20
    assert config.horizons == [1, 5, 10, 20] and len(config.loss.horizon_weights) == 4
    assert config.data_config is not None and config.data.targets.horizons == [1, 5, 10, 20]
    model = create_model(
        config.model.name, preset=config.model.preset, n_features=400, horizons=tuple(config.horizons),
        window=config.window, **config.model.overrides,
    )
    assert model.config.gat


# --------------------------------------------------------------------------------------
# gradient-flow audit
# --------------------------------------------------------------------------------------


def test_gradient_audit_passes_on_the_real_model(cache, batches):
    audit = GradientFlowAudit()
    fit(tiny_module(cache), batches, [audit], max_steps=2)
    assert audit.done


def test_gradient_audit_names_an_unused_parameter(cache, batches):
    module = tiny_module(cache)
    module.model.stray = torch.nn.Linear(3, 3)  # never used in forward
    with pytest.raises(GradientFlowError, match=r"no gradient: \['model.stray.weight', 'model.stray.bias'\]"):
        fit(module, batches, [GradientFlowAudit()], max_steps=2)


def test_gradient_audit_names_a_parameter_missing_from_the_optimizer(cache, batches):
    class PartialOptimizer(ForecastModule):
        def configure_optimizers(self):
            params = [p for n, p in self.named_parameters() if not n.startswith("model.heads")]
            return torch.optim.AdamW(params, lr=1e-3)

    module = tiny_module(cache)
    partial = PartialOptimizer(module.model, HORIZONS, LossConfig())
    with pytest.raises(GradientFlowError, match=r"optimizer coverage: missing \['model.heads"):
        fit(partial, batches, [GradientFlowAudit()], max_steps=1)


def _without_edges(batch):
    return {**batch, "edge_index": batch["edge_index"][:, :0], "edge_attr": batch["edge_attr"][:0]}


def test_gradient_audit_waits_for_a_batch_with_graph_edges(cache, batches):
    # a first batch without edges gives the GAT an exactly-zero gradient: deferred, not failed
    audit = GradientFlowAudit()
    trainer = fit(tiny_module(cache), [_without_edges(batches[0]), *batches[1:3]], [audit], max_steps=3)
    assert audit.done and trainer.global_step == 3
    # no batch with edges in the whole first epoch: the GAT never trains -> fail, naming it
    with pytest.raises(GradientFlowError, match=r"(?s)all-zero gradient: \['model.gat.*no training batch of the first epoch had graph edges"):
        fit(tiny_module(cache), [_without_edges(b) for b in batches[:3]], [GradientFlowAudit()], max_epochs=1)
    # with GAT off there is nothing to wait for
    audit = GradientFlowAudit()
    fit(tiny_module(cache, gat=False), [_without_edges(b) for b in batches[:2]], [audit], max_steps=1)
    assert audit.done


# --------------------------------------------------------------------------------------
# NaN / Inf guard
# --------------------------------------------------------------------------------------


def _nan_loss_on(module: ForecastModule, steps: set[int]) -> list[int]:
    """Make the loss NaN on the given 1-based training calls; returns the call log."""
    calls: list[int] = []
    original = module.loss_fn.forward

    def forward(outputs, target, valid=None, day=None):
        terms = original(outputs, target, valid, day)
        if module.training:
            calls.append(len(calls) + 1)
            if calls[-1] in steps:
                terms["loss"] = terms["loss"] * float("nan")
        return terms

    module.loss_fn.forward = forward
    return calls


def test_nonfinite_guard_skips_and_counts(cache, batches):
    module = tiny_module(cache)
    _nan_loss_on(module, {1, 3})
    guard, audit = NonFiniteGuard(limit=5), GradientFlowAudit()
    snapshots: list[dict[str, torch.Tensor]] = []

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            snapshots.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})

    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    trainer = fit(module, batches[:4], [audit, guard, Snapshot()], max_steps=4)
    assert guard.skipped == 2 and trainer.global_step == 4
    assert audit.done  # audited on step 2, the first finite one
    unchanged = lambda a, b: all(torch.equal(a[n], b[n]) for n in a)  # noqa: E731
    assert unchanged(before, snapshots[0]), "a NaN step must not move the weights"
    assert not unchanged(snapshots[0], snapshots[1])
    assert unchanged(snapshots[1], snapshots[2])
    assert not unchanged(snapshots[2], snapshots[3])
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_nonfinite_guard_stops_after_the_limit(cache, batches):
    module = tiny_module(cache)
    _nan_loss_on(module, set(range(1, 100)))
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    guard = NonFiniteGuard(limit=3)
    with pytest.raises(NonFiniteTrainingError, match="3 optimizer steps had a non-finite loss"):
        fit(module, batches, [guard], max_steps=6)
    assert guard.skipped == 3
    assert all(torch.equal(before[n], p) for n, p in module.named_parameters())
    assert guard.state_dict() == {"skipped": 3}


# --------------------------------------------------------------------------------------
# EMA teacher
# --------------------------------------------------------------------------------------


def test_ema_weights_differ_and_are_used_for_validation(cache, batches):
    module = tiny_module(cache)
    name = next(n for n, _ in module.named_parameters() if n.startswith("model.heads"))
    ema = EMACallback(decay=0.9)
    seen: dict[str, torch.Tensor] = {}

    class Probe(L.Callback):  # listed after the EMA callback: sees the weights validation uses
        def on_validation_batch_start(self, trainer, pl_module, *args):
            seen["val"] = dict(pl_module.named_parameters())[name].detach().clone()

    fit(module, batches[:4], [ema, Probe()], max_steps=4, val=batches[4:])
    live = dict(module.named_parameters())[name]
    assert ema.updates == 4
    assert not torch.allclose(ema.ema[name], live), "the EMA differs from the live weights"
    torch.testing.assert_close(seen["val"], ema.ema[name])  # validation ran on the EMA
    assert not torch.equal(live.detach(), ema.ema[name])  # and the live weights came back
    # checkpoint round trip: a resumed run continues the same average
    restored = EMACallback(decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 4
    restored.swap_in(module)
    torch.testing.assert_close(live.detach(), ema.ema[name])
    restored.swap_out(module)
    assert not torch.equal(live.detach(), ema.ema[name])


class _TinyLinear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("averaging", ["lightning", "ours"])
def test_ema_callback_does_what_lightning_weight_averaging_does_not(averaging, tmp_path, torch_single_thread):
    """The reasons in EMACallback's docstring for not using Lightning's EMAWeightAveraging:
    Lightning's copies the live weights at its first update (no warm-up from the initial
    weights), puts the average into the checkpoint's ``state_dict`` (the live weights under
    another key) and leaves the average in the module after fit (the live weights are gone);
    ours does none of these."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    torch.manual_seed(0)
    data = [torch.randn(4, 3) for _ in range(3)]
    module = _TinyLinear()
    initial = module.layer.weight.detach().clone()
    live, seen = [], {}

    class Probe(L.Callback):  # after the averaging callback
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            live.append(pl_module.layer.weight.detach().clone())
            if trainer.global_step == 2:
                trainer.save_checkpoint(tmp_path / "step2.ckpt")

        def on_validation_batch_start(self, trainer, pl_module, *args):
            seen["weight"] = pl_module.layer.weight.detach().clone()

    averager = EMAWeightAveraging(decay=0.9, use_buffers=False) if averaging == "lightning" else EMACallback(0.9)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[averager, Probe()])
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=torch.utils.data.DataLoader(data[:1], batch_size=None))
    w1, w2, w3 = live
    saved = torch.load(tmp_path / "step2.ckpt", weights_only=False)["state_dict"]["layer.weight"]
    after_fit = module.layer.weight.detach()
    if averaging == "lightning":
        average = 0.9 * (0.9 * w1 + 0.1 * w2) + 0.1 * w3  # the first update is a copy of w1
        torch.testing.assert_close(seen["weight"], average)
        torch.testing.assert_close(saved, 0.9 * w1 + 0.1 * w2)  # the average, not the live w2
        torch.testing.assert_close(after_fit, average)  # the live w3 is gone
        assert not torch.allclose(after_fit, w3)
    else:
        d1, d2, d3 = 0.1, min(0.9, 2 / 11), min(0.9, 3 / 12)  # warm-up from the initial weights
        average = d3 * (d2 * (d1 * initial + (1 - d1) * w1) + (1 - d2) * w2) + (1 - d3) * w3
        torch.testing.assert_close(seen["weight"], average)
        torch.testing.assert_close(saved, w2)  # the live weights; the EMA in the callback's state
        torch.testing.assert_close(after_fit, w3)


# --------------------------------------------------------------------------------------
# OOM recovery
# --------------------------------------------------------------------------------------


def test_split_day_batch_keeps_nodes_and_graphs(batches):
    batch = batches[0]
    parts = split_day_batch(batch, 3)
    assert [len(p["days"]) for p in parts] == [1, 2, 1]
    torch.testing.assert_close(torch.cat([p["x"] for p in parts]), batch["x"])
    assert sum(p["edge_index"].shape[1] for p in parts) == batch["edge_index"].shape[1]
    for part in parts:
        n = part["x"].shape[0]
        assert int(part["node_ptr"][-1]) == n and part["edge_index"].max() < n and part["edge_index"].min() >= 0
        assert part["batch_day"].max() == len(part["days"]) - 1


def _gradients(module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def _full_batch_gradients(cache, batch) -> dict[str, torch.Tensor]:
    module = tiny_module(cache)
    module.train()
    module.loss_terms(batch)["loss"].backward()
    return _gradients(module)


class _OOMOnBackward(torch.autograd.Function):
    armed = True

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        if _OOMOnBackward.armed:
            _OOMOnBackward.armed = False
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated in backward)")
        return grad


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_oom_recovery_gives_the_full_batch_gradient(cache, batches, where):
    batch = batches[0]
    expected = _full_batch_gradients(cache, batch)
    module = tiny_module(cache)
    module.train()
    recovery = OOMRecovery(enabled=True)
    module.oom_recovery = recovery
    full_nodes = batch["x"].shape[0]
    original = module.model.forward
    state = {"armed": True}

    def forward(part):
        if where == "forward" and state["armed"] and part["x"].shape[0] == full_nodes:
            state["armed"] = False
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated in forward)")
        outputs = original(part)
        if where == "backward" and part["x"].shape[0] == full_nodes:
            outputs = {**outputs, "point": _OOMOnBackward.apply(outputs["point"])}
        return outputs

    module.model.forward = forward
    _OOMOnBackward.armed = where == "backward"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        loss = module.training_step(batch, 0)
        module.backward(loss)
    assert recovery.splits == 2 and recovery.retries == 1
    got = _gradients(module)
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_oom_recovery_inside_the_trainer(cache, batches):
    module = tiny_module(cache)
    original, raised = module.model.forward, []

    def forward(part):
        if not raised and len(part["days"]) == 4:
            raised.append(True)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(part)

    module.model.forward = forward
    recovery, audit = OOMRecovery(enabled=True), GradientFlowAudit()
    trainer = fit(module, batches[:3], [recovery, audit], max_steps=3)
    assert trainer.global_step == 3 and recovery.splits == 2 and recovery.retries == 1 and audit.done
    assert module.oom_recovery is None  # detached at teardown


# --------------------------------------------------------------------------------------
# interrupt and resume
# --------------------------------------------------------------------------------------


def test_sampler_resumes_mid_epoch():
    sampler = EpochShuffleSampler(23, seed=4)
    sampler.set_epoch(2)
    full = list(sampler)
    again = EpochShuffleSampler(23, seed=4)
    again.resume_at(2, 8)
    assert list(again) == full[8:] and len(again) == 23
    again.set_epoch(2)
    assert list(again) == full, "the skip applies to one iteration only"
    sampler.set_epoch(3)
    assert sorted(sampler) == list(range(23)) and list(sampler) != full


CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import lightning as L
    import torch
    from kizashi.config import TrainConfig, config_from_dict
    from kizashi.training.runtime import TrainingInterrupted
    from kizashi.jobs.train import run_training

    config_json, out_dir, step_file, slow_after, threads = sys.argv[1:6]
    torch.set_num_threads(int(threads))

    class StepFile(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            with open(step_file, "a") as f:
                f.write(f"{trainer.global_step}\\n")
            if trainer.global_step >= int(slow_after):
                time.sleep(0.5)  # leave the parent time to signal mid-epoch

    config = config_from_dict(TrainConfig, json.load(open(config_json)))
    try:
        run_training(config, out_dir=out_dir, callbacks=[StepFile()])
    except TrainingInterrupted as err:
        print("INTERRUPTED", err.signal_name, err.checkpoint, flush=True)
        sys.exit(3)
    print("FINISHED", flush=True)
    """
)


def test_sigterm_mid_epoch_then_resume_matches_an_uninterrupted_run(dataset_dir, tmp_path, trained,
                                                                   reference_predictions):
    steps_per_epoch, signal_after = 12, 15  # epoch 2 of 2, batch 3 of 12
    config = train_config(dataset_dir, tmp_path / "run")
    reference = trained[1]
    assert reference.folds[0].global_step == 2 * steps_per_epoch

    code, output, step_file = _sigterm_child_mid_run(config, tmp_path, signal_after)
    assert code == 3 and "INTERRUPTED SIGTERM" in output, output
    last = fold_checkpoint_dir(tmp_path / "run", 0) / "last.ckpt"
    epoch, done = checkpoint_position(last)
    assert epoch == 1 and 0 < done < steps_per_epoch, "interrupted mid-epoch"
    stopped_at = int(step_file.read_text().split()[-1])
    assert stopped_at == steps_per_epoch + done

    resumed = run_training(config, out_dir=tmp_path / "run", resume=True)
    fold = resumed.folds[0]
    assert fold.resumed and fold.global_step == reference.folds[0].global_step == 2 * steps_per_epoch
    # same data order (resumable sampler), same optimizer/EMA state, no dropout: the same model
    assert_same_predictions(_sorted_predictions(resumed.run_dir), reference_predictions)


def test_sigterm_to_the_whole_process_group_with_loader_workers_saves_a_checkpoint(dataset_dir, tmp_path):
    """GNU timeout, Ctrl-C and batch schedulers signal the whole process group, loader
    workers included. The workers ignore the signal, so the main process saves last.ckpt
    and stops cleanly instead of failing with "DataLoader worker exited unexpectedly"."""
    config = train_config(dataset_dir, tmp_path / "run", trainer={"num_workers": 2})
    code, output, _ = _sigterm_child_mid_run(config, tmp_path, signal_after=15, process_group=True)
    assert code == 3 and "INTERRUPTED SIGTERM" in output, output
    assert (fold_checkpoint_dir(tmp_path / "run", 0) / "last.ckpt").is_file()


def _sigterm_child_mid_run(config, tmp_path, signal_after: int, *, process_group: bool = False):
    """Train ``config`` in a child process (CHILD) into ``tmp_path / "run"`` and send it
    SIGTERM once it has done ``signal_after`` optimizer steps (to the child alone, or to its
    whole process group). Returns (exit code, output, the file of steps done)."""
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps(dump_config(config)))
    step_file, child_log = tmp_path / "steps.txt", tmp_path / "child.log"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [sys.executable, str(script), str(config_json), str(tmp_path / "run"), str(step_file),
            str(signal_after), str(torch.get_num_threads())]
    with open(child_log, "w") as log_file:
        child = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                 start_new_session=process_group)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and child.poll() is None:
                steps = step_file.read_text().split() if step_file.exists() else []
                if steps and int(steps[-1]) >= signal_after:
                    break
                time.sleep(0.02)
            assert child.poll() is None, f"the child ended before the signal:\n{child_log.read_text()}"
            if process_group:
                os.killpg(child.pid, signal.SIGTERM)
            else:
                child.send_signal(signal.SIGTERM)
            code = child.wait(timeout=120)
        finally:
            if child.poll() is None:
                if process_group:
                    os.killpg(child.pid, signal.SIGKILL)
                else:
                    child.kill()
    return code, child_log.read_text(), step_file


def test_a_crash_resumes_from_the_last_epoch_end_checkpoint(dataset_dir, tmp_path, reference_predictions):
    config = train_config(dataset_dir, tmp_path / "run")

    class Crash(L.Callback):  # as a kill -9 would: no checkpoint of its own
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 15:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(config, callbacks=[Crash()])
    last = fold_checkpoint_dir(tmp_path / "run", 0) / "last.ckpt"
    assert checkpoint_position(last) == (0, 12), "last.ckpt is the end of epoch 1 (after its validation)"
    resumed = run_training(config, resume=True)
    assert resumed.folds[0].global_step == 24
    assert_same_predictions(_sorted_predictions(resumed.run_dir), reference_predictions)


def test_sigint_in_process_saves_and_resumes_without_validation(dataset_dir, tmp_path):
    config = train_config(dataset_dir, tmp_path / "run", trainer={"max_epochs": 1},
                          splits={**SPLITS, "val_days": 0})

    class SelfInterrupt(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 5:
                os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="SIGINT in fold 0 at optimizer step 5") as info:
        run_training(config, callbacks=[SelfInterrupt()])
    assert signal.getsignal(signal.SIGINT) is handler, "the previous SIGINT handler is back"
    assert info.value.checkpoint is not None and checkpoint_position(info.value.checkpoint) == (0, 5)
    resumed = run_training(config, resume=True)
    assert resumed.folds[0].global_step == 12 and resumed.folds[0].resumed
    assert resumed.folds[0].best_checkpoint is None  # no validation: the final (EMA) weights predict
    first = _sorted_predictions(resumed.run_dir)
    (fold_checkpoint_dir(resumed.run_dir, 0) / "predictions.parquet").unlink()
    again = run_training(config, resume=True)  # predicts from last.ckpt: the same EMA weights
    assert_same_predictions(_sorted_predictions(again.run_dir), first)


# --------------------------------------------------------------------------------------
# GPU (the accelerator machine)
# --------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_training_on_cuda(dataset_dir, tmp_path):
    assert resolve_precision("auto", "gpu") == "bf16-mixed"
    seen = {}

    class Probe(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["precision"] = trainer.precision
            seen["oom_recovery"] = pl_module.oom_recovery is not None
            seen["device"] = pl_module.device.type

    config = train_config(dataset_dir, tmp_path / "run", trainer={"accelerator": "gpu", "max_epochs": 1})
    result = run_training(config, callbacks=[Probe()])
    assert seen == {"precision": "bf16-mixed", "oom_recovery": True, "device": "cuda"}
    predictions = pl.read_parquet(result.run_dir / PREDICTIONS)
    assert predictions.get_column("prediction").is_finite().all()
    assert result.folds[0].global_step == 12


def test_cli_train_writes_the_run_and_its_report(dataset_dir, tmp_path):
    from typer.testing import CliRunner

    from kizashi.cli import app

    config = train_config(dataset_dir, tmp_path / "cli_run", trainer={"max_epochs": 1, "limit_train_batches": 4})
    path = tmp_path / "train.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")  # JSON is YAML
    result = CliRunner().invoke(app, ["train", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(payload["summary"]) == {"1", "5"}
    assert (tmp_path / "cli_run" / "report" / "index.html").exists()


def test_finite_mean_skips_non_finite_losses():
    import math

    from kizashi.training.callbacks import FiniteMean, step_loss

    mean = FiniteMean()
    assert math.isnan(mean.compute())
    for value in (1.0, float("nan"), 3.0, float("inf")):
        mean.add(step_loss({"loss": torch.tensor(value)}))
    mean.add(None)
    assert mean.compute() == 2.0
    mean.reset()
    mean.add(step_loss(torch.tensor(float("nan"))))
    assert math.isnan(mean.compute())


def test_each_fold_saves_its_predicting_weights_as_a_pretrained_model(trained, cache):
    """checkpoints/fold_k/model/ holds the weights that predicted the test days: the EMA
    weights of the checkpoint predicted from (not the live ones), loadable on their own."""
    from kizashi.models import load_pretrained_model, read_pretrained_config

    config, result = trained
    fold_dir = fold_checkpoint_dir(result.run_dir, 0)
    model = load_pretrained_model(fold_dir / "model")
    assert type(model).__name__ == "ATFTGATFAN"
    metadata = read_pretrained_config(fold_dir / "model")["metadata"]
    assert metadata["fold"] == 0 and metadata["features"] == cache.feature_columns and metadata["ema"]
    assert list(metadata["horizons"]) == HORIZONS

    predicted_from = fold_dir / ("best.ckpt" if (fold_dir / "best.ckpt").is_file() else "last.ckpt")
    checkpoint = torch.load(predicted_from, map_location="cpu", weights_only=False)
    (ema,) = [state["ema"] for key, state in checkpoint["callbacks"].items() if "EMA" in key]
    saved = model.state_dict()
    live = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    ema = {k.removeprefix("model."): v for k, v in ema.items()}
    assert set(ema) <= set(saved)
    for name, value in ema.items():
        torch.testing.assert_close(saved[name], value, rtol=0, atol=0)
    assert any(not torch.equal(live[name], ema[name]) for name in ema), "the live weights were saved, not the EMA"
