"""Do kizashi's features earn their build time? LightGBM on the S&P 500 folds with Qlib's
Alpha158, with kizashi's default families, and with both.

One dataset is built with ``families: [all, alpha158]`` (``configs/evaluate/sp500_lightgbm.yaml``'s
data, folds and model; the dataset goes to ``artifacts/dataset/sp500_alpha158``), then three
walk-forward runs read different column sets of it:

* ``alpha158``: the 157 ``alpha158_*`` columns (Qlib's Alpha158, docs/peers.md);
* ``kizashi``: every default-family column (406 on this config);
* ``both``: all of them.

Per set and horizon: RankIC, ICIR and t of the daily test RankIC (each run's ``daily.parquet``,
``kizashi.evaluation.metrics.summarize_ic``), then the paired differences of the daily RankIC
(``both - kizashi``, ``both - alpha158``, ``kizashi - alpha158``) on the runs' common test
days, simple and Newey-West t, as ``kizashi runs compare`` computes them. The runs are resumable (every fitted
fold is kept in the run directory; a second invocation reuses them).

    .venv/bin/python benchmarks/bench_alpha158_lightgbm.py                 # horizon 1 (default)
    .venv/bin/python benchmarks/bench_alpha158_lightgbm.py --horizons 1 5

Not a test: tens of minutes on 2 cores (the LightGBM fits dominate). Qlib's published CSI300
table (LightGBM on Alpha158: RankIC 0.0469, ICIR 0.388) is another market and label; quote it
for scale only.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from kizashi.config import EvaluateConfig, load_job_config
from kizashi.datasets.store import read_metadata
from kizashi.evaluation.compare import compare_runs
from kizashi.evaluation.metrics import summarize_ic
from kizashi.evaluation.run_dir import DAILY
from kizashi.jobs.common import ensure_dataset
from kizashi.jobs.evaluate import run_walk_forward
from kizashi.log import setup_logging

log = logging.getLogger("bench_alpha158_lightgbm")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "evaluate" / "sp500_lightgbm.yaml"
SETS = ("alpha158", "kizashi", "both")


def evaluate_config(args: argparse.Namespace, features: list[str] | None, out: Path) -> EvaluateConfig:
    """The shipped S&P 500 LightGBM config on the dataset with Alpha158, reading ``features``."""
    overrides = {
        "data": {"features": {"families": ["all", "alpha158"]}, "output": {"dir": str(args.work / "dataset")}},
        "horizons": args.horizons,
        "features": features,
        "portfolio": {"strategies": {"daily decile": {"kind": "decile"}}},
        "output": {"dir": str(out)},
    }
    return load_job_config(CONFIG, EvaluateConfig, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--horizons", type=int, nargs="+", default=[1])
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "bench_alpha158_lightgbm")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    setup_logging()
    args.work = args.work.resolve()

    dataset_dir = ensure_dataset(evaluate_config(args, None, args.work / "unused"))
    columns = read_metadata(dataset_dir).feature_columns
    alpha = [c for c in columns if c.startswith("alpha158_")]
    native = [c for c in columns if not c.startswith("alpha158_")]
    chosen = {"alpha158": alpha, "kizashi": native, "both": list(columns)}
    log.info("dataset %s: %d alpha158 + %d kizashi columns", dataset_dir, len(alpha), len(native))

    runs = {}
    for name in args.sets:
        runs[name] = args.work / f"run_{name}"
        run_walk_forward(evaluate_config(args, chosen[name], runs[name]), out_dir=runs[name], resume=True)

    figures: dict[str, dict[str, Any]] = {"sets": {}, "pairs": {}}
    lines = ["set | features | horizon | RankIC | ICIR | t | test days", "--- | ---: | ---: | ---: | ---: | ---: | ---:"]
    for name, run in runs.items():
        daily = pl.read_parquet(run / DAILY)
        for h in args.horizons:
            ic = summarize_ic(daily.filter(pl.col("horizon") == h)["rank_ic"])
            figures["sets"][f"{name} {h}d"] = {"features": len(chosen[name]), **ic}
            lines.append(f"{name} | {len(chosen[name])} | {h}d | {ic['mean']:+.4f} | {ic['ir']:+.3f} | "
                         f"{ic['tstat']:+.2f} | {ic['n']}")
    lines += ["", "difference | horizon | mean daily RankIC difference | paired t | Newey-West t | days",
              "--- | ---: | ---: | ---: | ---: | ---:"]
    # every pair of runs, the earlier one first: both - kizashi, both - alpha158, kizashi - alpha158
    ordered = [name for name in reversed(SETS) if name in runs]
    comparison = compare_runs([runs[name] for name in ordered])
    names = {run.label: name for run, name in zip(comparison.runs, ordered, strict=True)}
    for pair in comparison.pairs:
        if pair.metric != "rank_ic":
            continue
        a, b = names[pair.run_a], names[pair.run_b]
        figures["pairs"][f"{a} - {b} {pair.horizon}d"] = asdict(pair)
        lines.append(f"{a} - {b} | {pair.horizon}d | {pair.mean_diff:+.4f} | {pair.t_stat:+.2f} | "
                     f"{pair.nw_t_stat:+.2f} | {pair.n_common_days}")
    log.info("LightGBM on the S&P 500 folds by feature set:\n%s", "\n".join(lines))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
