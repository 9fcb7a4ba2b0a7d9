"""Feature-pipeline benchmark: kizashi vs a straightforward pandas implementation.

For each dataset (the S&P 500 daily file, and/or a synthetic 4000 x 2500 market) this
script runs, in a fresh subprocess (so peak memory figures do not mix):

1. the whole kizashi feature pipeline: load + validate + adjust (``load_inputs``),
   ``prepare_base`` (the per-date context tables are joined per chunk), then every feature
   (~400) with per-day normalization through
   ``iter_feature_chunks`` in chunks of about ``--chunk-rows`` stock-days (chunks are
   counted and dropped, never held together), timing each phase and sampling peak RSS;
2. unless ``--skip-pandas``: 20 representative features (``pandas_reference.py``) computed
   from the same prepared input by kizashi (``evaluate_features``, normalization "none")
   and by pandas, timed in the same run, then compared value by value.

It prints, per dataset, rows, feature columns, seconds per phase, rows/s, feature-values/s
and peak RSS; then the pandas comparison: seconds per feature for each side and their
ratio, for the 20 features and for the full feature set (kizashi's full-set seconds per
feature, scaled to the rows pandas read when ``--pandas-rows`` capped them), and every
numerical mismatch found.

    .venv/bin/python benchmarks/bench_features.py --dataset both
    .venv/bin/python benchmarks/bench_features.py --dataset sp500 --rows-limit 600000

Figures are wall-clock on whatever machine runs it (polars uses every core it sees; pandas
one); other processes running at the same time make them noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kizashi.profiling import PeakRSS, max_rss_bytes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SP500_DIR = REPO.parent / "shared" / "data" / "sp500"
SP500_FILE = "daily_1999_2018.parquet"
SP500_SECTORS = "sectors.csv"
HORIZONS = [1, 5, 10, 20]
GOAL = "goal: >= 350 features for 600k rows in <= 15 s on 2 cores, peak RSS <= 3 GB, >= 10x pandas per feature"

# Comparison: values agree when |kizashi - pandas| <= rtol * max(|kizashi|, |pandas|) + atol,
# atol = ATOL_SHARE * median |pandas value| of the feature; "max rel diff" is reported over
# values above REL_FLOOR_SHARE * that median.
ATOL_SHARE = 1e-9
REL_FLOOR_SHARE = 1e-3

log = logging.getLogger("bench_features")


# ------------------------------------------------------------------------------ worker


def load_dataset(args: argparse.Namespace):
    from kizashi.config import InputConfig, SyntheticMarketConfig
    from kizashi.data.inputs import load_inputs

    if args.worker == "sp500":
        folder = Path(args.sp500_dir)
        config = InputConfig(
            path=folder / SP500_FILE,
            preset="sp500",
            sectors=folder / SP500_SECTORS,
            sectors_preset="sectors_sp500",
        )
        return load_inputs(config)
    synthetic = SyntheticMarketConfig(
        n_stocks=args.stocks, n_days=args.days, n_peer_groups=args.peer_groups, seed=args.seed
    )
    return load_inputs(InputConfig(), synthetic)


def most_recent_rows(panel, limit: int):
    """The rows of the most recent dates, as many whole dates as fit in ``limit`` rows."""
    import polars as pl

    per_date = panel.group_by("date").len().sort("date", descending=True).with_columns(pl.col("len").cum_sum().alias("rows"))
    kept = per_date.filter(pl.col("rows") <= limit)
    if kept.height == 0:
        kept = per_date.head(1)
    first = kept.get_column("date").min()
    return panel.filter(pl.col("date") >= first)


def first_stocks(frame, limit: int):
    """Whole stocks, in code order, until about ``limit`` rows (frame sorted by code, date)."""
    import polars as pl

    per_code = frame.group_by("code", maintain_order=True).len().with_columns(pl.col("len").cum_sum().alias("rows"))
    codes = per_code.filter(pl.col("rows") <= limit).get_column("code")
    if codes.len() == 0:
        codes = per_code.head(1).get_column("code")
    return frame.filter(pl.col("code").is_in(codes.implode()))


def run_pipeline(args: argparse.Namespace, rss: PeakRSS) -> tuple[dict[str, Any], Any, Any, list]:
    import polars as pl

    from kizashi.features.pipeline import (
        context_tables,
        feature_context,
        iter_feature_chunks,
        prepare_base,
    )
    from kizashi.features.registry import resolve_specs

    result: dict[str, Any] = {"dataset": args.worker, "threads": pl.thread_pool_size(), "cpus": os.cpu_count()}
    with rss.phase("load"):
        started = time.perf_counter()
        inputs = load_dataset(args)
        panel = inputs.panel
        result["source"] = inputs.source
        result["rows_loaded"] = panel.height
        if args.rows_limit is not None and panel.height > args.rows_limit:
            panel = most_recent_rows(panel, args.rows_limit)
            result["rows_limit"] = args.rows_limit
        result["seconds_load"] = time.perf_counter() - started
    with rss.phase("prepare"):
        started = time.perf_counter()
        # As kizashi.jobs.data_build does: the base panel in memory, the per-date context tables
        # (market, sector, margin) joined per chunk.
        prepared = prepare_base(panel, HORIZONS)
        tables = context_tables(prepared, inputs.margin)
        specs = resolve_specs(feature_context(prepared, inputs.margin))
        result["seconds_prepare"] = time.perf_counter() - started
    n_dates = prepared.get_column("date").n_unique()
    stocks_per_day = prepared.height / max(n_dates, 1)
    chunk_days = max(20, int(args.chunk_rows / max(stocks_per_day, 1.0)))
    result.update(
        rows_prepared=prepared.height,
        n_codes=prepared.get_column("code").n_unique(),
        n_dates=n_dates,
        date_min=str(prepared.get_column("date").min()),
        date_max=str(prepared.get_column("date").max()),
        chunk_days=chunk_days,
        n_chunks=-(-n_dates // chunk_days),
        n_features=len(specs),
        normalization=args.normalization,
        has_margin=inputs.margin is not None,
    )
    with rss.phase("features"):
        started = time.perf_counter()
        rows = 0
        n_columns = 0
        chunks = iter_feature_chunks(
            prepared, specs, HORIZONS, tables=tables, chunk_days=chunk_days, normalization=args.normalization
        )
        for chunk in chunks:
            rows += chunk.height
            n_columns = chunk.width
            del chunk
        result["seconds_features"] = time.perf_counter() - started
    result["rows_out"] = rows
    result["output_columns"] = n_columns
    result["peak_rss_phases"] = dict(rss.phases)
    result["peak_rss"] = max(max_rss_bytes(), *rss.phases.values())
    del inputs, panel
    return result, prepared, tables, specs


def compare(kizashi_frame, pandas_frame, specs, rtol: float) -> list[dict[str, Any]]:
    """Per feature: value agreement where both are non-null, and the null pattern (split
    into the stock's first ``lookback`` rows, where only kizashi masks, and the rest)."""
    import polars as pl

    from kizashi.features.expressions import ROW

    joined = pandas_frame.join(kizashi_frame, on=["code", "date"], how="left", suffix="__k")
    rows = []
    for spec in specs:
        name = spec.name
        p = pl.col(name)
        k = pl.col(f"{name}__k")
        p_ok = p.is_not_null() & p.is_finite()
        k_ok = k.is_not_null() & k.is_finite()
        both = p_ok & k_ok
        diff = (k - p).abs()
        scale = pl.max_horizontal(k.abs(), p.abs())
        # A relative tolerance alone is ill-posed for values at rounding level (a return
        # minus an equal sector return: 1e-16 vs 0), so add an absolute floor of ATOL_SHARE
        # times the feature's median magnitude.
        typical = joined.select(p.filter(p_ok).abs().median()).item() or 0.0
        atol = ATOL_SHARE * typical
        bad = both & (diff > rtol * scale + atol)
        warm = pl.col(ROW) < spec.lookback
        stats = joined.select(
            both.sum().alias("both"),
            diff.filter(both).max().alias("max_abs"),
            (diff / scale).filter(both & (scale > REL_FLOOR_SHARE * typical)).max().alias("max_rel"),
            bad.sum().alias("bad"),
            (k_ok & ~p_ok & ~warm).sum().alias("only_kizashi"),
            (p_ok & ~k_ok & ~warm).sum().alias("only_pandas"),
            (k_ok & ~p_ok & warm).sum().alias("only_kizashi_warmup"),
            (p_ok & ~k_ok & warm).sum().alias("only_pandas_warmup"),
        ).row(0, named=True)
        worst = (
            joined.filter(bad | (k_ok != p_ok) & ~warm)
            .with_columns((diff / scale).fill_null(float("inf")).alias("_rel"))
            .sort("_rel", descending=True)
            .head(3)
            .select("code", "date", ROW, p.alias("pandas"), k.alias("kizashi"))
        )
        stats["examples"] = [{key: str(v) for key, v in r.items()} for r in worst.iter_rows(named=True)]
        stats["name"] = name
        stats["lookback"] = spec.lookback
        stats["ok"] = stats["bad"] == 0 and stats["only_kizashi"] == 0 and stats["only_pandas"] == 0
        rows.append(stats)
    return rows


def run_comparison(args: argparse.Namespace, prepared, tables, specs, result: dict[str, Any]) -> dict[str, Any]:
    import polars as pl

    import pandas_reference
    from kizashi.features.expressions import ROW
    from kizashi.features.pipeline import attach_context, evaluate_features

    by_name = {s.name: s for s in specs}
    missing = [n for n in pandas_reference.FEATURE_NAMES if n not in by_name]
    if missing:
        raise SystemExit(f"kizashi builds no feature named {missing}: update pandas_reference.py")
    chosen = [by_name[n] for n in pandas_reference.FEATURE_NAMES]
    frame = prepared
    if args.pandas_rows is not None and prepared.height > args.pandas_rows:
        frame = first_stocks(prepared, args.pandas_rows)
    frame = attach_context(frame, tables)
    # Both sides read the same columns: what the 20 expressions read, plus the keys.
    read = {n for s in chosen for n in s.expr.meta.root_names()} | set(pandas_reference.INPUT_COLUMNS)
    frame = frame.select([n for n in frame.columns if n in read or n == ROW])
    out: dict[str, Any] = {"rows": frame.height, "codes": frame.get_column("code").n_unique()}

    kizashi_seconds = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        built = evaluate_features(frame, chosen, normalization="none", dtype=pl.Float64())
        kizashi_seconds.append(time.perf_counter() - started)
    kizashi_values = built.select("code", "date", *pandas_reference.FEATURE_NAMES)
    del built
    # Each feature alone (with the stage-1 features a stage-2 one reads), and the fixed cost
    # of one evaluate_features call (sort by date, code; cast) with no feature at all.
    started = time.perf_counter()
    evaluate_features(frame, [], normalization="none", dtype=pl.Float64())
    out["seconds_kizashi_fixed"] = time.perf_counter() - started
    alone = {}
    for spec in chosen:
        needs = [by_name[n] for n in dict.fromkeys(spec.expr.meta.root_names()) if n in by_name and spec.stage == 2]
        started = time.perf_counter()
        evaluate_features(frame, [*needs, spec], normalization="none", dtype=pl.Float64())
        alone[spec.name] = time.perf_counter() - started
    out["seconds_kizashi_alone"] = alone

    pdf = frame.select(*pandas_reference.INPUT_COLUMNS).to_pandas()  # not timed
    pandas_seconds: list[dict[str, float]] = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        reference, per_feature = pandas_reference.compute_reference(pdf)
        per_feature["total"] = time.perf_counter() - started
        pandas_seconds.append(per_feature)
    best = min(pandas_seconds, key=lambda s: s["total"])
    reference_frame = pl.from_pandas(reference).with_columns(frame.select("code", "date", ROW))
    out.update(
        seconds_kizashi=min(kizashi_seconds),
        seconds_pandas=best["total"],
        seconds_pandas_by_feature={n: best[n] for n in pandas_reference.FEATURE_NAMES},
        n_features=len(chosen),
        repeat=args.repeat,
        rtol=args.rtol,
        checks=compare(kizashi_values, reference_frame, chosen, args.rtol),
    )
    # The full feature set's seconds per feature, scaled to the rows pandas read.
    row_share = out["rows"] / result["rows_prepared"]
    out["row_share"] = row_share
    out["seconds_per_feature_full_scaled"] = result["seconds_features"] / result["n_features"] * row_share
    return out


def worker(args: argparse.Namespace) -> None:
    with PeakRSS() as rss:
        result, prepared, tables, specs = run_pipeline(args, rss)
        if not args.skip_pandas:
            result["pandas"] = run_comparison(args, prepared, tables, specs, result)
    Path(args.result_file).write_text(json.dumps(result, default=str), encoding="utf-8")


# ------------------------------------------------------------------------------ report


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def print_dataset(console, r: dict[str, Any]) -> None:
    from rich.table import Table

    total = r["seconds_load"] + r["seconds_prepare"] + r["seconds_features"]
    rows = r["rows_out"]
    title = f"{r['dataset']}: {r['source']}"
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    subset = f" (most recent dates of {r['rows_loaded']:,} loaded; --rows-limit {r['rows_limit']:,})" if "rows_limit" in r else ""
    table.add_row("rows (stock-days)", f"{rows:,}{subset}")
    table.add_row("stocks x dates", f"{r['n_codes']:,} x {r['n_dates']:,} ({r['date_min']} .. {r['date_max']})")
    table.add_row("feature columns", f"{r['n_features']} (+ keys and targets: {r['output_columns']} output columns)")
    table.add_row("chunks", f"{r['n_chunks']} x {min(r['chunk_days'], r['n_dates'])} days (+ warm-up rows)")
    table.add_row("polars threads / cpus", f"{r['threads']} / {r['cpus']}")
    table.add_row("seconds: load + validate + adjust", f"{r['seconds_load']:.2f}")
    table.add_row("seconds: prepare (helpers, market/sector tables, targets)", f"{r['seconds_prepare']:.2f}")
    table.add_row(f"seconds: features + normalization ({r['normalization']})", f"{r['seconds_features']:.2f}")
    table.add_row("seconds: total", f"{total:.2f}")
    table.add_row("rows/s (features phase)", f"{rows / r['seconds_features']:,.0f}")
    table.add_row("rows/s (end to end)", f"{rows / total:,.0f}")
    table.add_row("feature-values/s (features phase)", f"{rows * r['n_features'] / r['seconds_features']:,.0f}")
    phases = r["peak_rss_phases"]
    table.add_row("peak RSS (process, ru_maxrss)", gb(r["peak_rss"]))
    table.add_row(
        "peak RSS sampled per phase: load / prepare / features",
        " / ".join(gb(phases[p]) for p in ("load", "prepare", "features")),
    )
    console.print(table)


def print_comparison(console, r: dict[str, Any]) -> None:
    from rich.table import Table

    p = r["pandas"]
    n = p["n_features"]
    capped = p["rows"] < r["rows_prepared"]
    scope = f"{p['rows']:,} rows ({p['codes']} stocks)"
    if capped:
        scope += f": the first stocks in code order, --pandas-rows cap; {p['row_share']:.1%} of the panel"

    checks = Table(title=f"{r['dataset']}: kizashi vs pandas, {n} features on {scope}", header_style="bold")
    for col in ("feature", "pandas s", "kizashi s alone", "both non-null", "max abs diff", "max rel diff", f"> tol (rtol {p['rtol']:g})", "null: only kizashi / only pandas (after warm-up)", "null (warm-up rows)", "ok"):
        checks.add_column(col, justify="right" if col != "feature" else "left")
    for c in p["checks"]:
        checks.add_row(
            c["name"],
            f"{p['seconds_pandas_by_feature'][c['name']]:.3f}",
            f"{p['seconds_kizashi_alone'][c['name']]:.3f}",
            f"{c['both']:,}",
            f"{c['max_abs']:.2e}" if c["max_abs"] is not None else "-",
            f"{c['max_rel']:.2e}" if c["max_rel"] is not None else "-",
            f"{c['bad']:,}",
            f"{c['only_kizashi']:,} / {c['only_pandas']:,}",
            f"{c['only_kizashi_warmup']:,} / {c['only_pandas_warmup']:,}",
            "yes" if c["ok"] else "[bold red]NO[/]",
        )
    console.print(checks)
    console.print(
        f"  kizashi s alone: one evaluate_features call per feature (with the stage-1 inputs of a stage-2"
        f" one); {p['seconds_kizashi_fixed']:.3f} s of each is the fixed cost of a call with no feature"
        " (sort by date, code)"
    )
    console.print(
        f"  agreement: |kizashi - pandas| <= {p['rtol']:g} * max(|kizashi|, |pandas|) + {ATOL_SHARE:g} * median |value|;"
        f" max rel diff over values above {REL_FLOOR_SHARE:g} * median |value|; warm-up rows = the stock's first"
        " `lookback` rows, which kizashi masks to null"
    )
    for c in p["checks"]:
        if not c["ok"]:
            console.print(f"  mismatch in {c['name']} (lookback {c['lookback']}): worst rows {c['examples']}")

    k_per = p["seconds_kizashi"] / n
    pd_per = p["seconds_pandas"] / n
    full_per = p["seconds_per_feature_full_scaled"]
    ratios = Table(title=f"{r['dataset']}: seconds per feature on {p['rows']:,} rows", header_style="bold")
    for col in ("measure", "kizashi s/feature", "pandas s/feature", "pandas / kizashi"):
        ratios.add_column(col, justify="right" if col != "measure" else "left")
    ratios.add_row(
        f"the same {n} features (kizashi {p['seconds_kizashi']:.2f} s, pandas {p['seconds_pandas']:.2f} s in all)",
        f"{k_per:.4f}",
        f"{pd_per:.4f}",
        f"{pd_per / k_per:.1f}x",
    )
    note = "full set incl. normalization"
    if capped:
        note += f", scaled from {r['rows_out']:,} rows by {p['row_share']:.3f}"
    ratios.add_row(
        f"kizashi's {r['n_features']} features ({note}) vs pandas' {n}",
        f"{full_per:.4f}",
        f"{pd_per:.4f}",
        f"{pd_per / full_per:.1f}x",
    )
    console.print(ratios)
    if p["repeat"] > 1:
        console.print(f"  (best of {p['repeat']} runs on each side)")


def run_worker_process(dataset: str, args: argparse.Namespace, console) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        result_file = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", dataset, "--result-file", str(result_file)]
        for flag in ("normalization", "chunk_rows", "pandas_rows", "rows_limit", "sp500_dir", "stocks", "days", "peer_groups", "seed", "repeat", "rtol"):
            value = getattr(args, flag)
            if value is not None:
                command += [f"--{flag.replace('_', '-')}", str(value)]
        if args.skip_pandas:
            command.append("--skip-pandas")
        started = time.perf_counter()
        code = subprocess.call(command)
        if code != 0 or not result_file.exists():
            console.print(f"[bold red]{dataset}: worker failed (exit code {code})[/]")
            return None
        result = json.loads(result_file.read_text(encoding="utf-8"))
        result["seconds_process"] = time.perf_counter() - started
        return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("sp500", "synthetic", "both"), default="both")
    parser.add_argument("--rows-limit", type=int, default=None, help="keep the most recent dates, about this many rows (after load)")
    parser.add_argument("--normalization", choices=("robust", "zscore", "none"), default="zscore")
    parser.add_argument("--skip-pandas", action="store_true", help="only time the kizashi pipeline")
    parser.add_argument(
        "--pandas-rows",
        type=int,
        default=2_500_000,
        help="cap the pandas comparison's input to the first stocks with about this many rows (default %(default)s)",
    )
    parser.add_argument("--chunk-rows", type=int, default=600_000, help="about this many stock-days per feature chunk")
    parser.add_argument("--sp500-dir", default=str(SP500_DIR), help="folder with daily_1999_2018.parquet and sectors.csv")
    parser.add_argument("--stocks", type=int, default=4000, help="synthetic market: stocks")
    parser.add_argument("--days", type=int, default=2500, help="synthetic market: trading days")
    parser.add_argument("--peer-groups", type=int, default=100, help="synthetic market: hidden peer groups")
    parser.add_argument("--seed", type=int, default=7, help="synthetic market: seed")
    parser.add_argument("--repeat", type=int, default=3, help="comparison: best of this many runs per side")
    parser.add_argument("--rtol", type=float, default=1e-6, help="comparison: relative tolerance")
    parser.add_argument("--worker", choices=("sp500", "synthetic"), help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.worker:
        worker(args)
        return 0

    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=180)
    datasets = ["sp500", "synthetic"] if args.dataset == "both" else [args.dataset]
    if "sp500" in datasets and not (Path(args.sp500_dir) / SP500_FILE).is_file():
        console.print(f"sp500: {Path(args.sp500_dir) / SP500_FILE} not found: skipping the S&P 500 dataset")
        datasets.remove("sp500")
    console.print(GOAL)
    failed = False
    for dataset in datasets:
        console.rule(dataset)
        result = run_worker_process(dataset, args, console)
        if result is None:
            failed = True
            continue
        print_dataset(console, result)
        if "pandas" in result:
            print_comparison(console, result)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
