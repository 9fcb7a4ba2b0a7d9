"""A static HTML report (+ PNG plots) for a run directory.

``write_report(run_dir)`` reads the files described in :mod:`kizashi.evaluation.run_dir`
and writes ``RUN_DIR/report/index.html`` with one PNG per plot and horizon:

* ``cumulative_ic_h{h}.png``        cumulative RankIC and IC (sum of daily values)
* ``rank_ic_by_year_h{h}.png``      mean daily RankIC per calendar year
* ``deciles_h{h}.png``              mean forward return per prediction decile
* ``long_short_h{h}.png``           compounded long-short return, gross and net, with drawdown
* ``feature_importance_h{h}.png``   top 30 features by mean gain over folds (if recorded)

The report is self-contained (inline CSS, relative image paths, no scripts). It is built
aside and swapped in only when complete (:func:`kizashi.atomic.atomic_path`): a writer killed
midway leaves the previous report as it was, the next writer removes what the killed one left
behind, and a second writer of the same report at the same time is refused
(:class:`kizashi.atomic.OutputLockedError`).
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from kizashi.atomic import atomic_path
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import (
    DAILY,
    DECILES,
    FEATURE_IMPORTANCE,
    FOLDS,
    REPORT_DIR,
    SUMMARY_FIELDS,
    RunInfo,
    read_run_info,
    read_summary,
    require_columns,
    require_run_dir,
)

logger = logging.getLogger(__name__)

DPI = 110
TOP_FEATURES = 30
CONTROL_BANNER = "shuffled-target control run: RankIC should be ~0"
NO_CAVEATS = (
    "No data caveats were recorded for this run. That does not mean there are none: check "
    "the data source for survivorship bias, corporate-action adjustments and late-arriving "
    "data before trusting these numbers."
)

DAILY_COLUMNS = ("horizon", "date", "rank_ic", "ic", "long_short_gross", "long_short_net")
DECILE_COLUMNS = ("horizon", "decile", "mean_return")
IMPORTANCE_COLUMNS = ("fold", "horizon", "feature", "gain")

# How summary metrics are shown: percentages for returns and rates, few decimals for ratios.
_PERCENT_FIELDS = {
    "hit_rate",
    "decile_spread",
    "ls_annual_return",
    "ls_annual_volatility",
    "ls_max_drawdown",
    "ls_turnover",
    "ls_annual_return_net",
}
_RATIO_FIELDS = {"icir", "ic_tstat", "rank_icir", "rank_ic_tstat", "ls_sharpe", "ls_sharpe_net"}
_LABELS = {
    "n_days": "days",
    "ic_mean": "IC mean",
    "ic_std": "IC std",
    "icir": "ICIR",
    "ic_tstat": "IC t-stat",
    "rank_ic_mean": "RankIC mean",
    "rank_ic_std": "RankIC std",
    "rank_icir": "RankICIR",
    "rank_ic_tstat": "RankIC t-stat",
    "hit_rate": "hit rate (RankIC > 0)",
    "decile_spread": "decile spread (top − bottom)",
    "ls_annual_return": "long-short annual return (gross)",
    "ls_annual_volatility": "long-short annual volatility",
    "ls_sharpe": "long-short Sharpe (gross)",
    "ls_max_drawdown": "long-short max drawdown",
    "ls_turnover": "long-short daily turnover",
    "ls_annual_return_net": "long-short annual return (net)",
    "ls_sharpe_net": "long-short Sharpe (net)",
}


@dataclass
class _Section:
    """One plot (or a note saying why it is missing) in the report."""

    title: str
    image: str | None = None
    alt: str = ""
    note: str = ""


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the HTML report of ``run_dir`` and return the path of its ``index.html``.

    ``out_dir`` defaults to ``RUN_DIR/report``; an existing report there is replaced only
    once the new one is complete. Raises :class:`KizashiError` when the run directory is
    missing or incomplete, or a table lacks a column the report needs.
    """
    run = require_run_dir(run_dir)
    out = Path(out_dir) if out_dir is not None else run / REPORT_DIR
    info = _read_info(run)
    summary = _read_summary(run)
    daily = _read_table(run / DAILY, DAILY_COLUMNS)
    deciles = _read_optional(run / DECILES, DECILE_COLUMNS)
    folds = _read_optional(run / FOLDS, ("fold", "horizon"))
    importance = _read_optional(run / FEATURE_IMPORTANCE, IMPORTANCE_COLUMNS)
    horizons = [int(h) for h in info.horizons] or sorted(summary)

    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        sections: dict[int, list[_Section]] = {}
        for h in horizons:
            day = daily.filter(pl.col("horizon") == h).sort("date")
            sections[h] = [
                _plot_cumulative_ic(tmp, h, day),
                _plot_rank_ic_by_year(tmp, h, day),
                _plot_deciles(tmp, h, deciles),
                _plot_long_short(tmp, h, day),
                _plot_feature_importance(tmp, h, importance),
            ]
        page = _render_html(info, horizons, summary, folds, sections)
        (tmp / "index.html").write_text(page, encoding="utf-8")
    index = out / "index.html"
    logger.info("report written to %s", index)
    return index


# --------------------------------------------------------------------------- reading


def _read_info(run: Path) -> RunInfo:
    try:
        return read_run_info(run)
    except (ValueError, TypeError) as err:
        raise KizashiError(f"{run / 'run.json'}: unreadable run info ({err})") from err


def _read_summary(run: Path) -> dict[int, dict[str, float]]:
    try:
        return read_summary(run)
    except (ValueError, TypeError, AttributeError) as err:
        raise KizashiError(f"{run / 'summary.json'}: unreadable summary ({err})") from err


def _read_table(path: Path, required: Sequence[str]) -> pl.DataFrame:
    try:
        frame = (
            pl.read_parquet(path)
            if path.suffix == ".parquet"
            else pl.read_csv(path, try_parse_dates=True)
        )
    except (OSError, pl.exceptions.PolarsError) as err:
        raise KizashiError(f"{path}: cannot read ({err})") from err
    require_columns(frame, required, str(path))
    return frame


def _read_optional(path: Path, required: Sequence[str]) -> pl.DataFrame | None:
    if not path.exists():
        logger.info("%s not found: its part of the report is skipped", path.name)
        return None
    return _read_table(path, required)


# --------------------------------------------------------------------------- plots


@contextmanager
def _figure(
    path: Path, nrows: int = 1, height: float = 3.6, **grid
) -> Iterator[tuple[Figure, list]]:
    """A Figure (no pyplot state) saved to ``path`` as PNG when the block ends."""
    fig = Figure(figsize=(8.0, height), dpi=DPI, layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(nrows, 1, squeeze=False, **grid)).ravel())
    try:
        yield fig, axes
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        fig.clear()


def _finite(values: pl.Series) -> np.ndarray:
    """Float values with nulls/NaN as NaN."""
    return values.cast(pl.Float64).to_numpy().astype(float, copy=True)


def _plot_cumulative_ic(out: Path, h: int, day: pl.DataFrame) -> _Section:
    title = f"Cumulative RankIC and IC — {h}d"
    if day.height == 0:
        return _Section(title, note=f"no daily rows for horizon {h}")
    dates = day["date"].to_numpy()
    name = f"cumulative_ic_h{h}.png"
    with _figure(out / name) as (_, (ax,)):
        for column, label, style in (("rank_ic", "RankIC", "-"), ("ic", "IC", "--")):
            ax.plot(dates, np.nancumsum(_finite(day[column])), style, label=label, linewidth=1.4)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(title)
        ax.set_ylabel("cumulative sum of daily values")
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
    return _Section(title, name, f"Cumulative sum of daily RankIC and IC for the {h}-day horizon")


def _plot_rank_ic_by_year(out: Path, h: int, day: pl.DataFrame) -> _Section:
    title = f"Mean RankIC by calendar year — {h}d"
    per_year = (
        day.with_columns(pl.col("rank_ic").cast(pl.Float64).fill_nan(None))
        .drop_nulls("rank_ic")
        .group_by(pl.col("date").dt.year().alias("year"))
        .agg(pl.col("rank_ic").mean().alias("mean"), pl.len().alias("days"))
        .sort("year")
    )
    if per_year.height == 0:
        return _Section(title, note=f"no RankIC values for horizon {h}")
    name = f"rank_ic_by_year_h{h}.png"
    years = [str(y) for y in per_year["year"].to_list()]
    means = per_year["mean"].to_numpy()
    with _figure(out / name, height=3.2) as (_, (ax,)):
        colors = ["#2a7d4f" if m >= 0 else "#b23a3a" for m in means]
        bars = ax.bar(years, means, color=colors)
        ax.bar_label(
            bars, labels=[f"{d} d" for d in per_year["days"].to_list()], fontsize=8, padding=2
        )
        ax.margins(y=0.15)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(title)
        ax.set_ylabel("mean daily RankIC")
        ax.grid(axis="y", alpha=0.3)
    return _Section(
        title, name, f"Bar chart of mean daily RankIC per calendar year for the {h}-day horizon"
    )


def _plot_deciles(out: Path, h: int, deciles: pl.DataFrame | None) -> _Section:
    title = f"Mean forward return by prediction decile — {h}d"
    if deciles is None:
        return _Section(title, note=f"{DECILES} not found in the run directory")
    rows = deciles.filter(pl.col("horizon") == h).sort("decile")
    if rows.height == 0:
        return _Section(title, note=f"no decile rows for horizon {h}")
    name = f"deciles_h{h}.png"
    values = _finite(rows["mean_return"]) * 1e4
    with _figure(out / name, height=3.2) as (_, (ax,)):
        colors = ["#2a7d4f" if v >= 0 else "#b23a3a" for v in values]
        ax.bar([str(d) for d in rows["decile"].to_list()], values, color=colors)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("decile (1 = lowest prediction)")
        ax.set_ylabel(f"mean {h}d return (bp)")
        ax.grid(axis="y", alpha=0.3)
    return _Section(title, name, f"Bar chart of mean {h}-day forward return per prediction decile")


def _plot_long_short(out: Path, h: int, day: pl.DataFrame) -> _Section:
    title = f"Long-short cumulative return and drawdown — {h}d signal"
    if day.height == 0:
        return _Section(title, note=f"no daily rows for horizon {h}")
    dates = day["date"].to_numpy()
    name = f"long_short_h{h}.png"
    with _figure(out / name, nrows=2, height=5.0, sharex=True, height_ratios=[2.2, 1.0]) as (
        _,
        (top, bottom),
    ):
        for column, label, color in (
            ("long_short_gross", "gross", "#1f5fa8"),
            ("long_short_net", "net of costs", "#d9822b"),
        ):
            returns = np.nan_to_num(_finite(day[column]), nan=0.0)
            wealth = np.cumprod(1.0 + returns)
            drawdown = wealth / np.maximum.accumulate(wealth) - 1.0
            top.plot(dates, (wealth - 1.0) * 100.0, label=label, color=color, linewidth=1.4)
            if column == "long_short_gross":
                bottom.fill_between(
                    dates, drawdown * 100.0, 0.0, color=color, alpha=0.3, label=label
                )
            else:
                bottom.plot(dates, drawdown * 100.0, color=color, linewidth=1.0, label=label)
        top.axhline(0.0, color="grey", linewidth=0.8)
        top.set_title(title)
        top.set_ylabel("cumulative return (%)")
        top.legend(loc="upper left")
        top.grid(alpha=0.3)
        bottom.set_ylabel("drawdown (%)")
        bottom.legend(loc="lower left", fontsize=8)
        bottom.grid(alpha=0.3)
    return _Section(
        title,
        name,
        f"Compounded daily long-short return, gross and net, with drawdown, for the {h}-day signal",
    )


def _plot_feature_importance(out: Path, h: int, importance: pl.DataFrame | None) -> _Section:
    title = f"Feature importance (top {TOP_FEATURES}, mean gain over folds) — {h}d"
    if importance is None:
        return _Section(
            title, note=f"{FEATURE_IMPORTANCE} not found: this model records no feature importance"
        )
    rows = importance.filter(pl.col("horizon") == h)
    if rows.height == 0:
        return _Section(title, note=f"no feature importance rows for horizon {h}")
    n_folds = rows["fold"].n_unique()
    top = (
        rows.group_by("feature")
        .agg((pl.col("gain").cast(pl.Float64).fill_nan(0.0).sum() / n_folds).alias("gain"))
        .sort(["gain", "feature"], descending=[True, False])
        .head(TOP_FEATURES)
    )
    name = f"feature_importance_h{h}.png"
    features = top["feature"].to_list()[::-1]
    gains = top["gain"].to_numpy()[::-1]
    with _figure(out / name, height=max(2.5, 0.22 * len(features) + 1.2)) as (_, (ax,)):
        ax.barh(features, gains, color="#1f5fa8")
        ax.set_title(title)
        ax.set_xlabel(f"mean gain over {n_folds} fold(s)")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    return _Section(
        title,
        name,
        f"Horizontal bar chart of the top {len(features)} features by mean gain, {h}-day horizon",
    )


# --------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1d2330; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .3rem; }
h2 { border-bottom: 1px solid #d5d9e0; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #d5d9e0; padding: .25rem .6rem; white-space: nowrap; }
th { background: #f1f3f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.banner { background: #fff3cd; border: 2px solid #d9a400; color: #5c4500; padding: .7rem 1rem;
          font-weight: bold; margin: 1rem 0; }
.caveats { background: #fdf0f0; border-left: 4px solid #b23a3a; padding: .5rem 1rem; }
.note { color: #6b7280; font-style: italic; }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #e5e7eb; }
figcaption { font-size: .85rem; color: #4b5563; }
details pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .8rem; }
.scroll { overflow-x: auto; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _format_metric(field: str, value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return "—"
    if field == "n_days":
        return f"{int(value):,}"
    if field in _PERCENT_FIELDS:
        return f"{value * 100:.2f}%"
    if field in _RATIO_FIELDS:
        return f"{value:.2f}"
    return f"{value:.4f}"


def _format_cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "—"
    return str(value)


def _summary_table(horizons: Sequence[int], summary: dict[int, dict[str, float]]) -> str:
    shown = [h for h in horizons if h in summary] + sorted(h for h in summary if h not in horizons)
    if not shown:
        return '<p class="note">summary.json holds no horizon.</p>'
    extra = sorted({k for h in shown for k in summary[h]} - set(SUMMARY_FIELDS))
    head = "".join(f"<th>{_esc(h)}d</th>" for h in shown)
    lines = [f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>"]
    for field in (*SUMMARY_FIELDS, *extra):
        cells = "".join(
            f'<td class="num">{_esc(_format_metric(field, summary[h].get(field)))}</td>'
            for h in shown
        )
        lines.append(
            f'<tr><th title="{_esc(field)}">{_esc(_LABELS.get(field, field))}</th>{cells}</tr>'
        )
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _frame_table(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    numeric = [frame.schema[c].is_numeric() for c in frame.columns]
    lines = [f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>']
    for row in frame.iter_rows():
        cells = "".join(
            f'<td class="num">{_esc(_format_cell(v))}</td>'
            if is_num
            else f"<td>{_esc(_format_cell(v))}</td>"
            for v, is_num in zip(row, numeric, strict=True)
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _section_html(section: _Section) -> str:
    if section.image is None:
        return f'<h3>{_esc(section.title)}</h3>\n<p class="note">{_esc(section.note)}</p>'
    return (
        f'<figure><img src="{_esc(section.image)}" alt="{_esc(section.alt)}">'
        f"<figcaption>{_esc(section.title)}</figcaption></figure>"
    )


def _render_html(
    info: RunInfo,
    horizons: Sequence[int],
    summary: dict[int, dict[str, float]],
    folds: pl.DataFrame | None,
    sections: dict[int, list[_Section]],
) -> str:
    title = f"kizashi run report — {info.model} on {info.dataset}"
    run_rows = [
        ("model", info.model),
        ("dataset", info.dataset),
        ("source", info.source or "—"),
        ("created", info.created or "—"),
        ("seed", info.seed),
        ("control (shuffled target)", "yes" if info.control else "no"),
        ("folds", info.n_folds),
        ("features", len(info.features)),
        ("horizons", ", ".join(f"{h}d" for h in horizons) or "—"),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    if info.control:
        parts.append(f'<div class="banner" id="control-banner">{_esc(CONTROL_BANNER)}</div>')
    parts.append('<h2 id="run">Run</h2><table><tbody>')
    parts += [f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in run_rows]
    parts.append("</tbody></table>")
    if info.config:
        config = json.dumps(info.config, indent=2, sort_keys=True, default=str)
        parts.append(f"<details><summary>config</summary><pre>{_esc(config)}</pre></details>")

    parts.append('<h2 id="caveats">Data caveats</h2><div class="caveats"><ul>')
    caveats = [c for c in info.caveats if str(c).strip()] or [NO_CAVEATS]
    parts += [f"<li>{_esc(c)}</li>" for c in caveats]
    parts.append("</ul></div>")

    parts.append('<h2 id="summary">Summary by horizon</h2>')
    parts.append(_summary_table(horizons, summary))

    parts.append('<h2 id="folds">Folds</h2>')
    if folds is None:
        parts.append(f'<p class="note">{_esc(FOLDS)} not found in the run directory.</p>')
    else:
        parts.append(_frame_table(folds.sort(["horizon", "fold"])))

    for h in horizons:
        parts.append(f'<h2 id="h{_esc(h)}">Horizon {_esc(h)}d</h2>')
        parts += [_section_html(s) for s in sections[h]]
    parts.append("</body></html>\n")
    return "\n".join(parts)
