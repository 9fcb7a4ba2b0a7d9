"""benchmarks/profile_lm_step.py on the CPU: one profiled training step of Phase 2 small gives
a kernel table whose rows are the step's operators."""

from __future__ import annotations

from types import SimpleNamespace


def test_profiles_one_phase2_step_on_the_cpu(torch_single_thread, load_benchmark):
    module = load_benchmark("profile_lm_step")  # it imports bench_lm_peers from its folder
    table = module.profile_step("phase2_small", 32, warmup=0, device=module.torch.device("cpu"),
                                vocab=65, rows_shown=8)
    assert table.startswith("phase2_small at T=32:")
    assert "Self CPU" in table and "aten::" in table
    assert "By family:" in table and "| total |" in table
    assert "| matmul |" in table  # aten::mm / addmm of the projections on the CPU


def test_kernels_are_summed_by_family(load_benchmark):
    module = load_benchmark("profile_lm_step")
    assert module.family_of("_chunk_backward_kernel") == "fast-weight scan (memory, SNR averages)"
    assert module.family_of("_snr_gate_backward_kernel") == "SNR gate and [v, v^2]"
    assert module.family_of("void at::native::(anonymous namespace)::GammaBetaBackwardCUDAKernel") == "layer norm"
    assert module.family_of("sm90_xmma_gemm_bf16bf16") == "matmul"
    assert module.family_of("something new") == "other"
    table = module.breakdown([("_resonance_forward_kernel", 300.0, 4), ("_resonance_backward_kernel", 700.0, 4),
                              ("nvjet_hsh_gemm", 1000.0, 40)])
    assert "| resonance | 1.00 | 50% | 8 |" in table and "| total | 2.00 | 100% | 48 |" in table


def test_ranges_marked_on_the_gpu_timeline_are_not_kernels(load_benchmark):
    """The optimizer's ``record_function`` range spans its kernels on the GPU's timeline: counted
    once, through the kernels, and CPU operators are not device kernels."""
    module = load_benchmark("profile_lm_step")
    device = module.torch.autograd.DeviceType

    def event(key, micros, kind, annotation=False):
        return SimpleNamespace(key=key, self_device_time_total=micros, self_cpu_time_total=5.0, count=1,
                               device_type=kind, is_user_annotation=annotation)

    averages = [event("Optimizer.step#AdamW.step", 10_500.0, device.CUDA, annotation=True),
                event("_chunk_backward_kernel", 1_800.0, device.CUDA),
                event("FastWeightScanBackward", 2_900.0, device.CPU),
                event("multi_tensor_apply_kernel", 100.0, device.CUDA)]
    assert module.kernel_events(averages, cuda=True) == [("_chunk_backward_kernel", 1_800.0, 1),
                                                         ("multi_tensor_apply_kernel", 100.0, 1)]
