"""pytorch-forecasting's Temporal Fusion Transformer against kizashi's ATFT-GAT-FAN, same data,
same fold, same run.

Both models learn the 1-day target of the S&P 500 panel (the per-day rank of the next
session's return, centred on 0) from the same features over a 20-session window, on one
walk-forward fold of ``configs/train/atft_gat_fan_sp500.yaml`` (its last: the test days are
the file's last 250 sessions, after a 120-session validation slice and a rolling window of
``--train-days`` training sessions), and predict the fold's test days. Rows in the output:

* ``tft``: ``pytorch_forecasting.TemporalFusionTransformer`` as its users meet it:
  ``TimeSeriesDataSet`` (one group per stock, ``time_idx`` = the session's index in the
  market calendar, missing sessions allowed), ``QuantileLoss``, its own scalers, Adam, the
  best validation-loss checkpoint predicts; hidden size, attention heads, dropout, learning
  rate, gradient clip, epochs and stock-days per optimizer step equal kizashi's (its other
  settings at their defaults, e.g. ``hidden_continuous_size`` 8).
* ``atft_nogat`` / ``atft``: ``kizashi train`` (``run_training``) on the same config with
  the graph attention off / on (GAT off leaves the TFT part: VSN, LSTM, temporal attention,
  FAN/SAN, heads).

Per row: training throughput (stock-days per second of the training part of an epoch,
data loading included, the fastest epoch), every epoch's seconds, peak GPU memory
(``torch.cuda.max_memory_allocated`` over the fit), and the test RankIC (mean over test days
of the Spearman correlation of prediction and the next session's return, one function for
every row: ``kizashi.evaluation.metrics``), its ICIR and t. Then the ratios against ``tft`` measured in this run.

How the TFT sees the data: the row of session ``s`` holds the features of ``s`` and, as
its target, the rank target of session ``s - 1`` (the return from ``s - 1`` to ``s``, known at
``s``'s close); an encoder over ``s - 20 .. s - 1`` (features and past targets) then
predicts the decoder step ``s``, which is kizashi's prediction at ``s - 1`` from the window
ending there: the same information, nothing after the prediction date.

    # the peer needs its own virtualenv (docs/peers.md): pytorch-forecasting 1.8 pins pandas < 3.1
    .venv-tft/bin/python benchmarks/bench_tft_peer.py                           # CUDA if present
    .venv-tft/bin/python benchmarks/bench_tft_peer.py --device cpu --max-batches 20 --epochs 1
    .venv-tft/bin/python benchmarks/bench_tft_peer.py --quick                   # 60 stocks, smoke run

``--max-batches`` limits every epoch to that many optimizer steps (a throughput measure; the
RankIC of such a run is not comparable). The dataset is built once under ``--work`` and
reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from kizashi.config import TrainConfig, load_job_config
from kizashi.datasets import DayPanelCache
from kizashi.datasets.day_panel import fold_day_indices
from kizashi.datasets.store import read_metadata
from kizashi.evaluation.metrics import daily_ic, summarize_ic
from kizashi.jobs.common import ensure_dataset, job_folds
from kizashi.jobs.train import run_training
from kizashi.splits import Fold
from kizashi.training.neural_fit import build_model

log = logging.getLogger("bench_tft_peer")

ROOT = Path(__file__).resolve().parent.parent
TRAIN_CONFIG = ROOT / "configs" / "train" / "atft_gat_fan_sp500.yaml"
QUICK_CODES = 60


@dataclass
class Row:
    """One model's measurements."""

    model: str
    device: str
    parameters: int
    train_stock_days: int  # training samples of one epoch
    epoch_seconds: list[float] = field(default_factory=list)  # training part of each epoch
    stock_days_per_second: float = math.nan  # fastest epoch
    peak_gpu_gib: float = math.nan
    prepare_seconds: float = math.nan  # the TFT's frames and TimeSeriesDataSets (kizashi: in wall_seconds)
    wall_seconds: float = math.nan  # data preparation, fit (validation, checkpoints) and test predictions
    rank_ic: float = math.nan
    icir: float = math.nan
    rank_ic_t: float = math.nan
    test_days: int = 0


class EpochClock(Callback):
    """Seconds and samples of the training part of every epoch: from the epoch's start to
    the end of its last training batch (the device synchronized at both ends; data loading
    included, the validation after it not). ``count(batch)`` = the batch's samples."""

    def __init__(self, count: Callable[[Any], int]) -> None:
        self.count = count
        self.epochs: list[tuple[float, int]] = []
        self._started = 0.0
        self._samples = 0

    @staticmethod
    def _sync(module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(pl_module)
        self._started, self._samples = time.perf_counter(), 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._samples += self.count(batch)
        if batch_idx + 1 == trainer.num_training_batches:
            self._sync(pl_module)
            self.epochs.append((time.perf_counter() - self._started, self._samples))
            log.info("epoch %d: %d stock-days in %.1fs (%.0f/s)", len(self.epochs), self._samples,
                     self.epochs[-1][0], self._samples / self.epochs[-1][0])


# --------------------------------------------------------------------------------------
# shared: config, fold, metric
# --------------------------------------------------------------------------------------


def train_config(args: argparse.Namespace, *, gat: bool, out: Path) -> TrainConfig:
    """The shipped S&P 500 ATFT-GAT-FAN config, on ``--data`` and ``--families``, one horizon,
    one fold (its splits with a rolling window), ``--epochs`` without early stopping."""
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    overrides: dict[str, Any] = {
        "data": {
            "input": {"path": str(args.data), "sectors": str(args.sectors)},
            "features": {"families": families},
            "output": {"dir": str(args.work / "dataset")},
        },
        "horizons": [1],
        "loss": {"horizon_weights": [1.0]},
        "splits": {"n_folds": 1, "train_days": args.train_days},
        "model": {"overrides": {"gat": gat}},
        "trainer": {
            "max_epochs": args.epochs,
            "early_stopping_patience": None,
            "accelerator": "gpu" if args.device == "cuda" else "cpu",
            "num_workers": args.workers,
            "logger": "none",
            "limit_train_batches": args.max_batches,
        },
        "portfolio": {"strategies": {"daily decile": {"kind": "decile"}}},
        "output": {"dir": str(out)},
    }
    return load_job_config(TRAIN_CONFIG, TrainConfig, overrides)


def daily_rank_ic(predictions: pl.DataFrame, cache: DayPanelCache) -> tuple[float, float, float, int]:
    """(mean, ICIR, t, days) of the daily RankIC (``kizashi.evaluation.metrics.daily_ic``: the
    per-day Spearman correlation of ``prediction`` and the cache's 1-day forward return).

    ``predictions``: columns ``day`` (cache day index), ``code_index``, ``prediction``."""
    day, code = predictions["day"].to_numpy(), predictions["code_index"].to_numpy()
    target = np.asarray(cache.targets[day, code, cache.horizons.index(1)], dtype=np.float64)
    frame = predictions.select("day", "prediction").with_columns(pl.Series("target", target))
    ic = summarize_ic(daily_ic(frame, by=("day",))["rank_ic"])
    mean, ir, tstat = (math.nan if ic[key] is None else ic[key] for key in ("mean", "ir", "tstat"))
    return mean, ir, tstat, ic["n"]


def finish(row: Row, clock: EpochClock, cache: DayPanelCache, predictions: pl.DataFrame, wall_seconds: float) -> Row:
    row.epoch_seconds = [round(s, 3) for s, _ in clock.epochs]
    if clock.epochs:
        row.stock_days_per_second = max(n / s for s, n in clock.epochs)
        row.train_stock_days = clock.epochs[-1][1]
    row.wall_seconds = wall_seconds
    if torch.cuda.is_available() and row.device == "cuda":
        row.peak_gpu_gib = torch.cuda.max_memory_allocated() / 2**30
    row.rank_ic, row.icir, row.rank_ic_t, row.test_days = daily_rank_ic(predictions, cache)
    log.info("%s: %s", row.model, {k: v for k, v in asdict(row).items() if k != "model"})
    return row


# --------------------------------------------------------------------------------------
# kizashi
# --------------------------------------------------------------------------------------


def run_kizashi(args: argparse.Namespace, cache: DayPanelCache, *, gat: bool) -> Row:
    name = "atft" if gat else "atft_nogat"
    config = train_config(args, gat=gat, out=args.work / f"run_{name}_{args.device}")
    clock = EpochClock(lambda batch: int(batch["y"].shape[0]))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = run_training(config, callbacks=[clock])
    wall_seconds = time.perf_counter() - started
    frame = pl.read_parquet(result.run_dir / "predictions.parquet").filter(pl.col("horizon") == 1)
    days = pl.DataFrame({"date": pl.Series(cache.dates).cast(pl.Date), "day": np.arange(cache.n_days)})
    codes = pl.DataFrame({"code": [str(c) for c in cache.codes], "code_index": np.arange(cache.n_codes)})
    predictions = frame.join(days, on="date").join(codes, on="code").select("day", "code_index", "prediction")
    model = build_model(config, cache.n_features, [1])
    parameters = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
    row = Row(model=name, device=args.device, parameters=parameters, train_stock_days=0)
    return finish(row, clock, cache, predictions, wall_seconds)


# --------------------------------------------------------------------------------------
# pytorch-forecasting
# --------------------------------------------------------------------------------------


def tft_frame(cache: DayPanelCache, first: int, last: int, window: int):
    """The long pandas frame the TFT reads: one row per stock and session ``s`` in
    ``first - window .. last`` where the stock has a row: ``time_idx`` = s, ``code`` (the
    cache's code index as a string), the F features of ``s`` (missing = 0, as kizashi fills
    them), and ``label`` = the centred 1-day rank target of session ``s - 1`` (rows without
    one are left out: pytorch-forecasting forward-fills such gaps in its windows)."""
    import pandas as pd

    h = cache.horizons.index(1)
    lo = max(first - window, 1)
    sessions = np.arange(lo, last + 1)
    alive = np.asarray(cache.alive[lo : last + 1])
    ranks = cache.target_ranks
    if ranks is None:
        raise SystemExit(f"{cache}: the dataset has no target_rank_1d (build with rank targets)")
    label = np.asarray(ranks[lo - 1 : last, :, h], dtype=np.float32) - 0.5  # [S, N] target of s - 1
    keep = alive & np.isfinite(label)
    t_idx, n_idx = np.nonzero(keep)
    features = np.asarray(cache.features[lo : last + 1], dtype=np.float32)[t_idx, n_idx]
    features = np.where(np.isfinite(features), features, 0.0).astype(np.float32)
    frame = pd.DataFrame(features, columns=[f"f{j}" for j in range(features.shape[1])])
    frame["time_idx"] = sessions[t_idx].astype(np.int64)
    frame["code"] = n_idx.astype(str)
    frame["label"] = label[t_idx, n_idx]
    return frame


def run_tft(args: argparse.Namespace, cache: DayPanelCache, fold: Fold, config: TrainConfig) -> Row:
    from pytorch_forecasting import TemporalFusionTransformer, TimeSeriesDataSet
    from pytorch_forecasting.data.encoders import TorchNormalizer
    from pytorch_forecasting.metrics import QuantileLoss

    started = time.perf_counter()
    days = fold_day_indices(cache, fold)
    window = config.window
    stocks_per_day = float(np.asarray(cache.alive[days.train]).sum(axis=1).mean())
    batch_size = round(config.trainer.days_per_batch * stocks_per_day)
    feature_names = [f"f{j}" for j in range(cache.n_features)]

    # decoder step s predicts kizashi's date s - 1: a kizashi day d is the TFT's s = d + 1
    train = tft_frame(cache, int(days.train[0]) + 1, int(days.train[-1]) + 1, window)
    training = TimeSeriesDataSet(
        train, time_idx="time_idx", target="label", group_ids=["code"],
        min_prediction_idx=int(days.train[0]) + 1,
        max_encoder_length=window, max_prediction_length=1,
        time_varying_unknown_reals=[*feature_names, "label"],
        allow_missing_timesteps=True, add_relative_time_idx=True,
        target_normalizer=TorchNormalizer(method="identity", center=False),
    )

    def part(indices: np.ndarray) -> TimeSeriesDataSet:
        first, last = int(indices[0]) + 1, min(int(indices[-1]) + 1, cache.n_days - 1)
        return TimeSeriesDataSet.from_dataset(
            training, tft_frame(cache, first, last, window), min_prediction_idx=first, stop_randomization=True,
        )

    validation, test = part(days.val), part(days.test)
    loader_args = {"batch_size": batch_size, "num_workers": args.workers, "persistent_workers": args.workers > 0,
                       "pin_memory": args.device == "cuda"}
    prepare_seconds = time.perf_counter() - started
    train_loader = training.to_dataloader(train=True, **loader_args)
    val_loader = validation.to_dataloader(train=False, **loader_args)
    test_loader = test.to_dataloader(train=False, **loader_args)

    L.seed_everything(config.seed, workers=True, verbose=False)
    hidden = int(config.model.overrides.get("hidden", 64))
    tft = TemporalFusionTransformer.from_dataset(
        training, hidden_size=hidden, attention_head_size=4, dropout=float(config.model.overrides.get("dropout", 0.1)),
        loss=QuantileLoss(), learning_rate=config.optimizer.lr,
        optimizer="adam", log_interval=-1, reduce_on_plateau_patience=1000,
    )
    clock = EpochClock(lambda batch: int(batch[0]["encoder_lengths"].shape[0]))
    best = ModelCheckpoint(dirpath=args.work / f"tft_{args.device}", monitor="val_loss", mode="min", save_top_k=1)
    trainer = L.Trainer(
        max_epochs=config.trainer.max_epochs, accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
        gradient_clip_val=config.optimizer.grad_clip, callbacks=[clock, best], logger=False,
        enable_progress_bar=False, limit_train_batches=args.max_batches, enable_model_summary=False,
        limit_val_batches=1 if args.throughput_only else None,
        precision="32-true",
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(tft, train_dataloaders=train_loader, val_dataloaders=val_loader)
    parameters = int(sum(p.numel() for p in tft.parameters() if p.requires_grad))
    row = Row(model="tft", device=args.device, parameters=parameters, train_stock_days=len(training),
              prepare_seconds=prepare_seconds)
    if args.throughput_only:
        empty = pl.DataFrame(schema={"day": pl.Int64, "code_index": pl.Int64, "prediction": pl.Float64})
        return finish(row, clock, cache, empty, time.perf_counter() - started)
    model = TemporalFusionTransformer.load_from_checkpoint(best.best_model_path) if best.best_model_path else tft
    predicted = model.predict(
        test_loader, mode="prediction", return_index=True,
        trainer_kwargs={"accelerator": "gpu" if args.device == "cuda" else "cpu", "logger": False,
                            "enable_progress_bar": False},
    )
    index = predicted.index
    predictions = pl.DataFrame({
        "day": index["time_idx"].to_numpy().astype(np.int64) - 1,
        "code_index": index["code"].astype(int).to_numpy().astype(np.int64),
        "prediction": predicted.output.detach().cpu().numpy().reshape(len(index), -1)[:, 0].astype(np.float64),
    })
    return finish(row, clock, cache, predictions, time.perf_counter() - started)


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/sp500/daily_1999_2018.parquet")
    parser.add_argument("--sectors", type=Path, default=ROOT.parent / "shared/data/sp500/sectors.csv")
    parser.add_argument("--families", default="returns,volatility", help="feature families both models read")
    parser.add_argument("--train-days", type=int, default=750, help="rolling training window (sessions)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of both")
    parser.add_argument("--max-batches", type=int, default=None, help="optimizer steps per epoch (throughput only)")
    parser.add_argument("--throughput-only", action="store_true",
                        help="the TFT validates on one batch and predicts nothing (no RankIC): for --max-batches runs")
    parser.add_argument("--models", default="atft_nogat,atft,tft")
    parser.add_argument("--codes", type=int, default=None, help="only the first N stocks (smoke runs)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CODES} stocks, 1 epoch")
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "bench_tft_peer")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args()
    if args.quick:
        args.codes, args.epochs = args.codes or QUICK_CODES, 1
        args.work = args.work.with_name(args.work.name + "_quick")
    args.data, args.sectors, args.work = args.data.resolve(), args.sectors.resolve(), args.work.resolve()
    return args


def report(rows: list[Row]) -> None:
    header = ("model", "device", "params", "stock-days/epoch", "stock-days/s", "epoch s", "peak GPU GiB",
              "wall s", "RankIC", "ICIR", "t", "test days")
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for r in rows:
        lines.append(" | ".join([
            r.model, r.device, f"{r.parameters:,}", f"{r.train_stock_days:,}", f"{r.stock_days_per_second:,.0f}",
            " / ".join(f"{s:.1f}" for s in r.epoch_seconds), f"{r.peak_gpu_gib:.2f}", f"{r.wall_seconds:.1f}",
            f"{r.rank_ic:+.4f}", f"{r.icir:+.3f}", f"{r.rank_ic_t:+.2f}", str(r.test_days),
        ]))
    log.info("results:\n%s", "\n".join(lines))
    peer = next((r for r in rows if r.model == "tft"), None)
    if peer is None:
        return
    for r in rows:
        if r is not peer:
            log.info(
                "%s / tft on %s: throughput %.1fx, RankIC %+.4f vs %+.4f (difference %+.4f), peak GPU memory %.2fx",
                r.model, r.device, r.stock_days_per_second / peer.stock_days_per_second, r.rank_ic, peer.rank_ic,
                r.rank_ic - peer.rank_ic, r.peak_gpu_gib / peer.peak_gpu_gib if peer.peak_gpu_gib else math.nan,
            )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.codes is not None:
        subset = args.work / f"input_{args.codes}_codes.parquet"
        if not subset.is_file():
            panel = pl.read_parquet(args.data)
            keep = panel["code"].unique(maintain_order=True).head(args.codes)
            panel.filter(pl.col("code").is_in(keep.implode())).write_parquet(subset)
        args.data = subset
    config = train_config(args, gat=False, out=args.work / "unused")
    started = time.perf_counter()
    dataset_dir = ensure_dataset(config)
    cache = DayPanelCache(dataset_dir)
    log.info("dataset %s ready in %.1fs: %s", dataset_dir, time.perf_counter() - started, cache)
    folds = job_folds(config, cache.dates, read_metadata(dataset_dir).target_reach([1]))
    fold = folds[-1]
    log.info("fold %d: train %s..%s (%d), val %d, test %s..%s (%d)", fold.index, fold.train_dates[0],
             fold.train_dates[-1], len(fold.train_dates), len(fold.val_dates), fold.test_dates[0],
             fold.test_dates[-1], len(fold.test_dates))
    rows: list[Row] = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name == "tft":
            rows.append(run_tft(args, cache, fold, config))
        elif name in ("atft", "atft_nogat"):
            rows.append(run_kizashi(args, cache, gat=name == "atft"))
        else:
            raise SystemExit(f"--models: unknown model {name!r} (tft, atft_nogat, atft)")
        if args.json is not None:
            args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    report(rows)


if __name__ == "__main__":
    main()
