"""DDP through `kizashi train --devices 2` on the CPU (gloo): two processes, each epoch's days
sharded over the ranks (about half the optimizer steps of one process), validation RankIC
reduced, rank 0 writes a complete run directory. The same code path as NCCL on GPUs, which
this machine cannot run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import yaml

from tests.test_trainer import DATA, HORIZONS, SPLITS, TINY_MODEL, WINDOW

KIZASHI = str(Path(sys.executable).with_name("kizashi"))


def write_config(tmp_path: Path) -> Path:
    raw = {
        "data": {**DATA, "output": {"dir": str(tmp_path / "dataset")}},
        "horizons": HORIZONS,
        "window": WINDOW,
        "splits": {**SPLITS, "val_days": 20},
        "model": {"name": "atft_gat_fan", "preset": "small", "overrides": TINY_MODEL},
        "optimizer": {"lr": 3e-3},
        "trainer": {"max_epochs": 2, "days_per_batch": 4, "early_stopping_patience": None,
                    "accelerator": "cpu", "logger": "none"},
        "output": {"dir": str(tmp_path / "unused")},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def train(config: Path, out: Path, devices: int) -> dict:
    done = subprocess.run(
        [KIZASHI, "train", "--config", str(config), "--out", str(out), "--devices", str(devices)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "checkpoints" / "fold_0" / "fit.json").read_text(encoding="utf-8"))


def test_ddp_on_two_cpu_processes(tmp_path):
    config = write_config(tmp_path)
    single = train(config, tmp_path / "one", devices=1)
    ddp = train(config, tmp_path / "two", devices=2)
    # each rank trains every second day of the epoch's order: half the steps (rounded up per epoch)
    assert single["global_step"] // 2 <= ddp["global_step"] <= single["global_step"] // 2 + 2
    assert ddp["epochs"] == single["epochs"] == 2
    keys = ["horizon", "date", "code"]
    one = pl.read_parquet(tmp_path / "one" / "predictions.parquet").select(keys).sort(keys)
    two = pl.read_parquet(tmp_path / "two" / "predictions.parquet")
    assert two.select(keys).sort(keys).equals(one)  # every test row, once
    assert two["prediction"].is_finite().all()
    summary = json.loads((tmp_path / "two" / "summary.json").read_text(encoding="utf-8"))
    assert set(summary) == {str(h) for h in HORIZONS}
