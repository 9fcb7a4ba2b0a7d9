"""LM training-step throughput and peak memory against sequence length: BK-Core Phase 1
small, Phase 2 small and the causal Transformer of equal parameter count.

Every model is built exactly as ``kizashi lm train`` builds it from its config
(``configs/lm/{phase1,phase2,transformer}_small.yaml``, :func:`kizashi.jobs.lm.build_lm`
with the character vocabulary of tiny-Shakespeare, 65). For each sequence length ``T`` of
``--seq-lens`` it times the full training step of :class:`kizashi.jobs.lm.LMModule` on
random ids ``[--batch, T + 1]``: forward and next-token cross-entropy under the precision
``kizashi lm train`` resolves from the config (``auto``: bf16 autocast on a CUDA device with
bf16, float32 otherwise), backward, gradient-norm clipping to ``optimizer.grad_clip``, the
AdamW step of ``LMModule.configure_optimizers`` and its scheduler step. ``--warmup`` untimed
steps, then ``--steps`` timed ones (wall time, the device synchronized before and after).
Reported per case: ms per step, tokens/s (``batch x T x steps / seconds``) and the peak
memory of the whole case (model, gradients, AdamW state, activations): the CUDA allocator's
``max_memory_allocated`` after ``reset_peak_memory_stats`` less what was allocated when the
case began, or on CPU the sampled peak RSS of the process (both through :class:`kizashi.profiling.PeakMemory`).

No model has a position table or a maximum length: the BK models have no context-length
field (the zeta position code is computed for any length) and the Transformer's positions
are sinusoidal, so no override is needed for 64k.
An out-of-memory case is reported as ``OOM``, its memory freed, and the model's longer
lengths are skipped (``skipped``); any other error is reported as ``error`` the same way.
``--attention math`` forces PyTorch's math SDPA kernel (materialized ``T x T`` scores, the
textbook O(T^2) memory); the default lets PyTorch pick (flash / memory-efficient on CUDA,
whose memory is linear in T while the time stays quadratic).

Prints a markdown table and writes JSON to ``--out``::

    python benchmarks/bench_lm_scaling.py                                   # CUDA if present
    python benchmarks/bench_lm_scaling.py --device cpu --seq-lens 64,128 --steps 2   # smoke test
    python benchmarks/bench_lm_scaling.py --attention math --out artifacts/bench/lm_scaling_math.json

On the accelerator machine (no ``kizashi`` install; polars / pydantic from the wheels)::

    source artifacts/device/setup.sh && python3 benchmarks/bench_lm_scaling.py --out $OUT/lm_scaling.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from kizashi.config import load_lm_config
from kizashi.jobs.lm import build_lm
from kizashi.profiling import PeakMemory
from kizashi.training.cuda_graph import GraphedTrainingStep
from kizashi.training.lm_module import LMModule
from kizashi.training.runtime import resolve_precision
from kizashi.training.train_step import TrainingStep

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "lm"
MODELS = ("phase1_small", "phase2_small", "transformer_small")
VOCAB = 65  # tiny-Shakespeare's characters
DEFAULT_OUT = Path("artifacts/bench/lm_scaling.json")
OutOfMemoryError = getattr(
    torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError
)  # torch < 2.5: cuda's


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning precision string (None: no autocast)."""
    if precision in ("32-true", "32", "64-true", "64"):
        return None
    if precision in ("bf16-mixed", "bf16"):
        return torch.bfloat16
    raise ValueError(f"precision {precision!r}: this benchmark mirrors bf16-mixed and 32-true only")


@contextlib.contextmanager
def attention_kernel(kind: str) -> Iterator[None]:
    """``auto``: PyTorch's choice of SDPA kernel; ``math``: the math kernel only."""
    if kind == "auto":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lm_training_step(
    model: torch.nn.Module,
    config: Any,
    *,
    device: torch.device,
    dtype: torch.dtype | None,
    eager_steps: int | None = None,
) -> tuple[LMModule, TrainingStep]:
    """``(module, step)``: ``model`` (on ``device``) inside :class:`LMModule` with ``config``'s
    optimizer settings (an ``LMConfig``'s, or any object with ``optimizer.lr`` /
    ``weight_decay`` / ``warmup_steps`` / ``grad_clip`` and ``trainer.max_steps``), and one
    training step of its next-token loss with AdamW, the schedule, gradient clipping and
    autocast to ``dtype`` (none: float32). ``eager_steps`` given: a
    :class:`GraphedTrainingStep` (that many eager calls, then recorded and replayed); else an
    eager :class:`TrainingStep`."""
    opt = config.optimizer
    module = LMModule(model, opt.lr, opt.weight_decay, opt.warmup_steps, config.trainer.max_steps).to(device)
    module.train()
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    clip = opt.grad_clip or None
    parameters = list(model.parameters())
    if eager_steps is not None:
        step = GraphedTrainingStep(module._loss, parameters, optimizer, scheduler, grad_clip=clip,
                                   autocast_dtype=dtype, eager_steps=eager_steps)
    else:
        step = TrainingStep(module._loss, parameters, optimizer, scheduler, grad_clip=clip,
                            autocast_dtype=dtype, device_type=device.type)
    return module, step


def timed_training_steps(
    model: torch.nn.Module,
    config: Any,
    ids: Sequence[torch.Tensor],
    *,
    device: torch.device,
    dtype: torch.dtype | None,
    steps: int,
    warmup: int,
    context: Any = contextlib.nullcontext,
    cuda_graph: bool = False,
) -> tuple[float, float]:
    """(seconds of ``steps`` timed training steps, the last step's loss) of ``model`` (on
    ``device``) inside :class:`LMModule` with ``config``'s optimizer (an ``LMConfig``):
    next-token loss of ``ids[i % len(ids)]`` ``[B, T + 1]`` under autocast to ``dtype`` (none:
    float32) and ``context()``, backward, gradient clipping, the AdamW and scheduler steps;
    ``warmup`` untimed steps first, the device synchronized around the timed ones.

    ``cuda_graph``: the step runs through :class:`~kizashi.training.cuda_graph.GraphedTrainingStep`
    (forward, loss, backward and clipping replayed as one CUDA graph; AdamW and the schedule
    eager): the ``warmup`` steps (at least 1) run eagerly, one more untimed step records the
    graph, and the timed steps are replays."""
    eager_steps = max(1, warmup)
    _, train_step = lm_training_step(model, config, device=device, dtype=dtype,
                                     eager_steps=eager_steps if cuda_graph else None)
    if cuda_graph:
        warmup = eager_steps + 1  # the eager steps, then the step that records the graph

    def step(index: int) -> torch.Tensor:
        with context():
            return train_step(ids[index % len(ids)])

    for index in range(warmup):
        step(index)
    _sync(device)
    started = time.perf_counter()
    loss = None
    for index in range(steps):
        loss = step(warmup + index)
    _sync(device)
    return time.perf_counter() - started, float(loss) if loss is not None else float("nan")


def time_case(
    model_name: str,
    seq_len: int,
    *,
    device: torch.device,
    batch: int = 1,
    steps: int = 5,
    warmup: int = 2,
    attention: str = "auto",
    vocab: int = VOCAB,
    config_dir: Path = CONFIG_DIR,
) -> dict[str, Any]:
    """One (model, sequence length) case: a fresh model from ``config_dir/<model_name>.yaml``,
    ``warmup`` + ``steps`` training steps at ``[batch, seq_len]``. Raises
    ``torch.OutOfMemoryError`` when the device runs out (the caller frees the memory)."""
    config = load_lm_config(config_dir / f"{model_name}.yaml")
    precision = resolve_precision(
        config.trainer.precision, "cuda" if device.type == "cuda" else "cpu"
    )
    dtype = autocast_dtype(precision)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    ids = [torch.randint(0, vocab, (batch, seq_len + 1), generator=generator) for _ in range(2)]
    cuda = device.type == "cuda"
    _free(device)
    with PeakMemory(cuda, interval=0.005, above_entry=True) as memory:
        model = build_lm(config, vocab).to(device)
        n_parameters = sum(p.numel() for p in model.parameters())
        seconds, final_loss = timed_training_steps(
            model, config, [x.to(device) for x in ids], device=device, dtype=dtype, steps=steps,
            warmup=warmup, context=lambda: attention_kernel(attention),
        )
    reserved = torch.cuda.max_memory_reserved(device) / 2**30 if cuda else None
    return {
        "model": model_name,
        "seq_len": seq_len,
        "status": "ok",
        "batch": batch,
        "steps": steps,
        "parameters": n_parameters,
        "precision": precision,
        "loss": final_loss,
        "ms_per_step": 1000 * seconds / steps,
        "tokens_per_second": batch * seq_len * steps / seconds,
        "peak_memory_gib": memory.gib,
        "peak_reserved_gib": reserved,
        "peak_memory_kind": memory.kind,
        "memory_at_start_gib": memory.entry_gib,
    }


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:300]


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_benchmark(
    models: Sequence[str] = MODELS,
    seq_lens: Sequence[int] = (1024, 8192, 65536),
    *,
    device: torch.device | str = "cpu",
    batch: int = 1,
    steps: int = 5,
    warmup: int = 2,
    attention: str = "auto",
    out: Path | str | None = DEFAULT_OUT,
    config_dir: Path = CONFIG_DIR,
    echo: bool = True,
) -> dict[str, Any]:
    """Every model at every length (ascending; after an OOM or error a model's longer lengths
    are skipped); returns the JSON payload and writes it to ``out`` (unless None)."""
    device = torch.device(device)
    rows: list[dict[str, Any]] = []
    for model_name in models:
        failed: str | None = None
        for seq_len in sorted(seq_lens):
            base = {"model": model_name, "seq_len": seq_len, "batch": batch}
            if failed is not None:
                rows.append(
                    {**base, "status": "skipped", "reason": f"{failed} at a shorter length"}
                )
                if echo:
                    print(
                        f"{model_name:>18} T={seq_len:>6}: skipped ({failed} at a shorter length)",
                        flush=True,
                    )
                continue
            row: dict[str, Any] | None = None
            try:
                row = time_case(
                    model_name,
                    seq_len,
                    device=device,
                    batch=batch,
                    steps=steps,
                    warmup=warmup,
                    attention=attention,
                    config_dir=config_dir,
                )
            except OutOfMemoryError as err:
                row = {**base, "status": "OOM", "reason": _first_line(err)}
            except (
                RuntimeError
            ) as err:  # e.g. a kernel refusing the size; cuBLAS / cuDNN out of memory
                status = "OOM" if "out of memory" in str(err).lower() else "error"
                row = {
                    **base,
                    "status": status,
                    "reason": f"{type(err).__name__}: {_first_line(err)}",
                }
            # the exception (and its frames' tensors) is gone here: free the memory
            _free(device)
            if row["status"] != "ok":
                failed = row["status"]
                if device.type == "cuda":
                    row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                    row["peak_memory_kind"] = "cuda max allocated (at failure)"
            rows.append(row)
            if echo:
                if row["status"] == "ok":
                    memory = (
                        f"{row['peak_memory_gib']:.3f} GiB"
                        if row["peak_memory_gib"] is not None
                        else "n/a"
                    )
                    print(
                        f"{model_name:>18} T={seq_len:>6}: {row['ms_per_step']:9.1f} ms/step "
                        f"{row['tokens_per_second']:12,.0f} tokens/s  peak {memory}",
                        flush=True,
                    )
                else:
                    print(
                        f"{model_name:>18} T={seq_len:>6}: {row['status']} ({row['reason']})",
                        flush=True,
                    )
    parameters = {r["model"]: r["parameters"] for r in rows if "parameters" in r}
    payload = {
        "benchmark": "lm_scaling",
        "device": _device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "attention": attention,
        "vocab_size": VOCAB,
        "seq_lens": sorted(seq_lens),
        "models": {
            name: {
                "config": str((config_dir / f"{name}.yaml").relative_to(REPO))
                if (config_dir / f"{name}.yaml").is_relative_to(REPO)
                else str(config_dir / f"{name}.yaml"),
                "parameters": parameters.get(name),
                "results": [r for r in rows if r["model"] == name],
            }
            for name in models
        },
        "rows": rows,
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return payload


def _json_default(value: Any) -> Any:
    return str(value)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def markdown_table(payload: dict[str, Any]) -> str:
    """One row per (model, sequence length)."""
    lines = [
        "| model | parameters | seq len | status | ms/step | tokens/s | peak memory (GiB) |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, entry in payload["models"].items():
        parameters = f"{entry['parameters']:,}" if entry["parameters"] else "n/a"
        for row in entry["results"]:
            memory = row.get("peak_memory_gib")
            if row["status"] == "ok":
                cells = [
                    f"{row['ms_per_step']:.1f}",
                    f"{row['tokens_per_second']:,.0f}",
                    "n/a" if memory is None else f"{memory:.3f}",
                ]
            else:  # at an OOM: the peak reached before the failure
                cells = ["–", "–", "–" if memory is None else f">{memory:.3f}"]
            lines.append(
                f"| {name} | {parameters} | {row['seq_len']:,} | {row['status']} | {' | '.join(cells)} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated config names in configs/lm (default: %(default)s)",
    )
    parser.add_argument(
        "--seq-lens", default="1024,8192,65536", help="comma-separated (default: %(default)s)"
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    parser.add_argument(
        "--attention",
        choices=("auto", "math"),
        default="auto",
        help="SDPA kernel of the Transformer: PyTorch's choice, or the math kernel only",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="JSON output (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.warmup < 0:
        parser.error("--steps and --batch must be >= 1, --warmup >= 0")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    seq_lens = [int(s) for s in args.seq_lens.split(",") if s.strip()]
    print(
        f"lm scaling on {_device_name(device)}, torch {torch.__version__}: batch {args.batch}, "
        f"{args.warmup} warm-up + {args.steps} timed steps, attention {args.attention}",
        flush=True,
    )
    payload = run_benchmark(
        models,
        seq_lens,
        device=device,
        batch=args.batch,
        steps=args.steps,
        warmup=args.warmup,
        attention=args.attention,
        out=args.out,
    )
    precisions = sorted({r["precision"] for r in payload["rows"] if r.get("precision")})
    print()
    print(markdown_table(payload))
    print()
    print(
        f"precision: {', '.join(precisions) or 'n/a'}; memory: "
        f"{next((r['peak_memory_kind'] for r in payload['rows'] if r['status'] == 'ok'), 'n/a')}; "
        f"JSON: {args.out}"
    )
    return 0 if any(r["status"] == "ok" for r in payload["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
