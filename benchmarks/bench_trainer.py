"""End-to-end trainer throughput: ``run_training`` epochs with the loader building the windows
on the CPU vs the feature panel on the device, measured in one run.

Trains ATFT-GAT-FAN (``configs/train/atft_gat_fan.yaml`` unless ``--config``) on one fold of a
dataset and times every training epoch with a callback (wall time from the epoch's first
batch request to its end, stock-days = nodes of the batches trained). Prints, per setting of
``trainer.panel_on_device``: seconds per epoch, stock-days per second, the projected time of
an epoch over ``--epoch-stock-days`` (the issue's goal: 2M stock-days in < 60 s on one H100),
peak GPU memory, and the on / off throughput ratio.

    python benchmarks/bench_trainer.py --config configs/train/atft_gat_fan_sp500.yaml --data-config configs/data/sp500.yaml --epochs 2
    python benchmarks/bench_trainer.py --n-stocks 1000 --n-days 1500          # synthetic

The first epoch includes the panel upload (and worker start-up); the table reports the last
epoch, and the first one separately.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]

from kizashi.config import TrainConfig, config_from_dict, load_train_config
from kizashi.jobs.train import run_training

log = logging.getLogger("bench_trainer")


class EpochTimer(L.Callback):
    """Wall time and stock-days of every training epoch (summed over the ranks under DDP), and
    the peak GPU memory (this process's device)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._started = 0.0
        self._nodes = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._started, self._nodes = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._nodes += int(batch["codes"].shape[0])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self._started
        if trainer.world_size > 1:  # DDP: every rank trained its shard; count them all
            self._nodes = int(trainer.strategy.reduce(torch.tensor(self._nodes, device=pl_module.device),
                                                      reduce_op="sum"))
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        self.epochs.append({"seconds": seconds, "stock_days": self._nodes, "peak_gib": peak})


def bench(config: TrainConfig, setting: str, out: Path) -> dict[str, float]:
    config = config.model_copy(deep=True)
    config.trainer.panel_on_device = setting
    timer = EpochTimer()
    started = time.perf_counter()
    result = run_training(config, out_dir=out / setting, callbacks=[timer])
    last, first = timer.epochs[-1], timer.epochs[0]
    return {
        "setting": setting,
        "epochs": len(timer.epochs),
        "first_epoch_s": first["seconds"],
        "epoch_s": last["seconds"],
        "stock_days": last["stock_days"],
        "stock_days_per_s": last["stock_days"] / last["seconds"],
        "peak_gib": max(e["peak_gib"] for e in timer.epochs),
        "run_s": time.perf_counter() - started,
        "rank_ic_1d": result.summary.get(config.horizons[0] if config.horizons else 1, {}).get("rank_ic_mean"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "train" / "atft_gat_fan.yaml")
    parser.add_argument("--data-config", type=Path, default=None, help="a data YAML (default: synthetic)")
    parser.add_argument("--n-stocks", type=int, default=1000)
    parser.add_argument("--n-days", type=int, default=1500)
    parser.add_argument("--fold", type=int, default=-1, help="which fold to train (default: the last)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--days-per-batch", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--precision", default=None)
    parser.add_argument("--settings", default="off,on", help="panel_on_device settings to compare")
    parser.add_argument("--epoch-stock-days", type=float, default=2e6)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    raw = load_train_config(args.config).model_dump(mode="json")
    if args.data_config is not None:
        from kizashi.config import DataBuildConfig, read_config_file

        raw["data"] = read_config_file(args.data_config, DataBuildConfig)
        raw["data_config"] = None
    else:
        raw["data"]["synthetic"] = {**raw["data"].get("synthetic", {}), "n_stocks": args.n_stocks, "n_days": args.n_days}
        raw["data"]["output"]["dir"] = str(ROOT / "artifacts" / "dataset" / f"bench_{args.n_stocks}x{args.n_days}")
    raw["data_config"] = None
    raw["folds"] = None
    trainer = raw["trainer"]
    trainer.update(max_epochs=args.epochs, early_stopping_patience=None, logger="none")
    for key, value in (("days_per_batch", args.days_per_batch), ("num_workers", args.num_workers),
                       ("precision", args.precision)):
        if value is not None:
            trainer[key] = value
    config = config_from_dict(TrainConfig, raw)
    n_folds = config.splits.n_folds
    fold = args.fold % n_folds
    config.folds = [fold]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    log.info("benchmark on %s: fold %d of %d, %d epochs", device, fold, n_folds, args.epochs)

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as tmp:
        for setting in args.settings.split(","):
            results.append(bench(config, setting, Path(tmp)))
    print(f"\nATFT-GAT-FAN trainer epoch on {device} (fold {fold}, {config.trainer.days_per_batch} days/batch, "
          f"{config.trainer.num_workers} workers, precision {config.trainer.precision}):")
    print(f"{'panel_on_device':>16} {'epoch s':>8} {'1st epoch s':>11} {'stock-days':>11} {'stock-days/s':>13} "
          f"{'2M-epoch s':>10} {'peak GiB':>9} {'RankIC@1d':>10}")
    for r in results:
        projected = args.epoch_stock_days / r["stock_days_per_s"]
        print(f"{r['setting']:>16} {r['epoch_s']:8.1f} {r['first_epoch_s']:11.1f} {r['stock_days']:11,d} "
              f"{r['stock_days_per_s']:13,.0f} {projected:10.1f} {r['peak_gib']:9.2f} "
              f"{(r['rank_ic_1d'] or float('nan')):10.4f}")
    by = {r["setting"]: r for r in results}
    if "on" in by and "off" in by:
        print(f"throughput ratio on / off: {by['on']['stock_days_per_s'] / by['off']['stock_days_per_s']:.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
