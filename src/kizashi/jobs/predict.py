"""`kizashi predict --model FINAL --data QUOTES [--date D] [--device DEV]`: score one day's
stocks with a final model (:mod:`kizashi.jobs.fit_final`) and write the signals.

LightGBM::

    final_model.json (the data config the model was trained with) + QUOTES (the same
    layout, newer days) -> the features of day D only, with each stock's longest lookback
    of earlier rows as warm-up (equal to a full build's: kizashi.datasets.build.build_feature_rows)
    -> checks -> scores per horizon -> OUT/signals.parquet, signals.csv, signals.json

ATFT-GAT-FAN (a window of L days and the day's graph; kizashi.training.window_panel)::

    final_model.json + QUOTES -> the features of day D and of the L - 1 trading days before
    it (each with its warm-up, as above) and the correlation graph of day D
    -> checks -> each stock alive on D: its [L, F] window standardized with the saved
       feature_stats.json (missing days masked, as kizashi.datasets.DayPanelDataset does),
       the day's graph among those stocks -> the network (model/, float32, on ``device``:
       CUDA when available, else the CPU) -> scores per horizon -> the same files

Refused, each with a message naming the file and what to do:

* the features the data gives differ from the model's (names or order);
* day D is not a date of the data;
* day D has fewer than ``min_stocks`` stocks, or fewer than ``min_universe_share`` of the
  median number of stocks per training day (the universe shrank: a broken or partial file);
* without ``--date``, stale data: the data's last day is more than ``max_stale_days``
  calendar days before ``as_of`` (default today), so "the next day" is not tomorrow.

``signals.parquet`` / ``.csv``: one row per (horizon, stock) of day D: ``date, code,
horizon, score`` (the model's output), ``rank`` (1 = the highest score) and
``percentile`` (rank-based, in (0, 1], 1 = the highest). ``signals.json``: the day, the
counts, the model folder's digest and the data's input hashes (and the device an
ATFT-GAT-FAN model ran on).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kizashi.atomic import atomic_path
from kizashi.datasets.build import build_feature_rows
from kizashi.errors import KizashiError
from kizashi.training.final_model import ATFT, MANIFEST, folder_digest, load_final_model
from kizashi.training.window_panel import window_inputs

log = logging.getLogger(__name__)

SIGNALS = "signals"


@dataclass
class PredictResult:
    out_dir: Path
    date: dt.date
    signals: pl.DataFrame
    summary: dict[str, Any]


def predict_day(
    model_dir: str | Path,
    *,
    data: str | Path | None = None,
    sectors: str | Path | None = None,
    date: dt.date | None = None,
    out_dir: str | Path = SIGNALS,
    as_of: dt.date | None = None,
    max_stale_days: int = 7,
    min_stocks: int = 10,
    min_universe_share: float = 0.5,
    device: str | None = None,
) -> PredictResult:
    """Score day ``date`` (default: the data's last day) of ``data`` (default: the file the
    model was trained on) with the final model in ``model_dir``; write the signals to
    ``out_dir`` atomically (module docstring). ``device`` (ATFT-GAT-FAN only): "cpu",
    "cuda", ...; None or "auto" = CUDA when available, else the CPU."""
    started = time.perf_counter()
    model = load_final_model(model_dir, map_location=device)
    config = model.data_build_config(data, sectors, source=f"{model_dir}/{MANIFEST}: data_config")
    source = config.input.path or "the synthetic market"

    inputs = None
    if model.kind == ATFT:
        inputs = window_inputs(config, date, date, int(model.window), model.horizons)
        rows = inputs.rows
        day, day_rows = inputs.days[-1], inputs.day_rows()
    else:
        rows = build_feature_rows(config, date, date)
        day_rows = rows.frame
        day = rows.frame.get_column("date").max() if rows.frame.height else (date or rows.dates[-1])
    if rows.feature_columns != model.features:
        missing = [f for f in model.features if f not in rows.feature_columns]
        extra = [f for f in rows.feature_columns if f not in model.features]
        detail = (f"missing {missing[:8]}" if missing else "") + (f" extra {extra[:8]}" if extra else "")
        raise KizashiError(
            f"{source}: the features built from this data differ from the model's "
            f"({detail.strip() or 'same names, another order'}); the data needs the columns the model was trained "
            "with (a sector table, margin data) and the same kizashi feature set"
        )
    if date is None:
        today = as_of or dt.date.today()
        stale = (today - day).days
        if stale > max_stale_days:
            raise KizashiError(
                f"{source}: its last day is {day}, {stale} calendar days before {today}: stale data (more than "
                f"{max_stale_days}); update the file, or name the day to score with --date"
            )
    n = day_rows.height
    bound = max(min_stocks, int(np.ceil(min_universe_share * model.universe_median)))
    if n < bound:
        raise KizashiError(
            f"{source}: {day} has {n} stocks to score, fewer than {bound} (at least {min_stocks}, and "
            f"{min_universe_share:.0%} of the {model.universe_median} a training day had): a partial or broken file?"
        )

    if inputs is not None:
        scored = model.score_days(inputs.panel, inputs.day_indices, model.device())
        keys, scores = scored.keys, scored.scores
    else:
        x = day_rows.select(model.features).to_numpy().astype(np.float32, copy=False)  # [N, F]
        keys, scores = day_rows.select("date", "code"), model.predict(x)
    signals = pl.concat(
        pl.DataFrame({"date": keys.get_column("date"), "code": keys.get_column("code"),
                      "horizon": np.full(keys.height, h, dtype=np.int32), "score": scores[h]})
        for h in model.horizons
    ).with_columns(
        rank=pl.col("score").rank("ordinal", descending=True).over("horizon").cast(pl.Int32),
        percentile=(pl.col("score").rank("average").over("horizon") / pl.len().over("horizon")),
    ).sort("horizon", "rank")
    summary = {
        "date": day.isoformat(),
        "n_stocks": n,
        "horizons": model.horizons,
        "model": str(model_dir),
        "model_digest": folder_digest(model_dir),
        "data": str(source),
        "input_hashes": rows.input_hashes,
        "trained_through": model.train_last,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if model.kind == ATFT:
        summary["device"] = str(model.device())
    out = Path(out_dir)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        signals.write_parquet(tmp / f"{SIGNALS}.parquet")
        signals.write_csv(tmp / f"{SIGNALS}.csv")
        (tmp / f"{SIGNALS}.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    log.info("signals for %s: %d stocks x %d horizons -> %s (%.1fs)", day, n, len(model.horizons), out,
             summary["seconds"])
    return PredictResult(out_dir=out, date=day, signals=signals, summary=summary)
