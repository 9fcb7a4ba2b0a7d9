"""The pretraining output directory: what `kizashi pretrain` writes and what reports read.

``OUT`` (written by :func:`kizashi.jobs.pretrain.run_pretraining`)::

    bars_report.json   per symbol: the bar validation report
    stats.json         per-timeframe window statistics of the training range, the window
                       set-up and the split: train_end, val_start = train_end + purge,
                       purge_minutes = label_horizon_minutes + longest_window_minutes,
                       label_timeframe, label_bars
    metrics.csv        one row per epoch, the columns of METRIC_COLUMNS:
                         epoch (1-based), train_loss (the epoch's mean), val_loss,
                         val_reconstruction (masked positions only), val_consistency,
                         val_masked_corr (correlation of reconstruction and truth over the
                         masked positions), lm_frozen_fraction (NaN without an LM),
                         epoch_seconds (training + validation of that epoch)
    encoder.pt         model config + best weights + window statistics
    pretrain.json      the summary: parameters, lm_parameters, parameter_breakdown,
                       fit_seconds, peak_memory_gib + peak_memory_kind, best_epoch,
                       best_val_reconstruction, n_train_windows, n_val_windows, the split
                       and purge (as in stats.json), config, ...
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from kizashi.errors import KizashiError

METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "pretrain.json"
ENCODER_FILE = "encoder.pt"
METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "val_reconstruction", "val_consistency", "val_masked_corr",
                  "lm_frozen_fraction", "epoch_seconds")


@dataclass
class SettingRun:
    """One finished pretraining run: its per-epoch metrics and its summary."""

    directory: Path
    metrics: list[dict[str, float]]
    summary: dict[str, Any]

    @classmethod
    def read(cls, directory: str | Path) -> SettingRun:
        directory = Path(directory)
        metrics_path, summary_path = directory / METRICS_FILE, directory / SUMMARY_FILE
        for path in (metrics_path, summary_path):
            if not path.is_file():
                raise KizashiError(f"{directory}: no {path.name}; is it a finished `kizashi pretrain` output?")
        with open(metrics_path, newline="", encoding="utf-8") as handle:
            rows = [{key: float(value) if value not in ("", None) else float("nan") for key, value in row.items()}
                    for row in csv.DictReader(handle)]
        for row in rows:
            row["epoch"] = int(row["epoch"])
        return cls(directory, rows, json.loads(summary_path.read_text(encoding="utf-8")))

    def elapsed_seconds(self) -> list[float]:
        """Cumulative training time at the end of each epoch."""
        return list(accumulate(row["epoch_seconds"] for row in self.metrics))
