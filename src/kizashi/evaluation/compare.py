"""Walk-forward runs side by side (``kizashi runs compare RUN_DIR RUN_DIR ...``).

:func:`compare_runs` reads each run directory (:mod:`kizashi.evaluation.run_dir`: ``run.json``,
``summary.json``, ``daily.parquet``) and returns a :class:`RunComparison`:

* ``runs``: one :class:`ComparedRun` per directory, labelled ``{model}/{directory name}``;
  two runs with the same label get their parent directory in it too, then ``#2``, ``#3``;
* ``horizons``: the horizons every run has in ``summary.json``, compared; a horizon only
  some runs have is listed in ``partial_horizons`` (with the runs that have it), not compared;
* ``summary``: per compared horizon, every summary metric of every run, as each run's
  ``summary.json`` has it (so on that run's own test days, which may differ between runs);
* ``pairs``: per compared horizon, every pair of runs (``run_a`` before ``run_b`` in the
  order given) and each daily metric of ``PAIRED_METRICS`` (the daily RankIC and the daily
  net long-short return): a :class:`PairedDifference` on the pair's common days.

A paired difference of a daily metric ``x`` (``daily.parquet`` column) between runs a and b:

* **common days**: the dates in both runs' ``daily.parquet`` for the horizon on which both
  values are finite; ``d_t = x_a,t - x_b,t`` on those ``n`` days, in date order;
* ``mean_diff = mean(d)``, ``std_diff = std(d, ddof=1)``; ``mean_a`` / ``mean_b`` are each
  run's mean on the same common days;
* ``t_stat = mean_diff / (std_diff / sqrt(n))``: the simple paired t-statistic, which treats
  the days as independent;
* ``nw_t_stat = mean_diff / sqrt(V / n)``: the same with the Newey-West (Bartlett kernel)
  long-run variance ``V = g_0 + 2 * sum_{l=1..L} (1 - l / (L + 1)) * g_l``, where
  ``g_l = (1/n) * sum_{t>=l} (d_t - mean)(d_{t-l} - mean)``. ``L = nw_lags`` is
  ``floor(4 * (n / 100) ** (2 / 9))``, raised to ``h - 1`` for the RankIC of an ``h``-day
  horizon (its daily values score overlapping ``h``-day returns, so they are autocorrelated
  by construction), and capped at ``n - 1``. The net long-short return is a one-day return
  of a daily-rebalanced book, so it uses the first rule only. For ``h > 1`` the simple t
  overstates the evidence; read the Newey-West one.
* ``verdict``: which run is higher when ``|nw_t_stat| >= 1.96`` (5 % two-sided, normal
  approximation), else no significant difference.

Undefined values are ``None``, and ``note`` says why: no common day (the row is kept, the
other horizons and pairs are still compared), a single common day, or identical values.

:func:`write_comparison_html` writes one self-contained HTML page (inline CSS, the cumulative
RankIC plot of each horizon as an inline PNG); :func:`comparison_text_tables` gives the same
tables as plain strings and :func:`comparison_tables` as ``rich`` tables for the terminal.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from kizashi.atomic import write_text_atomic
from kizashi.errors import KizashiError
from kizashi.evaluation.report import (
    METRIC_LABELS,
    Z95,
    HtmlCell,
    format_metric,
    html_page_head,
    html_table,
)
from kizashi.evaluation.run_dir import (
    DAILY,
    RUN_INFO,
    SUMMARY_DISPLAY,
    SUMMARY_FIELDS,
    SUMMARY_JSON,
    read_run_info,
    read_summary,
    require_columns,
    require_run_dir,
)

if TYPE_CHECKING:
    from rich.table import Table

logger = logging.getLogger(__name__)

# Daily metrics compared pairwise: daily.parquet column -> (label, display scale, format).
PAIRED_METRICS: dict[str, tuple[str, float, str]] = {
    "rank_ic": ("daily RankIC", 1.0, "{:+.4f}"),
    "long_short_net": ("daily net long-short return (bp)", 1e4, "{:+.2f}"),
}
DAILY_REQUIRED = ("horizon", "date", "rank_ic")
DPI = 110


@dataclass(frozen=True)
class ComparedRun:
    """One run directory of a comparison.

    ``daily`` holds its ``daily.parquet`` rows ``[horizon x date]``: ``horizon (Int64), date``
    and the columns of ``PAIRED_METRICS`` it has (Float64).
    """

    label: str
    path: Path
    model: str
    dataset: str
    control: bool
    horizons: tuple[int, ...]
    summary: dict[int, dict[str, Any]]
    daily: pl.DataFrame = field(repr=False, compare=False)

    def span(self, horizon: int) -> tuple[str, str, int] | None:
        """(first date, last date, number of days) of ``horizon`` in ``daily.parquet``."""
        dates = self.daily.filter(pl.col("horizon") == horizon)["date"]
        if dates.len() == 0:
            return None
        return str(dates.min()), str(dates.max()), dates.n_unique()


@dataclass(frozen=True)
class SummaryRow:
    """One summary metric of one horizon: ``values[i]`` is run ``i``'s (``None`` if absent)."""

    horizon: int
    metric: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class PairedDifference:
    """Run a minus run b for one daily metric and horizon on their common days (module
    docstring: simple t with ddof=1, Newey-West t with ``nw_lags`` lags)."""

    horizon: int
    metric: str
    run_a: str
    run_b: str
    n_common_days: int
    mean_a: float | None
    mean_b: float | None
    mean_diff: float | None
    std_diff: float | None
    t_stat: float | None
    nw_t_stat: float | None
    nw_lags: int | None
    note: str = ""

    @property
    def verdict(self) -> str:
        """Which run is higher, by the Newey-West t at 5 % two-sided."""
        if self.nw_t_stat is None:
            return "—"
        if self.nw_t_stat >= Z95:
            return f"{self.run_a} higher"
        if self.nw_t_stat <= -Z95:
            return f"{self.run_b} higher"
        return "no significant difference"


@dataclass(frozen=True)
class RunComparison:
    """The result of :func:`compare_runs` (see the module docstring)."""

    runs: tuple[ComparedRun, ...]
    horizons: tuple[int, ...]
    partial_horizons: dict[int, tuple[str, ...]]
    summary: tuple[SummaryRow, ...]
    pairs: tuple[PairedDifference, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(run.label for run in self.runs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable form (no daily tables)."""
        return {
            "runs": [
                {
                    "label": r.label,
                    "path": str(r.path),
                    "model": r.model,
                    "dataset": r.dataset,
                    "control": r.control,
                    "horizons": list(r.horizons),
                }
                for r in self.runs
            ],
            "horizons": list(self.horizons),
            "partial_horizons": {str(h): list(v) for h, v in self.partial_horizons.items()},
            "summary": {
                str(h): {
                    row.metric: dict(zip(self.labels, row.values, strict=True))
                    for row in self.summary
                    if row.horizon == h
                }
                for h in self.horizons
            },
            "pairs": [{**asdict(p), "verdict": p.verdict} for p in self.pairs],
        }


# --------------------------------------------------------------------------- reading


def _read_run(path: Path) -> tuple[Any, dict[int, dict[str, Any]], pl.DataFrame]:
    """run.json, summary.json and the needed columns of daily.parquet of one run directory."""
    try:
        info = read_run_info(path)
    except (ValueError, TypeError) as err:
        raise KizashiError(f"{path / RUN_INFO}: unreadable run info ({err})") from err
    try:
        summary = read_summary(path)
    except (ValueError, TypeError, AttributeError) as err:
        raise KizashiError(f"{path / SUMMARY_JSON}: unreadable summary ({err})") from err
    daily_path = path / DAILY
    try:
        schema = pl.read_parquet_schema(daily_path)
        columns = [c for c in dict.fromkeys((*DAILY_REQUIRED, *PAIRED_METRICS)) if c in schema]
        daily = pl.read_parquet(daily_path, columns=columns)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise KizashiError(f"{daily_path}: cannot read ({err})") from err
    require_columns(daily, DAILY_REQUIRED, str(daily_path))
    repeated = daily.filter(pl.struct("horizon", "date").is_duplicated())
    if repeated.height:
        first = repeated.row(0, named=True)
        raise KizashiError(
            f"{daily_path}: {repeated.unique(['horizon', 'date']).height} (horizon, date) "
            f"pair(s) on more than one row, e.g. horizon "
            f"{first['horizon']} on {first['date']}; a run has one row per horizon and day"
        )
    metrics = [c for c in PAIRED_METRICS if c in daily.columns]
    daily = daily.select(
        pl.col("horizon").cast(pl.Int64),
        pl.col("date").cast(pl.Date),
        *(pl.col(c).cast(pl.Float64).fill_nan(None) for c in metrics),
    ).sort("horizon", "date")
    return info, summary, daily


def _labels(paths: Sequence[Path], models: Sequence[str]) -> list[str]:
    """``{model}/{dir}``, then ``{model}/{parent}/{dir}``, then a ``#k`` suffix where not unique."""
    labels = [f"{m}/{p.name}" for p, m in zip(paths, models, strict=True)]
    clash = Counter(labels)
    labels = [
        f"{m}/{p.parent.name}/{p.name}" if clash[label] > 1 else label
        for label, p, m in zip(labels, paths, models, strict=True)
    ]
    seen: Counter[str] = Counter()
    unique = []
    for label in labels:
        seen[label] += 1
        unique.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return unique


# --------------------------------------------------------------------------- statistics


def newey_west_lags(n: int, horizon: int, metric: str) -> int:
    """Lags of the Newey-West variance for ``n`` common days (module docstring)."""
    lags = math.floor(4 * (n / 100) ** (2 / 9)) if n > 0 else 0
    if metric == "rank_ic":
        lags = max(lags, horizon - 1)
    return max(0, min(lags, n - 1))


def paired_t_stats(diff: np.ndarray, lags: int) -> tuple[float | None, float | None]:
    """Simple and Newey-West t-statistics of the mean of a daily difference series.

    Args:
        diff: ``[n]`` finite daily differences in date order.
        lags: Newey-West lags ``L`` (Bartlett weights ``1 - l / (L + 1)``).

    Returns:
        ``(t_stat, nw_t_stat)``: ``mean / (std(ddof=1) / sqrt(n))`` and ``mean / sqrt(V / n)``;
        ``None`` where undefined (``n < 2``, or zero variance).
    """
    n = diff.size
    if n < 2 or diff.max() == diff.min():
        return None, None
    mean = float(diff.mean())
    t_stat = mean / (float(diff.std(ddof=1)) / math.sqrt(n))
    e = diff - mean
    variance = float(e @ e) / n
    for lag in range(1, lags + 1):
        variance += 2.0 * (1.0 - lag / (lags + 1)) * float(e[lag:] @ e[:-lag]) / n
    nw_t = mean / math.sqrt(variance / n) if variance > 0 else None
    return t_stat, nw_t


def _paired(a: ComparedRun, b: ComparedRun, horizon: int, metric: str) -> PairedDifference:
    empty = {
        "mean_a": None,
        "mean_b": None,
        "mean_diff": None,
        "std_diff": None,
        "t_stat": None,
        "nw_t_stat": None,
        "nw_lags": None,
    }
    base = {"horizon": horizon, "metric": metric, "run_a": a.label, "run_b": b.label}
    lacking = [r.label for r in (a, b) if metric not in r.daily.columns]
    if lacking:
        note = f"{DAILY} of {', '.join(lacking)} has no {metric} column"
        return PairedDifference(**base, n_common_days=0, **empty, note=note)
    days = [
        r.daily.filter(pl.col("horizon") == horizon).select("date", pl.col(metric).alias(side))
        for r, side in ((a, "a"), (b, "b"))
    ]
    joined = days[0].join(days[1], on="date", how="inner")
    common = joined.drop_nulls().sort("date")
    n = common.height
    if n == 0:
        if joined.height == 0:
            spans = [r.span(horizon) for r in (a, b)]
            shown = ", ".join(
                f"{r.label} {s[0]}..{s[1]}" if s else f"{r.label} none"
                for r, s in zip((a, b), spans, strict=True)
            )
            note = f"no common days ({shown})"
        else:
            note = f"no common day with a {metric} value in both runs"
        return PairedDifference(**base, n_common_days=0, **empty, note=note)
    x_a, x_b = common["a"].to_numpy(), common["b"].to_numpy()
    diff = x_a - x_b
    lags = newey_west_lags(n, horizon, metric)
    t_stat, nw_t = paired_t_stats(diff, lags)
    note = ""
    if n == 1:
        note = "one common day: no t-statistic"
    elif diff.max() == diff.min():
        note = "the daily difference is constant on the common days: no t-statistic"
    return PairedDifference(
        **base,
        n_common_days=n,
        mean_a=float(x_a.mean()),
        mean_b=float(x_b.mean()),
        mean_diff=float(diff.mean()),
        std_diff=float(diff.std(ddof=1)) if n >= 2 else None,
        t_stat=t_stat,
        nw_t_stat=nw_t,
        nw_lags=lags,
        note=note,
    )


def compare_runs(run_dirs: Sequence[str | Path]) -> RunComparison:
    """Compare two or more run directories (module docstring).

    Raises:
        KizashiError: fewer than two directories, one given twice, a directory that is not a
            complete run directory (naming the missing file), an unreadable file (naming it),
            no horizon common to all runs, or no pair of runs with a common day on any
            common horizon.
    """
    paths = [Path(p) for p in run_dirs]
    if len(paths) < 2:
        given = f": {', '.join(map(str, paths))}" if paths else ""
        raise KizashiError(
            f"comparing runs needs at least 2 run directories, got {len(paths)}{given}"
        )
    resolved = Counter(p.resolve() for p in paths)
    twice = [str(p) for p in paths if resolved[p.resolve()] > 1]
    if twice:
        raise KizashiError(f"{twice[0]}: the same run directory is given more than once")
    checked = [require_run_dir(p) for p in paths]
    loaded = [(p, *_read_run(p)) for p in checked]
    labels = _labels([p for p, *_ in loaded], [info.model for _, info, _, _ in loaded])
    runs = tuple(
        ComparedRun(
            label=label,
            path=path,
            model=info.model,
            dataset=info.dataset,
            control=bool(info.control),
            horizons=tuple(sorted(summary)),
            summary=summary,
            daily=daily,
        )
        for label, (path, info, summary, daily) in zip(labels, loaded, strict=True)
    )
    every = sorted(set().union(*(r.horizons for r in runs)))
    common = tuple(h for h in every if all(h in r.horizons for r in runs))
    partial = {h: tuple(r.label for r in runs if h in r.horizons) for h in every if h not in common}
    if not common:
        listed = "; ".join(
            f"{r.path}: {', '.join(f'{h}d' for h in r.horizons) or 'none'}" for r in runs
        )
        raise KizashiError(f"the runs share no horizon ({SUMMARY_JSON} horizons: {listed})")
    if partial:
        logger.info(
            "horizons not in every run, not compared: %s",
            "; ".join(f"{h}d only in {', '.join(v)}" for h, v in partial.items()),
        )

    extra = sorted({k for r in runs for h in common for k in r.summary[h]} - set(SUMMARY_FIELDS))
    summary = tuple(
        SummaryRow(h, metric, tuple(r.summary[h].get(metric) for r in runs))
        for h in common
        for metric in (*SUMMARY_FIELDS, *extra)
    )
    pairs = tuple(
        _paired(a, b, h, metric)
        for h in common
        for a, b in itertools.combinations(runs, 2)
        for metric in PAIRED_METRICS
    )
    if not any(p.n_common_days for p in pairs if p.metric == "rank_ic"):
        spans = "; ".join(
            f"{r.path}: "
            + ", ".join(
                f"{h}d {s[0]}..{s[1]}" if (s := r.span(h)) else f"{h}d no days" for h in common
            )
            for r in runs
        )
        raise KizashiError(
            f"no two runs share a test day with a RankIC on any common horizon ({DAILY} "
            f"dates: {spans})"
        )
    return RunComparison(runs, common, partial, summary, pairs)


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class TextTable:
    """A table of formatted strings: ``rows[i][j]`` under ``headers[j]``; ``numeric[j]`` says
    whether column ``j`` holds numbers (right-aligned)."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]


def _fmt(value: Any, pattern: str, scale: float = 1.0) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    if not math.isfinite(value):
        return "—"
    if pattern.endswith("d}"):
        return pattern.format(round(value * scale))
    return pattern.format(value * scale)


PAIR_HEADERS = (
    "daily metric",
    "run a",
    "run b",
    "common days",
    "mean a",
    "mean b",
    "a − b",
    "t (simple)",
    "t (Newey-West)",
    "verdict",
    "note",
)
_PAIR_NUMERIC = (False, False, False, True, True, True, True, True, True, False, False)


def _pair_cells(p: PairedDifference) -> tuple[str, ...]:
    label, scale, pattern = PAIRED_METRICS[p.metric]
    lags = "" if p.nw_lags is None or p.nw_t_stat is None else f" (L={p.nw_lags})"
    return (
        label,
        p.run_a,
        p.run_b,
        f"{p.n_common_days:,}",
        _fmt(p.mean_a, pattern, scale),
        _fmt(p.mean_b, pattern, scale),
        _fmt(p.mean_diff, pattern, scale),
        _fmt(p.t_stat, "{:+.2f}"),
        _fmt(p.nw_t_stat, "{:+.2f}") + lags,
        p.verdict,
        p.note,
    )


def comparison_text_tables(comparison: RunComparison) -> list[TextTable]:
    """The comparison as tables of strings: the runs, then per compared horizon the summary
    (the ``SUMMARY_DISPLAY`` metrics, one column per run) and the paired differences (one row
    per pair of runs and daily metric; ``PAIR_HEADERS``)."""
    labels = comparison.labels
    tables = [
        TextTable(
            "runs",
            ("run", "model", "dataset", "control", "horizons", "path"),
            tuple(
                (
                    r.label,
                    r.model,
                    r.dataset,
                    "yes" if r.control else "no",
                    ", ".join(f"{h}d" for h in r.horizons),
                    str(r.path),
                )
                for r in comparison.runs
            ),
            (False,) * 6,
        )
    ]
    if comparison.partial_horizons:
        tables.append(
            TextTable(
                "horizons not in every run (not compared)",
                ("horizon", "runs that have it"),
                tuple((f"{h}d", ", ".join(v)) for h, v in comparison.partial_horizons.items()),
                (True, False),
            )
        )
    for h in comparison.horizons:
        values = {row.metric: row.values for row in comparison.summary if row.horizon == h}
        rows = tuple(
            (header, *(_fmt(v, pattern) for v in values[key]))
            for key, header, pattern in SUMMARY_DISPLAY
            if key in values
        )
        tables.append(
            TextTable(
                f"{h}d: summary (each run on its own test days)",
                ("metric", *labels),
                rows,
                (False, *(True for _ in labels)),
            )
        )
        pairs = tuple(_pair_cells(p) for p in comparison.pairs if p.horizon == h)
        tables.append(
            TextTable(
                f"{h}d: paired daily differences (a − b) on common days",
                PAIR_HEADERS,
                pairs,
                _PAIR_NUMERIC,
            )
        )
    return tables


def comparison_tables(comparison: RunComparison) -> list[Table]:
    """:func:`comparison_text_tables` as ``rich`` tables, for the terminal."""
    from rich.table import Table  # here: only the CLI prints, and only it needs rich

    out = []
    for text in comparison_text_tables(comparison):
        if text.headers == PAIR_HEADERS:  # transposed: one column per pair and metric fits a terminal
            table = Table(title=text.title, title_justify="left")
            table.add_column("")
            for row in text.rows:
                table.add_column(f"{row[1]} − {row[2]}: {row[0]}", justify="right")
            for j, header in enumerate(PAIR_HEADERS[3:], start=3):
                if any(row[j] for row in text.rows):
                    table.add_row(header, *(row[j] for row in text.rows))
            out.append(table)
            continue
        table = Table(title=text.title, title_justify="left")
        for header, numeric in zip(text.headers, text.numeric, strict=True):
            table.add_column(header, justify="right" if numeric else "left")
        for row in text.rows:
            table.add_row(*row)
        out.append(table)
    return out


# --------------------------------------------------------------------------- HTML


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cumulative_png(comparison: RunComparison, h: int) -> str:
    """The cumulative daily RankIC of every run for horizon ``h``, as a base64 PNG."""
    fig = Figure(figsize=(8.0, 3.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for run in comparison.runs:
        day = run.daily.filter(pl.col("horizon") == h)
        if day.height:
            values = day["rank_ic"].fill_null(0.0).to_numpy()
            ax.plot(day["date"].to_numpy(), np.cumsum(values), linewidth=1.3, label=run.label)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_title(f"Cumulative daily RankIC — {h}d")
    ax.set_ylabel("cumulative sum of daily RankIC")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    fig.clear()
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _test_days(run: ComparedRun) -> str:
    """The run's test days per horizon, horizons with the same days together."""
    by_span: dict[tuple[str, str, int] | None, list[int]] = {}
    for h in run.horizons:
        by_span.setdefault(run.span(h), []).append(h)
    return "; ".join(
        ", ".join(f"{h}d" for h in horizons)
        + (f": {s[0]} – {s[1]} ({s[2]:,} days)" if s else ": no days")
        for s, horizons in by_span.items()
    )


def comparison_html(comparison: RunComparison) -> str:
    """The comparison as one self-contained HTML page (see :func:`write_comparison_html`)."""
    labels = comparison.labels
    title = "kizashi run comparison — " + " vs ".join(labels)
    parts = [*html_page_head(title), '<h2 id="runs">Runs</h2>']
    run_rows = [
        [
            HtmlCell(r.label),
            HtmlCell(r.model),
            HtmlCell(r.dataset),
            HtmlCell("yes" if r.control else "no"),
            HtmlCell(_test_days(r)),
            HtmlCell(str(r.path)),
        ]
        for r in comparison.runs
    ]
    parts.append(
        html_table(
            ["run", "model", "dataset", "control", "test days", "path"],
            run_rows,
            weights=[1.6, 1.1, 1.2, 0.7, 3.0, 2.4],
            table_id="runs-table",
            wide=True,
        )
    )
    if any(r.control for r in comparison.runs):
        parts.append(
            '<div class="banner">A shuffled-target control run is compared: its RankIC '
            "should be ~0.</div>"
        )
    compared = ", ".join(f"{h}d" for h in comparison.horizons)
    parts.append(f'<p id="horizons">Horizons compared (in every run): {_esc(compared)}.</p>')
    if comparison.partial_horizons:
        partial = "; ".join(
            f"{h}d only in {', '.join(v)}" for h, v in comparison.partial_horizons.items()
        )
        parts.append(
            f'<p class="note" id="partial-horizons">Not compared (not in every run): '
            f"{_esc(partial)}.</p>"
        )
    parts.append(
        '<p class="note">Summary: each run on its own test days, as its summary.json has it. '
        "Paired differences: on the days both runs have a value; t (simple) = mean / (std "
        "(ddof 1) / √days), which treats days as independent; t (Newey-West) uses a Bartlett "
        "long-run variance with L lags (at least h − 1 for the RankIC of an h-day horizon, "
        "whose daily values overlap). The verdict reads the Newey-West t at ±1.96 (5 %, "
        "two-sided). Net long-short returns are in basis points per day.</p>"
    )
    for h in comparison.horizons:
        parts.append(f'<h2 id="h{h}">Horizon {h}d</h2>')
        rows = []
        for row in (r for r in comparison.summary if r.horizon == h):
            name = HtmlCell(METRIC_LABELS.get(row.metric, row.metric), title=row.metric)
            rows.append(
                [name, *(HtmlCell(format_metric(row.metric, v), num=True) for v in row.values)]
            )
        parts.append(
            html_table(
                ["metric", *labels],
                rows,
                weights=[2.0] + [1.0] * len(labels),
                table_id=f"summary-h{h}",
            )
        )
        pair_rows = []
        for p in (p for p in comparison.pairs if p.horizon == h):
            cells = zip(_pair_cells(p), _PAIR_NUMERIC, strict=True)
            pair_rows.append([HtmlCell(c, num=numeric) for c, numeric in cells])
        parts.append(
            html_table(
                list(PAIR_HEADERS),
                pair_rows,
                weights=[1.4, 1.4, 1.4, 0.8, 0.9, 0.9, 0.9, 0.8, 1.0, 1.3, 1.4],
                table_id=f"pairs-h{h}",
            )
        )
        image = _cumulative_png(comparison, h)
        parts.append(
            f'<figure><img src="data:image/png;base64,{image}" alt="Cumulative daily RankIC of '
            f'every run, {h}-day horizon"><figcaption>Cumulative daily RankIC — {h}d (each run '
            "on its own test days)</figcaption></figure>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_comparison_html(comparison: RunComparison, path: str | Path) -> Path:
    """Write :func:`comparison_html` to ``path`` atomically (temp file + rename) and return it."""
    out = write_text_atomic(Path(path), comparison_html(comparison))
    logger.info("run comparison written to %s", out)
    return out


def comparison_json(comparison: RunComparison) -> str:
    """:meth:`RunComparison.to_dict` as JSON text (for ``--json``)."""
    return json.dumps(comparison.to_dict(), indent=2, default=str)
