"""Do kizashi's features earn their build time? LightGBM on the S&P 500 folds with Qlib's
Alpha158, with kizashi's default families, and with both.

One dataset is built with ``families: [all, alpha158]`` (``configs/evaluate/sp500_lightgbm.yaml``'s
data, folds and model; the dataset goes to ``artifacts/dataset/sp500_alpha158``), then three
walk-forward runs read different column sets of it:

* ``alpha158``: the 157 ``alpha158_*`` columns (Qlib's Alpha158, docs/peers.md);
* ``kizashi``: every default-family column (406 on this config);
* ``both``: all of them.

Per set and horizon: RankIC, ICIR and t of the daily test RankIC (each run's ``daily.parquet``),
then the paired t of the daily RankIC differences (``kizashi - alpha158``, ``both - kizashi``,
``both - alpha158``) over the test days all runs share. The runs are resumable (every fitted
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
import math
from pathlib import Path

import numpy as np
import polars as pl

from kizashi.config import EvaluateConfig, load_job_config
from kizashi.datasets.store import read_metadata
from kizashi.evaluation.run_dir import DAILY
from kizashi.jobs.common import ensure_dataset
from kizashi.jobs.evaluate import run_walk_forward
from kizashi.log import setup_logging

log = logging.getLogger("bench_alpha158_lightgbm")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "evaluate" / "sp500_lightgbm.yaml"
SETS = ("alpha158", "kizashi", "both")
PAIRS = (("kizashi", "alpha158"), ("both", "kizashi"), ("both", "alpha158"))


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


def paired_t(a: pl.DataFrame, b: pl.DataFrame) -> tuple[float, float, int]:
    """(mean difference, t, days) of ``a.rank_ic - b.rank_ic`` over the dates both have."""
    joined = a.join(b, on="date", suffix="_b").filter(pl.col("rank_ic").is_finite() & pl.col("rank_ic_b").is_finite())
    diff = (joined["rank_ic"] - joined["rank_ic_b"]).to_numpy()
    if len(diff) < 2 or diff.std(ddof=1) == 0:
        return math.nan, math.nan, len(diff)
    return float(diff.mean()), float(diff.mean() / diff.std(ddof=1) * math.sqrt(len(diff))), len(diff)


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

    daily: dict[str, pl.DataFrame] = {}
    for name in args.sets:
        out = args.work / f"run_{name}"
        run_walk_forward(evaluate_config(args, chosen[name], out), out_dir=out, resume=True)
        daily[name] = pl.read_parquet(out / DAILY)

    figures: dict[str, object] = {"sets": {}, "pairs": {}}
    lines = ["set | features | horizon | RankIC | ICIR | t | test days", "--- | ---: | ---: | ---: | ---: | ---: | ---:"]
    for name in args.sets:
        for h in args.horizons:
            d = daily[name].filter(pl.col("horizon") == h)["rank_ic"].drop_nans().drop_nulls().to_numpy()
            mean, sd = float(np.mean(d)), float(np.std(d, ddof=1))
            row = {"features": len(chosen[name]), "rank_ic": mean, "icir": mean / sd,
                   "t": mean / sd * math.sqrt(len(d)), "days": len(d)}
            figures["sets"][f"{name} {h}d"] = row
            lines.append(f"{name} | {row['features']} | {h}d | {mean:+.4f} | {row['icir']:+.3f} | {row['t']:+.2f} | {len(d)}")
    lines += ["", "difference | horizon | mean daily RankIC difference | paired t | days", "--- | ---: | ---: | ---: | ---:"]
    for a, b in PAIRS:
        if a not in daily or b not in daily:
            continue
        for h in args.horizons:
            mean, t, n = paired_t(daily[a].filter(pl.col("horizon") == h), daily[b].filter(pl.col("horizon") == h))
            figures["pairs"][f"{a} - {b} {h}d"] = {"mean": mean, "t": t, "days": n}
            lines.append(f"{a} - {b} | {h}d | {mean:+.4f} | {t:+.2f} | {n}")
    log.info("LightGBM on the S&P 500 folds by feature set:\n%s", "\n".join(lines))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
