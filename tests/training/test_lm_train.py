"""`kizashi lm train` on a small generated text: the tokenizers, the split, a Phase-2 model
learning a predictable text well below the uniform loss, metrics and summary files, resume
from last.ckpt, and the CLI."""

from __future__ import annotations

import csv
import json
import math
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import LMTrainConfig, config_from_dict
from kizashi.datasets.text import Tokenizer, TokenWindows, split_tokens
from kizashi.errors import ConfigError, KizashiError
from kizashi.training.schedules import WarmupCosine
from kizashi.jobs.lm import run_lm_training

TINY_MODEL = {"d_model": 32, "n_layers": 1, "num_heads": 2, "head_dim": 16, "resonance_modes": 4, "dropout": 0.0,
              "chunk_size": 8}


def make_text(n_words: int = 3000, seed: int = 0) -> str:
    """Words from a small vocabulary in a fixed cycle with random repeats: the next character
    is predictable from the last few, far better than uniform."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    out, i = [], 0
    for _ in range(n_words):
        out.append(words[i % len(words)])
        i += rng.choice([1, 1, 1, 2])
    return " ".join(out) + "\n"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


def tiny_config(text_file, **trainer) -> LMTrainConfig:
    return config_from_dict(LMTrainConfig, {
        "data": {"text": str(text_file), "tokenizer": "char", "val_fraction": 0.1},
        "seq_len": 32,
        "model": {"name": "bk_phase2", "preset": None, "overrides": TINY_MODEL},
        "optimizer": {"lr": 3e-3, "weight_decay": 0.01, "warmup_steps": 10},
        "trainer": {"max_epochs": 2, "batch_size": 16, "accelerator": "cpu", "logger": "none",
                    "val_check_interval": 0.5, **trainer},
    })


def test_tokenizers_and_windows():
    text = "héllo wörld\n"
    char = Tokenizer.fit("char", text)
    assert char.vocab_size == len(set(text)) and char.decode(char.encode(text)) == text
    byte = Tokenizer.fit("byte", text)
    assert byte.vocab_size == 256 and len(byte.encode(text)) == len(text.encode()) and byte.decode(byte.encode(text)) == text
    with pytest.raises(KizashiError, match="not in the tokenizer's alphabet"):
        char.encode("z")
    ids = np.arange(100)
    train, val = split_tokens(ids, 0.2, 10)
    assert len(train) == 80 and val[0] == 80
    windows = TokenWindows(train, 10, stride=5)
    assert len(windows) == (80 - 11) // 5 + 1
    assert windows[1].tolist() == list(range(5, 16))  # T + 1 tokens: inputs and next-token targets
    assert windows[len(windows) - 1][-1] <= 79  # never past the split
    with pytest.raises(KizashiError, match="fewer than one window"):
        split_tokens(ids, 0.05, 10)


def test_warmup_cosine_schedule():
    schedule = WarmupCosine(10, 110, floor=0.1)
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == 1.0
    assert schedule(60) == pytest.approx(0.55) and schedule(110) == pytest.approx(0.1)
    assert WarmupCosine(5, None)(1000) == 1.0


def test_one_schedule_for_the_three_modules_keeps_the_old_values():
    """ForecastModule and Stage1Module (linear warm-up) and LMModule (warm-up + cosine) step
    the one WarmupCosine; its factors equal the closed forms each module used before."""
    import torch

    from kizashi.models.stage1 import Stage1Config, Stage1Model
    from kizashi.training.lm_module import LMModule
    from kizashi.training.module import ForecastModule
    from kizashi.training.stage1_module import Stage1Module

    def linear_warmup(step, warmup):  # ForecastModule / Stage1Module
        return min(1.0, (step + 1) / max(1, warmup))

    def warmup_cosine(step, warmup, total, floor=0.1):  # LMModule
        warmup = max(1, warmup)
        if step < warmup:
            return (step + 1) / warmup
        if total is None or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def factor(module):
        scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
        assert isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
        return scheduler.lr_lambdas[0]

    steps = [0, 1, 4, 6, 7, 8, 30, 59, 60, 61, 99, 106, 107, 500]
    forecast = ForecastModule(torch.nn.Linear(3, 1), horizons=(1,), quantile_levels=(0.5,), warmup_steps=7)
    stage1_model = Stage1Model(Stage1Config(timeframes=("m30",), seq_len=8, d_model=8, n_heads=2, patch_len=4))
    stage1 = Stage1Module(stage1_model, {"m30": 1.0}, warmup_steps=60)
    lm = LMModule(torch.nn.Linear(3, 3), lr=1e-3, weight_decay=0.0, warmup_steps=7, total_steps=107)
    lm_flat = LMModule(torch.nn.Linear(3, 3), lr=1e-3, weight_decay=0.0, warmup_steps=0, total_steps=None)
    for step in steps:
        assert factor(forecast)(step) == linear_warmup(step, 7)
        assert factor(stage1)(step) == linear_warmup(step, 60)
        assert factor(lm)(step) == warmup_cosine(step, 7, 107)
        assert factor(lm_flat)(step) == warmup_cosine(step, 0, None)
        for warmup in (0, 1, 7):
            assert WarmupCosine(warmup)(step) == linear_warmup(step, warmup)
            for total in (None, 5, 107):
                assert WarmupCosine(warmup, total)(step) == warmup_cosine(step, warmup, total)
    # given total_steps, Stage-1 keeps torch's one-cycle schedule (peak = each group's lr)
    one_cycle = Stage1Module(stage1_model, {"m30": 1.0}, lr=1e-3, total_steps=50).configure_optimizers()
    scheduler = one_cycle["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and scheduler.total_steps == 50
    assert one_cycle["lr_scheduler"]["interval"] == "step"


def test_lm_learns_the_text_and_resumes(tmp_path, text_file, torch_single_thread):
    out = tmp_path / "run"
    result = run_lm_training(tiny_config(text_file, max_steps=60, max_epochs=20), out)
    rows = result.metrics
    vocab = result.summary["vocab_size"]
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows) and rows[-1]["step"] == 60
    assert rows[0]["val_loss"] < math.log(vocab)  # already below the uniform loss
    assert rows[-1]["val_loss"] < 0.6 * math.log(vocab), (rows[-1]["val_loss"], math.log(vocab))
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert all(r["val_bits"] == pytest.approx(r["val_loss"] / math.log(2)) for r in rows)
    assert all(r["tokens_per_second"] > 0 for r in rows)
    summary = json.loads((out / "lm.json").read_text())
    assert summary["best_val_loss"] == min(r["val_loss"] for r in rows) and summary["steps"] == 60
    assert summary["parameters"] > 0 and summary["tokenizer"] == "char"
    assert [int(r["step"]) for r in csv.DictReader((out / "metrics.csv").open())] == [r["step"] for r in rows]
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "checkpoints" / "best.ckpt").is_file()

    # a run stopped by max_steps resumes with more steps (from the epoch after the one it stopped in)
    resumed = run_lm_training(tiny_config(text_file, max_steps=80, max_epochs=20), out, resume=True)
    assert resumed.summary["resumed"] and resumed.summary["steps"] == 80
    assert resumed.metrics[: len(rows)] == rows  # the earlier rows come back from the checkpoint
    assert resumed.metrics[-1]["step"] == 80


def test_the_validation_after_the_last_epoch_keeps_its_epoch(tmp_path, text_file, torch_single_thread):
    """Two epochs of 5 batches validated at every half (after batches 2 and 4): the last batch of
    the run is scored by the validation the job runs after fit, which is still epoch 2 (it
    was labelled 3: Lightning's epoch counter has moved on by then)."""
    result = run_lm_training(tiny_config(text_file, max_epochs=2, limit_train_batches=5), tmp_path / "run")
    assert [(row["epoch"], row["step"]) for row in result.metrics] == [(1, 2), (1, 4), (2, 7), (2, 9), (2, 10)]


def test_config_errors(tmp_path, text_file):
    with pytest.raises(ConfigError, match="data.text"):
        run_lm_training(config_from_dict(LMTrainConfig, {}), tmp_path / "x")
    raw = tiny_config(text_file).model_dump(mode="json")
    raw["model"] = {"name": "stage1", "preset": "small", "overrides": {}}
    with pytest.raises(ConfigError, match="not a token language model"):
        run_lm_training(config_from_dict(LMTrainConfig, raw), tmp_path / "y")
    with pytest.raises(ConfigError, match=r"trainer.max_minutes \(2.0\) with trainer.devices=2"):
        run_lm_training(tiny_config(text_file, devices=2, max_minutes=2.0), tmp_path / "z")


def test_cli_lm_train(tmp_path, text_file, torch_single_thread):
    import yaml

    path = tmp_path / "lm.yaml"
    raw = tiny_config(text_file, max_steps=8).model_dump(mode="json")
    raw["data"]["text"] = None
    path.write_text(yaml.safe_dump(raw))
    done = CliRunner().invoke(app, ["lm", "train", "--config", str(path), "--text", str(text_file),
                                    "--out", str(tmp_path / "cli"), "--json"])
    assert done.exit_code == 0, done.output
    payload = json.loads(done.output.strip().splitlines()[-1])
    assert payload["summary"]["steps"] == 8 and payload["metrics"]


def test_transformer_lm_baseline_is_causal_and_passes_the_audit():
    import torch

    from kizashi.models import create_model
    from tests.models.test_bk_models import audit_one_step

    torch.manual_seed(0)
    model = create_model("transformer_lm", vocab_size=20, d_model=16, n_layers=2, n_heads=2, dropout=0.0)
    ids = torch.randint(0, 20, (3, 24))
    assert audit_one_step(model, ids) == {}
    model.eval()
    changed = ids.clone()
    changed[:, 13:] = (changed[:, 13:] + 1) % 20
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.allclose(a[:, :13], b[:, :13], atol=1e-6) and not torch.allclose(a[:, 13:], b[:, 13:])
    small = create_model("transformer_lm", "small", vocab_size=65)
    phase2 = create_model("bk_phase2", "small", vocab_size=65)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 0.8 < count(small) / count(phase2) < 1.2  # comparable sizes for the wall-time comparison


def test_lm_optimizer_is_adamw_over_every_parameter_fused_only_on_cuda():
    """configure_optimizers: AdamW covering every trainable parameter; the fused
    implementation only when the parameters are CUDA tensors (on CPU, PyTorch's default)."""
    import torch

    from kizashi.models.optim import check_optimizer_coverage
    from kizashi.training.lm_module import LMModule

    model = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 5))
    optimizer = LMModule(model, lr=1e-3, weight_decay=0.1, warmup_steps=1, total_steps=10) \
        .configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW) and not optimizer.defaults["fused"]
    check_optimizer_coverage(model, optimizer)
    if torch.cuda.is_available():
        model.cuda()
        fused = LMModule(model, 1e-3, 0.1, 1, 10).configure_optimizers()["optimizer"]
        assert fused.defaults["fused"] is True
