"""benchmarks/bench_lm_peers.py on the CPU: one timed training step of a kizashi row, the
"fla not installed" cells, and the ratios against the fastest fla peer (fla itself needs
CUDA: its rows run on the GPU machine only)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO / "benchmarks"))  # it imports bench_lm_scaling
    spec = importlib.util.spec_from_file_location("bench_lm_peers", REPO / "benchmarks" / "bench_lm_peers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)
    sys.path.remove(str(REPO / "benchmarks"))


def test_a_kizashi_row_times_one_step_and_an_unavailable_peer_says_why(bench, torch_single_thread):
    cpu = torch.device("cpu")
    [cell] = bench.run_row("phase1_small", [16], device=cpu, batch=1, steps=1, warmup=0, vocab=65,
                           fla_models=None, unavailable=None)
    assert cell["status"] == "ok"
    assert cell["ms_per_step"] > 0 and cell["tokens_per_second"] > 0
    assert cell["parameters"] == 2_437_248
    assert torch.isfinite(torch.tensor(cell["loss"]))
    cells = bench.run_row("gla", [16, 32], device=cpu, batch=1, steps=1, warmup=0, vocab=65,
                          fla_models=None, unavailable="fla not installed")
    assert [c["status"] for c in cells] == ["unavailable", "unavailable"]
    assert all(c["reason"] == "fla not installed" for c in cells)


def test_ratios_are_against_the_fastest_peer_of_each_length(bench):
    def cell(row, seq_len, ms, gib, status="ok"):
        return {"row": row, "seq_len": seq_len, "status": status, "ms_per_step": ms, "peak_memory_gib": gib}

    cells = [
        cell("gla", 1024, 10.0, 1.0), cell("gated_deltanet", 1024, 8.0, 2.0),
        cell("phase2_small", 1024, 40.0, 4.0), cell("phase1_small", 1024, 4.0, 1.0),
        cell("gla", 8192, 30.0, 3.0), cell("gated_deltanet", 8192, 0.0, 0.0, status="OOM"),
        cell("phase2_small", 8192, 60.0, 1.5),
    ]
    ratios = {(r["row"], r["seq_len"]): r for r in bench.peer_ratios(cells, [1024, 8192])}
    assert ratios[("phase2_small", 1024)] == pytest.approx(
        {"row": "phase2_small", "seq_len": 1024, "peer": "gated_deltanet", "time_ratio": 5.0, "memory_ratio": 2.0})
    assert ratios[("phase1_small", 1024)]["time_ratio"] == pytest.approx(0.5)
    assert ratios[("phase2_small", 8192)]["peer"] == "gla"  # the failed peer is not a reference
    assert ratios[("phase2_small", 8192)]["time_ratio"] == pytest.approx(2.0)
    assert set(ratios) == {("phase2_small", 1024), ("phase1_small", 1024), ("phase2_small", 8192)}


def test_the_json_holds_every_finished_row_when_a_later_row_breaks_the_run(bench, torch_single_thread, tmp_path,
                                                                         monkeypatch):
    """A device call that ends during a slow row (fla's autotuning) keeps the rows before it."""
    real_run_row = bench.run_row

    def run_row(row, *args, **kwargs):
        if row == "phase2_small":
            raise KeyboardInterrupt("the call's time ran out")
        return real_run_row(row, *args, **kwargs)

    monkeypatch.setattr(bench, "run_row", run_row)
    out = tmp_path / "peers.json"
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--allow-cpu", "--rows", "phase1_small,gla,phase2_small", "--lengths", "16", "--steps", "1",
                    "--warmup", "0", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == ["phase1_small", "gla", "phase2_small"]
    assert saved["rows_done"] == ["phase1_small", "gla"]
    assert [(c["row"], c["status"]) for c in saved["cells"]] == [("phase1_small", "ok"), ("gla", "unavailable")]
    assert saved["cells"][0]["ms_per_step"] > 0


def test_graph_rows_are_measured_against_the_fastest_peer_of_either_step(bench):
    def cell(row, ms, gib):
        return {"row": row, "seq_len": 1024, "status": "ok", "ms_per_step": ms, "peak_memory_gib": gib}

    cells = [cell("gla", 30.0, 1.0), cell("gla+graph", 12.0, 1.5), cell("phase2_small", 36.0, 3.0),
             cell("phase2_small+graph", 24.0, 3.0)]
    ratios = {r["row"]: r for r in bench.peer_ratios(cells, [1024])}
    assert set(ratios) == {"phase2_small", "phase2_small+graph"}
    assert ratios["phase2_small+graph"]["peer"] == "gla+graph"
    assert ratios["phase2_small+graph"]["time_ratio"] == pytest.approx(2.0)
    assert ratios["phase2_small"]["memory_ratio"] == pytest.approx(2.0)
    assert "phase2_small+graph" in bench.ratio_table(list(ratios.values()), [1024])


def test_a_graph_row_is_its_base_model_and_says_why_it_cannot_run_without_cuda(bench, torch_single_thread):
    assert bench.base_row("phase2_small+graph") == "phase2_small"
    assert bench.parse_args(["--rows", "phase1_small+graph,gla+graph"]).rows == ["phase1_small+graph", "gla+graph"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--rows", "phase3+graph"])
    if torch.cuda.is_available():
        pytest.skip("this checks the CPU message; the GPU test of the graphed step is tests/training")
    [cell] = bench.run_row("phase1_small+graph", [16], device=torch.device("cpu"), batch=1, steps=1, warmup=0,
                           vocab=65, fla_models=None, unavailable=None)
    assert cell["status"] == "error"
    assert "needs CUDA" in cell["reason"]
    assert bench.parameter_table(["phase1_small+graph"], 65, None)["phase1_small"] == 2_437_248
