"""What fitting and scoring a day-panel forecaster (ATFT-GAT-FAN) with Lightning takes, shared
by ``kizashi train`` (one fit per walk-forward fold) and ``kizashi fit-final`` / ``predict`` /
``monitor`` (one fit on every labelled day, then scoring new days):

    TrainConfig + the data's feature count and horizons
      -> build_model            the registry model (n_features / horizons / window from the data)
      -> loss_config, forecast_module   ForecastModule with the config's loss and optimizer
      -> HorizonTargets, day_batch_loader   batches of days (targets cut to the horizons)
      -> feature_panel          the device-resident feature panel, when the config asks for it
      -> training_callbacks, build_trainer   gradient audit, NaN guard, OOM recovery, EMA,
                                early stopping (with validation only); the Lightning Trainer
      -> predicting_weights     the weights that predict (the EMA's when the EMA is on)
      -> predict_points         point forecasts [N, H] of day batches, no autocast, no Trainer

Nothing here reads or writes a run directory: the jobs decide where things go.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, RichProgressBar
from torch.utils.data import DataLoader, Sampler

from kizashi.config import TrainConfig
from kizashi.datasets import DayPanelCache, DayPanelDataset, DeviceFeaturePanel, collate_days, panel_bytes
from kizashi.datasets.workers import ignore_stop_signals
from kizashi.errors import ConfigError
from kizashi.models import create_model
from kizashi.models.losses import LossConfig
from kizashi.training.callbacks import EMACallback, GradientFlowAudit, NonFiniteGuard, OOMRecovery
from kizashi.training.checkpoint_io import AtomicCheckpointIO
from kizashi.training.module import ForecastModule
from kizashi.training.runtime import log_every_n_steps, make_logger, resolve_precision

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# data feeding
# --------------------------------------------------------------------------------------


class HorizonTargets:
    """Collate function: :func:`~kizashi.datasets.collate_days`, then ``y`` / ``y_mask``
    cut to the model's horizons (``columns`` of the cache's ``H``), and with
    ``centre_ranks`` the per-day percentile ranks (in [0, 1]) centred on 0 (``rank - 0.5``,
    invalid entries stay 0). Picklable (DataLoader workers)."""

    def __init__(self, columns: Sequence[int], centre_ranks: bool) -> None:
        self.columns = [int(c) for c in columns]
        self.centre_ranks = centre_ranks

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_days(items)
        index = torch.tensor(self.columns, dtype=torch.int64)
        y, y_mask = batch["y"].index_select(1, index), batch["y_mask"].index_select(1, index)
        if self.centre_ranks:
            y = torch.where(y_mask, y - 0.5, torch.zeros_like(y))
        return {**batch, "y": y, "y_mask": y_mask}


def day_batch_loader(
    dataset: DayPanelDataset,
    days_per_batch: int,
    collate: HorizonTargets,
    num_workers: int,
    sampler: Sampler[int] | None = None,
    persistent: bool = False,
) -> DataLoader:
    """Batches of ``days_per_batch`` days of ``dataset`` in ``sampler``'s order (in order
    without one); workers ignore stop signals (the main process handles them)."""
    return DataLoader(
        dataset,
        batch_size=days_per_batch,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=persistent and num_workers > 0,
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
    )


def feature_panel(config: TrainConfig, cache: DayPanelCache) -> DeviceFeaturePanel | None:
    """The device-resident feature panel when ``trainer.panel_on_device`` asks for one
    ("on"; "auto": on CUDA when it takes at most half of the GPU's memory), else None."""
    setting, tcfg = config.trainer.panel_on_device, config.trainer
    needed = panel_bytes(cache, config.window)
    if setting == "off":
        return None
    if setting == "auto":
        on_cuda = tcfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        if not on_cuda:
            return None
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        if needed > total // 2:
            log.info(
                "feature panel (%.1f GB) exceeds half of the GPU's %.1f GB: windows are built by the "
                "loader on the CPU (trainer.panel_on_device: on forces the device panel)", needed / 1e9, total / 1e9,
            )
            return None
    log.info("feature panel on the training device (%.2f GB); loaders carry indices only", needed / 1e9)
    return DeviceFeaturePanel(cache, config.window)


# --------------------------------------------------------------------------------------
# model and module
# --------------------------------------------------------------------------------------


def loss_config(config: TrainConfig, horizons: list[int]) -> LossConfig:
    """The loss of ``config.loss`` for ``horizons`` (one horizon weight per horizon)."""
    weights = config.loss.horizon_weights
    if weights is not None and len(weights) != len(horizons):
        raise ConfigError(
            f"loss.horizon_weights has {len(weights)} entries for {len(horizons)} horizons {horizons}"
        )
    try:
        return LossConfig(
            huber_delta=config.loss.huber_delta,
            horizon_weights=tuple(weights) if weights is not None else None,
            quantile_weight=config.loss.quantile_weight,
            rank_weight=config.loss.rank_weight,
        )
    except ValueError as err:
        raise ConfigError(f"loss: {err}") from None


def build_model(config: TrainConfig, n_features: int, horizons: list[int]) -> torch.nn.Module:
    """The registry model of ``config.model`` reading ``n_features`` features over
    ``config.window`` days and forecasting ``horizons``; an override that disagrees with the
    data is a ConfigError."""
    overrides = dict(config.model.overrides)
    data_values = {"n_features": n_features, "horizons": tuple(horizons), "window": config.window}
    for key, value in data_values.items():
        given = overrides.get(key)
        if given is not None and (tuple(given) if isinstance(given, list | tuple) else given) != value:
            raise ConfigError(
                f"model.overrides.{key} = {given!r} disagrees with the data ({value!r}); "
                "set horizons / window at the top level and leave n_features to the dataset"
            )
        overrides[key] = value
    try:
        return create_model(config.model.name, preset=config.model.preset, **overrides)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None


def forecast_module(config: TrainConfig, model: torch.nn.Module, horizons: list[int], loss: LossConfig) -> ForecastModule:
    """``model`` in a :class:`ForecastModule` with ``config.optimizer``'s settings."""
    return ForecastModule(
        model,
        horizons,
        loss,
        lr=config.optimizer.lr,
        weight_decay=config.optimizer.weight_decay,
        lr_factors=config.optimizer.lr_factors,
        warmup_steps=config.optimizer.warmup_steps,
    )


# --------------------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------------------


def multi_device(devices: int | str) -> bool:
    """Whether ``trainer.devices`` asks for more than one device (DDP)."""
    if isinstance(devices, int):
        return devices > 1 or devices == -1
    text = str(devices).strip()
    if text.lstrip("-").isdigit():
        return int(text) > 1 or int(text) == -1
    return "," in text  # a device list "0,1"; "auto" lets Lightning decide


def is_global_zero() -> bool:
    """Whether this process is rank 0 (Lightning reads the rank from the environment that
    its DDP launcher sets for the other ranks)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def val_check_interval(value: float) -> float | int:
    """Lightning reads a float as a share of the epoch and an int as a number of batches."""
    return int(value) if value > 1 and float(value).is_integer() else value


def training_callbacks(config: TrainConfig, horizons: list[int], with_validation: bool) -> list[Callback]:
    """The training callbacks of a fit (checkpoint callbacks are added after them): gradient
    audit, NaN guard, OOM recovery, the EMA when ``trainer.ema_decay`` is set, and early
    stopping on the validation RankIC of the first horizon when there is validation."""
    tcfg = config.trainer
    callbacks: list[Callback] = [GradientFlowAudit(), NonFiniteGuard(tcfg.nan_guard_limit), OOMRecovery()]
    if tcfg.ema_decay is not None:
        callbacks.append(EMACallback(tcfg.ema_decay))
    if with_validation and tcfg.early_stopping_patience is not None:
        callbacks.append(
            EarlyStopping(
                monitor=f"val/rank_ic_{horizons[0]}d", mode="max", patience=tcfg.early_stopping_patience,
                check_finite=False,
            )
        )
    return callbacks


def build_trainer(
    config: TrainConfig,
    *,
    root_dir: Path,
    logs_dir: Path,
    log_name: str,
    callbacks: list[Callback],
    checkpoint_callbacks: list[Callback],
    n_train_batches: int,
    max_epochs: int | None = None,
    accelerator: str | None = None,
    devices: int | str | None = None,
    enable_checkpointing: bool = True,
) -> L.Trainer:
    """The Lightning Trainer of ``config.trainer`` (``max_epochs`` / ``accelerator`` /
    ``devices`` replace the config's when given): checkpoints under ``root_dir``, the logger's
    files under ``logs_dir / log_name``, ``callbacks`` then ``checkpoint_callbacks``."""
    tcfg = config.trainer
    accelerator = accelerator if accelerator is not None else tcfg.accelerator
    devices = devices if devices is not None else tcfg.devices
    logger = make_logger(tcfg.logger, logs_dir, log_name)
    callbacks = list(callbacks)
    if logger is not False:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    interactive = sys.stderr.isatty()
    if interactive:
        callbacks.append(RichProgressBar())
    limit = tcfg.limit_train_batches
    if limit is not None:
        n_train_batches = min(n_train_batches, int(limit) if isinstance(limit, int) else max(1, int(n_train_batches * limit)))
    return L.Trainer(
        default_root_dir=str(root_dir),
        max_epochs=max_epochs if max_epochs is not None else tcfg.max_epochs,
        accelerator=accelerator,
        devices=devices,
        strategy="ddp" if multi_device(devices) else "auto",
        precision=resolve_precision(tcfg.precision, accelerator),
        gradient_clip_val=config.optimizer.grad_clip,
        gradient_clip_algorithm="norm",
        logger=logger,
        # ModelCheckpoint then SignalCheckpoint (Lightning runs checkpoint callbacks last, in
        # this order): last.ckpt holds the end-of-epoch state of every other callback
        callbacks=[*callbacks, *checkpoint_callbacks],
        enable_checkpointing=enable_checkpointing,
        enable_progress_bar=interactive,
        enable_model_summary=False,
        limit_train_batches=limit if limit is not None else 1.0,
        val_check_interval=val_check_interval(tcfg.val_check_interval),
        log_every_n_steps=log_every_n_steps(n_train_batches),
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO()],
    )


@contextlib.contextmanager
def fit_warnings_filtered() -> Iterator[None]:
    """Lightning's advice that does not apply here: the cache is memory-mapped, so loader
    workers are optional, and the resumable sampler handles mid-epoch restarts."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
        warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
        # the fold directory holds feature_stats.json; stale checkpoints were removed above
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
        # lightning 2.6's own use of a torch 2.13 deprecation
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
        yield


# --------------------------------------------------------------------------------------
# the weights that predict, and predicting with them
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def predicting_weights(module: ForecastModule, trainer: L.Trainer) -> Iterator[torch.nn.Module]:
    """``module.model`` holding the weights that predict: the EMA's while the trainer has an
    EMA callback (swapped in for the ``with`` block, then back), else the live ones."""
    ema = next((c for c in trainer.callbacks if isinstance(c, EMACallback)), None)
    if ema is not None:
        ema.swap_in(module)
    try:
        yield module.model
    finally:
        if ema is not None:
            ema.swap_out(module)


def save_predicting_weights(module: ForecastModule, trainer: L.Trainer, folder: Path, metadata: dict[str, Any]) -> None:
    """The weights that predict (:func:`predicting_weights`) as a pretrained folder."""
    with predicting_weights(module, trainer) as model:
        model.save_pretrained(folder, metadata=metadata)


def inference_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a torch device; None or "auto": CUDA when available, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_BATCH_TENSORS = ("x", "mask", "edge_index", "edge_attr", "batch_day", "node_ptr", "codes")


@torch.no_grad()
def predict_points(
    model: torch.nn.Module, batches: Iterable[Mapping[str, Any]], device: str | torch.device | None = None,
    *, feature_weights: bool = False,
) -> dict[str, np.ndarray]:
    """Point forecasts of day batches (:func:`~kizashi.datasets.collate_days` layout, with
    ``x``) in float32, without autocast, ``model`` in eval mode on ``device`` (default:
    :func:`inference_device`).

    Returns ``day`` [N] int64 (the batch's day index of each node), ``code`` [N] int64 (the
    panel's code index), ``point`` [N, H] float32; with ``feature_weights`` also
    ``feature_weight`` [F] float64: the model's variable-selection weights
    (``variable_weights`` [N, L, F]) averaged over every node and observed window day.
    """
    device = inference_device(device)
    model = model.to(device).eval()
    days, codes, points = [], [], []
    weight_sum: torch.Tensor | None = None
    weight_count = 0.0
    for batch in batches:
        inputs = {k: batch[k].to(device, non_blocking=True) for k in _BATCH_TENSORS if k in batch}
        outputs = model(inputs)
        day = torch.as_tensor(batch["days"], dtype=torch.int64)[batch["batch_day"].cpu()]
        days.append(day.numpy())
        codes.append(batch["codes"].cpu().numpy())
        points.append(outputs["point"].float().cpu().numpy())
        if feature_weights and "variable_weights" in outputs:
            observed = inputs["mask"].to(torch.float64).unsqueeze(-1)  # [N, L, 1]
            part = (outputs["variable_weights"].to(torch.float64) * observed).sum(dim=(0, 1)).cpu()
            weight_sum = part if weight_sum is None else weight_sum + part
            weight_count += float(observed.sum())
    out = {
        "day": np.concatenate(days) if days else np.empty(0, np.int64),
        "code": np.concatenate(codes) if codes else np.empty(0, np.int64),
        "point": np.concatenate(points) if points else np.empty((0, 0), np.float32),
    }
    if feature_weights:
        out["feature_weight"] = (weight_sum / max(weight_count, 1.0)).numpy() if weight_sum is not None else None
    return out


__all__ = [
    "HorizonTargets",
    "build_model",
    "build_trainer",
    "day_batch_loader",
    "feature_panel",
    "fit_warnings_filtered",
    "forecast_module",
    "inference_device",
    "is_global_zero",
    "loss_config",
    "multi_device",
    "predict_points",
    "predicting_weights",
    "save_predicting_weights",
    "training_callbacks",
    "val_check_interval",
]
