"""LM training-step time and peak GPU memory of kizashi's BK-Core language models against
flash-linear-attention peers of the same parameter count, at 1k, 8k and 64k tokens.

Rows (character LMs, vocabulary 65 = tiny-Shakespeare's characters, about 3.5M parameters):

* ``phase1_small``, ``phase2_small``, ``transformer_small``: built exactly as
  ``benchmarks/bench_lm_scaling.py`` (and ``kizashi lm train``) builds them, from
  ``configs/lm/<row>.yaml`` through :func:`kizashi.jobs.lm.build_lm`;
* ``gla`` (Gated Linear Attention) and ``gated_deltanet`` (Gated DeltaNet) from
  flash-linear-attention (``fla.models``, chunked Triton kernels), sized to the parameter
  count of ``phase2_small`` (the target; each row's count is logged with its deviation, the
  tolerance is +-10%): hidden 256, 4 layers, 4 heads of key width 32 and value width 64, fla's
  default SwiGLU MLP (intermediate 768), untied embeddings (see :data:`FLA_CONFIGS`);
* any row name + ``+graph`` (``phase2_small+graph``, ``gla+graph``): the same model, its
  forward, loss, backward and clipping recorded once as a CUDA graph and replayed
  (:class:`kizashi.training.cuda_graph.GraphedTrainingStep`; AdamW and the schedule eager).
  The warm-up steps run eagerly, one more untimed step records the graph, the timed steps
  are replays. Ratios are against the fastest fla row of either kind.

Protocol (that of ``bench_lm_scaling.py``, one harness for every row): per (row, sequence
length ``T``) a fresh model (seeded), random ids ``[--batch, T + 1]``, and the training step of
:class:`kizashi.training.lm_module.LMModule` around the model: forward under bf16 autocast on
CUDA (the precision ``kizashi lm train`` resolves from the config: ``auto`` = bf16-mixed), the
next-token cross entropy computed by ``LMModule._loss`` on float logits (the same loss for
every row: fla's fused cross entropy is off, the fla model only returns logits), backward,
gradient-norm clipping to ``optimizer.grad_clip``, the AdamW step of
``LMModule.configure_optimizers`` (kizashi's decay / no-decay parameter groups) and its
scheduler step. The fla rows take the optimizer, precision and seed of
``configs/lm/phase2_small.yaml``. ``--warmup`` untimed steps (they include Triton's
autotuning), then ``--steps`` timed steps, wall time with the device synchronized before and
after. Reported per cell: ms per optimizer step, tokens/s (``batch x T x steps / seconds``) and
the peak memory of the whole cell (model, gradients, AdamW state, activations): the CUDA
allocator's ``max_memory_allocated`` after ``reset_peak_memory_stats``, less what was
allocated when the cell began (``memory_at_start_gib`` in the JSON, logged when not ~0: what
earlier cells left behind does not count against a later row). Then, per length, the
ratio of each kizashi row to the fastest fla peer of that length (time and memory), measured
in the same run. A cell that runs out of memory or fails shows its error text and the run
goes on (after an out-of-memory error the row's longer lengths are skipped).

fla is imported lazily and is optional: without it the fla rows read ``fla not installed``
and the kizashi rows still run. Without CUDA the script stops, unless ``--allow-cpu``: a CPU
smoke test of the kizashi rows at lengths 64,128 (fla's kernels need CUDA).

Commands, from the repository root::

    # CPU smoke test (this checkout's venv)
    PYTHONPATH=src .venv/bin/python benchmarks/bench_lm_peers.py --allow-cpu --quick

    # GPU machine (torch / triton / transformers / einops present; kizashi's pure-python deps
    # in .whl and the two fla wheels in .whl-fla, both carried along as ignored paths):
    python3 -m pip install -q --no-deps --target /tmp/deps .whl/*.whl .whl-fla/*.whl && \\
    PYTHONPATH=src:/tmp/deps python3 benchmarks/bench_lm_peers.py --json $OUT/lm_peers.json

Both wheel folders come from ``bash scripts/offline_wheels.sh 3.12`` (docs/gpu.md; the fla
wheels are pure python and need torch, triton, transformers>=5.6.2 and einops). Options: ``--lengths 1024,8192,65536``, ``--rows gla,phase2_small``,
``--steps``, ``--warmup``, ``--batch``, ``--quick`` (2 timed steps after 1 warm-up step),
``--json PATH`` (every cell, the parameter counts and the ratios; written after every row, so a
run cut short keeps the rows it finished).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import bench_lm_scaling as scaling  # the script's own folder is on sys.path when it runs
import torch
from torch import nn

from kizashi.config import load_lm_config
from kizashi.jobs.lm import build_lm
from kizashi.profiling import PeakMemory
from kizashi.training.runtime import resolve_precision

log = logging.getLogger("bench_lm_peers")

KIZASHI_ROWS = ("phase1_small", "phase2_small", "transformer_small")
FLA_ROWS = ("gla", "gated_deltanet")
ROWS = KIZASHI_ROWS + FLA_ROWS  # fla autotunes each kernel on its first call (minutes for GLA)
GRAPH_SUFFIX = "+graph"  # a row name + this: its training step replayed as a CUDA graph
TARGET_ROW = "phase2_small"  # the parameter target, and the settings the fla rows train with
TOLERANCE = 0.10
MATCHED_ROWS = ("transformer_small", "gla", "gated_deltanet")  # sized to the target
GPU_LENGTHS = (1024, 8192, 65536)
CPU_LENGTHS = (64, 128)
# fla model configs (field names of fla 0.6.0's GLAConfig / GatedDeltaNetConfig); both: hidden
# 256, 4 layers, 4 heads, key width 32 per head, value width 64 per head, SwiGLU MLP 768
FLA_CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gla": (
        "GLAConfig",
        "GLAForCausalLM",
        {"hidden_size": 256, "num_hidden_layers": 4, "num_heads": 4, "expand_k": 0.5, "expand_v": 1.0},
    ),
    "gated_deltanet": (
        "GatedDeltaNetConfig",
        "GatedDeltaNetForCausalLM",
        {"hidden_size": 256, "num_hidden_layers": 4, "num_heads": 4, "head_dim": 32, "expand_v": 2.0},
    ),
}
FLA_COMMON = {
    "attn_mode": "chunk",
    "fuse_cross_entropy": False,  # the loss is LMModule._loss for every row
    "fuse_linear_cross_entropy": False,
    "tie_word_embeddings": False,
    "use_cache": False,
}


def base_row(row: str) -> str:
    """The model of a row name: ``"phase2_small+graph"`` -> ``"phase2_small"``."""
    return row.removesuffix(GRAPH_SUFFIX)


class FlaLogits(nn.Module):
    """An fla ``*ForCausalLM`` as a kizashi LM: ``ids [B, T] -> logits [B, T, vocab]``."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits of every position (no labels: fla computes no loss)."""
        return self.lm(input_ids=ids, use_cache=False, return_dict=True).logits


def load_fla() -> tuple[ModuleType | None, str | None]:
    """``(fla.models, None)``, or ``(None, reason)`` when fla is missing or fails to import."""
    if importlib.util.find_spec("fla") is None:
        return None, "fla not installed"
    try:
        import fla.models as fla_models
    except Exception as err:  # noqa: BLE001 - any import failure makes the fla rows unavailable
        return None, f"fla import failed: {type(err).__name__}: {scaling._first_line(err)}"
    return fla_models, None


def fla_version() -> str | None:
    """The installed flash-linear-attention version, if any."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flash-linear-attention")
    except PackageNotFoundError:
        return None


def build_row(
    row: str, vocab: int, fla_models: ModuleType | None
) -> tuple[nn.Module, Any]:
    """A fresh model of ``row`` (seeded; a ``+graph`` row: its base row's) and the LM config
    whose optimizer, precision and seed its training step uses (its own for the kizashi rows,
    ``phase2_small``'s for fla)."""
    row = base_row(row)
    name = row if row in KIZASHI_ROWS else TARGET_ROW
    config = load_lm_config(scaling.CONFIG_DIR / f"{name}.yaml")
    torch.manual_seed(config.seed)
    if row in KIZASHI_ROWS:
        return build_lm(config, vocab), config
    if fla_models is None:
        raise RuntimeError("fla not installed")
    config_name, model_name, fields = FLA_CONFIGS[row]
    fla_config = getattr(fla_models, config_name)(**fields, **FLA_COMMON, vocab_size=vocab)
    return FlaLogits(getattr(fla_models, model_name)(fla_config)), config


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (shared tensors once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_table(
    rows: Sequence[str], vocab: int, fla_models: ModuleType | None
) -> dict[str, int | None]:
    """Every row's parameter count (built on the CPU) plus the target, logged against it."""
    names = list(dict.fromkeys([TARGET_ROW, *map(base_row, rows)]))
    counts: dict[str, int | None] = {}
    for row in names:
        try:
            counts[row] = count_parameters(build_row(row, vocab, fla_models)[0])
        except Exception as err:  # noqa: BLE001 - reported, the row's cells will fail the same way
            log.info("%-18s parameters: n/a (%s)", row, scaling._first_line(err))
            counts[row] = None
    target = counts[TARGET_ROW]
    log.info("parameter target: %s (%s), tolerance +-%d%%", f"{target:,}" if target else "n/a",
             TARGET_ROW, round(100 * TOLERANCE))
    for row in names:
        if counts[row] is None or not target:
            continue
        deviation = counts[row] / target - 1
        if row not in MATCHED_ROWS:
            verdict = "the target" if row == TARGET_ROW else "its preset, not size-matched"
        else:
            verdict = "ok" if abs(deviation) <= TOLERANCE else "OUTSIDE the tolerance"
        log.info("%-18s parameters: %11s (%+.1f%%, %s)", row, f"{counts[row]:,}", 100 * deviation,
                 verdict)
    return counts


def time_cell(
    row: str,
    seq_len: int,
    *,
    device: torch.device,
    batch: int,
    steps: int,
    warmup: int,
    vocab: int,
    fla_models: ModuleType | None,
) -> dict[str, Any]:
    """One (row, sequence length) cell: ``warmup`` + ``steps`` training steps of a fresh model
    at ``[batch, seq_len]`` (module docstring; a ``+graph`` row replays its step as a CUDA
    graph). Raises on out-of-memory / kernel errors."""
    cuda = device.type == "cuda"
    scaling._free(device)
    with PeakMemory(cuda, interval=0.005, above_entry=True) as memory:
        model, config = build_row(row, vocab, fla_models)
        precision = resolve_precision(config.trainer.precision, "cuda" if cuda else "cpu")
        dtype = scaling.autocast_dtype(precision)
        generator = torch.Generator().manual_seed(config.seed)
        ids = [
            torch.randint(0, vocab, (batch, seq_len + 1), generator=generator).to(device)
            for _ in range(2)
        ]
        model = model.to(device)
        parameters = count_parameters(model)
        seconds, final_loss = scaling.timed_training_steps(
            model, config, ids, device=device, dtype=dtype, steps=steps, warmup=warmup,
            cuda_graph=row.endswith(GRAPH_SUFFIX),
        )
    return {
        "row": row,
        "seq_len": seq_len,
        "status": "ok",
        "parameters": parameters,
        "precision": precision,
        "loss": final_loss,
        "ms_per_step": 1000 * seconds / steps,
        "tokens_per_second": batch * seq_len * steps / seconds,
        "peak_memory_gib": memory.gib,
        "peak_memory_kind": memory.kind,
        "memory_at_start_gib": memory.entry_gib,
    }


def run_row(
    row: str,
    lengths: Sequence[int],
    *,
    device: torch.device,
    batch: int,
    steps: int,
    warmup: int,
    vocab: int,
    fla_models: ModuleType | None,
    unavailable: str | None,
) -> list[dict[str, Any]]:
    """All lengths of one row (ascending). A failing cell records its error and the run goes
    on; after an out-of-memory error the longer lengths are skipped."""
    cells: list[dict[str, Any]] = []
    oom_at: int | None = None
    for seq_len in sorted(lengths):
        base = {"row": row, "seq_len": seq_len}
        if unavailable is not None:
            cell = {**base, "status": "unavailable", "reason": unavailable}
        elif oom_at is not None:
            cell = {**base, "status": "skipped", "reason": f"OOM at {oom_at:,} tokens"}
        else:
            try:
                cell = time_cell(row, seq_len, device=device, batch=batch, steps=steps,
                                 warmup=warmup, vocab=vocab, fla_models=fla_models)
            except scaling.OutOfMemoryError as err:
                cell = {**base, "status": "OOM", "reason": f"OOM: {scaling._first_line(err)}"}
            except Exception as err:  # noqa: BLE001 - any failure is reported in its cell
                message = f"{type(err).__name__}: {scaling._first_line(err)}"
                status = "OOM" if "out of memory" in message.lower() else "error"
                cell = {**base, "status": status, "reason": message}
            # the exception and its frames are gone here: free their memory
            scaling._free(device)
            if cell["status"] != "ok" and device.type == "cuda":
                cell["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                cell["peak_memory_kind"] = "cuda max allocated (at failure)"
            if cell["status"] == "OOM":
                oom_at = seq_len
        cells.append(cell)
        if cell["status"] == "ok":
            log.info("%-18s T=%6d: %9.1f ms/step %12s tokens/s  peak %.3f GiB  loss %.3f", row,
                     seq_len, cell["ms_per_step"], f"{cell['tokens_per_second']:,.0f}",
                     cell["peak_memory_gib"], cell["loss"])
            if cell["memory_at_start_gib"] > 0.01:
                log.info("%-18s T=%6d: %.3f GiB were allocated before the cell began (not counted)",
                         row, seq_len, cell["memory_at_start_gib"])
        else:
            log.info("%-18s T=%6d: %s (%s)", row, seq_len, cell["status"], cell["reason"])
    return cells


def peer_ratios(cells: Sequence[dict[str, Any]], lengths: Sequence[int]) -> list[dict[str, Any]]:
    """Per length: each kizashi row's time and memory over those of the fastest fla peer (of
    either step: eager or ``+graph``)."""
    ratios = []
    for seq_len in sorted(lengths):
        at = {c["row"]: c for c in cells if c["seq_len"] == seq_len and c["status"] == "ok"}
        peers = [cell for row, cell in at.items() if base_row(row) in FLA_ROWS]
        if not peers:
            continue
        peer = min(peers, key=lambda c: c["ms_per_step"])
        for row in at:
            if base_row(row) in KIZASHI_ROWS:
                ratios.append({
                    "row": row,
                    "seq_len": seq_len,
                    "peer": peer["row"],
                    "time_ratio": at[row]["ms_per_step"] / peer["ms_per_step"],
                    "memory_ratio": at[row]["peak_memory_gib"] / peer["peak_memory_gib"],
                })
    return ratios


def results_table(
    cells: Sequence[dict[str, Any]], rows: Sequence[str], lengths: Sequence[int],
    parameters: dict[str, int | None],
) -> str:
    """Markdown: one line per row; per length ms/step, tokens/s and peak GiB (or the error)."""
    lengths = sorted(lengths)
    head = ["row", "parameters"]
    for seq_len in lengths:
        head += [f"{seq_len:,} ms/step", f"{seq_len:,} tokens/s", f"{seq_len:,} peak GiB"]
    lines = ["| " + " | ".join(head) + " |", "| --- | ---: |" + " ---: |" * (3 * len(lengths))]
    for row in rows:
        count = parameters.get(base_row(row))
        line = [row, f"{count:,}" if count else "n/a"]
        for seq_len in lengths:
            cell = next(c for c in cells if c["row"] == row and c["seq_len"] == seq_len)
            if cell["status"] == "ok":
                line += [f"{cell['ms_per_step']:.1f}", f"{cell['tokens_per_second']:,.0f}",
                         f"{cell['peak_memory_gib']:.3f}"]
            else:
                memory = cell.get("peak_memory_gib")
                reason = cell["reason"].replace("|", "/")[:120]
                line += [reason, "–", "–" if memory is None else f">{memory:.3f}"]
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def ratio_table(ratios: Sequence[dict[str, Any]], lengths: Sequence[int]) -> str:
    """Markdown: per kizashi row and length, time and memory over the fastest fla peer."""
    lengths = sorted(lengths)
    lines = [
        "| row | " + " | ".join(f"{n:,}: time / peer, memory / peer" for n in lengths) + " |",
        "| --- |" + " --- |" * len(lengths),
    ]
    for row in dict.fromkeys(r["row"] for r in ratios):
        mine = {r["seq_len"]: r for r in ratios if r["row"] == row}
        line = [row]
        for seq_len in lengths:
            r = mine.get(seq_len)
            line.append("n/a" if r is None else
                        f"{r['time_ratio']:.2f}x, {r['memory_ratio']:.2f}x ({r['peer']})")
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def write_json(path: Path, args: argparse.Namespace, device: torch.device, vocab: int, lengths: Sequence[int],
               parameters: dict[str, int | None], cells: Sequence[dict[str, Any]]) -> None:
    """The run's settings, the cells measured so far and their ratios, as JSON at ``path``."""
    payload = {
        "benchmark": "lm_peers",
        "device": scaling._device_name(device),
        "torch": torch.__version__,
        "fla": fla_version(),
        "python": platform.python_version(),
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "vocab_size": vocab,
        "lengths": sorted(lengths),
        "rows": list(args.rows),
        "rows_done": sorted({c["row"] for c in cells}, key=list(args.rows).index),
        "parameter_target": {"row": TARGET_ROW, "parameters": parameters.get(TARGET_ROW),
                             "tolerance": TOLERANCE},
        "parameters": parameters,
        "fla_configs": {r: {**FLA_CONFIGS[r][2], **FLA_COMMON, "class": FLA_CONFIGS[r][1]} for r in FLA_ROWS},
        "cells": list(cells),
        "ratios_vs_fastest_fla": peer_ratios(cells, lengths),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", default=None,
                        help="comma-separated sequence lengths (default: 1024,8192,65536 on "
                             "CUDA, 64,128 on the CPU)")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of "
                        "%(default)s; a row name + '+graph' (e.g. phase2_small+graph) replays its "
                        "training step as a CUDA graph")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per cell (5; 2 with "
                        "--quick)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per cell (2; 1 "
                        "with --quick)")
    parser.add_argument("--batch", type=int, default=1, help="sequences per step (default 1)")
    parser.add_argument("--quick", action="store_true", help="2 timed steps after 1 warm-up step")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="without CUDA: a CPU smoke test of the kizashi rows")
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    args = parser.parse_args(argv)
    args.steps = args.steps if args.steps is not None else (2 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(r for r in set(args.rows) if base_row(r) not in ROWS)
    if unknown:
        parser.error(f"unknown rows {unknown}; valid: {list(ROWS)}, each also with {GRAPH_SUFFIX!r}")
    if args.steps < 1 or args.batch < 1 or args.warmup < 0:
        parser.error("--steps and --batch must be >= 1, --warmup >= 0")
    if args.lengths is not None:
        args.lengths = [int(n) for n in args.lengths.split(",") if n.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when at least one cell ran, 1 when none did, 2 without CUDA."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.allow_cpu:
        device = torch.device("cpu")
    else:
        log.error("no CUDA device: this benchmark times GPU training steps (fla's kernels need "
                  "CUDA); pass --allow-cpu for a CPU smoke test of the kizashi rows")
        return 2
    lengths = args.lengths or list(GPU_LENGTHS if device.type == "cuda" else CPU_LENGTHS)
    vocab = scaling.VOCAB
    fla_models, fla_reason = load_fla() if any(base_row(r) in FLA_ROWS for r in args.rows) else (None, None)
    if fla_reason is None and device.type != "cuda":
        fla_reason = "fla rows need CUDA (Triton kernels): skipped on the CPU"
    log.info("lm peers on %s, torch %s, fla %s: batch %d, %d warm-up + %d timed steps, vocab %d, "
             "lengths %s", scaling._device_name(device), torch.__version__,
             fla_version() or "not installed", args.batch, args.warmup, args.steps, vocab,
             ",".join(map(str, lengths)))
    parameters = parameter_table(args.rows, vocab, fla_models)
    cells: list[dict[str, Any]] = []
    for row in args.rows:
        cells += run_row(row, lengths, device=device, batch=args.batch, steps=args.steps,
                         warmup=args.warmup, vocab=vocab, fla_models=fla_models,
                         unavailable=fla_reason if base_row(row) in FLA_ROWS else None)
        if args.json is not None:  # after every row: a run cut short keeps what it measured
            write_json(args.json, args, device, vocab, lengths, parameters, cells)
    ratios = peer_ratios(cells, lengths)
    kinds = sorted({c["peak_memory_kind"] for c in cells if c["status"] == "ok"})
    precisions = sorted({c["precision"] for c in cells if c["status"] == "ok"})
    log.info("\n%s\n", results_table(cells, args.rows, lengths, parameters))
    if ratios:
        log.info("against the fastest fla peer at each length (ms/step ratio, peak memory "
                 "ratio; < 1: the kizashi row is faster / smaller)\n%s\n",
                 ratio_table(ratios, lengths))
    else:
        log.info("no ratios: no fla peer ran")
    log.info("batch %d x T tokens per step; precision %s; memory: %s; parameter target %s "
             "(%s) +-%d%%", args.batch, ", ".join(precisions) or "n/a", ", ".join(kinds) or "n/a",
             f"{parameters.get(TARGET_ROW):,}" if parameters.get(TARGET_ROW) else "n/a",
             TARGET_ROW, round(100 * TOLERANCE))
    if args.json is not None:
        log.info("JSON: %s", args.json)
    return 0 if any(c["status"] == "ok" for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
