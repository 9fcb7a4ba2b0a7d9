"""The "Portfolio strategies" section of the HTML run report: the table of ``strategies.csv``
(walk-forward choice first, the validation-selected candidate marked, test figures labelled as
not used for selection), the equity-curve PNG of ``strategy_daily.parquet``, and the notes of
runs without those files."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from browser import image_load_states, require_browser
from test_report import (  # tests/evaluation is on sys.path
    assert_valid_png,
    image_sources,
    make_run_dir,
    overflowing_tables,
    table_cells,
)

from kizashi.evaluation.report import (
    SELECTED_MARK,
    format_metric,
    strategy_comparison,
    write_report,
)
from kizashi.evaluation.run_dir import STRATEGIES, STRATEGY_DAILY, WALK_FORWARD_CHOICE
from kizashi.portfolio.stats import STAT_FIELDS

CANDIDATES = ("daily decile long-short", "rebalance every 5 days", "EMA of scores (half-life 5)")
SELECTED = "rebalance every 5 days"
N_TEST_DAYS = 80
PER_FOLD_NOTE = (
    "each fold's test days traded with the choice on the slices of folds up to it: "
    "0: daily decile long-short, 1: rebalance every 5 days"
)
HEADERS = [
    "strategy",
    "validation: net Sharpe",
    "test: gross Sharpe",
    "test: net Sharpe",
    "test: net annual return",
    "test: max drawdown",
    "test: daily turnover",
    "test: avg holding days",
    "test: IR",
]


def _stats(i: int, part: str, capacity: bool) -> dict[str, float | int | None]:
    """Distinct statistics for book ``i`` (walk-forward: ``i = 9``); validation net Sharpe is
    highest for SELECTED (i = 1)."""
    stats: dict[str, float | int | None] = dict.fromkeys(STAT_FIELDS)
    offset = 0.0 if part == "validation" else 0.05
    stats.update(
        n_days=40 if part == "validation" else N_TEST_DAYS,
        gross_sharpe=1.5 - 0.25 * i + offset,
        net_sharpe=(0.9 if i == 1 else 0.4 + 0.1 * i) + offset,
        net_annual_return=0.0812 - 0.01 * i,
        max_drawdown=-0.1234 - 0.01 * i,
        turnover=0.35 + 0.1 * i,
        avg_holding_days=4.26 + i,
        information_ratio=1.111 - 0.1 * i,
        capacity=2.5e9 * (i + 1) if capacity else None,
    )
    return stats


def strategies_frame(horizon: int, *, capacity: bool = False) -> pl.DataFrame:
    """``strategies.csv`` rows of one horizon as the contract has them: validation then test
    row per candidate, then the walk-forward choice."""
    rows = []
    for i, name in enumerate(CANDIDATES):
        for part in ("validation", "test"):
            rows.append(
                {
                    "horizon": horizon,
                    "strategy": name,
                    "part": part,
                    "used_for_selection": part == "validation",
                    "selected": name == SELECTED,
                    "note": "validation slices: used for selection"
                    if part == "validation"
                    else "test period: not used for selection",
                    **_stats(i, part, capacity),
                }
            )
    walk_forward = _stats(9, "test", capacity)
    walk_forward.update(net_sharpe=1.2345, gross_sharpe=1.6789, net_annual_return=0.0456)
    rows.append(
        {
            "horizon": horizon,
            "strategy": WALK_FORWARD_CHOICE,
            "part": "test",
            "used_for_selection": False,
            "selected": False,
            "note": PER_FOLD_NOTE,
            **walk_forward,
        }
    )
    schema = {
        "horizon": pl.Int32,
        "strategy": pl.Utf8,
        "part": pl.Utf8,
        "used_for_selection": pl.Boolean,
        "selected": pl.Boolean,
        "note": pl.Utf8,
    }
    schema |= {f: pl.Int64 if f.startswith("n_") else pl.Float64 for f in STAT_FIELDS}
    return pl.DataFrame(rows, schema=schema)


def strategy_daily_frame(horizon: int, seed: int = 0) -> pl.DataFrame:
    """Daily test returns of every candidate and of the walk-forward choice."""
    rng = np.random.default_rng(seed + horizon)
    dates = pl.date_range(dt.date(2023, 1, 2), dt.date(2023, 12, 29), "1d", eager=True)
    dates = dates.filter(dates.dt.weekday() <= 5).head(N_TEST_DAYS)
    frames = []
    for name in (*CANDIDATES, WALK_FORWARD_CHOICE):
        gross = rng.normal(0.0008, 0.01, size=N_TEST_DAYS)
        turnover = rng.uniform(0.1, 0.8, size=N_TEST_DAYS)
        frames.append(
            pl.DataFrame(
                {
                    "horizon": horizon,
                    "strategy": name,
                    "date": dates,
                    "gross": gross,
                    "net": gross - 0.001 * turnover,
                    "turnover": turnover,
                },
                schema={
                    "horizon": pl.Int32,
                    "strategy": pl.Utf8,
                    "date": pl.Date,
                    "gross": pl.Float64,
                    "net": pl.Float64,
                    "turnover": pl.Float64,
                },
            )
        )
    return pl.concat(frames)


def write_strategy_files(
    run: Path, horizons: Sequence[int], *, capacity: Sequence[int] = (), daily: bool = True
) -> None:
    pl.concat([strategies_frame(h, capacity=h in capacity) for h in horizons]).write_csv(
        run / STRATEGIES
    )
    if daily:
        pl.concat([strategy_daily_frame(h) for h in horizons]).write_parquet(run / STRATEGY_DAILY)


def section(page: str, h: int) -> str:
    """The page from horizon ``h``'s heading to the next horizon's (or the end)."""
    start = page.index(f'id="h{h}"')
    following = page.find('<h2 id="h', start + 1)
    return page[start : following if following >= 0 else len(page)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Horizons 1 and 5: capacity recorded for 5 only."""
    run = make_run_dir(tmp_path_factory.mktemp("strategies") / "run")
    write_strategy_files(run, (1, 5), capacity=(5,))
    return write_report(run)


def test_table_lists_the_walk_forward_choice_first_then_every_candidate(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    rows = table_cells(page, "strategies-h1-table")
    assert rows[0] == HEADERS  # no capacity column: no book of 1d has one
    assert [r[0] for r in rows[1:]] == [
        WALK_FORWARD_CHOICE,
        CANDIDATES[0],
        SELECTED + SELECTED_MARK,
        CANDIDATES[2],
    ]
    # The walk-forward row: no validation figure of its own, then its test statistics.
    assert rows[1][1:] == ["—", "1.68", "1.23", "4.56%", "-21.34%", "125.00%", "13.3", "0.21"]
    # A candidate: validation net Sharpe (the selection metric) beside its test figures.
    assert rows[3][1:] == ["0.90", "1.30", "0.95", "7.12%", "-13.34%", "45.00%", "5.3", "1.01"]
    assert rows[2][1] == "0.40" and rows[4][1] == "0.60"


def test_walk_forward_row_is_highlighted_and_the_selected_candidate_marked(report: Path) -> None:
    h1 = section(report.read_text(encoding="utf-8"), 1)
    table = re.search(r'<table id="strategies-h1-table".*?</table>', h1, re.DOTALL).group(0)
    body_rows = re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)[1:]
    first = body_rows[0]
    assert first.count('class="choice"') + first.count('class="num choice"') == len(HEADERS)
    assert re.search(r'<td class="choice" title="each fold[^"]*">walk-forward choice</td>', first)
    selected = body_rows[2]
    assert re.search(rf'<td class="selected"[^>]*>{re.escape(SELECTED)}', selected)
    assert '<td class="num selected">0.90</td>' in selected
    assert "choice" not in "".join(body_rows[1:]) and "selected" not in body_rows[1]
    style = re.search(r"<style>(.*?)</style>", report.read_text(encoding="utf-8"), re.DOTALL)
    assert "td.choice" in style.group(1)


def test_section_says_test_figures_were_not_used_and_lists_the_per_fold_choices(
    report: Path,
) -> None:
    h1 = section(report.read_text(encoding="utf-8"), 1)
    assert '<h3 id="strategies-h1">Portfolio strategies — 1d</h3>' in h1
    caption = re.search(r'<p class="strategies-caption">(.*?)</p>', h1, re.DOTALL).group(1)
    assert "test figures were not used for selection" in caption
    assert "validation slices" in caption
    assert "walk-forward choice: each fold&#x27;s test days traded" in h1
    assert "0: daily decile long-short, 1: rebalance every 5 days" in h1
    # The table comes before the equity curves, both between the turnover and importance plots.
    order = [h1.index(s) for s in ("turnover_h1.png", "strategies-h1-table", "strategies_h1.png")]
    assert order == sorted(order) and h1.index("strategies_h1.png") < h1.index("feature_importance")


def test_capacity_column_appears_when_a_book_has_one(report: Path) -> None:
    rows = table_cells(report.read_text(encoding="utf-8"), "strategies-h5-table")
    assert rows[0] == [*HEADERS, "test: capacity"]
    assert rows[1][-1] == "25 bn"  # the walk-forward row (i = 9): 2.5e9 * 10
    assert rows[2][-1] == "2.5 bn"


def test_equity_curve_png(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    for h in (1, 5):
        name = f"strategies_h{h}.png"
        assert name in image_sources(section(page, h))
        assert_valid_png(report.parent / name)
    caption = re.search(r'<img src="strategies_h1.png"[^>]*><figcaption>(.*?)</figcaption>', page)
    assert "compounded" in caption.group(1) and "thick black line" in caption.group(1)
    assert "dashed" in caption.group(1)


def test_strategy_images_load_and_tables_fit_in_headless_chromium(
    report: Path, tmp_path: Path
) -> None:
    browser = require_browser()
    copy = shutil.copytree(report.parent, tmp_path / "report")
    states = image_load_states(browser, copy / "index.html")
    by_src = {s["src"]: s for s in states}
    for name in ("strategies_h1.png", "strategies_h5.png"):
        assert by_src[name]["complete"] and by_src[name]["naturalWidth"] > 300
    index = copy / "index.html"
    assert overflowing_tables(browser, index, 1400) == []
    assert overflowing_tables(browser, index, 900) == []


def test_runs_without_the_strategy_files_get_a_note(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", horizons=(1,))
    page = write_report(run).read_text(encoding="utf-8")
    assert '<h3 id="strategies-h1">Portfolio strategies — 1d</h3>' in page
    assert re.search(
        r'<p class="note">strategies\.csv and strategy_daily\.parquet not found: run '
        r"`kizashi strategies RUN_DIR`[^<]*</p>",
        page,
    )
    assert 'id="strategies-h1-table"' not in page
    assert not any(s.startswith("strategies_") for s in image_sources(page))


def test_a_horizon_without_rows_and_a_run_without_daily_returns_get_notes(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    write_strategy_files(run, (1,), daily=False)
    page = write_report(run).read_text(encoding="utf-8")
    h1, h5 = section(page, 1), section(page, 5)
    assert table_cells(h1, "strategies-h1-table")[1][0] == WALK_FORWARD_CHOICE
    assert f"{STRATEGY_DAILY} not found: run `kizashi strategies RUN_DIR`" in h1
    assert (
        "no rows for horizon 5 in strategies.csv: run `kizashi strategies RUN_DIR --horizon 5`"
        in h5
    )
    assert 'id="strategies-h5-table"' not in page
    assert not any(s.startswith("strategies_") for s in image_sources(page))


def test_strategy_comparison_reads_text_flags_and_missing_columns() -> None:
    """As read back from a CSV without type inference: text flags; a statistic column may be
    absent; the walk-forward row is put first wherever it is in the file."""
    table = strategies_frame(1)
    moved = pl.concat([table.tail(1), table.head(table.height - 1)])
    text = moved.drop("capacity", "information_ratio").with_columns(
        pl.col("selected").cast(pl.Utf8).str.to_uppercase()
    )
    books = strategy_comparison(
        pl.concat([text, text.with_columns(horizon=pl.lit(5, pl.Int32))]), 1
    )
    assert books["strategy"].to_list() == [WALK_FORWARD_CHOICE, *CANDIDATES]
    assert books["walk_forward"].to_list() == [True, False, False, False]
    assert books["selected"].to_list() == [False, False, True, False]
    assert books["note"][0] == PER_FOLD_NOTE
    validation = books["validation_net_sharpe"].to_list()
    assert validation[0] is None and validation[1:] == pytest.approx([0.4, 0.9, 0.6])
    assert books["test_net_sharpe"].to_list()[0] == pytest.approx(1.2345)
    assert books["test_information_ratio"].null_count() == books.height
    assert books["test_capacity"].null_count() == books.height


def test_format_metric_of_strategy_statistics() -> None:
    assert format_metric("net_sharpe", 1.2345) == "1.23"
    assert format_metric("max_drawdown", -0.1234) == "-12.34%"
    assert format_metric("turnover", 0.35) == "35.00%"
    assert format_metric("avg_holding_days", 4.26) == "4.3"
    assert format_metric("capacity", 1.234e9) == "1.23 bn"
    assert format_metric("capacity", 456_000.0) == "456 k"
    assert format_metric("capacity", 12.0) == "12"
    assert format_metric("n_stale", 3) == "3"
    assert format_metric("capacity", None) == "—"
    assert format_metric("information_ratio", float("nan")) == "—"
