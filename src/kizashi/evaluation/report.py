"""A static HTML report (+ PNG plots) for a run directory.

``write_report(run_dir)`` reads the files described in :mod:`kizashi.evaluation.run_dir`
and writes ``RUN_DIR/report/index.html`` with one PNG per run-level plot:

* ``ic_decay.png``                  mean daily RankIC per horizon with a 95 % interval
                                    (mean ± 1.96 standard errors); with more than one horizon
                                    in ``predictions.parquet``, also each horizon's prediction
                                    scored against every horizon's target (the decay of one
                                    signal across horizons)

and one PNG per plot and horizon:

* ``cumulative_ic_h{h}.png``        cumulative RankIC and IC (sum of daily values)
* ``rank_ic_by_year_h{h}.png``      mean daily RankIC per calendar year
* ``rank_ic_monthly_h{h}.png``      mean daily RankIC per (year, month): a heatmap on a
                                    diverging colour scale centred at 0 (+ the same as a table)
* ``deciles_h{h}.png``              mean forward return per prediction decile
* ``long_short_h{h}.png``           compounded long-short return, gross and net, with drawdown
* ``turnover_h{h}.png``             daily turnover of the long-short book and its rolling mean
                                    over ``TURNOVER_WINDOW`` trading days
* ``strategies_h{h}.png``           compounded net return of every candidate book of
                                    ``strategy_daily.parquet`` over the test days (thin lines)
                                    and of the walk-forward choice (thick line; its gross
                                    return dashed)
* ``feature_importance_h{h}.png``   top 30 features by mean gain over folds (if recorded)

Each horizon also gets a "Portfolio strategies" table from ``strategies.csv`` (written by
``kizashi strategies RUN_DIR``; :func:`strategy_comparison`): the walk-forward choice first,
then every candidate with its validation net Sharpe (the default selection metric) beside its
test figures, which were not used for the choice. Runs without ``strategies.csv`` /
``strategy_daily.parquet`` get a note saying how to make them.

Tables are sized to fit the page (``max-width: 1100px``) without a horizontal scrollbar: wide
tables (``WIDE_TABLE_COLUMNS`` columns or more) get ``table-layout: fixed``, full width, a
smaller font and wrapping cells; the folds table shows each of the train / valid / test
windows as one ``first – last`` column.

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
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from kizashi.atomic import atomic_path
from kizashi.errors import KizashiError
from kizashi.evaluation.metrics import daily_ic, summarize_ic
from kizashi.evaluation.run_dir import (
    DAILY,
    DECILES,
    FEATURE_IMPORTANCE,
    FOLDS,
    PREDICTIONS,
    REPORT_DIR,
    STRATEGIES,
    STRATEGY_DAILY,
    SUMMARY_FIELDS,
    WALK_FORWARD_CHOICE,
    RunInfo,
    read_run_info,
    read_summary,
    require_columns,
    require_run_dir,
)

logger = logging.getLogger(__name__)

DPI = 110
TOP_FEATURES = 30
# Rolling window of the turnover plot, in trading days (rows of daily.parquet): about a month.
TURNOVER_WINDOW = 21
# Tables with at least this many columns are laid out to the page width (table-layout: fixed).
WIDE_TABLE_COLUMNS = 8
# Heatmaps with more years than this are drawn without a number in each cell.
ANNOTATE_MAX_YEARS = 30
# Diverging colour map of the monthly heatmap (red < 0 < green), centred at 0.
HEATMAP_CMAP = "RdYlGn"
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Two-sided 95 % normal quantile for the interval of the IC decay plot.
Z95 = 1.96
CONTROL_BANNER = "shuffled-target control run: RankIC should be ~0"
NO_CAVEATS = (
    "No data caveats were recorded for this run. That does not mean there are none: check "
    "the data source for survivorship bias, corporate-action adjustments and late-arriving "
    "data before trusting these numbers."
)

DAILY_COLUMNS = ("horizon", "date", "rank_ic", "ic", "long_short_gross", "long_short_net")
DECILE_COLUMNS = ("horizon", "decile", "mean_return")
IMPORTANCE_COLUMNS = ("fold", "horizon", "feature", "gain")
STRATEGY_COLUMNS = ("horizon", "strategy", "part", "selected")
STRATEGY_DAILY_COLUMNS = ("horizon", "strategy", "date", "gross", "net")
# The strategies table after the strategy's name: (part of strategies.csv, statistic, header).
STRATEGY_TABLE_FIELDS = (
    ("validation", "net_sharpe", "validation: net Sharpe"),
    ("test", "gross_sharpe", "test: gross Sharpe"),
    ("test", "net_sharpe", "test: net Sharpe"),
    ("test", "net_annual_return", "test: net annual return"),
    ("test", "max_drawdown", "test: max drawdown"),
    ("test", "turnover", "test: daily turnover"),
    ("test", "avg_holding_days", "test: avg holding days"),
    ("test", "information_ratio", "test: IR"),
    ("test", "capacity", "test: capacity"),
)
# Shown only when some row of the horizon has a value (it needs an impact model).
OPTIONAL_STRATEGY_FIELDS = {"capacity"}
SELECTED_MARK = " ✔ chosen on validation"
STRATEGIES_HINT = (
    "run `kizashi strategies RUN_DIR` to choose a book for the signal on the validation "
    "slices and show every candidate here"
)

# How summary metrics are shown: percentages for returns and rates, few decimals for ratios.
_PERCENT_FIELDS = {
    "hit_rate",
    "decile_spread",
    "ls_annual_return",
    "ls_annual_volatility",
    "ls_max_drawdown",
    "ls_turnover",
    "ls_annual_return_net",
    # strategies.csv (kizashi.portfolio.stats.STAT_FIELDS)
    "gross_annual_return",
    "net_annual_return",
    "net_annual_volatility",
    "max_drawdown",
    "active_annual_return",
    "turnover",
    "linear_cost_annual",
    "impact_cost_annual",
    "blocked_share",
    "participation_mean",
    "participation_max",
}
_RATIO_FIELDS = {
    "icir",
    "ic_tstat",
    "rank_icir",
    "rank_ic_tstat",
    "ls_sharpe",
    "ls_sharpe_net",
    "gross_sharpe",
    "net_sharpe",
    "information_ratio",
}
_COUNT_FIELDS = {"n_days", "n_blocked_buy", "n_blocked_sell", "n_stale", "n_unpriced"}
# Thousands suffixes of a compact currency amount (capacity).
_AMOUNT_SUFFIXES = ((1e12, "tn"), (1e9, "bn"), (1e6, "m"), (1e3, "k"))
METRIC_LABELS = {
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
    """One plot (or, without ``image``, a heading with the ``note`` saying why it is missing) in
    the report, with optional HTML after it (``body``: already escaped, e.g. a table of the
    plotted values; a section without image whose ``body`` is a table needs no ``note``)."""

    title: str
    image: str | None = None
    alt: str = ""
    note: str = ""
    body: str = ""
    anchor: str = ""  # id of the section's heading (or figure)


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
    strategies = _read_optional(run / STRATEGIES, STRATEGY_COLUMNS)
    strategy_daily = _read_optional(run / STRATEGY_DAILY, STRATEGY_DAILY_COLUMNS)
    horizons = [int(h) for h in info.horizons] or sorted(summary)
    decay = ic_decay_table(daily, horizons)
    cross, cross_note = _cross_horizon_or_note(run / PREDICTIONS, horizons)

    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        decay_section = _plot_ic_decay(tmp, decay, cross, cross_note)
        sections: dict[int, list[_Section]] = {}
        for h in horizons:
            day = daily.filter(pl.col("horizon") == h).sort("date")
            sections[h] = [
                _plot_cumulative_ic(tmp, h, day),
                _plot_rank_ic_by_year(tmp, h, day),
                _plot_rank_ic_monthly(tmp, h, day),
                _plot_deciles(tmp, h, deciles),
                _plot_long_short(tmp, h, day),
                _plot_turnover(tmp, h, day),
                *_strategy_sections(tmp, h, strategies, strategy_daily),
                _plot_feature_importance(tmp, h, importance),
            ]
        page = _render_html(info, horizons, summary, folds, decay_section, sections)
        (tmp / "index.html").write_text(page, encoding="utf-8")
    index = out / "index.html"
    logger.info("report written to %s", index)
    return index


# --------------------------------------------------------------------------- figures


def ic_decay_table(daily: pl.DataFrame, horizons: Sequence[int]) -> pl.DataFrame:
    """Mean daily RankIC of each horizon with its standard error: the IC decay across horizons.

    Args:
        daily: ``daily.parquet`` rows ``[horizon x date]`` with ``horizon``, ``rank_ic``, ``ic``.
        horizons: the horizons to show, in order.

    Returns:
        ``[len(horizons)]`` frame ``horizon (Int64), n_days (Int64), rank_ic_mean,
        rank_ic_std, rank_ic_se, rank_ic_tstat, ic_mean`` over the days with a finite value
        (:func:`~kizashi.evaluation.metrics.summarize_ic`: std with ddof=1,
        ``se = std / sqrt(n_days)``, ``tstat = mean / se``); null where undefined. The
        t-statistic treats days as independent: for ``h > 1`` the daily values of overlapping
        ``h``-day targets are autocorrelated, so it overstates the evidence.
    """
    rows = []
    for h in horizons:
        day = daily.filter(pl.col("horizon") == h)
        rank = summarize_ic(day["rank_ic"])
        plain = summarize_ic(day["ic"])
        n, std = rank["n"], rank["std"]
        rows.append(
            {
                "horizon": int(h),
                "n_days": n,
                "rank_ic_mean": rank["mean"],
                "rank_ic_std": std,
                "rank_ic_se": std / math.sqrt(n) if std is not None else None,
                "rank_ic_tstat": rank["tstat"],
                "ic_mean": plain["mean"],
            }
        )
    schema = {"horizon": pl.Int64, "n_days": pl.Int64}
    schema |= {
        c: pl.Float64
        for c in ("rank_ic_mean", "rank_ic_std", "rank_ic_se", "rank_ic_tstat", "ic_mean")
    }
    return pl.DataFrame(rows, schema=schema)


CROSS_COLUMNS = ("date", "code", "horizon", "prediction", "target")


def cross_horizon_rank_ic(predictions: str | Path, horizons: Sequence[int]) -> pl.DataFrame:
    """Each horizon's prediction scored against every horizon's target, from
    ``predictions.parquet`` (one row per date, code and horizon, with that horizon's
    ``prediction`` and ``target``).

    The prediction made for horizon ``p`` of stock ``c`` on day ``d`` is paired with the
    ``t``-day forward return (``target`` of the row ``(d, c, t)``); the daily RankIC of those
    pairs is :func:`~kizashi.evaluation.metrics.daily_ic`'s, summarized by
    :func:`~kizashi.evaluation.metrics.summarize_ic`. The diagonal (``p == t``) is the run's
    own per-horizon RankIC.

    Args:
        predictions: path of ``predictions.parquet``; only the columns of ``CROSS_COLUMNS``
            are read.
        horizons: the horizons, in order.

    Returns:
        ``[len(horizons)**2]`` frame ``prediction_horizon, target_horizon (Int64), n_days
        (Int64), rank_ic_mean, rank_ic_tstat (Float64, null where undefined)``, in the order
        of ``horizons`` (prediction horizon major). ``n_days`` counts days with a RankIC.
    """
    frame = (
        pl.scan_parquet(predictions)
        .select(CROSS_COLUMNS)
        .with_columns(pl.col("horizon").cast(pl.Int64))
    )
    wanted = [int(h) for h in horizons]
    targets = frame.filter(pl.col("horizon").is_in(wanted)).select(
        "date", "code", "horizon", "target"
    )
    rows = []
    for p in wanted:
        paired = (
            frame.filter(pl.col("horizon") == p)
            .select("date", "code", "prediction")
            .join(targets, on=["date", "code"], how="inner")
            .collect()
        )
        per_day = daily_ic(paired, by=("horizon", "date"))
        for t in wanted:
            stats = summarize_ic(per_day.filter(pl.col("horizon") == t)["rank_ic"])
            rows.append(
                {
                    "prediction_horizon": p,
                    "target_horizon": t,
                    "n_days": stats["n"],
                    "rank_ic_mean": stats["mean"],
                    "rank_ic_tstat": stats["tstat"],
                }
            )
    schema = {
        "prediction_horizon": pl.Int64,
        "target_horizon": pl.Int64,
        "n_days": pl.Int64,
        "rank_ic_mean": pl.Float64,
        "rank_ic_tstat": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def monthly_rank_ic(day: pl.DataFrame) -> pl.DataFrame:
    """Mean daily RankIC per calendar month of one horizon.

    Args:
        day: one horizon's ``daily.parquet`` rows ``[dates]`` with ``date`` and ``rank_ic``.

    Returns:
        ``[months with a finite RankIC]`` frame ``year, month (Int32), rank_ic_mean
        (Float64), days (Int64)`` sorted by year and month; days with a null / NaN RankIC
        are left out.
    """
    return (
        day.select("date", pl.col("rank_ic").cast(pl.Float64).fill_nan(None))
        .drop_nulls("rank_ic")
        .group_by(
            pl.col("date").dt.year().cast(pl.Int32).alias("year"),
            pl.col("date").dt.month().cast(pl.Int32).alias("month"),
        )
        .agg(pl.col("rank_ic").mean().alias("rank_ic_mean"), pl.len().cast(pl.Int64).alias("days"))
        .sort("year", "month")
    )


def rolling_turnover(day: pl.DataFrame, window: int = TURNOVER_WINDOW) -> pl.DataFrame:
    """Daily turnover of the long-short book and its rolling mean over ``window`` traded days.

    Args:
        day: one horizon's ``daily.parquet`` rows ``[dates]`` with ``date`` and ``turnover``
            (sum of absolute weight changes; 2.0 = the whole book replaced).
        window: rolling window in rows (trading days with a finite turnover).

    Returns:
        ``[traded days]`` frame ``date, turnover, rolling (Float64)`` sorted by date, without
        the days whose turnover is null / NaN (no portfolio); ``rolling`` is null for the
        first ``window - 1`` rows.
    """
    return (
        day.select("date", pl.col("turnover").cast(pl.Float64).fill_nan(None))
        .drop_nulls("turnover")
        .sort("date")
        .with_columns(
            pl.col("turnover").rolling_mean(window_size=window, min_samples=window).alias("rolling")
        )
    )


def strategy_comparison(strategies: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """One row per book of ``horizon`` in ``strategies.csv``, as the report's table shows it.

    Args:
        strategies: ``strategies.csv`` (see :mod:`kizashi.evaluation.run_dir`) with at least
            ``horizon, strategy, part, selected``; an absent or empty statistic reads as null,
            and ``selected`` may be Boolean or the text ``true`` / ``false``.
        horizon: the horizon to show.

    Returns:
        ``[books]`` frame ``strategy (Utf8), walk_forward, selected (Boolean), note (Utf8)``
        and, per entry ``(part, field, _)`` of ``STRATEGY_TABLE_FIELDS``, ``{part}_{field}``
        (Float64: the statistic on the book's row of that part; null without one). The
        ``WALK_FORWARD_CHOICE`` book comes first, then the candidates in file order;
        ``selected`` is true for a candidate any of whose rows is marked selected (never for
        the walk-forward choice); ``note`` is the note of the book's test row.
    """
    fields = list(dict.fromkeys(f for _, f, _ in STRATEGY_TABLE_FIELDS))
    columns = strategies.columns
    rows = (
        strategies.filter(pl.col("horizon") == horizon)
        .with_row_index("_order")
        .select(
            "_order",
            pl.col("strategy").cast(pl.Utf8),
            pl.col("part").cast(pl.Utf8),
            _flag("selected"),
            pl.col("note").cast(pl.Utf8)
            if "note" in columns
            else pl.lit(None, pl.Utf8).alias("note"),
            *(
                pl.col(f).cast(pl.Float64, strict=False)
                if f in columns
                else pl.lit(None, pl.Float64).alias(f)
                for f in fields
            ),
        )
    )
    walk_forward = pl.col("strategy") == WALK_FORWARD_CHOICE
    books = (
        rows.group_by("strategy")
        .agg(
            pl.col("_order").min(),
            pl.col("selected").any(),
            pl.col("note").filter(pl.col("part") == "test").first(),
        )
        .with_columns(
            walk_forward.alias("walk_forward"),
            (pl.col("selected") & ~walk_forward).alias("selected"),
        )
        .sort(~walk_forward, "_order")
    )
    for part in ("validation", "test"):
        wanted = [f for p, f, _ in STRATEGY_TABLE_FIELDS if p == part]
        side = (
            rows.filter(pl.col("part") == part)
            .sort("_order")
            .unique("strategy", keep="first", maintain_order=True)
            .select("strategy", *(pl.col(f).alias(f"{part}_{f}") for f in wanted))
        )
        books = books.join(side, on="strategy", how="left", maintain_order="left")
    return books.select(
        "strategy",
        "walk_forward",
        "selected",
        "note",
        *(f"{p}_{f}" for p, f, _ in STRATEGY_TABLE_FIELDS),
    )


def _flag(column: str) -> pl.Expr:
    """A Boolean column of a CSV as read (Boolean, or text such as ``true``), null as false."""
    return (
        pl.col(column)
        .cast(pl.Utf8)
        .str.to_lowercase()
        .is_in(["true", "1"])
        .fill_null(False)
        .alias(column)
    )


def _cross_horizon_or_note(path: Path, horizons: Sequence[int]) -> tuple[pl.DataFrame | None, str]:
    """:func:`cross_horizon_rank_ic`, or ``None`` and the reason it is not shown."""
    if len(horizons) < 2:
        return None, "one horizon only: no prediction to score against another horizon's target"
    try:
        schema = pl.scan_parquet(path).collect_schema()
    except (OSError, pl.exceptions.PolarsError) as err:
        return None, f"{path.name}: cannot read ({err})"
    missing = [c for c in CROSS_COLUMNS if c not in schema]
    if missing:
        return None, f"{path.name} lacks column(s) {', '.join(missing)}"
    cross = cross_horizon_rank_ic(path, horizons)
    off_diagonal = cross.filter(pl.col("prediction_horizon") != pl.col("target_horizon"))
    if off_diagonal["n_days"].sum() == 0:
        return None, (
            f"{path.name}: the horizons' predictions share no (date, code) row, so no prediction "
            "can be scored against another horizon's target"
        )
    return cross, ""


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


def _plot_ic_decay(
    out: Path, decay: pl.DataFrame, cross: pl.DataFrame | None, cross_note: str
) -> _Section:
    title = "IC decay across horizons — mean daily RankIC"
    shown = decay.filter(pl.col("rank_ic_mean").is_not_null())
    if shown.height == 0:
        return _Section(
            title,
            note="no RankIC values in daily.parquet",
            body=_decay_html(decay, cross, cross_note),
        )
    labels = [f"{h}d" for h in decay["horizon"].to_list()]
    x = np.arange(decay.height, dtype=float)
    means = _finite(decay["rank_ic_mean"])
    errors = np.nan_to_num(_finite(decay["rank_ic_se"]), nan=0.0) * Z95
    name = "ic_decay.png"
    with _figure(out / name, height=3.6) as (_, (ax,)):
        if cross is not None:
            for p in decay["horizon"].to_list():
                row = cross.filter(pl.col("prediction_horizon") == p)
                ax.plot(
                    x,
                    _finite(row["rank_ic_mean"]),
                    "--",
                    marker=".",
                    linewidth=1.0,
                    alpha=0.8,
                    label=f"prediction for {p}d vs each target",
                )
        ax.errorbar(
            x,
            means,
            yerr=errors,
            fmt="o",
            color="black",
            capsize=4,
            linewidth=1.4,
            label="own horizon: mean ± 1.96 s.e.",
            zorder=3,
        )
        for xi, mean, t in zip(x, means, decay["rank_ic_tstat"].to_list(), strict=True):
            if math.isfinite(mean) and t is not None:
                ax.annotate(
                    f"t={t:.1f}", (xi, mean), textcoords="offset points", xytext=(8, 4), fontsize=8
                )
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xticks(x, labels)
        ax.set_xlabel("target horizon")
        ax.set_ylabel("mean daily RankIC")
        ax.set_title(title)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    return _Section(
        title,
        name,
        "Mean daily RankIC per horizon with 95 % intervals"
        + (
            "; dashed lines: each horizon's prediction against every horizon's target"
            if cross is not None
            else ""
        ),
        body=_decay_html(decay, cross, cross_note),
    )


def _plot_rank_ic_monthly(out: Path, h: int, day: pl.DataFrame) -> _Section:
    title = f"Mean daily RankIC by month — {h}d"
    monthly = monthly_rank_ic(day)
    if monthly.height == 0:
        return _Section(title, note=f"no RankIC values for horizon {h}")
    years = list(range(int(monthly["year"].min()), int(monthly["year"].max()) + 1))
    grid = np.full((len(years), 12), np.nan)
    for year, month, mean, _ in monthly.iter_rows():
        grid[year - years[0], month - 1] = mean
    limit = float(np.nanmax(np.abs(grid))) or 1e-12
    cmap = colormaps[HEATMAP_CMAP].with_extremes(bad="#eeeeee")
    name = f"rank_ic_monthly_h{h}.png"
    with _figure(out / name, height=max(2.4, 1.1 + 0.36 * len(years))) as (fig, (ax,)):
        image = ax.imshow(
            np.ma.masked_invalid(grid), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto"
        )
        ax.set_xticks(range(12), MONTHS)
        ax.set_yticks(range(len(years)), [str(y) for y in years])
        if len(years) <= ANNOTATE_MAX_YEARS:
            for (i, j), value in np.ndenumerate(grid):
                if math.isfinite(value):
                    ax.text(
                        j,
                        i,
                        f"{value:+.3f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if abs(value) > 0.75 * limit else "black",
                    )
        fig.colorbar(image, ax=ax, label="mean daily RankIC", shrink=0.9)
        ax.set_title(title)
    return _Section(
        title,
        name,
        f"Heatmap of mean daily RankIC per year and month for the {h}-day horizon, "
        "red below zero, green above",
        body=_monthly_html(h, monthly, limit),
    )


def _plot_turnover(out: Path, h: int, day: pl.DataFrame) -> _Section:
    title = f"Long-short turnover — {h}d signal"
    if "turnover" not in day.columns:
        return _Section(title, note=f"{DAILY} has no turnover column")
    series = rolling_turnover(day)
    if series.height == 0:
        return _Section(title, note=f"no turnover values for horizon {h}")
    dates = series["date"].to_numpy()
    daily_values = _finite(series["turnover"]) * 100.0
    rolling = _finite(series["rolling"]) * 100.0
    name = f"turnover_h{h}.png"
    with _figure(out / name, height=3.2) as (_, (ax,)):
        ax.plot(dates, daily_values, color="#9ca3af", linewidth=0.7, label="daily")
        if np.isfinite(rolling).any():
            ax.plot(
                dates,
                rolling,
                color="#1f5fa8",
                linewidth=1.6,
                label=f"{TURNOVER_WINDOW}-day rolling mean",
            )
        ax.set_title(title)
        ax.set_ylabel("turnover (% of book, 200 % = all)")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    return _Section(
        title,
        name,
        f"Daily turnover of the long-short book and its {TURNOVER_WINDOW}-day rolling mean, "
        f"{h}-day signal",
        body=_turnover_html(series),
    )


def _strategy_sections(
    out: Path, h: int, strategies: pl.DataFrame | None, strategy_daily: pl.DataFrame | None
) -> list[_Section]:
    """The "Portfolio strategies" table of horizon ``h`` and the plot of its books' equity
    curves, or one note when the run has neither ``strategies.csv`` nor
    ``strategy_daily.parquet``."""
    title = f"Portfolio strategies — {h}d"
    anchor = f"strategies-h{h}"
    if strategies is None and strategy_daily is None:
        return [
            _Section(
                title,
                note=f"{STRATEGIES} and {STRATEGY_DAILY} not found: {STRATEGIES_HINT}",
                anchor=anchor,
            )
        ]
    selected: set[str] = set()
    if strategies is None:
        table = _Section(title, note=f"{STRATEGIES} not found: {STRATEGIES_HINT}", anchor=anchor)
    else:
        books = strategy_comparison(strategies, h)
        selected = set(books.filter(pl.col("selected"))["strategy"].to_list())
        if books.is_empty():
            table = _Section(
                title,
                note=f"no rows for horizon {h} in {STRATEGIES}: run `kizashi strategies RUN_DIR --horizon {h}`",
                anchor=anchor,
            )
        else:
            table = _Section(title, body=_strategies_html(h, books), anchor=anchor)
    return [table, _plot_strategy_equity(out, h, strategy_daily, selected)]


def _compounded(returns: pl.Series) -> np.ndarray:
    """Compounded cumulative return of daily returns (missing days earn 0), in %."""
    return (np.cumprod(1.0 + np.nan_to_num(_finite(returns), nan=0.0)) - 1.0) * 100.0


def _plot_strategy_equity(
    out: Path, h: int, strategy_daily: pl.DataFrame | None, selected: set[str]
) -> _Section:
    title = f"Strategies: compounded cumulative net return over the test days — {h}d signal"
    if strategy_daily is None:
        return _Section(title, note=f"{STRATEGY_DAILY} not found: {STRATEGIES_HINT}")
    rows = strategy_daily.filter(pl.col("horizon") == h)
    if rows.is_empty():
        return _Section(
            title,
            note=f"no rows for horizon {h} in {STRATEGY_DAILY}: run `kizashi strategies RUN_DIR --horizon {h}`",
        )
    names = rows["strategy"].cast(pl.Utf8).unique(maintain_order=True).to_list()
    candidates = [n for n in names if n != WALK_FORWARD_CHOICE]
    name = f"strategies_h{h}.png"
    with _figure(out / name, height=4.8) as (fig, (ax,)):
        for i, strategy in enumerate(candidates):
            series = rows.filter(pl.col("strategy") == strategy).sort("date")
            label = strategy + (" (chosen on validation)" if strategy in selected else "")
            ax.plot(
                series["date"].to_numpy(),
                _compounded(series["net"]),
                color=f"C{i % 10}",
                linewidth=0.9,
                alpha=0.85,
                label=label,
            )
        if WALK_FORWARD_CHOICE in names:
            series = rows.filter(pl.col("strategy") == WALK_FORWARD_CHOICE).sort("date")
            dates = series["date"].to_numpy()
            ax.plot(
                dates,
                _compounded(series["net"]),
                color="black",
                linewidth=2.4,
                label=f"{WALK_FORWARD_CHOICE} (net)",
            )
            ax.plot(
                dates,
                _compounded(series["gross"]),
                color="black",
                linewidth=1.3,
                linestyle="--",
                label=f"{WALK_FORWARD_CHOICE} (gross)",
            )
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(title)
        ax.set_ylabel("cumulative return (%)")
        ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    return _Section(
        title + " (the product of (1 + daily net return) minus 1; thin lines: every candidate; "
        "thick black line: the walk-forward choice, dashed: its gross return)",
        name,
        f"Compounded cumulative net return of {len(candidates)} candidate books and of the "
        f"walk-forward choice over the test days, {h}-day signal",
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

# Tables never need a horizontal scrollbar: cells wrap (anywhere, as a last resort), and wide
# tables are laid out to the page width with a smaller font (table-layout: fixed).
REPORT_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1d2330; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .3rem; }
h2 { border-bottom: 1px solid #d5d9e0; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; max-width: 100%; }
th, td { border: 1px solid #d5d9e0; padding: .25rem .6rem; word-wrap: break-word;
         overflow-wrap: anywhere; }
th { background: #f1f3f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.wide { table-layout: fixed; width: 100%; font-size: .8rem; }
table.wide th, table.wide td, table.wide td.num { padding: .2rem .35rem; white-space: normal; }
td.diag { font-weight: bold; }
td.choice { font-weight: bold; background: #e8f0fb; }
td.selected { font-weight: bold; }
.strategies-caption { font-size: .9rem; }
.banner { background: #fff3cd; border: 2px solid #d9a400; color: #5c4500; padding: .7rem 1rem;
          font-weight: bold; margin: 1rem 0; }
.caveats { background: #fdf0f0; border-left: 4px solid #b23a3a; padding: .5rem 1rem; }
.note { color: #6b7280; font-style: italic; }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #e5e7eb; }
figcaption { font-size: .85rem; color: #4b5563; }
details pre { background: #f6f8fa; padding: .6rem; font-size: .8rem; white-space: pre-wrap;
              overflow-wrap: anywhere; }
"""

# The folds table: short headers; a {name}_start / {name}_end pair is one "first – last" column.
_FOLD_LABELS = {
    "best_iteration": "best iter.",
    "n_test_days": "test days",
    "ic_mean": "IC mean",
    "rank_ic_mean": "RankIC mean",
}
_SIGNED_FIELDS = {"ic_mean", "rank_ic_mean", "ic", "rank_ic"}


@dataclass
class HtmlCell:
    """One ``<td>``: its text (escaped when rendered), right-aligned when ``num``."""

    text: str
    num: bool = False
    title: str = ""
    style: str = ""
    css: str = ""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def format_metric(field: str, value: object) -> str:
    """A summary metric (or a strategy statistic of ``strategies.csv``) as the report shows
    it: percentages for returns and rates, two decimals for ratios, whole numbers for counts,
    one decimal for ``avg_holding_days``, three significant digits with a thousands suffix
    (k, m, bn, tn) for ``capacity``, four decimals otherwise; ``—`` for a missing or
    non-finite value."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return "—"
    if field in _COUNT_FIELDS:
        return f"{int(value):,}"
    if field in _PERCENT_FIELDS:
        return f"{value * 100:.2f}%"
    if field in _RATIO_FIELDS:
        return f"{value:.2f}"
    if field == "avg_holding_days":
        return f"{value:.1f}"
    if field == "capacity":
        return _amount(value)
    return f"{value:.4f}"


def _amount(value: float) -> str:
    """A currency amount in three significant digits: ``1.23 bn``, ``456 m``, ``7.5 k``."""
    for scale, suffix in _AMOUNT_SUFFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.3g}"


def _format_cell(value: object, column: str = "") -> str:
    """Compact text of a table value: ``—`` for missing, signed 4 decimals for IC columns,
    4 significant digits for other floats."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:+.4f}" if column in _SIGNED_FIELDS else f"{value:.4g}"
    return str(value)


def html_page_head(title: str) -> list[str]:
    """The opening lines of a self-contained kizashi page: doctype, head with the report's
    CSS, and the ``<h1>`` title (HTML-escaped)."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{REPORT_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]


def html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[HtmlCell]],
    weights: Sequence[float] | None = None,
    table_id: str = "",
    wide: bool | None = None,
) -> str:
    """A ``<table>`` of ``headers`` and ``rows`` (cells escaped here).

    A wide table (``wide``, by default: ``WIDE_TABLE_COLUMNS`` columns or more) is
    ``class="wide"``: fixed layout at the page width, smaller font, column widths proportional
    to ``weights`` (equal without). Other tables take their natural width.
    """
    if wide is None:
        wide = len(headers) >= WIDE_TABLE_COLUMNS
    attrs = (f' id="{_esc(table_id)}"' if table_id else "") + (' class="wide"' if wide else "")
    lines = [f"<table{attrs}>"]
    if wide:
        share = list(weights) if weights is not None else [1.0] * len(headers)
        total = sum(share)
        cols = "".join(f'<col style="width:{100 * w / total:.1f}%">' for w in share)
        lines.append(f"<colgroup>{cols}</colgroup>")
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    lines.append(f"<thead><tr>{head}</tr></thead><tbody>")
    for row in rows:
        cells = []
        for cell in row:
            classes = " ".join(c for c in ("num" if cell.num else "", cell.css) if c)
            attr = f' class="{classes}"' if classes else ""
            attr += f' title="{_esc(cell.title)}"' if cell.title else ""
            attr += f' style="{_esc(cell.style)}"' if cell.style else ""
            cells.append(f"<td{attr}>{_esc(cell.text)}</td>")
        lines.append(f"<tr>{''.join(cells)}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _summary_table(horizons: Sequence[int], summary: dict[int, dict[str, float]]) -> str:
    shown = [h for h in horizons if h in summary] + sorted(h for h in summary if h not in horizons)
    if not shown:
        return '<p class="note">summary.json holds no horizon.</p>'
    extra = sorted({k for h in shown for k in summary[h]} - set(SUMMARY_FIELDS))
    head = "".join(f"<th>{_esc(h)}d</th>" for h in shown)
    lines = [f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>"]
    for field in (*SUMMARY_FIELDS, *extra):
        cells = "".join(
            f'<td class="num">{_esc(format_metric(field, summary[h].get(field)))}</td>'
            for h in shown
        )
        lines.append(
            f'<tr><th title="{_esc(field)}">{_esc(METRIC_LABELS.get(field, field))}</th>{cells}</tr>'
        )
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _folds_table(folds: pl.DataFrame) -> str:
    """``folds.csv`` as a table that fits the page: each ``X_start`` / ``X_end`` pair is one
    column ``X`` holding ``first – last``, headers are short, numbers compact."""
    columns = folds.columns
    spec: list[tuple[str, str, tuple[str, ...]]] = []  # (header, kind, source columns)
    merged: set[str] = set()
    for column in columns:
        if column in merged:
            continue
        base, _, end = column.rpartition("_")
        pair = (f"{base}_start", f"{base}_end")
        if end in ("start", "end") and all(c in columns for c in pair):
            spec.append((base, "range", pair))
            merged.update(pair)
        else:
            spec.append((_FOLD_LABELS.get(column, column), "value", (column,)))
    weights = [
        2.4 if kind == "range" else 0.8 if src[0] in ("fold", "horizon") else 1.0
        for _, kind, src in spec
    ]
    rows = []
    for record in folds.iter_rows(named=True):
        row = []
        for _, kind, src in spec:
            if kind == "range":
                first, last = (record[c] for c in src)
                text = (
                    "—"
                    if first is None and last is None
                    else f"{_format_cell(first)} – {_format_cell(last)}"
                )
                row.append(HtmlCell(text))
            elif src[0] == "horizon" and record["horizon"] is not None:
                row.append(HtmlCell(f"{record['horizon']}d", num=True))
            else:
                value = record[src[0]]
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
                row.append(HtmlCell(_format_cell(value, src[0]), num=numeric))
        rows.append(row)
    return html_table([header for header, _, _ in spec], rows, weights, table_id="folds-table")


def _signed(value: float | None, digits: int = 4) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


_DECAY_NOTE = (
    '<p class="note">std. error = standard deviation (ddof 1) of the daily RankIC / '
    "√days; t-stat = mean / std. error; 95 % interval = mean ± 1.96 std. errors. Days are "
    "treated as independent: for horizons over one day, the daily values of overlapping "
    "forward returns are autocorrelated, so the interval is too narrow and the t-stat too "
    "large.</p>"
)


def _decay_html(decay: pl.DataFrame, cross: pl.DataFrame | None, cross_note: str) -> str:
    rows = []
    for r in decay.iter_rows(named=True):
        mean, se = r["rank_ic_mean"], r["rank_ic_se"]
        interval = (
            f"[{mean - Z95 * se:+.4f}, {mean + Z95 * se:+.4f}]"
            if mean is not None and se is not None
            else "—"
        )
        rows.append(
            [
                HtmlCell(f"{r['horizon']}d", num=True),
                HtmlCell(f"{r['n_days']:,}", num=True),
                HtmlCell(_signed(mean), num=True),
                HtmlCell("—" if se is None else f"{se:.4f}", num=True),
                HtmlCell(_signed(r["rank_ic_tstat"], 2), num=True),
                HtmlCell(interval, num=True),
                HtmlCell(_signed(r["ic_mean"]), num=True),
            ]
        )
    parts = [
        html_table(
            ["horizon", "days", "mean RankIC", "std. error", "t-stat", "95 % interval", "mean IC"],
            rows,
            table_id="decay-table",
        ),
        _DECAY_NOTE,
    ]
    if cross is None:
        if cross_note:
            parts.append(f'<p class="note">Cross-horizon decay not shown: {_esc(cross_note)}.</p>')
        return "\n".join(parts)
    horizons = decay["horizon"].to_list()
    lookup = {(p, t): (m, ts, n) for p, t, n, m, ts in cross.iter_rows()}
    cross_rows = []
    for p in horizons:
        row = [HtmlCell(f"prediction for {p}d")]
        for t in horizons:
            mean, tstat, n = lookup.get((p, t), (None, None, 0))
            text = _signed(mean) + ("" if tstat is None else f" (t {tstat:+.1f})")
            row.append(HtmlCell(text, num=True, title=f"{n} days", css="diag" if p == t else ""))
        cross_rows.append(row)
    parts.append(
        html_table(
            ["mean daily RankIC", *(f"target {t}d" for t in horizons)],
            cross_rows,
            weights=[1.4] + [1.0] * len(horizons),
            table_id="cross-horizon-table",
        )
    )
    parts.append(
        '<p class="note">Row "prediction for p": the prediction made for horizon p, scored '
        "against each horizon's forward return on the same (date, code) rows of "
        f"{_esc(PREDICTIONS)}; the diagonal (bold) is the run's own RankIC per horizon.</p>"
    )
    return "\n".join(parts)


def _heat_style(value: float, limit: float) -> str:
    """Inline background of a heatmap cell: the plot's colour map, centred at 0."""
    rgba = colormaps[HEATMAP_CMAP](0.5 + 0.5 * max(-1.0, min(1.0, value / limit)))
    text = "#ffffff" if abs(value) > 0.75 * limit else "#1d2330"
    return f"background:{to_hex(rgba)};color:{text}"


def _monthly_html(h: int, monthly: pl.DataFrame, limit: float) -> str:
    by_month = {(y, m): (v, d) for y, m, v, d in monthly.iter_rows()}
    rows = []
    for year in range(int(monthly["year"].min()), int(monthly["year"].max()) + 1):
        row = [HtmlCell(str(year))]
        for month in range(1, 13):
            mean, days = by_month.get((year, month), (None, 0))
            if mean is None:
                row.append(HtmlCell("", num=True))
            else:
                row.append(
                    HtmlCell(
                        f"{mean:+.3f}",
                        num=True,
                        title=f"{days} days",
                        style=_heat_style(mean, limit),
                    )
                )
        year_rows = monthly.filter(pl.col("year") == year)
        days = int(year_rows["days"].sum())
        if days:
            mean = float((year_rows["rank_ic_mean"] * year_rows["days"]).sum() / days)
            row.append(HtmlCell(f"{mean:+.3f}", num=True, title=f"{days} days", css="diag"))
        else:
            row.append(HtmlCell("", num=True))
        rows.append(row)
    return html_table(
        ["year", *MONTHS, "whole year"],
        rows,
        weights=[1.2] + [1.0] * 13,
        table_id=f"monthly-rank-ic-h{h}",
    )


def _turnover_html(series: pl.DataFrame) -> str:
    mean = float(series["turnover"].mean())
    rolling = series["rolling"].drop_nulls()
    text = (
        f"Mean daily turnover {mean * 100:.1f}% over {series.height:,} traded days "
        "(sum of absolute weight changes; 200% = the whole book replaced)"
    )
    if rolling.len():
        text += (
            f"; {TURNOVER_WINDOW}-day rolling mean: last {rolling[-1] * 100:.1f}%, "
            f"lowest {rolling.min() * 100:.1f}%, highest {rolling.max() * 100:.1f}%."
        )
    else:
        text += f"; fewer than {TURNOVER_WINDOW} traded days, so no rolling mean."
    return f'<p class="turnover">{_esc(text)}</p>'


def _strategies_html(h: int, books: pl.DataFrame) -> str:
    """The caption, table and walk-forward note of :func:`strategy_comparison`'s ``books``."""
    shown = [
        (part, field, header)
        for part, field, header in STRATEGY_TABLE_FIELDS
        if field not in OPTIONAL_STRATEGY_FIELDS
        or books[f"{part}_{field}"].fill_nan(None).is_not_null().any()
    ]
    rows = []
    for book in books.iter_rows(named=True):
        if book["walk_forward"]:
            css = "choice"
            name = HtmlCell(book["strategy"], title=book["note"] or "", css=css)
        elif book["selected"]:
            css = "selected"
            name = HtmlCell(
                book["strategy"] + SELECTED_MARK,
                title="best validation value of the selection metric",
                css=css,
            )
        else:
            css = ""
            name = HtmlCell(book["strategy"])
        row = [name]
        for part, field, _ in shown:
            cell_css = css if css == "choice" or part == "validation" else ""
            row.append(
                HtmlCell(format_metric(field, book[f"{part}_{field}"]), num=True, css=cell_css)
            )
        rows.append(row)
    caption = (
        f'<p class="strategies-caption">Books for the {_esc(h)}-day signal '
        f"(<code>kizashi strategies</code>, {_esc(STRATEGIES)}). Candidates are judged on the "
        "walk-forward&#x27;s validation slices only, by the selection metric "
        "(<code>portfolio.selection_metric</code>, net Sharpe unless set otherwise); the best "
        f"over all folds&#x27; slices is marked “{_esc(SELECTED_MARK.strip())}”: the book to "
        f"trade from now on. <b>{_esc(WALK_FORWARD_CHOICE)}</b> (first row): each fold&#x27;s "
        "test days traded with the candidate chosen on the validation slices of the folds up "
        "to it, the figure to quote. <b>The candidates&#x27; test figures were not used for "
        "selection.</b></p>"
    )
    parts = [
        caption,
        html_table(
            ["strategy", *(header for _, _, header in shown)],
            rows,
            weights=[2.6] + [1.0] * len(shown),
            table_id=f"strategies-h{h}-table",
        ),
    ]
    notes = books.filter(pl.col("walk_forward"))["note"].drop_nulls().to_list()
    if notes and notes[0].strip():
        parts.append(f'<p class="note">{_esc(WALK_FORWARD_CHOICE)}: {_esc(notes[0])}</p>')
    parts.append(
        '<p class="note">Sharpe ratios and returns are annualized; daily turnover is the mean '
        "sum of absolute weight changes (200% = the whole book replaced); IR is the Sharpe ratio "
        "of the return over the universe (the net Sharpe for a long-short book).</p>"
    )
    return "\n".join(parts)


def _section_html(section: _Section) -> str:
    anchor = f' id="{_esc(section.anchor)}"' if section.anchor else ""
    if section.image is None:
        head = f"<h3{anchor}>{_esc(section.title)}</h3>"
        if section.note:
            head += f'\n<p class="note">{_esc(section.note)}</p>'
    else:
        head = (
            f'<figure{anchor}><img src="{_esc(section.image)}" alt="{_esc(section.alt)}">'
            f"<figcaption>{_esc(section.title)}</figcaption></figure>"
        )
    return f"{head}\n{section.body}" if section.body else head


def _render_html(
    info: RunInfo,
    horizons: Sequence[int],
    summary: dict[int, dict[str, float]],
    folds: pl.DataFrame | None,
    decay: _Section,
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
    parts = html_page_head(title)
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

    parts.append('<h2 id="decay">IC decay across horizons</h2>')
    parts.append(_section_html(decay))

    parts.append('<h2 id="folds">Folds</h2>')
    if folds is None:
        parts.append(f'<p class="note">{_esc(FOLDS)} not found in the run directory.</p>')
    else:
        parts.append(_folds_table(folds.sort(["horizon", "fold"])))

    for h in horizons:
        parts.append(f'<h2 id="h{_esc(h)}">Horizon {_esc(h)}d</h2>')
        parts += [_section_html(s) for s in sections[h]]
    parts.append("</body></html>\n")
    return "\n".join(parts)
