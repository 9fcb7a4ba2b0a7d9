"""Where one LM training step's GPU time goes: ``torch.profiler`` over the step that
``bench_lm_peers.py`` times (the same model, ids, optimizer and autocast), as a table of the
kernels by self device time.

Command, on the GPU machine (environment as in ``bench_lm_peers.py``)::

    PYTHONPATH=src:benchmarks python3 benchmarks/profile_lm_step.py --row phase2_small --length 65536

``--warmup`` untimed steps first (they include Triton's compilation), then one profiled step;
``--rows-shown`` kernels in the table. CPU runs (``--allow-cpu``) profile CPU time instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import bench_lm_peers as peers  # the script's own folder is on sys.path when it runs
import bench_lm_scaling as scaling
import torch
from torch.profiler import ProfilerActivity, profile

from kizashi.training.runtime import resolve_precision

log = logging.getLogger("profile_lm_step")


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
    return f"{row} at T={length}: {1000 * seconds:.1f} ms for the profiled step\n{table}"


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
