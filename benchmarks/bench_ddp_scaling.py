"""Multi-device scaling of ATFT-GAT-FAN training: epoch time and stock-days/s on 1, 2, ...
devices at the same effective batch, in one command.

    PYTHONPATH=src:benchmarks python benchmarks/bench_ddp_scaling.py \\
        --config configs/train/atft_gat_fan_sp500.yaml --devices 1,2 --epochs 2 --json scaling.json

For each device count ``N`` the benchmark trains one fold (the last unless ``--fold``) in a
fresh process (``trainer.devices = N``: Lightning DDP, NCCL on GPUs, gloo on CPUs) with
``days_per_batch = total / N`` per rank, so every run takes the same optimizer steps on the
same days (see tests/training/test_ddp_cpu.py). A callback times every training epoch (from
its first batch request to its end, the device synchronized) and counts the stock-days
trained, summed over the ranks. Printed per N: the last epoch's seconds and stock-days/s,
the first epoch's seconds (it includes start-up and, with ``panel_on_device``, the panel
upload), peak GPU memory of rank 0, and the scaling efficiency
``(stock-days/s at N) / (N x stock-days/s at 1)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_ddp_scaling")


def child(config_json: Path, out: Path, timings: Path) -> int:
    """One training run (every rank executes this: Lightning's DDP launcher re-runs the
    command); rank 0 writes the epoch timings."""
    import torch
    from bench_trainer import EpochTimer  # the script's own folder is on sys.path

    from kizashi.config import TrainConfig, config_from_dict
    from kizashi.jobs.train import run_training
    from kizashi.training.neural_fit import is_global_zero

    config = config_from_dict(TrainConfig, json.loads(config_json.read_text()))
    timer = EpochTimer()
    result = run_training(config, out_dir=out, callbacks=[timer])
    if is_global_zero():
        timings.write_text(json.dumps({"epochs": timer.epochs, "folds": [f.global_step for f in result.folds],
                                       "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}))
    return 0


def scaling_rows(runs: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per device count: the last and first epoch, stock-days/s and the efficiency against
    the smallest device count measured (normally 1)."""
    rows = []
    base_n = min(runs)
    for n, run in sorted(runs.items()):
        last, first = run["epochs"][-1], run["epochs"][0]
        rows.append({"devices": n, "days_per_batch_per_rank": run["days_per_batch"], "epoch_s": last["seconds"],
                     "first_epoch_s": first["seconds"], "stock_days": last["stock_days"],
                     "stock_days_per_s": last["stock_days"] / last["seconds"], "peak_gib": last["peak_gib"],
                     "optimizer_steps": run["folds"][0] if run["folds"] else None})
    base = next(r for r in rows if r["devices"] == base_n)
    for row in rows:
        row["efficiency"] = row["stock_days_per_s"] / (base["stock_days_per_s"] * row["devices"] / base_n)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [("| devices | days/batch per rank | epoch s | first epoch s | stock-days | stock-days/s | efficiency | "
             "optimizer steps | peak GiB (rank 0) |"),
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['devices']} | {r['days_per_batch_per_rank']} | {r['epoch_s']:.2f} | {r['first_epoch_s']:.2f} | "
                     f"{r['stock_days']:,} | {r['stock_days_per_s']:,.0f} | {r['efficiency']:.2f} | "
                     f"{r['optimizer_steps']} | {r['peak_gib']:.2f} |")
    return "\n".join(lines)


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The training config (as JSON) every run starts from: one fold, no early stopping."""
    from kizashi.config import (
        DataBuildConfig,
        TrainConfig,
        config_from_dict,
        load_train_config,
        read_config_file,
    )

    raw = load_train_config(args.config).model_dump(mode="json")
    if args.data_config is not None:
        raw["data"] = read_config_file(args.data_config, DataBuildConfig)
    raw["data_config"] = None
    trainer = raw["trainer"]
    trainer.update(max_epochs=args.epochs, early_stopping_patience=None, logger="none")
    if args.accelerator is not None:
        trainer["accelerator"] = args.accelerator
    if args.days_per_batch is not None:
        trainer["days_per_batch"] = args.days_per_batch
    config = config_from_dict(TrainConfig, raw)
    raw = config.model_dump(mode="json")
    raw["folds"] = [args.fold % config.splits.n_folds]
    return raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "train" / "atft_gat_fan_sp500.yaml")
    parser.add_argument("--data-config", type=Path, default=None, help="a data YAML replacing the config's data")
    parser.add_argument("--devices", default="1,2", help="device counts to compare (default 1,2)")
    parser.add_argument("--days-per-batch", type=int, default=None,
                        help="effective days per optimizer step (default: the config's); split over the ranks")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fold", type=int, default=-1)
    parser.add_argument("--accelerator", default=None, help="override trainer.accelerator (cpu: gloo processes)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=3, type=Path, metavar=("CONFIG_JSON", "OUT", "TIMINGS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child:
        return child(*args.child)
    raw = run_config(args)
    total = raw["trainer"]["days_per_batch"]
    counts = [int(n) for n in args.devices.split(",")]
    runs: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_ddp_scaling_") as tmp:
        for n in counts:
            if total % n:
                raise SystemExit(f"--days-per-batch {total} does not split over {n} devices")
            config = {**raw, "trainer": {**raw["trainer"], "devices": n, "days_per_batch": total // n}}
            config_json, timings = Path(tmp) / f"config_{n}.json", Path(tmp) / f"timings_{n}.json"
            config_json.write_text(json.dumps(config))
            command = [sys.executable, str(Path(__file__).resolve()), "--child", str(config_json),
                       str(Path(tmp) / f"run_{n}"), str(timings)]
            log.info("training on %d device(s), %d days per rank and batch ...", n, total // n)
            done = subprocess.run(command, cwd=ROOT, check=False)
            if done.returncode != 0 or not timings.is_file():
                log.error("the run on %d device(s) failed (exit code %d)", n, done.returncode)
                return 1
            runs[n] = {**json.loads(timings.read_text()), "days_per_batch": total // n}
    rows = scaling_rows(runs)
    device = runs[counts[0]]["device"]
    log.info("\nATFT-GAT-FAN training on %s, fold %s, %d days per optimizer step, %d epochs:\n%s\n", device,
             raw["folds"][0], total, args.epochs, format_rows(rows))
    if args.json is not None:
        args.json.write_text(json.dumps({"device": device, "days_per_batch": total, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
