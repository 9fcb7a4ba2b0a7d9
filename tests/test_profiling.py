"""PeakMemory: what it reports on the CPU (the sampled process RSS) and, on the GPU (marked
``gpu``), the CUDA peak of a block with and without what was allocated before it began."""

from __future__ import annotations

import pytest
import torch

from kizashi.profiling import PeakMemory

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
MIB = 2**20


def test_cpu_reports_the_process_rss_whatever_above_entry_says():
    for above_entry in (False, True):
        with PeakMemory(cuda=False, interval=0.001, above_entry=above_entry) as memory:
            block = bytearray(64 * MIB)  # touched: counts in the resident set
        assert memory.kind == "process RSS (sampled peak)"
        assert memory.gib * 2**30 >= len(block)
        assert memory.entry_gib == 0.0


@pytest.mark.gpu
@needs_cuda
def test_cuda_peak_with_and_without_what_was_allocated_before():
    torch.cuda.empty_cache()
    before = torch.empty(256 * MIB, dtype=torch.uint8, device="cuda")  # left by an "earlier cell"
    results = {}
    for above_entry in (False, True):
        with PeakMemory(cuda=True, above_entry=above_entry) as memory:
            inside = torch.empty(128 * MIB, dtype=torch.uint8, device="cuda")
            del inside
        results[above_entry] = memory
    whole, own = results[False], results[True]
    assert whole.kind == "cuda max allocated" and own.kind == "cuda max allocated above entry"
    assert own.entry_gib * 2**30 >= before.numel()
    assert own.gib * 2**30 == pytest.approx(128 * MIB, rel=0.01)  # the block's own allocation
    assert whole.gib * 2**30 == pytest.approx(own.entry_gib * 2**30 + 128 * MIB, rel=0.01)
