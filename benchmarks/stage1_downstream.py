"""What Stage-1 pretraining buys downstream, on instruments held out of pretraining.

    PYTHONPATH=src python benchmarks/stage1_downstream.py --out DIR [--quick] [--device cuda]
    PYTHONPATH=src python benchmarks/stage1_downstream.py --out DIR --synthetic --tiny   # the CPU test

1. Pretrain a Stage-1 encoder (`run_pretraining`) on some of the shipped intraday
   instruments (default BTCUSD_M30, ETHUSD_M30, LINKUSDT_M30), on windows before the
   fine-tuning validation range ends (its checkpoint is chosen on that range's
   reconstruction: nothing of the test range is seen).
2. On instruments held OUT of pretraining (default SOLUSDT_M30 and the m15 stocks
   AAPLUSUSD, NFLXUSUSD, TSLAUSUSD, resampled up to the encoder's m30 base), with the same
   purged split (training windows before ``train_end``, validation windows in
   ``[train_end + purge, val_end)``, test windows from ``val_end + purge`` to the data's end)
   and the same label (``forward_return``: the log return from the anchor close to the base
   close one coarsest bar later, by default one day), through `run_finetune`:

   * ``pretrained``: the pretrained encoder, fine-tuned;
   * ``scratch``: the same architecture, randomly initialized, fine-tuned alike;
   * ``probe``: the pretrained encoder frozen, only the head trained;
   * ``ridge``: ridge regression (numpy) on the same windows' last bars' log returns of every
     timeframe, fitted on the training windows, its penalty chosen on validation rank IC;
   * ``constant``: the training labels' mean (for the MSE only: it has no rank IC).

   Epochs (the neural settings) and the ridge penalty are selected on the validation
   windows only; test figures are never used for a choice.
3. Report, per setting, on the test windows: rank IC per calendar week (pooled over the
   held-out instruments' windows of that week; weeks with fewer than ``--min-block`` labels
   are left out), its mean, standard deviation, t-statistic = mean / std * sqrt(weeks),
   the share of weeks above 0, the number of weeks and of windows; the pooled rank IC; MSE
   over the zero forecast's MSE; and the paired weekly difference of each setting against
   ``scratch`` and ``ridge`` (mean and t). Per instrument, the same weekly rank IC within
   that instrument alone (the pooled weekly figure also ranks the instruments against each
   other, a cross-instrument timing component) and its pooled rank IC. Also the validation
   figures (the selection basis).

Output ``DIR``: ``pretrain/`` (the `kizashi pretrain` output), ``finetune_<setting>/`` (each
`run_finetune` output; a run into the same ``DIR`` reuses the finished ones, so an
interrupted run resumes), ``predictions.parquet`` (every setting's validation and test
forecasts), ``report.json`` and ``report.md`` (written atomically), and the table on stdout.

Sizes: the default (full) run is meant for one GPU: about 80k pretraining and 36k
fine-tuning windows an epoch, 8 epochs each, sized to fit in about 8 minutes on an H200 with
16 CPU cores for the data loaders (an estimate from the CPU cost of a window, about 0.3 ms,
not a measurement; ``--epochs`` shortens the fine-tuning); ``--quick`` shrinks windows, model and epochs for a CPU smoke
run on the real files (its figures are meaningless); ``--synthetic`` replaces the files by
synthetic bars (24 h "crypto" symbols and m15 equity-session "stocks"), and ``--tiny``
shrinks everything further (the unit test).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
    
from kizashi.atomic import atomic_path, write_json_atomic, write_text_atomic
from kizashi.config import PretrainConfig, config_from_dict, dump_config
from kizashi.datasets.multi_timeframe import MaskConfig, MultiTimeframeWindows
from kizashi.evaluation.metrics import daily_ic, summarize_ic
from kizashi.datasets.stage1_windows import load_bar_series, window_datasets
from kizashi.jobs.finetune import PREDICTIONS_FILE, FineTuneResult, correlations, run_finetune, window_frame
from kizashi.jobs.pretrain import PretrainResult, run_pretraining

log = logging.getLogger("stage1_downstream")

PRETRAIN_FILES = ("BTCUSD_M30", "ETHUSD_M30", "LINKUSDT_M30")
HELD_OUT_FILES = ("SOLUSDT_M30", "AAPLUSUSD_M15", "NFLXUSUSD_M15", "TSLAUSUSD_M15")
NEURAL_SETTINGS = ("pretrained", "scratch", "probe")
SETTINGS = (*NEURAL_SETTINGS, "ridge", "constant")
RIDGE_PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
RIDGE_LAST_BARS = 4


@dataclass(frozen=True)
class Size:
    """Everything the run sizes vary in."""

    timeframes: tuple[str, ...]
    seq_len: int
    d_model: int
    n_layers: int
    n_heads: int
    anchor_stride: int  # training windows every n base (m30) bars
    val_anchor_stride: int  # validation / test windows every n base bars
    pretrain_epochs: int
    finetune_epochs: int
    batch_size: int
    num_workers: int
    lr: float
    stats_windows: int = 2000
    limit_train_batches: int | None = None


FULL = Size(timeframes=("m30", "h1", "h4", "d1"), seq_len=64, d_model=64, n_layers=2, n_heads=4, anchor_stride=2,
            val_anchor_stride=4, pretrain_epochs=8, finetune_epochs=8, batch_size=256, num_workers=8, lr=1e-3)
QUICK = Size(timeframes=("m30", "h1", "h4", "d1"), seq_len=16, d_model=16, n_layers=1, n_heads=2, anchor_stride=96,
             val_anchor_stride=8, pretrain_epochs=1, finetune_epochs=2, batch_size=64, num_workers=0, lr=1e-3,
             stats_windows=200, limit_train_batches=20)
TINY = Size(timeframes=("m30", "h1", "h4"), seq_len=8, d_model=16, n_layers=1, n_heads=2, anchor_stride=12,
            val_anchor_stride=4, pretrain_epochs=1, finetune_epochs=2, batch_size=32, num_workers=0, lr=2e-3,
            stats_windows=100)

# the real files: pretraining and fine-tuning share this split
REAL_SPLIT = {"train_end": "2022-03-01T00:00:00", "val_end": "2022-09-01T00:00:00"}
# the synthetic market (start 2021-01-04, --synthetic-days days)
SYNTHETIC_SPLIT = {"train_end": "2021-03-01T00:00:00", "val_end": "2021-03-22T00:00:00"}


def synthetic_files(directory: Path, n_days: int) -> tuple[list[Path], list[Path]]:
    """Synthetic bars as CSV files: (pretraining files, held-out files). Two 24 h m30
    "crypto" symbols pretrain; a third m30 one and two m15 equity-session "stocks" are held
    out (the stocks are resampled up to m30, like the real ones)."""
    from kizashi.data.synthetic.intraday import SyntheticBarsConfig, generate_bars

    directory.mkdir(parents=True, exist_ok=True)
    crypto = generate_bars(SyntheticBarsConfig(symbols=("SYN_P1", "SYN_P2", "SYN_H1"), timeframe="m30",
                                               n_days=n_days, seed=11))
    stocks = generate_bars(SyntheticBarsConfig(symbols=("SYN_S1", "SYN_S2"), timeframe="m15", n_days=n_days,
                                               seed=12, session="equity"))
    paths = {}
    for symbol, frame in {**crypto, **stocks}.items():
        paths[symbol] = directory / f"{symbol}.csv"
        frame.write_csv(paths[symbol])
    return [paths["SYN_P1"], paths["SYN_P2"]], [paths["SYN_H1"], paths["SYN_S1"], paths["SYN_S2"]]


def stage1_config(size: Size, paths: list[Path], split: dict[str, str], device: str, out: Path) -> PretrainConfig:
    """The `kizashi pretrain` / `kizashi finetune` config of this benchmark."""
    return config_from_dict(PretrainConfig, {
        "data": {"paths": [str(p) for p in paths], "duplicates": "first"},  # SOLUSDT_M30 repeats identical rows
        "timeframes": list(size.timeframes),
        **split,
        "windows": {"seq_len": size.seq_len, "anchor_stride": size.anchor_stride,
                    "val_anchor_stride": size.val_anchor_stride, "stats_windows": size.stats_windows},
        "label": {"timeframe": None, "bars": 1},
        "model": {"name": "stage1", "preset": "small",
                  "overrides": {"d_model": size.d_model, "n_layers": size.n_layers, "n_heads": size.n_heads,
                                "dropout": 0.1, "fusion": "joint", "time_bias": 0.5}},
        "optimizer": {"lr": size.lr, "weight_decay": 1e-4, "grad_clip": 1.0},
        "trainer": {"max_epochs": size.pretrain_epochs, "batch_size": size.batch_size, "accelerator": device,
                    "num_workers": size.num_workers, "logger": "none", "one_cycle": True,
                    "limit_train_batches": size.limit_train_batches},
        "output": {"dir": str(out)},
    }, source="stage1_downstream")


# --------------------------------------------------------------------------------------
# the ridge baseline on the same windows
# --------------------------------------------------------------------------------------


def window_features(dataset: MultiTimeframeWindows, last_bars: int = RIDGE_LAST_BARS) -> np.ndarray:
    """``[N, n_tf * (last_bars + 1)]``: per timeframe, the log returns (close to close) of the
    window's last ``last_bars`` bars and the log return over the whole window; invalid bars
    give 0. Only the window's bars (closed by the anchor) are read."""
    rows = []
    for index in range(len(dataset)):
        channels = dataset.raw_item(index)["channels"]
        features = []
        for tf in dataset.timeframes:
            close = channels[tf][:, 3]  # log(close / anchor): differences are log returns
            features.extend(np.diff(close[-last_bars - 1:]))
            features.append(close[-1] - close[0])
        rows.append(features)
    x = np.asarray(rows, dtype=np.float64)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def ridge_forecasts(config: PretrainConfig, base_timeframe: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Ridge on ``window_features`` of the fine-tuning windows (the same purged split): fit on
    the training windows (standardized with their mean / std), the penalty with the best
    validation rank IC; returns the validation and test rows like ``run_finetune``'s
    predictions, and the choice (with ``train_label_mean``, the constant forecast)."""
    bars, _, base = load_bar_series(config, base_timeframe=base_timeframe)
    split = window_datasets(config, bars, base, list(config.timeframes), config.windows.seq_len,
                            MaskConfig(ratio=0.0), with_test=True)
    x = {name: window_features(ds) for name, ds in (("train", split.train), ("val", split.val), ("test", split.test))}
    y = {name: ds.labels() for name, ds in (("train", split.train), ("val", split.val), ("test", split.test))}
    known = np.isfinite(y["train"])
    mean, std = x["train"][known].mean(0), x["train"][known].std(0)
    std = np.where(std > 0, std, 1.0)
    z = {name: (values - mean) / std for name, values in x.items()}
    design = np.column_stack([np.ones(int(known.sum())), z["train"][known]])
    target = y["train"][known]
    choices = []
    for penalty in RIDGE_PENALTIES:
        ridge = np.eye(design.shape[1]) * penalty
        ridge[0, 0] = 0.0  # the intercept is not penalized
        coef = np.linalg.solve(design.T @ design + ridge, design.T @ target)
        val_known = np.isfinite(y["val"])
        prediction = coef[0] + z["val"] @ coef[1:]
        choices.append((correlations(prediction[val_known], y["val"][val_known])[1], penalty, coef))
    val_rank_ic, penalty, coef = max(choices, key=lambda c: c[0] if np.isfinite(c[0]) else -np.inf)
    frames = [window_frame(ds, name).with_columns(prediction=coef[0] + z[name] @ coef[1:])
              for name, ds in (("val", split.val), ("test", split.test))]
    log.info("ridge: penalty %s chosen on validation rank IC %+.4f (grid %s)", penalty, val_rank_ic,
             {c[1]: round(c[0], 4) for c in choices})
    return pl.concat(frames), {"penalty": penalty, "val_rank_ic": val_rank_ic, "n_features": int(z["train"].shape[1]),
                               "grid": {str(c[1]): c[0] for c in choices}, "train_label_mean": float(target.mean())}


# --------------------------------------------------------------------------------------
# metrics over time
# --------------------------------------------------------------------------------------


def weekly_rank_ic(frame: pl.DataFrame, min_block: int) -> pl.DataFrame:
    """``[weeks]`` rows ``week, n, rank_ic``: Spearman correlation of prediction and label over
    the windows anchored in each calendar week (all instruments pooled), weeks with at least
    ``min_block`` labels."""
    known = frame.filter(pl.col("forward_return").is_finite() & pl.col("prediction").is_finite())
    weekly = daily_ic(known.with_columns(week=pl.col("anchor_time").dt.truncate("1w")), prediction="prediction",
                      target="forward_return", by=("week",))
    return weekly.filter(pl.col("n") >= min_block).select("week", "n", "rank_ic")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def split_figures(frame: pl.DataFrame, min_block: int) -> dict[str, Any]:
    """The figures of one setting on one split (module docstring, step 3)."""
    known = frame.filter(pl.col("forward_return").is_finite() & pl.col("prediction").is_finite())
    p, y = known["prediction"].to_numpy(), known["forward_return"].to_numpy()
    weekly = weekly_rank_ic(frame, min_block)
    summary = summarize_ic(weekly["rank_ic"])
    _, pooled = correlations(p, y)
    per_symbol = {}
    for (symbol,), rows in known.group_by("symbol", maintain_order=True):
        own = summarize_ic(weekly_rank_ic(rows, min_block)["rank_ic"])
        per_symbol[symbol] = {
            "pooled": _clean(correlations(rows["prediction"].to_numpy(), rows["forward_return"].to_numpy())[1]),
            "weekly_mean": own["mean"], "weekly_tstat": own["tstat"], "n_weeks": own["n"]}
    return {
        "rank_ic_mean": summary["mean"], "rank_ic_std": summary["std"], "rank_ic_tstat": summary["tstat"],
        "rank_ic_positive_share": summary["hit_rate"], "n_weeks": summary["n"], "n_windows": int(len(y)),
        "pooled_rank_ic": _clean(pooled),
        "mse_over_zero": _clean(float(np.mean((p - y) ** 2) / np.mean(y ** 2))) if len(y) else None,
        "per_symbol": dict(sorted(per_symbol.items())),
    }


def paired_difference(a: pl.DataFrame, b: pl.DataFrame, min_block: int) -> dict[str, Any]:
    """Weekly rank IC of ``a`` minus ``b`` over the weeks both have: mean, t, n."""
    joined = weekly_rank_ic(a, min_block).join(weekly_rank_ic(b, min_block), on="week", suffix="_b")
    out = summarize_ic((joined["rank_ic"] - joined["rank_ic_b"]).to_numpy())
    return {"mean": out["mean"], "tstat": out["tstat"], "n_weeks": out["n"]}


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = TINY if args.tiny else QUICK if args.quick else FULL
    if args.epochs is not None:
        size = dataclasses.replace(size, finetune_epochs=args.epochs)
    if args.synthetic:
        pretrain_files, held_out = synthetic_files(out / "data", args.synthetic_days)
        split = dict(SYNTHETIC_SPLIT)
    else:
        data = Path(args.data_dir)
        pretrain_files = [data / f"{name}.csv" for name in args.pretrain]
        held_out = [data / f"{name}.csv" for name in args.held_out]
        split = dict(REAL_SPLIT)
        missing = [str(p) for p in (*pretrain_files, *held_out) if not p.is_file()]
        if missing:
            raise SystemExit(f"--data-dir {data}: missing {missing}")
    if args.train_end:
        split["train_end"] = args.train_end
    if args.val_end:
        split["val_end"] = args.val_end
    overlap = {p.stem for p in pretrain_files} & {p.stem for p in held_out}
    if overlap:
        raise SystemExit(f"instruments both pretrained on and held out: {sorted(overlap)}")
    device = args.device
    log.info("size %s on %s; pretraining on %s; held out: %s; split %s", "tiny" if args.tiny else
             "quick" if args.quick else "full", device, [p.stem for p in pretrain_files], [p.stem for p in held_out],
             split)

    pretrain_config = stage1_config(size, pretrain_files, split, device, out / "pretrain")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    pretrained = _finished_pretraining(out / "pretrain", pretrain_config) or run_pretraining(
        pretrain_config, out / "pretrain")
    timings["pretrain"] = time.perf_counter() - t0
    encoder = out / "pretrain" / "encoder.pt"
    base = pretrained.summary["base_timeframe"]

    finetune_config = stage1_config(size, held_out, split, device, out / "finetune")
    predictions, selection, finetune_summaries = [], {}, {}
    for setting in NEURAL_SETTINGS:
        t0 = time.perf_counter()
        setting_out = out / f"finetune_{setting}"
        result = _finished_finetune(setting_out, size.finetune_epochs) or run_finetune(
            finetune_config, None if setting == "scratch" else encoder, setting_out, epochs=size.finetune_epochs,
            freeze_encoder=setting == "probe", base_timeframe=base, test=True)
        timings[setting] = time.perf_counter() - t0
        predictions.append(result.predictions.with_columns(setting=pl.lit(setting)))
        best = result.metrics[result.best_epoch - 1]
        selection[setting] = {"best_epoch": result.best_epoch, "epochs": size.finetune_epochs,
                              "val_rank_ic": best["val_rank_ic"],
                              "val_mse_over_zero": best["val_mse"] / best["val_zero_mse"]}
        finetune_summaries[setting] = result.summary
    t0 = time.perf_counter()
    ridge, selection["ridge"] = ridge_forecasts(finetune_config, base)
    timings["ridge"] = time.perf_counter() - t0
    predictions.append(ridge.with_columns(setting=pl.lit("ridge")))
    train_mean = selection["ridge"].pop("train_label_mean")
    predictions.append(predictions[0].with_columns(prediction=pl.lit(train_mean), setting=pl.lit("constant")))
    selection["constant"] = {"value": train_mean}
    frame = pl.concat([p.select("setting", "split", "symbol", "anchor_time", "forward_return", "prediction")
                       for p in predictions])
    _check_same_windows(frame)
    with atomic_path(out / "predictions.parquet") as tmp:
        frame.write_parquet(tmp)

    figures = {split_name: {setting: split_figures(frame.filter((pl.col("setting") == setting)
                                                                  & (pl.col("split") == split_name)), args.min_block)
                            for setting in SETTINGS}
               for split_name in ("test", "val")}
    test = {s: frame.filter((pl.col("setting") == s) & (pl.col("split") == "test")) for s in SETTINGS}
    differences = {f"{a} - {b}": paired_difference(test[a], test[b], args.min_block)
                   for a, b in (("pretrained", "scratch"), ("pretrained", "ridge"), ("probe", "scratch"),
                                ("scratch", "ridge"))}
    timings["total"] = time.perf_counter() - started
    purge = finetune_summaries["pretrained"]
    report = {
        "size": "tiny" if args.tiny else "quick" if args.quick else "full", "device": device,
        "size_settings": dataclasses.asdict(size), "synthetic": bool(args.synthetic),
        "pretrain_instruments": [p.stem for p in pretrain_files], "held_out_instruments": [p.stem for p in held_out],
        "split": {**split, **{k: purge[k] for k in ("val_start", "test_start", "purge_minutes",
                                                    "label_horizon_minutes", "label_timeframe", "label_bars")}},
        "label": "forward_return = log(base close at anchor + horizon / base close at anchor)",
        "min_block_labels": args.min_block,
        "pretrain": {k: pretrained.summary.get(k) for k in ("best_epoch", "best_val_reconstruction", "n_train_windows",
                                                            "n_val_windows", "parameters", "fit_seconds")},
        "n_windows": {k: purge[k] for k in ("n_train_windows", "n_val_windows", "n_test_windows")},
        "selection": selection, "test": figures["test"], "val": figures["val"],
        "paired_weekly_differences": differences,
        "seconds": timings,
    }
    report = json.loads(json.dumps(report, default=str))
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", render_markdown(report))
    table = render_table(report)
    log.info("test figures:\n%s", table)
    return report


def _finished_pretraining(out: Path, config: PretrainConfig) -> PretrainResult | None:
    """The pretraining an earlier, interrupted run of this benchmark finished in ``out`` with
    the same config (its ``pretrain.json`` and ``encoder.pt``), or None."""
    summary_file, encoder = out / "pretrain.json", out / "encoder.pt"
    if not (summary_file.is_file() and encoder.is_file()):
        return None
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    if summary.get("config") != dump_config(config):
        return None
    log.info("reusing the finished pretraining in %s", out)
    return PretrainResult(out_dir=out, metrics=[], summary=summary)


def _finished_finetune(out: Path, epochs: int) -> FineTuneResult | None:
    """A fine-tuning an earlier, interrupted run finished in ``out`` (its metrics for
    ``epochs`` epochs, ``finetune.json`` and predictions), or None."""
    files = [out / "finetune.json", out / "finetune_metrics.csv", out / PREDICTIONS_FILE]
    if not all(f.is_file() for f in files):
        return None
    metrics = pl.read_csv(files[1]).to_dicts()
    if len(metrics) != epochs:
        return None
    summary = json.loads(files[0].read_text(encoding="utf-8"))
    log.info("reusing the finished fine-tuning in %s", out)
    return FineTuneResult(out_dir=out, metrics=metrics, pretrained=bool(summary["pretrained"]),
                          best_epoch=summary["best_epoch"], label_scale=summary["label_scale"],
                          predictions=pl.read_parquet(files[2]), summary=summary)


def _check_same_windows(frame: pl.DataFrame) -> None:
    """Every setting is scored on the same (split, symbol, anchor) windows with the same label."""
    keys = ["split", "symbol", "anchor_time"]
    reference = frame.filter(pl.col("setting") == "pretrained").select(*keys, "forward_return").sort(keys)
    for setting in SETTINGS[1:]:
        other = frame.filter(pl.col("setting") == setting).select(*keys, "forward_return").sort(keys)
        if not reference.equals(other):
            raise AssertionError(f"{setting} was scored on other windows or labels than 'pretrained'")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(report: dict[str, Any]) -> str:
    head = (f"{'setting':<11} {'weekly rank IC':>14} {'std':>7} {'t':>6} {'>0':>5} {'weeks':>5} {'windows':>8} "
            f"{'pooled':>7} {'MSE/zero':>8} {'val rank IC':>11}")
    lines = [head, "-" * len(head)]
    for setting in SETTINGS:
        t, sel = report["test"][setting], report["selection"].get(setting, {})
        lines.append(f"{setting:<11} {_fmt(t['rank_ic_mean'], '+.4f'):>14} {_fmt(t['rank_ic_std'], '.4f'):>7} "
                     f"{_fmt(t['rank_ic_tstat'], '+.2f'):>6} {_fmt(t['rank_ic_positive_share'], '.0%'):>5} "
                     f"{t['n_weeks']:>5} {t['n_windows']:>8} {_fmt(t['pooled_rank_ic'], '+.4f'):>7} "
                     f"{_fmt(t['mse_over_zero'], '.4f'):>8} {_fmt(sel.get('val_rank_ic'), '+.4f'):>11}")
    lines.append("paired weekly rank IC differences (test): " + "; ".join(
        f"{name} {_fmt(d['mean'], '+.4f')} (t {_fmt(d['tstat'], '+.2f')}, {d['n_weeks']} weeks)"
        for name, d in report["paired_weekly_differences"].items()))
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    s = report["split"]
    lines = [
        "# Stage-1 downstream: pretrained vs scratch vs probe vs ridge on held-out instruments", "",
        f"- size: {report['size']} on {report['device']}{' (synthetic bars)' if report['synthetic'] else ''}",
        f"- pretraining instruments: {', '.join(report['pretrain_instruments'])}",
        f"- held-out instruments (fine-tuning and test): {', '.join(report['held_out_instruments'])}",
        f"- label: {report['label']}, horizon {s['label_bars']} x {s['label_timeframe']} "
        f"({s['label_horizon_minutes']} minutes)",
        f"- split: training windows before {s['train_end']}; validation {s['val_start']} .. {s['val_end']}; "
        f"test from {s['test_start']} (purge {s['purge_minutes']} minutes = label horizon + longest window)",
        f"- windows (held out): {report['n_windows']}",
        f"- pretraining: best epoch {report['pretrain']['best_epoch']} on validation reconstruction "
        f"{_fmt(report['pretrain']['best_val_reconstruction'], '.4f')}",
        "- selection (validation only): " + "; ".join(
            f"{k}: " + ", ".join(f"{a}={_fmt(b, '.4g') if isinstance(b, float) else b}" for a, b in v.items()
                                 if a != "grid")
            for k, v in report["selection"].items()),
        f"- rank IC per calendar week, pooled over the held-out instruments (weeks with >= "
        f"{report['min_block_labels']} labels); t = mean / std * sqrt(weeks)", "",
        "## Test (never used for a choice)", "", "```", render_table(report), "```", "",
        "Per instrument (test): weekly rank IC within the instrument, mean (t); the pooled weekly figure above",
        "also ranks the instruments against each other within a week.", "",
        "| setting | " + " | ".join(report["held_out_instruments"]) + " |",
        "| --- |" + " ---: |" * len(report["held_out_instruments"]),
    ]
    for setting, t in report["test"].items():
        cells = []
        for symbol in report["held_out_instruments"]:
            own = t["per_symbol"].get(symbol, {})
            cells.append(f"{_fmt(own.get('weekly_mean'), '+.4f')} ({_fmt(own.get('weekly_tstat'), '+.2f')})")
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    lines += ["", "## Validation (the selection basis)", "",
              "| setting | weekly rank IC | t | weeks | windows | MSE/zero |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for setting, v in report["val"].items():
        lines.append(f"| {setting} | {_fmt(v['rank_ic_mean'], '+.4f')} | {_fmt(v['rank_ic_tstat'], '+.2f')} | "
                     f"{v['n_weeks']} | {v['n_windows']} | {_fmt(v['mse_over_zero'], '.4f')} |")
    lines += ["", f"Seconds: {', '.join(f'{k} {v:.0f}' for k, v in report['seconds'].items())}", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quick", action="store_true", help="small windows, model and epochs (a CPU smoke run)")
    parser.add_argument("--tiny", action="store_true", help="smaller still (the unit test, with --synthetic)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic bars instead of the shipped files")
    parser.add_argument("--synthetic-days", type=int, default=120)
    parser.add_argument("--device", default="auto", help="trainer accelerator: auto, cpu, cuda")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "intraday"))
    parser.add_argument("--pretrain", nargs="+", default=list(PRETRAIN_FILES), help="file stems to pretrain on")
    parser.add_argument("--held-out", nargs="+", default=list(HELD_OUT_FILES), help="file stems held out")
    parser.add_argument("--train-end", default=None)
    parser.add_argument("--val-end", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the size's)")
    parser.add_argument("--min-block", type=int, default=20, help="labels a week needs to count")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    report = run(args)
    print(render_table(report))  # noqa: T201 (the script's output)
    print(f"report: {Path(args.out) / 'report.md'}")  # noqa: T201
    return report


if __name__ == "__main__":
    main()
