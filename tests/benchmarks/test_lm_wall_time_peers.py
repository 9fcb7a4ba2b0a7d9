"""benchmarks/lm_wall_time_peers.py on the CPU: a kizashi row trains for a (tiny) time budget
with the shared loop and is scored on the whole validation split; an fla row without fla is
reported as unavailable; the table and the JSON hold both."""

from __future__ import annotations

import json

import pytest
import torch


def test_trains_a_row_for_its_budget_and_reports_it(load_benchmark, monkeypatch, tmp_path, torch_single_thread):
    bench = load_benchmark("lm_wall_time_peers")
    monkeypatch.setattr(bench.peers, "load_fla", lambda: (None, "fla not installed"))
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 40)
    out = tmp_path / "wall.json"
    assert bench.main(["--rows", "gla,phase1_small", "--minutes", "0.01", "--warmup-steps", "1",
                       "--text", str(text), "--seq-len", "16", "--batch", "4", "--allow-cpu",
                       "--json", str(out)]) == 0
    results = {r["row"]: r for r in json.loads(out.read_text())["results"]}
    assert results["gla"] == {"row": "gla", "status": "unavailable", "reason": "fla not installed"}
    row = results["phase1_small"]
    assert row["steps"] > row["warmup_steps"] == 1
    assert row["train_seconds"] >= 0.6 and len(row["history"]) == 4
    assert [h["step"] for h in row["history"]] == sorted(h["step"] for h in row["history"])
    assert row["best_val_loss"] == min(h["val_loss"] for h in row["history"])
    assert row["final_val_loss"] == row["history"][-1]["val_loss"] < 10
    table = bench.results_table(list(results.values()))
    assert "| gla | | | | unavailable: fla not installed |" in table and "| phase1_small |" in table


def test_validation_loss_is_the_mean_over_every_window(load_benchmark, torch_single_thread):
    """A model that always predicts uniformly scores log(vocab) on any text."""
    bench = load_benchmark("lm_wall_time_peers")
    torch = bench.torch

    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(7))

        def forward(self, ids):
            return self.bias.expand(*ids.shape, 7)

    model = Uniform()
    module = bench.LMModule(model, 1e-3, 0.0, 1, None)
    windows = bench.TokenWindows(torch.arange(50) % 7, 8)
    loss = bench.validation_loss(model, module, windows, batch=3, device=torch.device("cpu"), dtype=None)
    assert abs(loss - torch.log(torch.tensor(7.0)).item()) < 1e-6


def test_validations_are_counted_and_a_graph_row_without_cuda_says_why(load_benchmark, monkeypatch, tmp_path,
                                                                      torch_single_thread):
    bench = load_benchmark("lm_wall_time_peers")
    monkeypatch.setattr(bench.peers, "load_fla", lambda: (None, "fla not installed"))
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 40)
    with pytest.raises(SystemExit):
        bench.main(["--validations", "0", "--text", str(text), "--allow-cpu"])
    out = tmp_path / "wall.json"
    rows = "phase1_small" if torch.cuda.is_available() else "phase1_small,phase1_small+graph"
    assert bench.main(["--rows", rows, "--minutes", "0.005", "--validations", "2", "--warmup-steps", "1",
                       "--text", str(text), "--seq-len", "16", "--batch", "4", "--allow-cpu",
                       "--json", str(out)]) == 0
    results = {r["row"]: r for r in json.loads(out.read_text())["results"]}
    assert len(results["phase1_small"]["history"]) == 2
    if not torch.cuda.is_available():
        assert results["phase1_small+graph"]["status"] == "error"
        assert "needs CUDA" in results["phase1_small+graph"]["reason"]
