"""Correlation-graph benchmark: kizashi.features.graph vs a straightforward pandas implementation.

For the S&P 500 daily file (``../shared/data/sp500/``) or a synthetic market, this builds
the per-day top-k correlation graphs of every trading day (``kizashi.features.graph
.correlation_graphs``: one pivot, batched matmuls over windows) and prints seconds,
days/s, edges/s and peak RSS. Then, on ``--reference-days`` days spread over the calendar,
it times the code a quant would write in pandas (per day: the window's ``[W, N]`` slice,
``DataFrame.corr(min_periods=...)``, ``nlargest`` per stock), checks that both give the
same neighbours and correlations on those days, and prints the per-day ratio.

    .venv/bin/python benchmarks/bench_graph.py --dataset sp500
    .venv/bin/python benchmarks/bench_graph.py --dataset synthetic --stocks 2000 --days 1500

Figures are wall-clock on whatever machine runs it; other processes make them noisy.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
from rich.console import Console
from rich.table import Table

from kizashi.config import GraphConfig, InputConfig, SyntheticMarketConfig
from kizashi.data.inputs import load_inputs
from kizashi.features.expressions import RET
from kizashi.features.pipeline import prepare_base
from kizashi.features.graph import correlation_graphs, default_min_periods
from kizashi.log import setup_logging

log = logging.getLogger("bench_graph")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sp500"
# Correlations agree when |kizashi - pandas| <= this (kizashi sums in float32 with centring).
CORRELATION_ATOL = 1e-4


def load_returns(args: argparse.Namespace) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """(code, date, return_1d) rows, the sector table, and a description of the source."""
    if args.dataset == "sp500":
        folder = Path(args.sp500_dir)
        config = InputConfig(
            path=folder / "daily_1999_2018.parquet",
            preset="sp500",
            sectors=folder / "sectors.csv",
            sectors_preset="sectors_sp500",
        )
        inputs = load_inputs(config)
    else:
        synthetic = SyntheticMarketConfig(n_stocks=args.stocks, n_days=args.days, seed=args.seed)
        inputs = load_inputs(InputConfig(), synthetic)
    base = prepare_base(inputs.panel, [1])
    returns = base.select("code", "date", pl.col(RET).alias("return_1d"))
    return returns, inputs.panel.select("code", "sector").unique(), inputs.source


def pandas_day_edges(wide: pd.DataFrame, day: int, config: GraphConfig) -> dict[str, dict[str, float]]:
    """One day's graph the straightforward way: {dst: {src: correlation}} for ``wide``
    (dates x codes, NaN = missing) at row ``day``."""
    window = wide.iloc[max(0, day - config.window + 1) : day + 1]
    min_periods = default_min_periods(config)
    nodes = window.columns[window.iloc[-1].notna() & (window.notna().sum() >= min_periods)]
    corr = window[nodes].corr(min_periods=min_periods)
    edges: dict[str, dict[str, float]] = {}
    for dst in nodes:
        row = corr[dst].drop(dst).dropna()
        top = row.abs().nlargest(config.top_k, keep="all")
        edges[dst] = {src: float(row[src]) for src in top.index}
    return edges


def compare_day(kizashi_day: pl.DataFrame, reference: dict[str, dict[str, float]], top_k: int) -> tuple[int, float]:
    """(stocks whose neighbour set differs beyond ties at the k-th place, max |corr diff|)."""
    mismatched, max_diff = 0, 0.0
    got = {
        dst: dict(zip(g.get_column("src_code").to_list(), g.get_column("correlation").to_list(), strict=True))
        for (dst,), g in kizashi_day.group_by("dst_code")
    }
    for dst, expected in reference.items():
        mine = got.get(dst, {})
        for src, value in mine.items():
            if src in expected:
                max_diff = max(max_diff, abs(value - expected[src]))
        # pandas keeps every tie at the k-th |corr| (keep="all"), kizashi exactly k.
        if not set(mine) <= set(expected) or len(mine) != min(top_k, len(expected)):
            mismatched += 1
    return mismatched, max_diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("sp500", "synthetic"), default="sp500")
    parser.add_argument("--sp500-dir", default=str(SHARED))
    parser.add_argument("--stocks", type=int, default=2000)
    parser.add_argument("--days", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--reference-days", type=int, default=40, help="days timed with pandas")
    args = parser.parse_args()
    setup_logging("WARNING")
    console = Console()
    if args.dataset == "sp500" and not (Path(args.sp500_dir) / "daily_1999_2018.parquet").exists():
        sys.exit(f"no S&P 500 file under {args.sp500_dir} (pass --sp500-dir)")

    returns, sectors, source = load_returns(args)
    config = GraphConfig(window=args.window, top_k=args.top_k)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    edges = correlation_graphs(returns, config, sectors=sectors)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    calendar = returns.get_column("date").unique().sort()
    n_days, n_codes = calendar.len(), returns.get_column("code").n_unique()
    wide = returns.to_pandas().pivot(index="date", columns="code", values="return_1d").sort_index()
    picks = np.unique(np.linspace(config.window, n_days - 1, args.reference_days).astype(int))
    pandas_seconds, mismatched, max_diff = 0.0, 0, 0.0
    for day in picks:
        t0 = time.perf_counter()
        reference = pandas_day_edges(wide, int(day), config)
        pandas_seconds += time.perf_counter() - t0
        date = wide.index[day]
        bad, diff = compare_day(edges.filter(pl.col("date") == date), reference, config.top_k)
        mismatched += bad
        max_diff = max(max_diff, diff)
    per_day_kizashi = seconds / n_days
    per_day_pandas = pandas_seconds / len(picks)

    table = Table(title=f"correlation graphs: {source}", header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("stocks x trading days", f"{n_codes:,} x {n_days:,}")
    table.add_row("window / top-k", f"{config.window} / {config.top_k}")
    table.add_row("edges", f"{edges.height:,}")
    table.add_row("seconds (all days)", f"{seconds:.2f}")
    table.add_row("days/s | edges/s", f"{n_days / seconds:,.0f} | {edges.height / seconds:,.0f}")
    table.add_row("peak RSS (process; before the build)", f"{peak / 1e9:.2f} GB ({rss_before / 1e9:.2f} GB)")
    table.add_row(f"pandas per day (DataFrame.corr, {len(picks)} days)", f"{per_day_pandas * 1e3:.1f} ms")
    table.add_row("kizashi per day", f"{per_day_kizashi * 1e3:.2f} ms")
    table.add_row("pandas / kizashi per day", f"{per_day_pandas / per_day_kizashi:.1f}x")
    table.add_row("stocks with other neighbours than pandas", f"{mismatched}")
    table.add_row("max |correlation - pandas|", f"{max_diff:.2e} (tolerance {CORRELATION_ATOL:g})")
    console.print(table)
    if mismatched or max_diff > CORRELATION_ATOL:
        sys.exit("kizashi and pandas disagree: see the table above")


if __name__ == "__main__":
    main()
