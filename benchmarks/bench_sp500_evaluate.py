"""Walk-forward evaluation on the S&P 500 daily file: LightGBM vs a one-feature reversal
baseline (-5-day return), horizons 1d and 5d.

Runs ``configs/evaluate/sp500_reversal.yaml`` and ``configs/evaluate/sp500_lightgbm.yaml``
(the dataset ``artifacts/dataset/sp500`` is built on the first run, then reused), writes
both run directories with their HTML reports, and prints one table per horizon.

    .venv/bin/python benchmarks/bench_sp500_evaluate.py
    .venv/bin/python benchmarks/bench_sp500_evaluate.py --only reversal

Not a test: it takes tens of minutes on 2 cores (the LightGBM fits dominate).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kizashi.config import load_evaluate_config
from kizashi.evaluation.report import write_report
from kizashi.evaluation.run_dir import SUMMARY_DISPLAY
from kizashi.log import setup_logging
from kizashi.jobs.evaluate import run_walk_forward

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "reversal": ROOT / "configs" / "evaluate" / "sp500_reversal.yaml",
    "lightgbm": ROOT / "configs" / "evaluate" / "sp500_lightgbm.yaml",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append", help="run only this model")
    args = parser.parse_args()
    setup_logging(logging.INFO)
    data = ROOT.parent / "shared" / "data" / "sp500" / "daily_1999_2018.parquet"
    if not data.exists():
        sys.exit(f"{data} not found: this benchmark reads the S&P 500 file from ../shared/data")
    results = {}
    for name in args.only or list(CONFIGS):
        config = load_evaluate_config(CONFIGS[name])
        results[name] = run_walk_forward(config)
        write_report(results[name].run_dir)
    console = Console()
    for horizon in (1, 5):
        table = Table(title=f"S&P 500 walk-forward, {horizon}d horizon", title_justify="left")
        table.add_column("metric")
        for name, result in results.items():
            table.add_column(f"{result.info.model} ({result.info.n_folds} folds)", justify="right")
        for key, header, fmt in SUMMARY_DISPLAY:
            cells = []
            for result in results.values():
                value = result.summary.get(horizon, {}).get(key)
                cells.append("-" if value is None else fmt.format(value))
            table.add_row(header, *cells)
        table.add_row("seconds (whole run)", *(f"{r.seconds:.0f}" for r in results.values()))
        console.print(table)
    for result in results.values():
        console.print(f"{result.info.model}: {result.run_dir}/report/index.html")


if __name__ == "__main__":
    main()
