"""The comparison report of a `kizashi experiment` (pretraining settings side by side).

For each setting (a :class:`~kizashi.evaluation.pretrain_run.SettingRun`):

* validation reconstruction loss and masked-position correlation at the requested epochs
  (default 1, 3, 5) and at the last epoch, the best epoch;
* convergence against the reference setting (the first, unless named): the first epoch at
  which the setting's validation reconstruction is at or below the reference's best, and
  the training seconds it took to get there (``None`` if it never did);
* parameters (all, and those of the pretrained language model), the LM's frozen fraction
  at the first and last epoch, fit seconds, seconds per epoch, peak memory.

Files: ``report.md``, ``report.json`` and ``plots/{val_reconstruction,val_masked_corr,
val_reconstruction_by_time}.png`` in the experiment directory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from kizashi.atomic import atomic_path, write_json_atomic, write_text_atomic
from kizashi.evaluation.pretrain_run import SettingRun

log = logging.getLogger(__name__)

DPI = 110
PLOTS = "plots"


def _at_epoch(run: SettingRun, epoch: int, key: str) -> float | None:
    for row in run.metrics:
        if row["epoch"] == epoch:
            return row[key]
    return None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def summarize_run(run: SettingRun, epochs: Sequence[int], reference_best: float | None) -> dict[str, Any]:
    """The report's numbers for one setting (module docstring)."""
    rows, summary = run.metrics, run.summary
    elapsed = run.elapsed_seconds()
    last = rows[-1] if rows else {}
    finite = [r for r in rows if _finite(r["val_reconstruction"])]
    best = min(finite, key=lambda r: r["val_reconstruction"]) if finite else {}
    reach_epoch = reach_seconds = None
    if reference_best is not None:
        for row, seconds in zip(rows, elapsed, strict=True):
            if _finite(row["val_reconstruction"]) and row["val_reconstruction"] <= reference_best:
                reach_epoch, reach_seconds = row["epoch"], seconds
                break
    return _json_safe({
        "encoder": summary.get("encoder"),
        "parameters": summary.get("parameters"),
        "lm_parameters": summary.get("lm_parameters", 0),
        "epochs_run": len(rows),
        "val_reconstruction": {str(e): _at_epoch(run, e, "val_reconstruction") for e in epochs},
        "val_masked_corr": {str(e): _at_epoch(run, e, "val_masked_corr") for e in epochs},
        "last_epoch": last.get("epoch"),
        "last_val_reconstruction": last.get("val_reconstruction"),
        "last_val_masked_corr": last.get("val_masked_corr"),
        "best_epoch": best.get("epoch"),
        "best_val_reconstruction": best.get("val_reconstruction"),
        "epoch_reaching_reference_best": reach_epoch,
        "seconds_reaching_reference_best": reach_seconds,
        "lm_frozen_fraction_first": rows[0]["lm_frozen_fraction"] if rows else None,
        "lm_frozen_fraction_last": last.get("lm_frozen_fraction"),
        "fit_seconds": summary.get("fit_seconds"),
        "seconds_per_epoch": elapsed[-1] / len(rows) if rows else None,
        "peak_memory_gib": summary.get("peak_memory_gib"),
        "peak_memory_kind": summary.get("peak_memory_kind"),
        "n_train_windows": summary.get("n_train_windows"),
        "n_val_windows": summary.get("n_val_windows"),
    })


def _json_safe(value: Any) -> Any:
    """NaN / inf -> None, recursively (valid JSON; "not measured" reads as None)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any, pattern: str = "{:.4f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return pattern.format(value)


def _by_epoch_table(title: str, settings: dict[str, dict[str, Any]], epochs: Sequence[int], key: str,
                    extra: dict[str, Any]) -> list[str]:
    """A markdown section: one row per setting, ``key`` at each epoch, then ``extra``
    columns (header -> function of the setting's summary)."""
    lines = ["", f"## {title}", "",
             "| setting | " + " | ".join([*(f"epoch {e}" for e in epochs), *extra]) + " |",
             "| --- | " + " | ".join("---:" for _ in [*epochs, *extra]) + " |"]
    for name, s in settings.items():
        cells = [*(_fmt(s[key][str(e)]) for e in epochs), *(column(s) for column in extra.values())]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _markdown(report: dict[str, Any]) -> str:
    settings, epochs, reference = report["settings"], report["epochs"], report["reference"]
    lines = [f"# Experiment: {report['name']}", ""]
    first = next(iter(settings.values()))
    lines += [
        f"Settings run with the same seed, data and windows: {first['n_train_windows']:,} training windows, "
        f"{first['n_val_windows']:,} validation windows (a later period). Reference: **{reference}** "
        f"(best validation reconstruction {_fmt(report['reference_best'])}).",
    ]
    lines += _by_epoch_table(
        "Validation reconstruction loss (masked positions; lower is better)", settings, epochs,
        "val_reconstruction", {"last": lambda s: f"{_fmt(s['last_val_reconstruction'])} (ep {s['last_epoch']})",
                               "best (epoch)": lambda s: f"{_fmt(s['best_val_reconstruction'])} ({s['best_epoch']})"})
    lines += _by_epoch_table(
        "Validation masked-position correlation (higher is better)", settings, epochs, "val_masked_corr",
        {"last": lambda s: _fmt(s["last_val_masked_corr"])})
    lines += [
        "",
        f"## Convergence against {reference}'s best, and cost",
        "",
        "| setting | epoch reaching it | training s to reach it | parameters | of which LM | "
        "LM frozen (first → last epoch) | fit s | s/epoch | peak memory |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for name, s in settings.items():
        frozen = (f"{_fmt(s['lm_frozen_fraction_first'], '{:.0%}')} → {_fmt(s['lm_frozen_fraction_last'], '{:.0%}')}"
                  if s["lm_parameters"] else "no LM")
        lines.append(
            f"| {name} | {_fmt(s['epoch_reaching_reference_best'], '{}')} | "
            f"{_fmt(s['seconds_reaching_reference_best'], '{:.1f}')} | {_fmt(s['parameters'], '{:,}')} | "
            f"{_fmt(s['lm_parameters'], '{:,}')} | {frozen} | {_fmt(s['fit_seconds'], '{:.1f}')} | "
            f"{_fmt(s['seconds_per_epoch'], '{:.1f}')} | {_fmt(s['peak_memory_gib'], '{:.2f} GiB')} "
            f"({s['peak_memory_kind']}) |"
        )
    lines += ["", "## Findings", ""]
    lines += [f"- {line}" for line in report["findings"]]
    if report["missing"]:
        lines += [f"- Not run yet: {', '.join(report['missing'])}."]
    lines += ["", "Plots: " + ", ".join(f"[{p}]({PLOTS}/{p})" for p in report["plots"]), ""]
    return "\n".join(lines)


def _findings(settings: dict[str, dict[str, Any]], reference: str, epochs: Sequence[int]) -> list[str]:
    """Plain statements of what the numbers say (no judgement beyond the comparison)."""
    ref = settings[reference]
    out = []
    for name, s in settings.items():
        if name == reference:
            continue
        faster = []
        for e in epochs:
            mine, theirs = s["val_reconstruction"][str(e)], ref["val_reconstruction"][str(e)]
            if _finite(mine) and _finite(theirs):
                faster.append(f"epoch {e}: {mine:.4f} vs {theirs:.4f} ({'lower' if mine < theirs else 'not lower'})")
        reach = (f"reaches {reference}'s best at epoch {s['epoch_reaching_reference_best']} "
                 f"({reference} itself: epoch {ref['best_epoch']})" if s["epoch_reaching_reference_best"] is not None
                 else f"never reaches {reference}'s best in {s['epochs_run']} epochs")
        out.append(f"{name} vs {reference}: validation reconstruction " + "; ".join(faster) + f"; {reach}.")
    return out


def _plot(runs: dict[str, SettingRun], key: str, ylabel: str, path: Path, by_time: bool = False) -> None:
    fig = Figure(figsize=(6.4, 4.0), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    for name, run in runs.items():
        x = run.elapsed_seconds() if by_time else [r["epoch"] for r in run.metrics]
        ax.plot(x, [r[key] for r in run.metrics], marker="o", markersize=3, label=name)
    ax.set_xlabel("training seconds" if by_time else "epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_experiment_report(
    out: Path,
    runs: dict[str, SettingRun],
    *,
    epochs: Sequence[int],
    reference: str,
    order: Sequence[str],
) -> dict[str, Any]:
    """Write report.md / report.json / plots for ``runs`` and return the report dict."""
    runs = {name: runs[name] for name in order if name in runs}
    reference_best = None
    if reference in runs:
        best = [r["val_reconstruction"] for r in runs[reference].metrics if _finite(r["val_reconstruction"])]
        reference_best = min(best) if best else None
    else:
        log.warning("the reference setting %s has no finished run: no convergence comparison", reference)
    settings = {name: summarize_run(run, epochs, reference_best) for name, run in runs.items()}
    (out / PLOTS).mkdir(exist_ok=True)
    plots = {
        "val_reconstruction.png": ("val_reconstruction", "validation reconstruction loss", False),
        "val_masked_corr.png": ("val_masked_corr", "validation masked correlation", False),
        "val_reconstruction_by_time.png": ("val_reconstruction", "validation reconstruction loss", True),
    }
    for file, (key, label, by_time) in plots.items():
        _plot(runs, key, label, out / PLOTS / file, by_time)
    report = {
        "name": out.name, "epochs": list(epochs), "reference": reference, "reference_best": reference_best,
        "settings": settings,
        "findings": _findings(settings, reference, epochs) if reference in settings else [],
        "missing": [name for name in order if name not in runs],
        "plots": list(plots),
    }
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", _markdown(report))
    return report
