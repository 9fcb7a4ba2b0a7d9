"""The monitor's outputs: ``monitor.json`` and a self-contained ``monitor.html``.

:func:`write_monitor_report` writes, each atomically (:mod:`kizashi.atomic`: written aside
and renamed, so a crash never leaves a half-written file):

* ``monitor.json``: :func:`~kizashi.monitoring.monitor.result_to_dict` (status, first alarm
  date per kind, settings, reference summary, alarms, daily table, feature PSI table);
* ``monitor.html``: one page, no external file (inline CSS, plots as base64 PNG): status and
  first alarms, the rolling RankIC with its band (and the daily RankIC, the floor, the
  reference RankIC), the scores' PSI and KS over time, the watched features' PSI over time,
  the coverage, the alarm table (the latest ``MAX_ALARM_ROWS`` records; all are in the
  JSON) and the settings.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from kizashi.atomic import write_json_atomic, write_text_atomic
from kizashi.data.schema import DATE
from kizashi.evaluation.report import HtmlCell, html_page_head, html_table
from kizashi.monitoring.monitor import MonitorResult, result_to_dict

logger = logging.getLogger(__name__)

MONITOR_JSON = "monitor.json"
MONITOR_HTML = "monitor.html"
MAX_ALARM_ROWS = 200
MAX_FEATURE_LINES = 10
DPI = 110
_WARN_COLOUR = "#d9a400"
_ALARM_COLOUR = "#b23a3a"


def write_monitor_report(result: MonitorResult, out_dir: str | Path) -> Path:
    """Write ``out_dir/monitor.json`` and ``out_dir/monitor.html``; returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / MONITOR_JSON, result_to_dict(result))
    write_text_atomic(out / MONITOR_HTML, render_monitor_html(result))
    logger.info("monitor report: %s (%s, %s)", out, MONITOR_JSON, MONITOR_HTML)
    return out


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    fig.clear()
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _column(frame: pl.DataFrame, name: str) -> np.ndarray:
    return frame[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()


def _thresholds(ax, warn: float | None, alarm: float | None) -> None:
    for value, colour, label in ((warn, _WARN_COLOUR, "warn"), (alarm, _ALARM_COLOUR, "alarm")):
        if value is not None:
            ax.axhline(value, color=colour, linestyle="--", linewidth=0.9, label=f"{label} {value:g}")


def _rank_ic_plot(result: MonitorResult) -> str | None:
    daily = result.daily
    if "rank_ic_mean" not in daily.columns:
        return None
    s, ref = result.settings, result.reference
    rows = daily.filter(pl.col("rank_ic_mean").is_not_null())
    if rows.height == 0:
        return None
    fig = Figure(figsize=(8.0, 3.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    dates = rows[DATE].to_numpy()
    ax.scatter(dates, _column(rows, "rank_ic"), s=4, color="#9aa3b2", label="daily RankIC")
    ax.fill_between(dates, _column(rows, "rank_ic_lower"), _column(rows, "rank_ic_upper"),
                    color="#4c78a8", alpha=0.25, label=f"band (z = {s.rank_ic_z:g})")
    ax.plot(dates, _column(rows, "rank_ic_mean"), color="#1f4e89", linewidth=1.4,
            label=f"rolling mean ({s.rank_ic_window} days)")
    ax.axhline(s.rank_ic_floor, color=_ALARM_COLOUR, linestyle="--", linewidth=0.9,
               label=f"alarm floor {s.rank_ic_floor:g}")
    if ref.rank_ic_mean is not None:
        ax.axhline(ref.rank_ic_mean, color="#2e7d32", linewidth=0.9, label=f"reference {ref.rank_ic_mean:+.4f}")
    ax.set_title("Realized RankIC (dated by signal date)")
    ax.legend(loc="best", fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def _series_plot(dates: np.ndarray, lines: Sequence[tuple[str, np.ndarray]], title: str,
                 warn: float | None, alarm: float | None) -> str:
    fig = Figure(figsize=(8.0, 3.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for label, values in lines:
        ax.plot(dates, values, linewidth=1.1, label=label)
    _thresholds(ax, warn, alarm)
    ax.set_title(title)
    ax.legend(loc="best", fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def _figure(image: str | None, caption: str) -> str:
    if image is None:
        return f'<p class="note">{html.escape(caption)}: nothing to plot.</p>'
    return (f'<figure><img src="data:image/png;base64,{image}" alt="{html.escape(caption, quote=True)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _alarm_table(result: MonitorResult) -> str:
    if not result.alarms:
        return '<p class="note">No alarm or warning.</p>'
    shown = result.alarms[-MAX_ALARM_ROWS:]
    rows = [[HtmlCell(str(a.date)), HtmlCell(a.kind), HtmlCell(a.severity,
             style=f"color:{_ALARM_COLOUR if a.severity == 'alarm' else _WARN_COLOUR};font-weight:bold"),
             HtmlCell(a.subject), HtmlCell(f"{a.value:.4g}", num=True), HtmlCell(f"{a.threshold:.4g}", num=True),
             HtmlCell(a.message)] for a in reversed(shown)]
    note = ""
    if len(result.alarms) > len(shown):
        note = (f'<p class="note">The latest {len(shown)} of {len(result.alarms)} records, newest first; '
                f"all are in {MONITOR_JSON}.</p>")
    return note + html_table(["date", "kind", "severity", "subject", "value", "threshold", "message"], rows,
                             weights=[1.1, 1.1, 0.8, 1.2, 0.8, 0.8, 4.0], wide=True)


def _first_table(result: MonitorResult) -> str:
    kinds = sorted(set(result.first_alarms) | set(result.first_warnings))
    if not kinds:
        return ""
    rows = [[HtmlCell(k), HtmlCell(str(result.first_warnings.get(k, "—"))),
             HtmlCell(str(result.first_alarms.get(k, "—")))] for k in kinds]
    return html_table(["kind", "first warning", "first alarm"], rows)


def render_monitor_html(result: MonitorResult) -> str:
    """The self-contained HTML page of ``result``."""
    s, ref, daily = result.settings, result.reference, result.daily
    dates = daily[DATE].to_numpy()
    status = result.status()
    lines = html_page_head("kizashi monitor")
    first, last = (daily[DATE][0], daily[DATE][-1]) if daily.height else ("—", "—")
    lines.append(f"<p>{daily.height} day(s) {html.escape(str(first))} – {html.escape(str(last))}; "
                 f"reference {html.escape(ref.first_date)} – {html.escape(ref.last_date)} "
                 f"({ref.n_days} days, {ref.universe_size:.0f} stocks a day).</p>")
    banner = {"ok": "Status: OK — no rule is active on its latest day.",
              "warn": "Status: WARN — a warning is active on its latest day.",
              "alarm": "Status: ALARM — an alarm is active on its latest day."}[status]
    lines.append(f'<div class="banner">{html.escape(banner)}</div>' if status != "ok" else f"<p><b>{banner}</b></p>")
    lines.append(_first_table(result))

    lines.append("<h2>Realized RankIC</h2>")
    lines.append(_figure(_rank_ic_plot(result), "rolling RankIC with its confidence band"))
    lines.append("<h2>Score drift</h2>")
    lines.append(_figure(_series_plot(dates, [("PSI", _column(daily, "score_psi"))], "PSI of the raw scores",
                                      s.psi_warn, s.psi_alarm), "PSI of the scores against the reference"))
    lines.append(_figure(_series_plot(dates, [("KS D", _column(daily, "score_ks"))], "KS statistic of the raw scores",
                                      s.ks_warn, s.ks_alarm), "KS statistic of the scores against the reference"))
    if ref.features:
        names = list(ref.features)[:MAX_FEATURE_LINES]
        feature_lines = [(name, _column(result.feature_psi, name)) for name in names]
        lines.append("<h2>Feature drift</h2>")
        lines.append(_figure(_series_plot(dates, feature_lines, "PSI of the watched features",
                                          s.feature_psi_warn, s.feature_psi_alarm),
                             f"PSI of the first {len(names)} of {len(ref.features)} watched features"))
    lines.append("<h2>Coverage</h2>")
    lines.append(_figure(_series_plot(dates, [("coverage", _column(daily, "coverage"))],
                                      "stocks scored / reference universe", s.coverage_warn, s.min_coverage),
                         "share of the reference universe scored"))
    lines.append("<h2>Alarms</h2>")
    lines.append(_alarm_table(result))
    lines.append("<h2>Settings</h2>")
    lines.append(html_table(["setting", "value"],
                            [[HtmlCell(k), HtmlCell(str(v))] for k, v in s.model_dump().items()]))
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"
