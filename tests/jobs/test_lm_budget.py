"""`lm train --max-minutes M` bounds the whole job, final validation included: with a
validation split whose full pass would take several times the budget, the job (by its own
clock, lm.json's ``seconds``, and by the caller's) ends within the budget plus a stated
tolerance, validation is subsampled (evenly spread windows, the same at every validation)
and lm.json says what was scored. Without a budget every window is scored. A run with
epochs shorter than the logging interval does not get Lightning's logging-interval warning."""

from __future__ import annotations

import json
import math
import random
import time
import warnings

import numpy as np
import pytest

from kizashi.config import LMTrainConfig, config_from_dict, load_lm_config
from kizashi.datasets.text import TokenWindows
from kizashi.jobs.lm import plan_validation, run_lm_training

BUDGET_MINUTES = 0.05  # 3 s
TOLERANCE_SECONDS = 5.0  # generous: a functional bound on a shared CPU, not a timing claim
SEQ_LEN, BATCH = 64, 32


def write_text(path, n_words: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    path.write_text(" ".join(rng.choices(words, k=n_words)) + "\n", encoding="utf-8")


def config(text, **trainer) -> LMTrainConfig:
    return config_from_dict(LMTrainConfig, {
        "data": {"text": str(text), "tokenizer": "char", "val_fraction": 0.9},
        "seq_len": SEQ_LEN,
        "model": {"name": "transformer_lm", "preset": None,
                  "overrides": {"d_model": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.0}},
        "optimizer": {"lr": 3e-3, "weight_decay": 0.0, "warmup_steps": 2},
        "trainer": {"max_epochs": 100, "batch_size": BATCH, "accelerator": "cpu", "logger": "none",
                    "val_check_interval": 0.5, **trainer},
    })


def test_the_budget_covers_the_whole_job_and_validation_is_subsampled(tmp_path, torch_single_thread):
    text = tmp_path / "big.txt"
    write_text(text, 1_000_000)  # ~3.7M characters, 90% of them validate
    began = time.perf_counter()
    result = run_lm_training(config(text, max_minutes=BUDGET_MINUTES), tmp_path / "run")
    wall = time.perf_counter() - began
    summary = json.loads((tmp_path / "run" / "lm.json").read_text())
    budget = BUDGET_MINUTES * 60
    assert summary["budget_seconds"] == budget
    # the premise: scoring every validation window at the measured rate would take far longer
    full_validation = summary["val_batch_seconds"] * math.ceil(summary["val_windows"] / BATCH)
    assert full_validation > 2 * budget, (full_validation, budget)
    # the bound, by the job's own clock and by ours
    assert summary["seconds"] <= budget + TOLERANCE_SECONDS, summary["seconds"]
    assert wall <= budget + TOLERANCE_SECONDS, wall
    # what was evaluated, said in lm.json and metrics.csv
    assert summary["validation"] == "subsample" and summary["stopped_by_budget"]
    assert 1 <= summary["val_windows_evaluated"] < summary["val_windows"]
    assert summary["val_tokens_evaluated"] == summary["val_windows_evaluated"] * SEQ_LEN
    assert summary["val_tokens_evaluated"] < summary["val_tokens"]
    rows = result.metrics
    assert rows and rows[-1]["step"] == summary["steps"]  # the final weights were validated
    assert {r["val_tokens"] for r in rows} == {summary["val_tokens_evaluated"]}  # same windows every time
    # a validation took about what the plan allowed (share of the budget), not a full pass
    assert max(r["val_seconds"] for r in rows) < full_validation / 2
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_without_a_budget_every_window_is_scored_and_no_logging_interval_warning(tmp_path, torch_single_thread):
    text = tmp_path / "small.txt"
    write_text(text, 2_000)
    cfg = config(text, max_epochs=2, logger="tensorboard")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_lm_training(cfg, tmp_path / "run")
    summary = result.summary
    n_batches = math.ceil(len(TokenWindows(np.zeros(summary["train_tokens"]), SEQ_LEN, SEQ_LEN // 2)) / BATCH)
    assert n_batches < 10  # fewer than the LM job's usual interval: Lightning would warn
    assert [str(w.message) for w in caught if "logging interval" in str(w.message)] == []
    assert summary["validation"] == "full" and summary["budget_seconds"] is None
    assert summary["val_windows_evaluated"] == summary["val_windows"] == (summary["val_tokens"] - 1) // SEQ_LEN
    assert summary["val_tokens_evaluated"] == summary["val_windows"] * SEQ_LEN
    assert all(r["val_tokens"] == summary["val_tokens_evaluated"] for r in result.metrics)


def test_plan_validation_spreads_the_subsample_over_the_split():
    val = TokenWindows(np.arange(100 * 8 + 1), 8)  # 100 windows
    full = plan_validation(val, 10, None, None, None)
    assert full.dataset is val and not full.subsampled and full.windows_evaluated == 100
    assert not plan_validation(val, 10, None, budget_seconds=100.0, batch_seconds=0.1).subsampled  # 10 x 0.1 s fits
    plan = plan_validation(val, 10, None, budget_seconds=10.0, batch_seconds=0.25)  # 10% of 10 s: 4 batches
    assert plan.subsampled and plan.windows_evaluated == 40 and len(plan.dataset) == 40
    index = np.asarray(plan.dataset.indices)
    assert index[0] == 0 and index[-1] == 99 and np.all(np.diff(index) >= 2)  # every 2nd-3rd window, both ends
    tiny = plan_validation(val, 10, None, budget_seconds=1.0, batch_seconds=5.0)  # not even one batch fits
    assert tiny.windows_evaluated == 10  # at least one batch
    limited = plan_validation(val, 10, 3, budget_seconds=100.0, batch_seconds=0.1)  # limit_val_batches=3
    assert limited.mode == "limited" and not limited.subsampled and limited.windows_evaluated == 30
    with pytest.raises(Exception, match="val_budget_share"):
        load_lm_config(None, {"trainer": {"max_minutes": 1.0, "val_budget_share": 1.5}})
