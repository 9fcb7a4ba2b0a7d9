"""`kizashi lm train --devices 2` and `kizashi pretrain --devices 2` on two CPU processes (gloo):
the code path of NCCL on GPUs, which this machine cannot run. Each completes, rank 0 alone
writes one output directory and prints one summary, and the validation scores every window
exactly once (every rank scores the whole split; nothing is padded in twice)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from tests.jobs.test_pretrain import TINY as TINY_PRETRAIN
from tests.training.test_lm_train import TINY_MODEL, make_text

KIZASHI = str(Path(sys.executable).with_name("kizashi"))
SEQ_LEN, BATCH = 32, 16


def run(args: list[str]) -> tuple[str, str]:
    done = subprocess.run([KIZASHI, *args, "--json"], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "error:" not in done.stderr, done.stderr[-3000:]
    return done.stdout, done.stderr


def lm_config(tmp_path: Path, text: Path, batch_size: int) -> Path:
    raw = {
        "data": {"text": str(text), "tokenizer": "char", "val_fraction": 0.1},
        "seq_len": SEQ_LEN,
        "model": {"name": "bk_phase2", "preset": None, "overrides": TINY_MODEL},
        "optimizer": {"lr": 3e-3, "weight_decay": 0.01, "warmup_steps": 10},
        "trainer": {"max_epochs": 2, "batch_size": batch_size, "accelerator": "cpu", "logger": "none",
                    "val_check_interval": 0.5, "num_workers": 0},
    }
    path = tmp_path / f"lm_{batch_size}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_lm_train_on_two_cpu_processes(tmp_path):
    from kizashi.datasets.text import Tokenizer, TokenWindows, split_tokens
    from kizashi.models import load_pretrained_model
    from kizashi.training.lm_module import LMModule

    text = tmp_path / "tiny.txt"
    text.write_text(make_text(), encoding="utf-8")
    stdout, stderr = run(["lm", "train", "--config", str(lm_config(tmp_path, text, BATCH)), "--out", str(tmp_path / "two"),
                  "--devices", "2"])
    printed = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # rank 0 reports; rank 1 returns quietly
    assert stderr.count("step 9 (epoch 1): val loss") == 1  # and logs
    out = tmp_path / "two"
    summary = json.loads((out / "lm.json").read_text())
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == sorted({int(r["step"]) for r in rows})  # one row per validation

    # every validation scored the whole split once: its windows' target tokens
    tokenizer = Tokenizer.fit("char", text.read_text())
    _, val_ids = split_tokens(tokenizer.encode(text.read_text()), 0.1, SEQ_LEN)
    windows = TokenWindows(val_ids, SEQ_LEN)
    assert {int(r["val_tokens"]) for r in rows} == {len(windows) * SEQ_LEN}
    # and its loss is the split's: the saved (best) weights, scored here in one process
    model = load_pretrained_model(out / "model").eval()
    module = LMModule(model, 1e-3, 0.0, 1, None)
    with torch.no_grad():
        losses = [float(module._loss(torch.stack([windows[i] for i in range(s, min(s + BATCH, len(windows)))])))
                  * min(BATCH, len(windows) - s) for s in range(0, len(windows), BATCH)]
    assert math.isclose(sum(losses) / len(windows), summary["best_val_loss"], rel_tol=1e-5)

    # the effective batch is 2 x 16: as many optimizer steps as one process with batches of 32
    run(["lm", "train", "--config", str(lm_config(tmp_path, text, 2 * BATCH)), "--out", str(tmp_path / "one")])
    assert summary["steps"] == json.loads((tmp_path / "one" / "lm.json").read_text())["steps"]


def test_pretrain_on_two_cpu_processes(tmp_path):
    config = tmp_path / "stage1.yaml"
    config.write_text(yaml.safe_dump({**TINY_PRETRAIN, "trainer": {**TINY_PRETRAIN["trainer"], "num_workers": 0}}))
    stdout, stderr = run(["pretrain", "--config", str(config), "--out", str(tmp_path / "two"), "--devices", "2"])
    printed = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1 and stderr.count("epoch 1: val reconstruction") == 1
    out = tmp_path / "two"
    for name in ("bars_report.json", "stats.json", "metrics.csv", "encoder.pt", "pretrain.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(math.isfinite(float(r["val_reconstruction"])) for r in rows)
    assert printed[0]["summary"]["best_val_reconstruction"] == min(float(r["val_reconstruction"]) for r in rows)
