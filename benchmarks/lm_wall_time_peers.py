"""Tiny-Shakespeare validation loss at equal wall time: kizashi's BK language models against
flash-linear-attention's GLA / Gated DeltaNet of the same size, trained by one loop.

    PYTHONPATH=src:benchmarks:/path/to/fla python benchmarks/lm_wall_time_peers.py \\
        --rows gla,phase2_small,phase1_small --minutes 2.0 --json out.json

Every row (the rows and models of ``bench_lm_peers.py``: fla 0.6.0 configs of ~3.5M
parameters, kizashi's ``configs/lm/<row>.yaml``) is trained with the same data and loop: the
text with kizashi's char tokenizer, its last ``val_fraction`` validating (``split_tokens``),
training windows of ``seq_len + 1`` tokens every ``seq_len / 2`` (``TokenWindows``), shuffled
batches (seeded), and ``phase2_small.yaml``'s settings for all (seq_len 256, batch 32, AdamW
lr 1e-3 with weight decay 0.01 over kizashi's parameter groups, 200 warm-up steps, gradient
clipping 1.0, bf16 autocast on CUDA) through :class:`~kizashi.training.lm_module.LMModule`'s
loss, optimizer and schedule. ``--warmup-steps`` training steps run before the clock starts
(they count as training: Triton compilation and fla's autotuning are not charged to a row);
then the row trains until ``--minutes`` of training time have passed. The whole validation
split is scored (mean next-token cross-entropy in nats per character) at each quarter of the
budget and at the end; validation time is not charged. Reported per row: parameters, steps,
training tokens/s, the final and the best validation loss (and its step), peak memory.
``--validations N`` scores N times, evenly over the budget. A row name + ``+graph`` trains
with the step replayed as a CUDA graph (``bench_lm_peers.py``; recorded at the last warm-up
step, with ``--warmup-steps`` >= 2): 7.5-8.7x the eager steps per second on an H200, so
every model passes its best validation loss within seconds and a short budget with many
validations compares them.

This differs from ``lm_compare.sh`` (``kizashi lm train --max-minutes``, whose time includes
Lightning's in-run validations and start-up): the loop here is the same for fla's models,
which have no kizashi config.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bench_lm_peers as peers  # the script's own folder is on sys.path when it runs
import bench_lm_scaling as scaling
import torch

from kizashi.config import load_lm_config
from kizashi.datasets.text import Tokenizer, TokenWindows, read_text, split_tokens
from kizashi.profiling import PeakMemory
from kizashi.training.lm_module import LMModule
from kizashi.training.runtime import resolve_precision

log = logging.getLogger("lm_wall_time_peers")

TEXT = Path("../shared/data/text/tinyshakespeare.txt")
SETTINGS_ROW = peers.TARGET_ROW  # whose YAML gives every row's data, batch and optimizer settings


def validation_loss(model: torch.nn.Module, module: LMModule, windows: TokenWindows, batch: int,
                    device: torch.device, dtype: torch.dtype | None) -> float:
    """Mean next-token cross-entropy over every validation window (nats per token)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for start in range(0, len(windows), batch):
            ids = torch.stack([windows[i] for i in range(start, min(start + batch, len(windows)))]).to(device)
            total += float(module._loss(ids)) * ids.shape[0]  # every window has seq_len targets
            count += ids.shape[0]
    model.train()
    return total / count


def train_row(row: str, text: str, *, minutes: float, device: torch.device, warmup_steps: int,
              fla_models: Any, seq_len: int | None = None, batch: int | None = None,
              validations: int = 4, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Train ``row`` for ``minutes`` of training time (after ``warmup_steps`` uncharged steps)
    and score the validation split ``validations`` times on the way and at the end."""
    settings = load_lm_config(scaling.CONFIG_DIR / f"{SETTINGS_ROW}.yaml")
    seq_len = seq_len or settings.seq_len
    batch = batch or settings.trainer.batch_size
    tokenizer = Tokenizer.fit(settings.data.tokenizer, text)
    train_ids, val_ids = split_tokens(tokenizer.encode(text), settings.data.val_fraction, seq_len)
    train = TokenWindows(train_ids, seq_len, settings.train_stride or max(1, seq_len // 2))
    val = TokenWindows(val_ids, seq_len)
    precision = resolve_precision(settings.trainer.precision, device.type)
    dtype = scaling.autocast_dtype(precision)
    scaling._free(device)
    with PeakMemory(device.type == "cuda", interval=0.01, above_entry=True) as memory:
        model, _ = peers.build_row(row, tokenizer.vocab_size, fla_models)
        torch.manual_seed(settings.seed)
        model = model.to(device)
        graph = row.endswith(peers.GRAPH_SUFFIX)  # forward, backward and clipping replayed as a CUDA graph
        module, train_step = scaling.lm_training_step(model, settings, device=device, dtype=dtype,
                                                      eager_steps=max(1, warmup_steps - 1) if graph else None)
        order = torch.Generator().manual_seed(settings.seed)
        batches = iter(())
        steps, trained, history = 0, 0.0, []

        def step() -> None:
            nonlocal batches, steps
            ids = next(batches, None)
            if ids is None:  # a new epoch: a fresh shuffle
                loader = torch.utils.data.DataLoader(train, batch_size=batch, shuffle=True, generator=order,
                                                     drop_last=len(train) > batch)
                batches = iter(loader)
                ids = next(batches)
            ids = ids.to(device, non_blocking=True)
            steps += 1
            train_step(ids)

        for _ in range(warmup_steps):
            step()
        budget = minutes * 60.0
        for index in range(1, validations + 1):
            scaling._sync(device)
            started = clock()
            target = budget * index / validations
            while trained + (clock() - started) < target:
                step()
            scaling._sync(device)
            trained += clock() - started
            loss = validation_loss(model, module, val, batch, device, dtype)
            history.append({"step": steps, "train_seconds": trained, "val_loss": loss})
            log.info("%-16s step %6d  %6.1f s  val loss %.4f", row, steps, trained, loss)
    best = min(history, key=lambda h: h["val_loss"])
    timed_steps = steps - warmup_steps
    return {
        "row": row, "parameters": peers.count_parameters(model), "precision": precision,
        "seq_len": seq_len, "batch": batch, "warmup_steps": warmup_steps, "steps": steps,
        "train_seconds": trained, "tokens_per_second": timed_steps * batch * seq_len / trained if trained else None,
        "final_val_loss": history[-1]["val_loss"], "best_val_loss": best["val_loss"], "best_step": best["step"],
        "history": history, "peak_memory_gib": memory.gib, "peak_memory_kind": memory.kind,
        "memory_at_start_gib": memory.entry_gib, "train_windows": len(train), "val_windows": len(val),
    }


def results_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per row, and each row's final loss minus the best fla peer's."""
    peers_done = [r for r in results
                  if peers.base_row(r["row"]) in peers.FLA_ROWS and r.get("final_val_loss") is not None]
    best_peer = min(peers_done, key=lambda r: r["final_val_loss"]) if peers_done else None
    lines = [("| row | parameters | steps | tokens/s | val loss at the end | best val loss (step) | "
             "end - best peer | peak memory |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r.get("final_val_loss") is None:
            lines.append(f"| {r['row']} | | | | {r.get('status', 'n/a')}: {r.get('reason', '')} | | | |")
            continue
        gap = "" if best_peer is None else f"{r['final_val_loss'] - best_peer['final_val_loss']:+.4f}"
        lines.append(f"| {r['row']} | {r['parameters']:,} | {r['steps']:,} | {r['tokens_per_second']:,.0f} | "
                     f"{r['final_val_loss']:.4f} | {r['best_val_loss']:.4f} ({r['best_step']:,}) | {gap} | "
                     f"{r['peak_memory_gib']:.2f} GiB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="gla,phase2_small,phase1_small",
                        help=f"comma-separated subset of {','.join(peers.ROWS)}; a row + "
                             f"'{peers.GRAPH_SUFFIX}' replays its training step as a CUDA graph")
    parser.add_argument("--minutes", type=float, default=2.0, help="training time per row (default 2.0)")
    parser.add_argument("--warmup-steps", type=int, default=5, help="uncharged steps before the clock starts")
    parser.add_argument("--validations", type=int, default=4,
                        help="validations, evenly spaced over the budget, the last at its end (default 4)")
    parser.add_argument("--text", type=Path, default=TEXT)
    parser.add_argument("--seq-len", type=int, default=None, help="override (default: the YAML's 256)")
    parser.add_argument("--batch", type=int, default=None, help="override (default: the YAML's 32)")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no CUDA")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (after every row)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.validations < 1 or args.minutes <= 0:
        parser.error("--validations must be >= 1 and --minutes > 0")
    if not torch.cuda.is_available() and not args.allow_cpu:
        log.error("no CUDA device: this comparison trains on the GPU (fla's kernels need one); "
                  "--allow-cpu runs the kizashi rows on the CPU")
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = read_text(args.text)
    fla_models, unavailable = peers.load_fla()
    log.info("wall-time peers on %s, torch %s, fla %s: %.2f min per row after %d warm-up steps, text %s",
             torch.cuda.get_device_name() if device.type == "cuda" else "cpu", torch.__version__,
             peers.fla_version(), args.minutes, args.warmup_steps, args.text)
    results: list[dict[str, Any]] = []
    for row in args.rows.split(","):
        if peers.base_row(row) not in peers.ROWS:
            raise SystemExit(f"--rows: unknown row {row!r}; choose from {', '.join(peers.ROWS)} "
                             f"(each also with {peers.GRAPH_SUFFIX})")
        if peers.base_row(row) in peers.FLA_ROWS and unavailable:
            results.append({"row": row, "status": "unavailable", "reason": unavailable})
        else:
            try:
                results.append(train_row(row, text, minutes=args.minutes, device=device,
                                         warmup_steps=args.warmup_steps, fla_models=fla_models,
                                         seq_len=args.seq_len, batch=args.batch,
                                         validations=args.validations))
            except Exception as err:  # noqa: BLE001 - reported in the row; the others still run
                results.append({"row": row, "status": "error", "reason": f"{type(err).__name__}: "
                                f"{scaling._first_line(err)}"})
                log.info("%s: %s", row, results[-1]["reason"])
        if args.json:
            args.json.write_text(json.dumps({"device": str(device), "torch": torch.__version__,
                                             "fla": peers.fla_version(), "python": platform.python_version(),
                                             "minutes": args.minutes, "results": results}, indent=1,
                                            default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))
    log.info("\n%s\n", results_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
