"""`kizashi lm train`: character- or byte-level language modelling with the shared trainer.

    text --Tokenizer (char | byte)--> ids --split (first 1 - val_fraction | rest)-->
    TokenWindows (train: every ``train_stride`` tokens, shuffled; val: non-overlapping)
    --> a registry model (``bk_phase1``, ``bk_phase2``, ...: ids [B, T] -> logits [B, T, V])
    --> Lightning fit: LMModule (next-token cross-entropy, AdamW over param_groups, linear
        warm-up then cosine decay to ``max_steps`` when it is set), the gradient-flow audit
        on step 1, the non-finite guard, best.ckpt on val/loss, last.ckpt on SIGINT/SIGTERM
        and after every validation; ``--resume`` continues from last.ckpt
    --> metrics.csv, lm.json

The validation loss is the mean next-token cross-entropy over every validation token in
nats per token: per character with the ``char`` tokenizer (per byte with ``byte``; the
same for ASCII text); ``val_bits`` = nats / ln 2.

Output directory ``OUT``::

    tokenizer.json    the tokenizer (kind, alphabet)
    metrics.csv       one row per validation: epoch, step, train_loss (mean since the last
                      row), val_loss (nats/token), val_bits, tokens_per_second (training
                      tokens over training time since the last row), elapsed_seconds
    lm.json           parameters, best/last validation loss, tokens/s, peak memory, config
    checkpoints/      best.ckpt, last.ckpt
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException

from kizashi.atomic import write_csv_atomic, write_json_atomic
from kizashi.config import LMTrainConfig, dump_config
from kizashi.datasets.text import Tokenizer, TokenWindows, read_text, split_tokens
from kizashi.datasets.workers import ignore_stop_signals
from kizashi.errors import ConfigError
from kizashi.models import config_fields, create_model
from kizashi.profiling import PeakMemory
from kizashi.training.callbacks import (
    GradientFlowAudit,
    NonFiniteGuard,
    SignalCheckpoint,
)
from kizashi.training.checkpoint_io import AtomicCheckpointIO
from kizashi.training.callbacks.lm_recorder import METRIC_COLUMNS, LMRecorder
from kizashi.training.lm_module import LMModule
from kizashi.training.runtime import TrainingInterrupted, make_logger, resolve_precision

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "lm.json"


@dataclass
class LMResult:
    out_dir: Path
    metrics: list[dict[str, float]]
    summary: dict[str, Any]


def build_lm(config: LMTrainConfig, vocab_size: int) -> torch.nn.Module:
    """The registry model with the tokenizer's vocabulary (and ``n_seq`` = seq_len where the
    model has that field)."""
    spec = config.model
    fields = config_fields(spec.name)
    overrides = dict(spec.overrides)
    if "vocab_size" not in fields:
        raise ConfigError(f"model {spec.name!r} has no vocab_size field: not a token language model")
    overrides["vocab_size"] = vocab_size
    if "n_seq" in fields:
        overrides.setdefault("n_seq", config.seq_len)
    try:
        return create_model(spec.name, spec.preset, **overrides)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from None


def run_lm_training(config: LMTrainConfig, out_dir: str | Path | None = None, *, resume: bool = False) -> LMResult:
    """Train a token LM on ``config.data.text`` (module docstring)."""
    started = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else Path(config.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.data.text is None:
        raise ConfigError("data.text: no text file given (set it in the YAML or pass --text)")
    L.seed_everything(config.seed, workers=True, verbose=False)
    text = read_text(config.data.text)
    tokenizer = Tokenizer.fit(config.data.tokenizer, text)
    tokenizer.save(out / "tokenizer.json")
    train_ids, val_ids = split_tokens(tokenizer.encode(text), config.data.val_fraction, config.seq_len)
    train = TokenWindows(train_ids, config.seq_len, config.train_stride or max(1, config.seq_len // 2))
    val = TokenWindows(val_ids, config.seq_len)
    model = build_lm(config, tokenizer.vocab_size)
    n_parameters = sum(p.numel() for p in model.parameters())
    log.info("%s: %s tokenizer, vocab %d; %d training / %d validation tokens; %d training windows of %d; "
             "model %s (%s) with %s parameters", config.data.text, tokenizer.kind, tokenizer.vocab_size,
             len(train_ids), len(val_ids), len(train), config.seq_len, config.model.name, config.model.preset,
             f"{n_parameters:,}")
    tcfg, ocfg = config.trainer, config.optimizer
    loader = lambda ds, shuffle: torch.utils.data.DataLoader(  # noqa: E731
        ds, batch_size=tcfg.batch_size, shuffle=shuffle, num_workers=tcfg.num_workers,
        persistent_workers=tcfg.num_workers > 0, drop_last=shuffle and len(ds) > tcfg.batch_size,
        worker_init_fn=ignore_stop_signals)
    module = LMModule(model, ocfg.lr, ocfg.weight_decay, ocfg.warmup_steps, tcfg.max_steps)
    checkpoints = out / "checkpoints"
    last = checkpoints / "last.ckpt"
    if resume and not last.is_file():
        log.warning("--resume: no %s; starting from scratch", last)
    recorder = LMRecorder()
    best = ModelCheckpoint(dirpath=checkpoints, filename="best", monitor="val/loss", mode="min", save_top_k=1)
    signal_checkpoint = SignalCheckpoint(checkpoints)
    callbacks: list[L.Callback] = [GradientFlowAudit(), NonFiniteGuard(tcfg.nan_guard_limit), recorder]
    interactive = sys.stderr.isatty()
    if interactive:
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        default_root_dir=str(out), max_epochs=tcfg.max_epochs, max_steps=tcfg.max_steps or -1,
        max_time={"minutes": tcfg.max_minutes} if tcfg.max_minutes else None,
        accelerator=tcfg.accelerator, devices=tcfg.devices, precision=resolve_precision(tcfg.precision, tcfg.accelerator),
        gradient_clip_val=ocfg.grad_clip, gradient_clip_algorithm="norm",
        logger=make_logger(tcfg.logger, out / "logs", "lm"), callbacks=[*callbacks, best, signal_checkpoint],
        enable_progress_bar=interactive, enable_model_summary=False, num_sanity_val_steps=0,
        val_check_interval=tcfg.val_check_interval,
        limit_train_batches=tcfg.limit_train_batches if tcfg.limit_train_batches is not None else 1.0,
        limit_val_batches=tcfg.limit_val_batches if tcfg.limit_val_batches is not None else 1.0,
        log_every_n_steps=10, plugins=[AtomicCheckpointIO()],
    )
    ckpt_path = str(last) if resume and last.is_file() else None
    fit_started = time.perf_counter()
    with PeakMemory(cuda=trainer.strategy.root_device.type == "cuda") as memory:
        try:
            trainer.fit(module, loader(train, True), loader(val, False), ckpt_path=ckpt_path, weights_only=False)
        except SIGTERMException:
            signal_checkpoint.requested = signal_checkpoint.requested or signal.SIGTERM
        if signal_checkpoint.requested is None and trainer.global_step > (recorder.rows[-1]["step"] if recorder.rows else 0):
            # stopped by max_steps / max_time between validations: score the final weights too,
            # and keep that row in last.ckpt for --resume (which then starts the next epoch)
            trainer.validate(module, loader(val, False), verbose=False)
            trainer.save_checkpoint(last, weights_only=False)
    fit_seconds = time.perf_counter() - fit_started
    write_csv_atomic(out / METRICS_FILE, recorder.rows, METRIC_COLUMNS)
    if signal_checkpoint.requested is not None:
        raise TrainingInterrupted(
            f"LM training interrupted by {signal_checkpoint.signal_name} at step {trainer.global_step}; "
            f"checkpoint: {last if last.is_file() else 'none'}; run again with --resume to continue",
            signal_checkpoint.signal_name, last if last.is_file() else None)
    rows = recorder.rows
    best_row = min(rows, key=lambda r: r["val_loss"]) if rows else {}
    rates = [r["tokens_per_second"] for r in rows if math.isfinite(r["tokens_per_second"])]
    summary = {
        "model": config.model.name, "preset": config.model.preset, "parameters": n_parameters,
        "tokenizer": tokenizer.kind, "vocab_size": tokenizer.vocab_size, "seq_len": config.seq_len,
        "train_tokens": int(len(train_ids)), "val_tokens": int(len(val_ids)),
        "steps": trainer.global_step, "resumed": ckpt_path is not None,
        "best_val_loss": best_row.get("val_loss"), "best_step": best_row.get("step"),
        "last_val_loss": rows[-1]["val_loss"] if rows else None,
        "tokens_per_second": sum(rates) / len(rates) if rates else None,
        "fit_seconds": fit_seconds, "seconds": time.perf_counter() - started,
        "peak_memory_gib": memory.gib, "peak_memory_kind": memory.kind, "config": dump_config(config),
    }
    write_json_atomic(out / SUMMARY_FILE, summary)
    log.info("%s: best validation loss %s nats/token at step %s (%s parameters, %.0f s)", config.model.name,
             summary["best_val_loss"], summary["best_step"], f"{n_parameters:,}", fit_seconds)
    return LMResult(out_dir=out, metrics=rows, summary=summary)
