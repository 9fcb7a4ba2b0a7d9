"""Where one LM training step's GPU time goes: ``torch.profiler`` over the step that
``bench_lm_peers.py`` times (the same model, ids, optimizer and autocast), as a table of the
kernels by self device time.

Command, on the GPU machine (environment as in ``bench_lm_peers.py``)::

    PYTHONPATH=src:benchmarks python3 benchmarks/profile_lm_step.py --row phase2_small --length 65536

``--warmup`` untimed steps first (they include Triton's compilation), then one profiled step;
``--rows-shown`` kernels in the table, then the device time of every kernel summed by family
(the fast-weight scan, the SNR and resonance kernels, layer norms, the resolvent, matmuls, the
optimizer, copies, reductions, other elementwise code). CPU runs (``--allow-cpu``) profile CPU
time instead (the families of the leaf ``aten::`` operators).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import bench_lm_peers as peers  # the script's own folder is on sys.path when it runs
import bench_lm_scaling as scaling
import torch
from torch.profiler import ProfilerActivity, profile

from kizashi.training.runtime import resolve_precision

log = logging.getLogger("profile_lm_step")


# kernel families of the breakdown: the first pattern a kernel's name contains decides
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fast-weight scan (memory, SNR averages)", ("_chunk_state_kernel", "_state_scan_kernel",
                                                 "_chunk_output_kernel", "_chunk_backward_kernel")),
    ("SNR gate and [v, v^2]", ("_snr_gate", "_values_and_squares")),
    ("resonance", ("_resonance_",)),
    ("layer norm", ("_layer_norm_", "layer_norm", "LayerNorm", "GammaBeta")),
    ("BK resolvent", ("_forward_block_kernel", "_forward_carry_kernel", "_backward_block_kernel",
                      "_backward_carry_kernel", "_causal_backward_kernel")),
    ("matmul", ("gemm", "Gemm", "cutlass", "sm90_xmma", "nvjet", "aten::mm", "aten::addmm", "aten::bmm")),
    ("optimizer", ("multi_tensor_apply", "fused_adam", "FusedAdam", "_fused_adamw")),
    ("copies and casts", ("copy", "Copy", "aten::to", "aten::_to_copy")),
    ("reductions", ("reduce_kernel", "aten::sum", "aten::mean", "aten::norm")),
    ("elementwise", ("elementwise_kernel", "vectorized_elementwise", "aten::mul", "aten::add", "aten::div")),
)


def family_of(name: str) -> str:
    """The family of a kernel or operator name (``FAMILIES``), ``"other"`` if none matches."""
    for family, patterns in FAMILIES:
        if any(pattern in name for pattern in patterns):
            return family
    return "other"


def breakdown(events: list[tuple[str, float, int]]) -> str:
    """``(name, self time in us, calls)`` of every kernel -> a table of the time and calls per
    family, largest first."""
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, micros, calls in events:
        family = family_of(name)
        totals[family] = totals.get(family, 0.0) + micros
        counts[family] = counts.get(family, 0) + calls
    whole = sum(totals.values()) or 1.0
    lines = ["| family | ms | share | calls |", "| --- | ---: | ---: | ---: |"]
    for family, micros in sorted(totals.items(), key=lambda item: -item[1]):
        lines.append(f"| {family} | {micros / 1000:.2f} | {100 * micros / whole:.0f}% | {counts[family]} |")
    lines.append(f"| total | {whole / 1000:.2f} | 100% | {sum(counts.values())} |")
    return "\n".join(lines)


def kernel_events(averages: Sequence[Any], cuda: bool) -> list[tuple[str, float, int]]:
    """``(name, self time in us, calls)`` of the device kernels (CUDA) or of the ``aten::``
    operators (CPU), from ``profiler.key_averages()``. Ranges that code marks on the GPU's
    timeline (``record_function``: the optimizer's ``Optimizer.step#AdamW.step``) are left
    out: they span kernels that are counted on their own."""
    out = []
    for event in averages:
        micros = event.self_device_time_total if cuda else event.self_cpu_time_total
        if micros <= 0:
            continue
        if cuda and (event.device_type != torch.autograd.DeviceType.CUDA
                     or getattr(event, "is_user_annotation", False)):
            continue
        if not cuda and not event.key.startswith("aten::"):
            continue
        out.append((event.key, micros, event.count))
    return out


def profile_step(row: str, length: int, *, warmup: int, device: torch.device, vocab: int,
                 rows_shown: int) -> str:
    """The profiler's kernel table of one training step of ``row`` at ``[1, length]``."""
    fla_models = peers.load_fla()[0] if row in peers.FLA_ROWS else None
    model, config = peers.build_row(row, vocab, fla_models)
    cuda = device.type == "cuda"
    dtype = scaling.autocast_dtype(resolve_precision(config.trainer.precision, "cuda" if cuda else "cpu"))
    generator = torch.Generator().manual_seed(config.seed)
    ids = [torch.randint(0, vocab, (1, length + 1), generator=generator).to(device) for _ in range(2)]
    model = model.to(device)
    scaling.timed_training_steps(model, config, ids, device=device, dtype=dtype, steps=1, warmup=warmup)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as profiler:
        seconds, _ = scaling.timed_training_steps(model, config, ids, device=device, dtype=dtype,
                                                  steps=1, warmup=0)
    sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=sort_by, row_limit=rows_shown, max_name_column_width=70)
    families = breakdown(kernel_events(profiler.key_averages(), cuda))
    return f"{row} at T={length}: {1000 * seconds:.1f} ms for the profiled step\n{table}\nBy family:\n{families}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", default="phase2_small", choices=peers.ROWS)
    parser.add_argument("--length", type=int, default=65536)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rows-shown", type=int, default=30)
    parser.add_argument("--allow-cpu", action="store_true", help="profile on the CPU when there is no CUDA")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if not torch.cuda.is_available() and not args.allow_cpu:
        log.error("no CUDA device (pass --allow-cpu to profile on the CPU)")
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log.info("%s", profile_step(args.row, args.length, warmup=args.warmup, device=device, vocab=65,
                                rows_shown=args.rows_shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
