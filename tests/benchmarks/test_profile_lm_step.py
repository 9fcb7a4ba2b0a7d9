"""benchmarks/profile_lm_step.py on the CPU: one profiled training step of Phase 2 small gives
a kernel table whose rows are the step's operators."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_profiles_one_phase2_step_on_the_cpu(torch_single_thread, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # it imports bench_lm_peers
    spec = importlib.util.spec_from_file_location("profile_lm_step", REPO / "benchmarks" / "profile_lm_step.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    table = module.profile_step("phase2_small", 32, warmup=0, device=module.torch.device("cpu"),
                                vocab=65, rows_shown=8)
    assert table.startswith("phase2_small at T=32:")
    assert "Self CPU" in table and "aten::" in table
