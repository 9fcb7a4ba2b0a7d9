"""`kizashi monitor --model FINAL --since D`: watch a final model on the days after it was
trained (:mod:`kizashi.monitoring`).

    final_model.json (data config) + QUOTES -> the features of the days since D (warm-up
    only before them: kizashi.datasets.build.build_feature_rows; for an ATFT-GAT-FAN model
    also the window - 1 trading days before D and the graphs of the days watched:
    kizashi.training.window_panel) -> the final model's scores (an ATFT-GAT-FAN network on
    ``device``: CUDA when available, else the CPU)
    -> against monitor_reference_{h}d.json (written by fit-final): drift of the scores (PSI,
       KS) and of the watched features, coverage of the universe, and the realized RankIC
       over a rolling window with its band, where the forward returns are in the data
    -> OUT/monitor.json + OUT/monitor.html; the alarms logged

The realized RankIC of an ``h``-day horizon scores overlapping returns, so its band uses
Newey-West with ``h - 1`` lags.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kizashi.datasets.build import build_feature_rows
from kizashi.errors import KizashiError
from kizashi.features.targets import target_return_name
from kizashi.monitoring import MonitorReference, MonitorResult, MonitorSettings, run_monitor, write_monitor_report
from kizashi.training.final_model import ATFT, MANIFEST, load_final_model
from kizashi.training.window_panel import window_inputs

log = logging.getLogger(__name__)


def monitor_model(
    model_dir: str | Path,
    since: dt.date,
    *,
    until: dt.date | None = None,
    data: str | Path | None = None,
    sectors: str | Path | None = None,
    horizon: int | None = None,
    out_dir: str | Path = "monitor",
    settings: dict[str, Any] | None = None,
    device: str | None = None,
) -> tuple[Path, MonitorResult]:
    """Monitor the final model of ``model_dir`` on the data's days ``since`` .. ``until``
    (default: its last day) for ``horizon`` (default: the model's first); module docstring."""
    model = load_final_model(model_dir, map_location=device)
    horizon = horizon if horizon is not None else model.horizons[0]
    if horizon not in model.horizons:
        raise KizashiError(f"{model_dir}: no {horizon}d model (its horizons: {model.horizons})")
    reference_path = Path(model_dir) / f"monitor_reference_{horizon}d.json"
    if not reference_path.is_file():
        raise KizashiError(f"{reference_path}: missing (refit with `kizashi fit-final`, which writes it)")
    reference = MonitorReference.load(reference_path)
    config = model.data_build_config(data, sectors, source=f"{model_dir}/{MANIFEST}: data_config")
    last_trained = dt.date.fromisoformat(model.train_last)
    if since <= last_trained:
        log.warning("monitoring from %s: the model was trained on days up to %s, so those days are in-sample",
                    since, last_trained)
    if model.kind == ATFT:
        inputs = window_inputs(config, since, until, int(model.window), model.horizons)
        feature_columns, frame = inputs.rows.feature_columns, inputs.day_rows()
    else:
        rows = build_feature_rows(config, since, until)
        feature_columns, frame = rows.feature_columns, rows.frame
    if feature_columns != model.features:
        raise KizashiError(f"{config.input.path}: the features built from this data differ from the model's")
    if model.kind == ATFT:
        scored = model.score_days(inputs.panel, inputs.day_indices, model.device())
        signals = scored.keys.with_columns(score=pl.Series(scored.scores[horizon]))
    else:
        x = frame.select(model.features).to_numpy().astype(np.float32, copy=False)  # [N, F]
        signals = frame.select("date", "code").with_columns(score=pl.Series(model.boosters[horizon].predict(x)))
    keys = frame.select("date", "code")
    watched = list(reference.features)
    features = frame.select("date", "code", *watched) if watched else None
    target = target_return_name(horizon)
    realized = keys.with_columns(realized=frame.get_column(target).cast(pl.Float64)) if target in frame.columns else None
    chosen = MonitorSettings.model_validate({"rank_ic_nw_lags": horizon - 1, **(settings or {})})
    result = run_monitor(reference, signals, features=features, realized=realized, settings=chosen)
    out = write_monitor_report(result, out_dir)
    for alarm in result.active_alarms():
        log.warning("monitor %s: %s", alarm.severity, alarm.message)
    log.info("monitor: %d days (%s .. %s), status %s -> %s", signals.get_column("date").n_unique(),
             since, frame.get_column("date").max(), result.status(), out)
    return out, result
