"""`kizashi experiment CONFIG`: one pretraining config run under named settings, compared.

The YAML (:class:`kizashi.config.ExperimentConfig`) names a `kizashi pretrain` config
(``base`` + ``overrides``) and ``settings``: per name, overrides merged over it (e.g.
``transfer_learning: {use_pretrained_lm: true, freeze_lm_epochs: 3}``). Every setting runs
with the same seed, data, split and windows (the config refuses settings that change them),
one after another in this process, through the pretraining job the caller passes
(``pretrain``: :func:`kizashi.jobs.pretrain.run_pretraining` from the CLI; jobs do not import
each other).

Output directory ``OUT`` (``output.dir``)::

    experiment.json   the experiment config and each setting's resolved pretrain config
    <setting>/        that setting's `kizashi pretrain` output (metrics.csv, pretrain.json, ...)
    report.md         the comparison (kizashi.evaluation.experiment_report)
    report.json       the same numbers, machine-readable
    comparison.csv    one row per setting and epoch
    plots/*.png       validation reconstruction and masked correlation by epoch and by time

A setting whose directory already holds a finished run of the same resolved config is
reused (so an interrupted experiment resumes with the next setting); ``force`` reruns it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kizashi.atomic import write_csv_atomic, write_json_atomic
from kizashi.config import ExperimentConfig, PretrainConfig, dump_config
from kizashi.errors import ConfigError
from kizashi.evaluation.experiment_report import write_experiment_report
from kizashi.evaluation.pretrain_run import METRICS_FILE, SUMMARY_FILE, SettingRun

log = logging.getLogger(__name__)


@dataclass
class ExperimentResult:
    out_dir: Path
    runs: dict[str, SettingRun]
    report: dict[str, Any]


def _finished_run(directory: Path, config: PretrainConfig) -> SettingRun | None:
    """The run in ``directory`` if it finished with exactly ``config``, else None."""
    if not ((directory / SUMMARY_FILE).is_file() and (directory / METRICS_FILE).is_file()):
        return None
    run = SettingRun.read(directory)
    return run if run.summary.get("config") == dump_config(config) else None


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path | None = None,
    *,
    pretrain: Callable[..., Any],
    only: list[str] | None = None,
    force: bool = False,
    source: str = "<experiment>",
) -> ExperimentResult:
    """Run the settings (all, or ``only`` those named) and write the comparison report
    over every setting that has a finished run (module docstring). ``pretrain(config,
    out_dir=directory)`` runs one setting (:func:`kizashi.jobs.pretrain.run_pretraining`)."""
    out = Path(out_dir) if out_dir is not None else Path(config.output.dir)
    configs = config.setting_configs(source)
    unknown = sorted(set(only or ()) - set(configs))
    if unknown:
        raise ConfigError(f"--only: {unknown} are not settings of this experiment ({list(configs)})")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "experiment.json", {
        "experiment": dump_config(config), "settings": {name: dump_config(c) for name, c in configs.items()},
    })
    runs: dict[str, SettingRun] = {}
    for index, (name, setting) in enumerate(configs.items(), start=1):
        directory = out / name
        previous = None if force else _finished_run(directory, setting)
        if only is not None and name not in only:
            if previous is not None:
                runs[name] = previous
            continue
        if previous is not None:
            log.info("[%d/%d] %s: reusing the finished run in %s", index, len(configs), name, directory)
            runs[name] = previous
            continue
        log.info("[%d/%d] %s: pretraining into %s", index, len(configs), name, directory)
        pretrain(setting, out_dir=directory)
        runs[name] = SettingRun.read(directory)
    if not runs:
        raise ConfigError("no setting has a finished run to report on")
    reference = config.report.reference or next(iter(configs))
    report = write_experiment_report(out, runs, epochs=config.report.epochs, reference=reference,
                                     order=list(configs))
    _write_comparison_csv(out / "comparison.csv", runs)
    log.info("experiment report: %s", out / "report.md")
    return ExperimentResult(out_dir=out, runs=runs, report=report)


def _write_comparison_csv(path: Path, runs: dict[str, SettingRun]) -> None:
    columns = ["setting", "epoch", "train_loss", "val_reconstruction", "val_consistency", "val_masked_corr",
               "lm_frozen_fraction", "epoch_seconds", "elapsed_seconds"]
    rows = [{"setting": name, **row, "elapsed_seconds": elapsed}
            for name, run in runs.items() for row, elapsed in zip(run.metrics, run.elapsed_seconds(), strict=True)]
    write_csv_atomic(path, rows, columns, ignore_extra=True)
