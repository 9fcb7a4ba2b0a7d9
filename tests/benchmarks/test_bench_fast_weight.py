"""benchmarks/bench_fast_weight.py on the CPU: the rows' plumbing (PyTorch row, a peer that
cannot be built, bandwidth shares, ratios, the table) with a stand-in timer; the kernels
themselves are timed on the GPU machine."""

from __future__ import annotations

import pytest


def test_minimal_bytes_count_every_input_and_output(load_benchmark):
    bench = load_benchmark("bench_fast_weight")
    # forward: q, k (dk each), v, o (dv each), g: 2*3 + 2*5 + 1 = 17 float32 per step and head
    assert bench.forward_bytes(2, 10, 3, 5) == 2 * 10 * 17 * 4
    # backward adds q, k, dq, dk (4*3), v, do, dv (3*5), g, dg (2)
    assert bench.forward_backward_bytes(2, 10, 3, 5) == 2 * 10 * (17 + 12 + 15 + 2) * 4
    assert bench.share(4e9, 1000.0, 8e9) == 0.5 and bench.share(1, None, 1.0) is None
    assert bench.parse_settings("tf32:4, ieee:8") == [bench.Setting(4, "tf32"), bench.Setting(8, "ieee")]
    for bad in ("fp16:4", "tf32:3", "tf32"):
        with pytest.raises(SystemExit, match="PRECISION:WARPS"):
            bench.parse_settings(bad)


def test_rows_of_a_shape_on_the_cpu(load_benchmark):
    bench = load_benchmark("bench_fast_weight")
    calls = []

    def timer(fn):
        fn()
        calls.append(fn)
        return 2.0

    rows = bench.measure_shape("tiny", (1, 2, 70, 4, 6), settings=[], copy_bytes_per_s=1e9, timer=timer,
                               with_fla=True, device="cpu")
    torch_row, fla_row = rows
    assert torch_row["row"].startswith("pytorch") and torch_row["forward_backward_ms"] == 2.0
    assert torch_row["x_torch_forward_backward"] == 1.0
    assert abs(torch_row["forward_copy_share"] - bench.forward_bytes(2, 70, 4, 6) / 2e-3 / 1e9) < 1e-12
    assert len(calls) == 2  # forward and forward + backward of the PyTorch row
    assert fla_row["forward_ms"] is None and fla_row["reason"]  # fla is not installed here (or no CUDA)
    table = bench.format_rows(rows)
    assert "| tiny | pytorch chunked (float32) | 2.000 |" in table and "n/a" in table


def test_no_cuda_is_a_clear_exit(load_benchmark, monkeypatch, caplog):
    bench = load_benchmark("bench_fast_weight")
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 2
    assert "needs a CUDA device" in caplog.text
