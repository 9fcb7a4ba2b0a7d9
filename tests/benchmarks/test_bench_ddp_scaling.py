"""benchmarks/bench_ddp_scaling.py on the CPU: 1 and 2 gloo processes at the same effective
batch train the same stock-days with the same optimizer steps, and the efficiency is the
per-device throughput against one device."""

from __future__ import annotations

import json

from tests.training.test_ddp_cpu import TRAIN_DAYS, write_config


def test_one_and_two_cpu_processes(load_benchmark, tmp_path):
    bench = load_benchmark("bench_ddp_scaling")
    runs = {1: {"epochs": [{"seconds": 2.0, "stock_days": 100, "peak_gib": 1.0}] * 2, "folds": [10], "days_per_batch": 8},
            2: {"epochs": [{"seconds": 1.25, "stock_days": 100, "peak_gib": 0.6}] * 2, "folds": [10], "days_per_batch": 4}}
    rows = bench.scaling_rows(runs)
    assert [r["efficiency"] for r in rows] == [1.0, (100 / 1.25) / (2 * 100 / 2.0)]  # 0.8
    assert "| 2 | 4 | 1.25 |" in bench.format_rows(rows)

    config = write_config(tmp_path, 8)
    out = tmp_path / "scaling.json"
    assert bench.main(["--config", str(config), "--accelerator", "cpu", "--devices", "1,2", "--days-per-batch", "8",
                       "--epochs", "1", "--fold", "0", "--json", str(out)]) == 0
    measured = json.loads(out.read_text())["rows"]
    assert [r["devices"] for r in measured] == [1, 2]
    assert [r["days_per_batch_per_rank"] for r in measured] == [8, 4]
    assert measured[0]["stock_days"] == measured[1]["stock_days"] == TRAIN_DAYS * 24  # every stock-day once per epoch
    assert measured[0]["optimizer_steps"] == measured[1]["optimizer_steps"] == TRAIN_DAYS // 8
    assert measured[0]["efficiency"] == 1.0 and measured[1]["efficiency"] > 0
