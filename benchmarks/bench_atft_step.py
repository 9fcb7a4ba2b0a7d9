"""ATFT-GAT-FAN training-step throughput: float32 vs bf16 autocast, on the device at hand.

A training step on batches shaped like the S&P 500 dataset: ``--days-per-batch`` trading days
of ``--stocks`` stocks each, a window of ``--window`` days of ``--features`` features, and a
top-``--top-k`` correlation graph per day (random values: this measures the model, not the
data pipeline). Prints, per precision: milliseconds per optimizer step (forward, loss,
backward, AdamW), stock-days per second, peak GPU memory, and the projected time of an
epoch over ``--epoch-stock-days`` stock-days (the issue's goal: 2M stock-days in < 60 s on
one H100), plus the bf16 / float32 speed ratio measured in the same run.

    python benchmarks/bench_atft_step.py                      # CUDA if present, else CPU
    python benchmarks/bench_atft_step.py --preset base --steps 50

Needs only torch and torch_geometric (runs with ``PYTHONPATH=src`` on the accelerator
machine, which has no polars).
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from kizashi.models import create_model
from kizashi.models.losses import ForecastLoss, LossConfig
from kizashi.models.optim import param_groups

log = logging.getLogger("bench_atft_step")


def make_batch(args: argparse.Namespace, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """One multi-day batch: N = days x stocks nodes, E = days x stocks x top_k edges."""
    g = torch.Generator().manual_seed(seed)
    n = args.days_per_batch * args.stocks
    day = torch.arange(args.days_per_batch).repeat_interleave(args.stocks)
    src = torch.randint(0, args.stocks, (args.days_per_batch, args.stocks * args.top_k), generator=g)
    dst = torch.arange(args.stocks).repeat_interleave(args.top_k).expand(args.days_per_batch, -1)
    offsets = (torch.arange(args.days_per_batch) * args.stocks).unsqueeze(1)
    edge_index = torch.stack([(src + offsets).reshape(-1), (dst + offsets).reshape(-1)])
    batch = {
        "x": torch.randn(n, args.window, args.features, generator=g),
        "mask": torch.ones(n, args.window, dtype=torch.bool),
        "edge_index": edge_index,
        "edge_attr": torch.rand(edge_index.shape[1], 3, generator=g),
        "target": torch.randn(n, len(args.horizons), generator=g) * 0.3,
        "valid": torch.ones(n, len(args.horizons), dtype=torch.bool),
        "day": day,
    }
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def time_steps(args: argparse.Namespace, device: torch.device, bf16: bool) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model(
        "atft_gat_fan", preset=args.preset, n_features=args.features, window=args.window,
        horizons=tuple(args.horizons), use_fan=args.fan, use_san=args.san,
    ).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=1e-4, lr=1e-3), fused=device.type == "cuda")
    loss_fn = ForecastLoss(LossConfig(rank_weight=0.1), model.config.quantiles)
    batches = [make_batch(args, device, seed) for seed in range(4)]

    def step(batch: dict[str, torch.Tensor]) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = model(batch)
            loss = loss_fn(outputs, batch["target"], batch["valid"], batch["day"])["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for i in range(args.warmup):
        step(batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for i in range(args.steps):
        step(batches[i % len(batches)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps
    stock_days = args.days_per_batch * args.stocks
    return {
        "ms_per_step": seconds * 1e3,
        "stock_days_per_s": stock_days / seconds,
        "epoch_s": args.epoch_stock_days / (stock_days / seconds),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=("small", "base"))
    parser.add_argument("--stocks", type=int, default=500)
    parser.add_argument("--days-per-batch", type=int, default=4)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--features", type=int, default=406)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--fan", action="store_true")
    parser.add_argument("--san", action="store_true")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--epoch-stock-days", type=int, default=2_000_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    log.info(
        "device %s; preset %s; batch %d days x %d stocks, window %d, %d features, top-%d graph%s%s",
        name, args.preset, args.days_per_batch, args.stocks, args.window, args.features, args.top_k,
        ", FAN" if args.fan else "", ", SAN" if args.san else "",
    )
    results = {}
    for label, bf16 in (("float32", False), ("bf16 autocast", True)):
        results[label] = r = time_steps(args, device, bf16)
        log.info(
            "%-14s %8.1f ms/step  %9.0f stock-days/s  epoch of %d stock-days: %6.1f s  peak %.2f GiB  (%d parameters)",
            label, r["ms_per_step"], r["stock_days_per_s"], args.epoch_stock_days, r["epoch_s"], r["peak_gib"], r["parameters"],
        )
    ratio = results["bf16 autocast"]["stock_days_per_s"] / results["float32"]["stock_days_per_s"]
    log.info("bf16 / float32 throughput: %.2fx", ratio)


if __name__ == "__main__":
    main()
