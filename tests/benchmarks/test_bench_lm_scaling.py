"""benchmarks/bench_lm_scaling.py on the CPU: one training step of each compared LM
(configs/lm/{phase1,phase2,transformer}_small.yaml) at a short length, the JSON it writes,
and the parameter match of the Transformer baseline."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_lm_scaling", REPO / "benchmarks" / "bench_lm_scaling.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_step_per_model_on_cpu(bench, tmp_path, torch_single_thread):
    out = tmp_path / "lm_scaling.json"
    payload = bench.run_benchmark(
        seq_lens=[32], device="cpu", steps=1, warmup=0, out=out, echo=False
    )
    written = json.loads(out.read_text())
    assert set(written["models"]) == {"phase1_small", "phase2_small", "transformer_small"}
    assert written["rows"] == json.loads(json.dumps(payload["rows"]))
    for name, entry in written["models"].items():
        (row,) = entry["results"]
        assert row["status"] == "ok" and row["seq_len"] == 32 and row["precision"] == "32-true", (
            name,
            row,
        )
        assert row["tokens_per_second"] > 0 and row["ms_per_step"] > 0
        assert row["loss"] == pytest.approx(4.17, abs=0.5)  # ~ln 65 at initialization
    parameters = {name: entry["parameters"] for name, entry in written["models"].items()}
    # the baseline has Phase 2 small's parameter count (within 5%)
    assert abs(parameters["transformer_small"] / parameters["phase2_small"] - 1) < 0.05, parameters
    assert "| transformer_small |" in bench.markdown_table(written)


def test_oom_is_reported_and_longer_lengths_skipped(bench, monkeypatch, tmp_path):
    import torch

    def fake_case(model_name, seq_len, **kwargs):
        if seq_len > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
        return {
            "model": model_name,
            "seq_len": seq_len,
            "status": "ok",
            "batch": 1,
            "parameters": 1,
            "ms_per_step": 1.0,
            "tokens_per_second": 16000.0,
            "peak_memory_gib": 0.1,
        }

    monkeypatch.setattr(bench, "time_case", fake_case)
    payload = bench.run_benchmark(
        ["transformer_small"], [64, 16, 32], device="cpu", out=None, echo=False
    )
    statuses = [(r["seq_len"], r["status"]) for r in payload["rows"]]
    assert statuses == [(16, "ok"), (32, "OOM"), (64, "skipped")]
    assert "| transformer_small | 1 | 32 | OOM |" in bench.markdown_table(payload)
