"""Trainer set-up shared by the Lightning jobs: precision, logger, logging interval,
checkpoint position, the validation sampler of several devices, and the error a job raises
when a stop signal ended training after a checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from kizashi.errors import ConfigError, KizashiError


class TrainingInterrupted(KizashiError):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; resume with ``--resume``."""

    def __init__(self, message: str, signal_name: str | None, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.checkpoint = checkpoint


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``auto`` -> ``bf16-mixed`` when training runs on a CUDA device with bf16, else
    ``32-true``; anything else is passed to Lightning as is."""
    if precision != "auto":
        return precision
    on_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_cuda and torch.cuda.is_bf16_supported() else "32-true"


def make_logger(kind: str, save_dir: Path, name: str) -> Any:
    """The Lightning logger of ``trainer.logger``: TensorBoard (default), W&B (needs the
    ``wandb`` package), or none."""
    if kind == "none":
        return False
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(save_dir), name=name, default_hp_metric=False)
    if kind == "wandb":
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError(
                "trainer.logger: wandb requested but the wandb package is not installed "
                "(pip install wandb, or use logger: tensorboard)"
            )
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(project="kizashi", name=name, save_dir=str(save_dir))
    raise ConfigError(f"trainer.logger: unknown logger {kind!r} (tensorboard, wandb, none)")


def batches_per_epoch(n_batches: int, limit: int | float | None = None) -> int:
    """The training batches Lightning runs per epoch: ``n_batches`` (the loader's length)
    cut by ``limit_train_batches`` (an int: that many; a float: that share, at least 1)."""
    if limit is None:
        return n_batches
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(n_batches, limit)
    return min(n_batches, max(1, int(n_batches * float(limit))))


def log_every_n_steps(n_batches: int, limit: int | float | None = None, default: int = 50) -> int:
    """``Trainer(log_every_n_steps=...)``: ``default``, or the epoch's batch count when that is
    smaller (at least 1), so that a short epoch is still logged and Lightning does not warn
    that the training batches are fewer than the logging interval."""
    return max(1, min(default, batches_per_epoch(n_batches, limit)))


def checkpoint_position(path: str | Path) -> tuple[int, int]:
    """(epoch, batches of that epoch already trained) of a Lightning checkpoint, read from
    its fit-loop progress."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    fit_loop = checkpoint["loops"]["fit_loop"]
    epoch = int(fit_loop["epoch_progress"]["current"]["processed"])
    batches = int(fit_loop["epoch_loop.batch_progress"]["current"]["processed"])
    return epoch, batches


def every_rank_sampler(dataset: torch.utils.data.Dataset, distributed: bool) -> torch.utils.data.Sampler | None:
    """The validation sampler of a job on ``distributed`` (several) devices: every rank reads
    the whole ``dataset`` in order. A ``DistributedSampler`` of one replica, which Lightning
    keeps as it is (it replaces other samplers with shards that pad the last one by repeating
    items), so metrics reduced over the ranks are exactly the dataset's. None on one device."""
    if not distributed:
        return None
    return torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=False)


__all__ = ["TrainingInterrupted", "batches_per_epoch", "checkpoint_position", "every_rank_sampler",
           "log_every_n_steps", "make_logger", "resolve_precision"]
