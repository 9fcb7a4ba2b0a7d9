"""Qlib's Alpha158 handler against kizashi on the S&P 500 file: time, peak memory, and
value-by-value agreement, all measured in one run on the same data and the same machine.

Run it with the peer environment (Qlib is never part of the main install):

    python3.11 -m venv .venv-peers
    .venv-peers/bin/pip install pyqlib==0.9.7          # or: pip install -e '.[peers]'
    # kizashi and its dependencies: either `pip install torch==2.13.0 -e .` into
    # .venv-peers, or (as on the machine that produced docs/peers.md) one .pth file that
    # appends the main virtualenv's site-packages after the peer packages:
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \\
        > .venv-peers/lib/python3.11/site-packages/kizashi_main_venv.pth
    nice .venv-peers/bin/python benchmarks/bench_qlib_alpha158.py --repeat 5 --check-float64
    nice .venv-peers/bin/python benchmarks/bench_qlib_alpha158.py --quick    # 60 stocks, 2017-2018

Options: ``--start`` (default 2012-01-01; ``--quick``: 2017-01-01), ``--end``, ``--quick``
(the first 60 stocks), ``--kernels`` (Qlib's worker processes, default every core),
``--repeat`` (rounds of the three timed sides, default 3), ``--check-float64``, ``--work DIR``
(keep the intermediate files there), ``--json FILE``.

Steps (each measured side in a fresh subprocess, so that peak memory figures do not mix;
peak RSS is sampled over the subprocess and all its children, e.g. Qlib's worker pool). The
timed sides 2-4 run in ``--repeat`` interleaved rounds (Qlib, alpha158, build, Qlib, ...), so
that load from other processes on the machine falls on every side alike; each side's
fastest run counts, and every run's seconds are printed.

1. ``prepare`` (not counted): the rows of ``configs/data/sp500.yaml``'s input file from
   ``--start`` to ``--end`` are written to a Parquet file, which every later step reads.
   Its adjusted panel, as ``kizashi data build`` reads it (``load_inputs``: validation,
   split and dividend adjustment), is rounded to float32 -- Qlib's on-disk precision -- and
   written twice: as a Parquet panel for kizashi, and in Qlib's on-disk format
   (``calendars/day.txt``, ``instruments/all.txt``, ``features/<code>/<field>.day.bin``:
   little-endian float32, the first value the stock's start index in the calendar, then one
   value per calendar day to its last date, NaN on its missing days). Timed on its own.
2. ``qlib``: ``qlib.init`` on that folder (``kernels=--kernels``, default every core; Qlib's
   own default is cores - 2, which is 1 on a 2-core machine) and the ``Alpha158`` handler with
   its default processors over every instrument and day, features fetched raw
   (``DataHandlerLP.DK_R``: before any processor). Time: handler construction + fetch.
3. ``alpha158``: kizashi's ``alpha158`` family alone on the same float32-valued panel:
   reading the panel's Parquet file (Qlib's time includes reading its files), then
   ``prepare_base`` + ``evaluate_features`` (no normalization, float32 output, as Qlib's).
4. ``build``: ``kizashi data build`` end to end through the CLI, on the same rows, with
   ``configs/data/sp500.yaml``'s settings (every default family including ``peers`` and its
   correlation graphs, targets, per-day normalization, Parquet written).
5. ``stages``: the same build, step by step as ``kizashi.datasets.build.build_dataset`` runs
   it, timed per stage (read inputs, base panel + targets, market/sector tables, graphs,
   per chunk: warm-up window + joins, features, normalization, write), then the feature cost
   of each family alone over the whole panel (stage-1 columns of one family, then each
   family's stage-2 columns over the materialized stage-1 columns; no normalization).
6. ``qlib64`` (only with ``--check-float64``; untimed): Qlib's handler again, its stored
   fields read as float64 (``FileFeatureStorage`` patched in that process), so that its
   element-wise operators run in float64.
7. ``compare``: Qlib's and kizashi's Alpha158 values, feature by feature, where both are
   defined: agree when ``|k - q| <= RTOL * |q| + ATOL`` against Qlib as it runs, and
   ``+ ATOL_FLOAT64`` against the float64 run (see ``docs/peers.md``: Qlib stores prices and
   evaluates element-wise operators in float32, which the correlation and dispersion
   features amplify); values only Qlib has are split into warm-up / gap windows (kizashi
   nulls a window that is not full of consecutive sessions; Qlib's ``min_periods=1`` fills
   it) and others.

Output: a table of seconds and peak RSS per side, the ratios Qlib Alpha158 / kizashi alpha158
and Qlib Alpha158 / kizashi full build, the stage breakdown, and the agreement summary;
``--json FILE`` writes every figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SP500_CONFIG = REPO / "configs" / "data" / "sp500.yaml"
QLIB_FIELDS = ("open", "high", "low", "close", "volume")
DEFAULT_START = "2012-01-01"
QUICK_START = "2017-01-01"
QUICK_STOCKS = 60
# Agreement: |kizashi - qlib| <= RTOL * |qlib| + ATOL against Qlib as it runs (float32
# storage and element-wise arithmetic), and + ATOL_FLOAT64 against Qlib reading its files as
# float64 (--check-float64); docs/peers.md explains the difference.
RTOL = 1e-5
ATOL = 1e-5
ATOL_FLOAT64 = 1e-12

log = logging.getLogger("bench_qlib_alpha158")


# ------------------------------------------------------------------------ data conversion


def load_sp500_rows(start: dt.date, end: dt.date | None, codes: list[str] | None, out_file: Path) -> Path:
    """The raw S&P 500 rows of ``configs/data/sp500.yaml`` from ``start`` to ``end`` (and of
    ``codes`` only, when given), written to ``out_file``."""
    import polars as pl

    from kizashi.config import DataBuildConfig, load_config

    source = load_config(SP500_CONFIG, DataBuildConfig).input.path
    rows = pl.scan_parquet(source).filter(pl.col("date") >= start)
    if end is not None:
        rows = rows.filter(pl.col("date") <= end)
    if codes is not None:
        rows = rows.filter(pl.col("code").is_in(codes))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    rows.collect().write_parquet(out_file)
    return out_file


def sp500_config(raw_file: Path, out_dir: Path):
    """``configs/data/sp500.yaml`` reading ``raw_file`` and writing to ``out_dir``."""
    from kizashi.config import DataBuildConfig, load_config

    return load_config(SP500_CONFIG, DataBuildConfig, {"input": {"path": str(raw_file)}, "output": {"dir": str(out_dir)}})


def float32_panel(panel):
    """The panel's code, date and OHLCV with every price and volume rounded to float32 (and
    held as float64): the values Qlib stores and reads."""
    import polars as pl

    return panel.select(
        "code", "date", *(pl.col(f).cast(pl.Float32).cast(pl.Float64) for f in QLIB_FIELDS)
    ).sort("code", "date")


def write_qlib_provider(panel, folder: Path) -> dict[str, int]:
    """Write ``panel`` (code, date, OHLCV) in Qlib's on-disk format under ``folder``: the
    market calendar (every date of the panel), one instrument per code over its first to
    last date, one float32 file per field and code (the stock's start index in the calendar,
    then its values on every calendar day from there, NaN where it has no row)."""
    import numpy as np
    import polars as pl

    calendar = panel.get_column("date").unique().sort()
    (folder / "calendars").mkdir(parents=True, exist_ok=True)
    (folder / "instruments").mkdir(parents=True, exist_ok=True)
    (folder / "calendars" / "day.txt").write_text("".join(f"{d.isoformat()}\n" for d in calendar.to_list()))
    sessions = calendar.to_frame().with_row_index("session")
    rows = panel.join(sessions, on="date", how="left").sort("code", "date")
    spans = rows.group_by("code", maintain_order=True).agg(
        pl.col("session").min().alias("first"), pl.col("session").max().alias("last"), pl.len().alias("n")
    )
    dates = calendar.to_list()
    (folder / "instruments" / "all.txt").write_text(
        "".join(f"{code}\t{dates[a].isoformat()}\t{dates[b].isoformat()}\n" for code, a, b, _ in spans.iter_rows())
    )
    session = rows.get_column("session").to_numpy()
    values = {f: rows.get_column(f).to_numpy().astype(np.float32) for f in QLIB_FIELDS}
    offset = 0
    for code, first, last, n in spans.iter_rows():  # one file per stock and field, as Qlib's dump_bin
        stock = slice(offset, offset + n)
        offset += n
        directory = folder / "features" / code.lower()
        directory.mkdir(parents=True, exist_ok=True)
        for field, column in values.items():
            dense = np.full(last - first + 1, np.nan, dtype=np.float32)
            dense[session[stock] - first] = column[stock]
            np.concatenate([np.array([first], dtype="<f4"), dense.astype("<f4")]).tofile(directory / f"{field}.day.bin")
    return {"codes": spans.height, "days": calendar.len(), "missing_days": int((spans["last"] - spans["first"] + 1 - spans["n"]).sum())}


def qlib_alpha158(provider: Path, start: dt.date, end: dt.date, kernels: int):
    """Qlib's ``Alpha158`` handler (default processors) over every instrument of
    ``provider`` from ``start`` to ``end``; returns (raw feature frame as pandas indexed by
    (datetime, instrument), seconds of handler construction + fetch)."""
    import qlib
    from qlib.constant import REG_US
    from qlib.contrib.data.handler import Alpha158
    from qlib.data.dataset.handler import DataHandlerLP

    qlib.init(provider_uri=str(provider), region=REG_US, kernels=kernels, logging_level=logging.WARNING)
    started = time.perf_counter()
    handler = Alpha158(
        instruments="all",
        start_time=str(start),
        end_time=str(end),
        fit_start_time=str(start),
        fit_end_time=str(end),
    )
    features = handler.fetch(col_set="feature", data_key=DataHandlerLP.DK_R)
    return features, time.perf_counter() - started


def qlib_frame_to_polars(features):
    """Qlib's (datetime, instrument)-indexed frame -> polars ``code, date, <158 columns>``."""
    import polars as pl

    frame = features.reset_index()
    frame.columns = [str(c) for c in frame.columns]
    return (
        pl.from_pandas(frame)
        .rename({"instrument": "code", "datetime": "date"})
        .with_columns(pl.col("date").cast(pl.Date))
        .sort("code", "date")
    )


def kizashi_alpha158(panel, dtype=None):
    """kizashi's alpha158 family over ``panel`` (code, date, OHLCV): prepare_base +
    evaluate_features, no normalization. Returns (frame of code, date, alpha158_* columns;
    seconds)."""
    import polars as pl

    from kizashi.features.pipeline import evaluate_features, prepare_base
    from kizashi.features.registry import resolve_specs
    from kizashi.features.spec import FeatureContext

    started = time.perf_counter()
    specs = resolve_specs(FeatureContext(), ["alpha158"])
    base = prepare_base(panel, horizons=[1])
    built = evaluate_features(base, specs, normalization="none", dtype=dtype or pl.Float32())
    seconds = time.perf_counter() - started
    return built.select("code", "date", *(s.name for s in specs)), seconds


# ------------------------------------------------------------------------------- workers


def _write_result(path: str, result: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(result, indent=2, default=str))


def worker_prepare(args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    from kizashi.data.inputs import load_inputs

    work = Path(args.work)
    start = dt.date.fromisoformat(args.start)
    end = dt.date.fromisoformat(args.end) if args.end else None
    codes = None
    started = time.perf_counter()
    if args.quick:
        from kizashi.config import DataBuildConfig, load_config

        source = load_config(SP500_CONFIG, DataBuildConfig).input.path
        codes = (
            pl.scan_parquet(source).filter(pl.col("date") >= start).select("code").unique().sort("code")
            .collect().get_column("code").head(QUICK_STOCKS).to_list()
        )
    raw = load_sp500_rows(start, end, codes, work / "sp500_rows.parquet")
    config = sp500_config(raw, work / "dataset")
    inputs = load_inputs(config.input)
    panel = float32_panel(inputs.panel)
    panel.write_parquet(work / "panel_float32.parquet")
    seconds_read = time.perf_counter() - started
    started = time.perf_counter()
    stats = write_qlib_provider(panel, work / "qlib_data")
    seconds_convert = time.perf_counter() - started
    dates = panel.get_column("date")
    return {
        "rows": panel.height, "codes": panel.get_column("code").n_unique(), "days": dates.n_unique(),
        "date_min": str(dates.min()), "date_max": str(dates.max()), "qlib_missing_days": stats["missing_days"],
        "seconds_read_and_adjust": seconds_read, "seconds_convert_to_qlib": seconds_convert,
    }


def worker_qlib(args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    work = Path(args.work)
    dates = pl.read_parquet(work / "panel_float32.parquet", columns=["date"]).get_column("date")
    features, seconds = qlib_alpha158(work / "qlib_data", dates.min(), dates.max(), args.kernels)
    frame = qlib_frame_to_polars(features)  # not timed
    frame.write_parquet(work / "qlib_alpha158.parquet")
    return {"seconds": seconds, "rows": frame.height, "columns": frame.width - 2, "kernels": args.kernels}


def worker_alpha158(args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    work = Path(args.work)
    started = time.perf_counter()
    panel = pl.read_parquet(work / "panel_float32.parquet")
    seconds_read = time.perf_counter() - started
    frame, seconds = kizashi_alpha158(panel)
    frame.write_parquet(work / "kizashi_alpha158.parquet")  # not timed
    # Qlib's time includes reading its files: this side's includes reading the panel.
    return {"seconds": seconds_read + seconds, "seconds_read_panel": seconds_read, "rows": frame.height,
            "columns": frame.width - 2, "threads": pl.thread_pool_size()}


def worker_stages(args: argparse.Namespace) -> dict[str, Any]:
    """The build of ``kizashi.datasets.build.build_dataset``, stage by stage, then each
    family's feature cost alone."""
    import polars as pl

    from kizashi.data.inputs import load_inputs
    from kizashi.datasets.build import feature_specs_for
    from kizashi.datasets.store import FEATURES_DIR, GRAPHS_DIR, write_partitioned
    from kizashi.features.expressions import IN_UNIVERSE, RET
    from kizashi.features.graph import correlation_graphs, neighbor_table
    from kizashi.features.normalization import cross_sectional_normalize
    from kizashi.features.pipeline import (
        ContextTables,
        attach_context,
        chunk_bounds,
        chunk_window,
        context_tables,
        evaluate_features,
        output_columns,
        prepare_base,
    )

    work = Path(args.work)
    config = sp500_config(work / "sp500_rows.parquet", work / "dataset_stages")
    out = Path(tempfile.mkdtemp(dir=work, prefix="stages-"))
    seconds: dict[str, float] = {}

    def timed(name: str, started: float) -> None:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

    t = time.perf_counter()
    inputs = load_inputs(config.input)
    timed("read, validate, adjust inputs", t)
    t = time.perf_counter()
    horizons = config.targets.horizons
    prepared = prepare_base(inputs.panel, horizons, min_history=config.input.min_history,
                            fill_end_days=config.targets.fill_end_days)
    timed("base panel + targets", t)
    t = time.perf_counter()
    sectors = inputs.panel.select("code", "sector").unique()
    plain = context_tables(prepared, inputs.margin, None)
    timed("market + sector tables", t)
    t = time.perf_counter()
    universe = prepared.lazy().filter(pl.col(IN_UNIVERSE)).select("code", "date", pl.col(RET).alias("return_1d")).collect()
    edges = correlation_graphs(universe, config.graph, sectors=sectors, dtype=config.graph.dtype)
    tables = ContextTables(plain.market, plain.sector, plain.margin, edges, neighbor_table(edges, universe))
    timed("correlation graphs + neighbour table", t)
    specs = feature_specs_for(inputs, config)
    dtype = pl.Float32() if config.features.dtype == "float32" else pl.Float64()
    calendar_days = prepared.get_column("date").n_unique()
    chunk_days = max(20, int(config.output.chunk_rows / max(prepared.height / max(calendar_days, 1), 1.0)))
    dates = prepared.get_column("date").unique().sort().to_list()
    normalized = [s.name for s in specs if s.normalize]
    columns = output_columns(prepared, specs, horizons)
    n_rows = 0
    for index, (first, last) in enumerate(chunk_bounds(dates, chunk_days)):
        t = time.perf_counter()
        window = attach_context(chunk_window(prepared, specs, first, last), tables)
        timed("chunks: warm-up window + context joins", t)
        t = time.perf_counter()
        built = evaluate_features(window, specs, normalization="none", dtype=dtype)
        timed("chunks: features (stage 1 + stage 2)", t)
        t = time.perf_counter()
        built = cross_sectional_normalize(built, normalized, config.normalization.method, config.normalization.clip)
        chunk = built.filter(pl.col("date").is_between(first, last)).select(columns)
        timed("chunks: per-day normalization", t)
        t = time.perf_counter()
        write_partitioned(chunk, out / FEATURES_DIR, index)
        n_rows += chunk.height
        timed("write Parquet", t)
    t = time.perf_counter()
    write_partitioned(edges, out / GRAPHS_DIR, 0)
    timed("write Parquet", t)
    del window, built, chunk
    total = sum(seconds.values())

    # Each family alone over the whole panel (not part of the build's time).
    frame = attach_context(prepared, tables)
    families: dict[str, float] = {}
    for family in dict.fromkeys(s.family for s in specs):
        own = [s for s in specs if s.family == family and s.stage == 1]
        if own:
            t = time.perf_counter()
            evaluate_features(frame, own, normalization="none", dtype=dtype)
            families[family] = time.perf_counter() - t
    stage2 = [s for s in specs if s.stage == 2]
    if stage2:
        stage1_frame = evaluate_features(frame, [s for s in specs if s.stage == 1], normalization="none", dtype=dtype)
        for family in dict.fromkeys(s.family for s in stage2):
            t = time.perf_counter()
            evaluate_features(stage1_frame, [s for s in stage2 if s.family == family], normalization="none", dtype=dtype)
            families[family] = families.get(family, 0.0) + time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds_stages": seconds, "seconds_total": total, "rows": n_rows, "features": len(specs),
            "chunks": -(-calendar_days // chunk_days), "seconds_families_alone": families,
            "features_per_family": {f: sum(s.family == f for s in specs) for f in families}}


def read_as_float64() -> None:
    """Make Qlib read every stored field as float64 (this process only): its element-wise
    operators then run in float64 instead of float32."""
    import numpy as np
    from qlib.data.storage import file_storage

    read_float32 = file_storage.FileFeatureStorage.__getitem__

    def read_float64(self, i):
        values = read_float32(self, i)
        return values.astype(np.float64) if hasattr(values, "astype") else values

    file_storage.FileFeatureStorage.__getitem__ = read_float64


def worker_qlib64(args: argparse.Namespace) -> dict[str, Any]:
    """Qlib's handler again with its stored fields read as float64 (for the comparison only)."""
    import polars as pl

    read_as_float64()
    work = Path(args.work)
    dates = pl.read_parquet(work / "panel_float32.parquet", columns=["date"]).get_column("date")
    features, seconds = qlib_alpha158(work / "qlib_data", dates.min(), dates.max(), args.kernels)
    qlib_frame_to_polars(features).write_parquet(work / "qlib64_alpha158.parquet")
    return {"seconds": seconds}


def agreement(joined, qlib_prefix: str, lookback: dict[str, int], rtol: float, atol: float) -> dict[str, Any]:
    """Per feature, kizashi (``alpha158_<NAME>``) against Qlib (``<qlib_prefix><NAME>``) on
    the rows of ``joined`` (which carries ``_run_row``)."""
    import polars as pl

    from kizashi.features.alpha158 import PREFIX, QLIB_NAMES
    from kizashi.features.expressions import RUN_ROW

    per_feature = {}
    for name in QLIB_NAMES:
        k, q = pl.col(PREFIX + name).cast(pl.Float64), pl.col(qlib_prefix + name).cast(pl.Float64)
        k_ok, q_ok = k.is_not_null() & k.is_finite(), q.is_not_null() & q.is_finite()
        both = k_ok & q_ok
        diff = (k - q).abs()
        bad = both & (diff > rtol * q.abs() + atol)
        short = pl.col(RUN_ROW) < lookback[PREFIX + name]  # warm-up or a window across a gap
        stats = joined.select(
            both.sum().alias("both"),
            bad.sum().alias("bad"),
            diff.filter(both).max().alias("max_abs"),
            (q_ok & ~k_ok & short).sum().alias("only_qlib_short_window"),
            (q_ok & ~k_ok & ~short).sum().alias("only_qlib_other"),
            (k_ok & ~q_ok).sum().alias("only_kizashi"),
        ).row(0, named=True)
        if stats["bad"] or stats["only_qlib_other"] or stats["only_kizashi"]:
            worst = joined.filter(bad | (q_ok & ~k_ok & ~short) | (k_ok & ~q_ok)).with_columns(
                (diff / (q.abs() + 1e-300)).fill_null(float("inf")).alias("_rel")
            ).sort("_rel", descending=True).head(3)
            stats["examples"] = [
                {"code": r["code"], "date": str(r["date"]), "qlib": r[qlib_prefix + name], "kizashi": r[PREFIX + name]}
                for r in worst.iter_rows(named=True)
            ]
        per_feature[name] = stats
    return {
        "rtol": rtol, "atol": atol, "per_feature": per_feature,
        "values_compared": sum(s["both"] for s in per_feature.values()),
        "values_disagreeing": sum(s["bad"] for s in per_feature.values()),
        "values_only_qlib_short_window": sum(s["only_qlib_short_window"] for s in per_feature.values()),
    }


def worker_compare(args: argparse.Namespace) -> dict[str, Any]:
    """Feature-by-feature agreement of the Alpha158 frames written by the workers."""
    import polars as pl

    from kizashi.features.expressions import ROW, RUN_ROW
    from kizashi.features.pipeline import prepare_base
    from kizashi.features.registry import resolve_specs
    from kizashi.features.spec import FeatureContext

    work = Path(args.work)
    panel = pl.read_parquet(work / "panel_float32.parquet")
    rows = prepare_base(panel, horizons=[1]).select("code", "date", ROW, RUN_ROW)
    joined = rows.join(pl.read_parquet(work / "kizashi_alpha158.parquet"), on=["code", "date"], how="left")
    lookback = {s.name: s.lookback for s in resolve_specs(FeatureContext(), ["alpha158"])}
    result: dict[str, Any] = {}
    for key, file, prefix, atol in (("float32", "qlib_alpha158.parquet", "q_", ATOL),
                                    ("float64", "qlib64_alpha158.parquet", "q64_", ATOL_FLOAT64)):
        if not (work / file).exists():
            continue
        qlib_frame = pl.read_parquet(work / file)
        if key == "float32":
            vwap = qlib_frame.get_column("VWAP0") if "VWAP0" in qlib_frame.columns else None
            result["qlib_vwap0_non_null"] = None if vwap is None else int((vwap.is_not_null() & ~vwap.is_nan()).sum())
            result["qlib_rows_without_a_kizashi_row"] = qlib_frame.join(rows, on=["code", "date"], how="anti").height
        joined = joined.join(
            qlib_frame.rename({n: prefix + n for n in qlib_frame.columns if n not in ("code", "date")}),
            on=["code", "date"], how="left",
        )
        result[key] = agreement(joined, prefix, lookback, RTOL, atol)
    return result


WORKERS = {
    "prepare": worker_prepare,
    "qlib": worker_qlib,
    "alpha158": worker_alpha158,
    "stages": worker_stages,
    "compare": worker_compare,
    "qlib64": worker_qlib64,
}


# -------------------------------------------------------------------------------- parent


class TreePeakRSS:
    """Samples the summed RSS of a process and all its descendants until it exits
    (``peak``; pages shared by forked workers count once per process) and the largest RSS of
    any one of them (``peak_single``)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self._root = psutil.Process(pid)
        self.peak = 0
        self.peak_single = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                for proc in [self._root, *self._root.children(recursive=True)]:
                    try:
                        rss = proc.memory_info().rss
                    except psutil.Error:
                        continue
                    total += rss
                    self.peak_single = max(self.peak_single, rss)
            except psutil.Error:
                break
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_measured(command: list[str], log_file: Path) -> tuple[float, int, int, int]:
    """Run ``command``; returns (wall seconds, peak summed RSS of its process tree, largest
    RSS of one process in it, exit code)."""
    started = time.perf_counter()
    with log_file.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
        sampler = TreePeakRSS(proc.pid)
        code = proc.wait()
        sampler.stop()
    return time.perf_counter() - started, sampler.peak, sampler.peak_single, code


def run_worker(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run worker ``name`` in a fresh process: its result, wall seconds and peak RSS."""
    result_file = work / f"result_{name}.json"
    command = [sys.executable, __file__, "--worker", name, "--work", str(work), "--start", args.start,
               "--kernels", str(args.kernels)]
    if args.end:
        command += ["--end", args.end]
    if args.quick:
        command.append("--quick")
    log.info("running %s ...", name)
    wall, peak, single, code = run_measured(command, work / f"log_{name}.txt")
    if code != 0:
        raise SystemExit(f"worker {name} failed (exit {code}); see {work / f'log_{name}.txt'}:\n"
                         + (work / f"log_{name}.txt").read_text()[-3000:])
    result = json.loads(result_file.read_text())
    result.update(wall_seconds=wall, peak_rss_bytes=peak, peak_rss_single_bytes=single)
    return result


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the fewest ``seconds``, with every run's seconds (``seconds_all``) and
    the largest peak RSS of any run."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best.update(
        seconds_all=[r["seconds"] for r in runs],
        peak_rss_bytes=max(r["peak_rss_bytes"] for r in runs),
        peak_rss_single_bytes=max(r["peak_rss_single_bytes"] for r in runs),
    )
    return best


def run_cli_build(work: Path) -> dict[str, Any]:
    """``kizashi data build`` through the CLI, as a user runs it, in a fresh process."""
    import yaml

    from kizashi.config import dump_config
    from kizashi.datasets.store import read_metadata

    config_file = work / "sp500_bench.yaml"
    config_file.write_text(yaml.safe_dump(dump_config(sp500_config(work / "sp500_rows.parquet", work / "dataset"))))
    kizashi = Path(sys.executable).with_name("kizashi")
    command = [str(kizashi)] if kizashi.exists() else [sys.executable, "-m", "kizashi.cli"]
    log.info("running kizashi data build ...")
    wall, peak, single, code = run_measured(
        [*command, "data", "build", "--config", str(config_file)], work / "log_build.txt"
    )
    if code != 0:
        raise SystemExit(f"kizashi data build failed (exit {code}):\n" + (work / "log_build.txt").read_text()[-3000:])
    meta = read_metadata(work / "dataset")
    return {"seconds": wall, "peak_rss_bytes": peak, "peak_rss_single_bytes": single, "rows": meta.n_rows,
            "features": len(meta.columns), "families": list(meta.families)}


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def report(results: dict[str, Any]) -> str:
    prep, q, a, b, s, c = (results[k] for k in ("prepare", "qlib", "alpha158", "build", "stages", "compare"))
    lines = [
        f"S&P 500 {prep['date_min']} .. {prep['date_max']}: {prep['rows']:,} rows, {prep['codes']} stocks, "
        f"{prep['days']} days; {os.cpu_count()} CPU cores; Qlib kernels {q['kernels']}, Polars threads {a['threads']}",
        f"(not counted) read + adjust {prep['seconds_read_and_adjust']:.1f} s, convert to Qlib's format "
        f"{prep['seconds_convert_to_qlib']:.1f} s",
        "",
        f"| {'measured':<52} | {'seconds':>8} | {'peak RSS (all processes)':>24} | {'largest process':>15} |",
        f"| {'-' * 52} | {'-' * 8}:| {'-' * 24}:| {'-' * 15}:|",
        *(
            f"| {label:<52} | {r['seconds']:8.2f} | {gib(r['peak_rss_bytes']):>24} | "
            f"{gib(r['peak_rss_single_bytes']):>15} |"
            for label, r in (
                ("Qlib Alpha158 handler (158 raw features)", q),
                ("kizashi alpha158 family (157 features)", a),
                (f"kizashi data build, end to end ({b['features']} features)", b),
            )
        ),
        "",
        "(fastest of {} rounds; every run: Qlib {}, alpha158 {}, build {} s)".format(
            len(q["seconds_all"]), *(" / ".join(f"{t:.2f}" for t in r["seconds_all"]) for r in (q, a, b))
        ),
        f"Qlib Alpha158 / kizashi alpha158:   {q['seconds'] / a['seconds']:.1f}x",
        f"Qlib Alpha158 / kizashi data build: {q['seconds'] / b['seconds']:.2f}x",
        "",
        f"kizashi data build by stage (instrumented run, {s['chunks']} chunks, {s['features']} features):",
    ]
    for name, secs in s["seconds_stages"].items():
        lines.append(f"  {name:<44} {secs:7.1f} s  {100 * secs / s['seconds_total']:5.1f}%")
    lines.append(f"  {'total':<44} {s['seconds_total']:7.1f} s")
    lines.append("each family alone over the whole panel (no normalization; not part of the build):")
    for name, secs in sorted(s["seconds_families_alone"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<20} {s['features_per_family'][name]:4d} features {secs:7.2f} s")
    lines += [
        "",
        f"Qlib values where kizashi is null, all in a warm-up or gap window: "
        f"{c['float32']['values_only_qlib_short_window']:,}; Qlib rows on a stock's missing days: "
        f"{c['qlib_rows_without_a_kizashi_row']}; Qlib VWAP0 non-null values: {c['qlib_vwap0_non_null']}",
    ]
    for key, label in (("float32", "Qlib as it runs (float32)"), ("float64", "Qlib reading float64")):
        if key not in c:
            continue
        a = c[key]
        bad = {n: v for n, v in a["per_feature"].items() if v["bad"] or v["only_qlib_other"] or v["only_kizashi"]}
        lines.append(
            f"agreement with {label}, |k - q| <= {a['rtol']:g} |q| + {a['atol']:g} where both are defined: "
            f"{a['values_compared']:,} values compared, {a['values_disagreeing']:,} disagree; "
            f"{len(a['per_feature']) - len(bad)} of {len(a['per_feature'])} features agree everywhere"
        )
        for name, v in bad.items():
            lines.append(f"  {name}: {v['bad']} beyond (max |diff| {v['max_abs']:.3g}), {v['only_qlib_other']} "
                         f"only Qlib on full windows, {v['only_kizashi']} only kizashi; e.g. {v.get('examples', [])[:2]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", default=None, help=f"first date (default {DEFAULT_START}; --quick: {QUICK_START})")
    parser.add_argument("--end", default=None, help="last date (default: the file's last)")
    parser.add_argument("--quick", action="store_true", help=f"the first {QUICK_STOCKS} stocks only")
    parser.add_argument("--kernels", type=int, default=os.cpu_count() or 1, help="Qlib's worker processes")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of the three timed sides, each run in a fresh process (the fastest counts)")
    parser.add_argument("--check-float64", action="store_true",
                        help="also run Qlib reading its files as float64 (untimed) and compare against it")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.start = args.start or (QUICK_START if args.quick else DEFAULT_START)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    if args.worker:
        _write_result(str(Path(args.work) / f"result_{args.worker}.json"), WORKERS[args.worker](args))
        return
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_qlib_alpha158-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results: dict[str, Any] = {"date": dt.date.today().isoformat(), "cpus": os.cpu_count()}
        results["prepare"] = run_worker("prepare", args, work)
        # Rounds of (Qlib, alpha158, build), so that load from other processes on the machine
        # falls on every side alike; each side's fastest run counts.
        rounds: dict[str, list[dict[str, Any]]] = {"qlib": [], "alpha158": [], "build": []}
        for _ in range(args.repeat):
            rounds["qlib"].append(run_worker("qlib", args, work))
            rounds["alpha158"].append(run_worker("alpha158", args, work))
            rounds["build"].append(run_cli_build(work))
        results.update({name: best_of(runs) for name, runs in rounds.items()})
        names = ("stages", "qlib64", "compare") if args.check_float64 else ("stages", "compare")
        for name in names:
            results[name] = run_worker(name, args, work)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        print(report(results))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
