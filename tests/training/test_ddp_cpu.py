"""DDP through `kizashi train --devices 2` on the CPU (gloo) against one process doing the same
optimizer steps: the two-process run must predict what the one-process run predicts. The same
code path as NCCL on GPUs, which this machine cannot run.

Why the two runs are the same computation (the set-up makes it so on purpose):

* **Same days per step.** ``EpochShuffleSampler`` draws one day order from (seed, epoch) in
  every process and gives rank ``r`` of ``w`` the positions ``r, r + w, r + 2w, ...``. With
  ``w = 2`` ranks of 4 days per batch, optimizer step ``k`` sees positions ``8k .. 8k + 7``
  of the order (rank 0 the even ones, rank 1 the odd ones): the days that one process with 8
  days per batch sees in its step ``k``.
* **No padding.** The fold has 192 training days, a multiple of 8, so no rank pads its last
  batch by repeating days (as ``DistributedSampler`` does) and no step of the single run is
  smaller than 8 days.
* **Same loss.** DDP averages the two ranks' gradients; the loss is a masked mean over the
  batch's stock-days, so the mean of two 4-day means equals the 8-day mean only when both
  halves hold as many valid targets. The market has no late listing and no delisting
  (24 stocks: the generator's 2 % delisting rounds to none), so every day has the same 24
  stocks, all with targets.
* **Same weights and no randomness.** Both start from the seed's initialization (DDP also
  broadcasts rank 0's weights), dropout is off, and validation (for the best checkpoint) and
  prediction run every day on every rank.

Tolerance: the runs still add the same numbers in a different order (gloo's all-reduce sums the
two ranks' float32 gradients and halves them; one process sums 8 days in one backward pass),
which leaves float32 rounding differences (about 1e-7 relative) in each of the 48 steps; Adam
divides by the root of the second moment, which amplifies differences in parameters whose
gradients are near zero. Measured on this set-up: the largest |prediction difference| is
2.4e-7, 1.2e-5 of the predictions' standard deviation (0.019). The test allows 1e-3 of it,
80 times the measured difference. A run without gradient synchronization (each rank stepping
on its own 4 days, made by registering a DDP communication hook that returns the local
gradients without the all-reduce) differs by 0.071, 3.7 standard deviations: 3,700 times the
allowance, and the test fails on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from tests.training.test_trainer import DATA, HORIZONS, SPLITS, TINY_MODEL, WINDOW

KIZASHI = str(Path(sys.executable).with_name("kizashi"))
DAYS_PER_RANK_BATCH = 4
N_RANKS = 2
EPOCHS = 2
TRAIN_DAYS = 192  # a multiple of N_RANKS * DAYS_PER_RANK_BATCH: see the module docstring
# 24 stocks, all listed from the first day to the last: the same stocks every day
EQUAL_DAYS_DATA = {**DATA, "synthetic": {**DATA["synthetic"], "n_stocks": 24, "late_listing_fraction": 0.0}}
TRAIN_SPLITS = {**SPLITS, "val_days": 20, "test_days": 33}  # leaves TRAIN_DAYS training days
# largest |prediction difference| allowed, as a share of the predictions' standard deviation
RELATIVE_TOLERANCE = 1e-3


def write_config(tmp_path: Path, days_per_batch: int) -> Path:
    raw = {
        "data": {**EQUAL_DAYS_DATA, "output": {"dir": str(tmp_path / "dataset")}},
        "horizons": HORIZONS,
        "window": WINDOW,
        "splits": TRAIN_SPLITS,
        "model": {"name": "atft_gat_fan", "preset": "small", "overrides": TINY_MODEL},
        "optimizer": {"lr": 3e-3},
        "trainer": {"max_epochs": EPOCHS, "days_per_batch": days_per_batch, "early_stopping_patience": None,
                    "accelerator": "cpu", "logger": "none"},
        "output": {"dir": str(tmp_path / "unused")},
    }
    path = tmp_path / f"train_{days_per_batch}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def train(config: Path, out: Path, devices: int, *extra: str) -> dict:
    done = subprocess.run(
        [KIZASHI, "train", "--config", str(config), "--out", str(out), "--devices", str(devices), *extra],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "checkpoints" / "fold_0" / "fit.json").read_text(encoding="utf-8"))


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    single = train(write_config(tmp_path, N_RANKS * DAYS_PER_RANK_BATCH), tmp_path / "one", devices=1)
    ddp = train(write_config(tmp_path, DAYS_PER_RANK_BATCH), tmp_path / "two", devices=N_RANKS)

    run = json.loads((tmp_path / "two" / "run.json").read_text(encoding="utf-8"))
    assert [fold["train_n_days"] for fold in run["folds"]] == [TRAIN_DAYS], "the set-up's precondition"
    # each rank trains every second day of the epoch's order: as many steps as one process
    # with twice the days per batch (without sharding DDP would take twice as many)
    steps = EPOCHS * TRAIN_DAYS // (N_RANKS * DAYS_PER_RANK_BATCH)
    assert ddp["global_step"] == single["global_step"] == steps
    assert ddp["epochs"] == single["epochs"] == EPOCHS
    assert ddp["best_epoch"] == single["best_epoch"]

    keys = ["horizon", "date", "code"]
    one = pl.read_parquet(tmp_path / "one" / "predictions.parquet").sort(keys)
    two = pl.read_parquet(tmp_path / "two" / "predictions.parquet").sort(keys)
    assert two.select(keys).equals(one.select(keys))  # every test row, once
    assert two["prediction"].is_finite().all()
    reference = one.get_column("prediction").to_numpy()
    difference = np.abs(two.get_column("prediction").to_numpy() - reference).max()
    scale = reference.std()
    assert scale > 0, "the one-process run predicts a constant"
    assert difference <= RELATIVE_TOLERANCE * scale, (
        f"two-process predictions differ from one process by up to {difference:.3g} "
        f"({difference / scale:.3g} of the predictions' std {scale:.3g}; allowed {RELATIVE_TOLERANCE:g})"
    )
    summary = json.loads((tmp_path / "two" / "summary.json").read_text(encoding="utf-8"))
    assert set(summary) == {str(h) for h in HORIZONS}


def test_sigterm_mid_epoch_on_two_processes_then_resume_matches_an_uninterrupted_run(tmp_path):
    """SIGTERM to rank 0 (what ``kill PID`` or a scheduler does to the launched command) in
    the second epoch: both ranks stop after the same optimizer step (the flag is reduced over
    the ranks), rank 0 saves last.ckpt and the command exits with code 3. ``--resume`` on two
    processes then ends with the step count and the predictions of an uninterrupted
    two-process run (the same computation: exact equality is expected and measured)."""
    from kizashi.config import load_train_config
    from kizashi.jobs.train import fold_checkpoint_dir
    from kizashi.training.runtime import checkpoint_position
    from tests.training.test_trainer import _sigterm_child_mid_run

    steps_per_epoch = TRAIN_DAYS // (N_RANKS * DAYS_PER_RANK_BATCH)  # 24
    config_file = write_config(tmp_path, DAYS_PER_RANK_BATCH)
    config = load_train_config(config_file, {"trainer": {"devices": N_RANKS}})
    code, output, _ = _sigterm_child_mid_run(config, tmp_path, signal_after=steps_per_epoch + 6)
    assert code == 3 and output.count("INTERRUPTED SIGTERM") >= 1, output
    epoch, done = checkpoint_position(fold_checkpoint_dir(tmp_path / "run", 0) / "last.ckpt")
    assert epoch == 1 and 0 < done < steps_per_epoch, "interrupted mid-epoch"

    resumed = train(config_file, tmp_path / "run", N_RANKS, "--resume")
    uninterrupted = train(config_file, tmp_path / "full", N_RANKS)
    assert resumed["resumed"] and resumed["global_step"] == uninterrupted["global_step"] == EPOCHS * steps_per_epoch
    keys = ["horizon", "date", "code"]
    after = pl.read_parquet(tmp_path / "run" / "predictions.parquet").sort(keys)
    reference = pl.read_parquet(tmp_path / "full" / "predictions.parquet").sort(keys)
    assert after.select(keys).equals(reference.select(keys))
    assert np.array_equal(after.get_column("prediction").to_numpy(), reference.get_column("prediction").to_numpy())
