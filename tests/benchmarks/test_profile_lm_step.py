"""benchmarks/profile_lm_step.py on the CPU: one profiled training step of Phase 2 small gives
a kernel table whose rows are the step's operators."""

from __future__ import annotations


def test_profiles_one_phase2_step_on_the_cpu(torch_single_thread, load_benchmark):
    module = load_benchmark("profile_lm_step")  # it imports bench_lm_peers from its folder
    table = module.profile_step("phase2_small", 32, warmup=0, device=module.torch.device("cpu"),
                                vocab=65, rows_shown=8)
    assert table.startswith("phase2_small at T=32:")
    assert "Self CPU" in table and "aten::" in table
