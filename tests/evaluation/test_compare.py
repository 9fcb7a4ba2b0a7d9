"""`kizashi runs compare`'s library: summaries side by side, paired t-statistics of the daily
RankIC / net long-short difference on the common days (checked against scipy and a direct
Newey-West formula), the HTML page, the terminal tables and the errors."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from browser import require_browser
from rich.console import Console
from scipy.stats import ttest_rel
from test_report import make_run_dir, overflowing_tables  # tests/evaluation is on sys.path

from kizashi.errors import KizashiError
from kizashi.evaluation.compare import (
    PAIR_HEADERS,
    RunComparison,
    compare_runs,
    comparison_tables,
    comparison_text_tables,
    write_comparison_html,
)
from kizashi.evaluation.run_dir import DAILY, RUN_INFO, SUMMARY_FIELDS, read_summary

NULLED_DAY = dt.date(2022, 10, 3)  # a day both A and B have; B's 1d RankIC is null on it


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A: 300 days from 2022-06-01; B: 300 days from 2022-09-01 (partial overlap), same model
    and directory name as A; C: from 2024-01-01, no day in common with A or B, no 10d."""
    root = tmp_path_factory.mktemp("compare")
    a = make_run_dir(root / "a" / "run", seed=3, horizons=(1, 5, 10))
    b = make_run_dir(root / "b" / "run", seed=4, start=dt.date(2022, 9, 1), horizons=(1, 5, 10))
    daily = pl.read_parquet(b / DAILY)
    nulled = (pl.col("horizon") == 1) & (pl.col("date") == NULLED_DAY)
    assert daily.filter(nulled).height == 1
    daily.with_columns(
        pl.when(nulled).then(None).otherwise(pl.col("rank_ic")).alias("rank_ic")
    ).write_parquet(b / DAILY)
    c = make_run_dir(root / "late", seed=5, start=dt.date(2024, 1, 1), model="atft_gat_fan")
    return {"a": a, "b": b, "c": c}


@pytest.fixture(scope="module")
def a_vs_b(runs: dict[str, Path]) -> RunComparison:
    return compare_runs([runs["a"], runs["b"]])


def daily_values(run: Path, horizon: int, metric: str) -> dict[dt.date, float]:
    """{date: value} of one horizon's finite values in ``daily.parquet``."""
    day = pl.read_parquet(run / DAILY).filter(pl.col("horizon") == horizon)
    return {
        d: v
        for d, v in zip(day["date"].to_list(), day[metric].to_list(), strict=True)
        if v is not None and math.isfinite(v)
    }


def newey_west_t(diff: np.ndarray, lags: int) -> float:
    """t of the mean with the Bartlett-weighted long-run variance, as a quadratic form."""
    n = diff.size
    e = diff - diff.mean()
    gap = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    weights = np.clip(1.0 - gap / (lags + 1), 0.0, None)
    return float(diff.mean() / np.sqrt(e @ weights @ e / n**2))


def pair(comparison: RunComparison, horizon: int, metric: str, a: str, b: str):
    (found,) = [
        p
        for p in comparison.pairs
        if (p.horizon, p.metric, p.run_a, p.run_b) == (horizon, metric, a, b)
    ]
    return found


def test_labels_are_unique_and_horizons_common(a_vs_b: RunComparison) -> None:
    # Same model and directory name: the parent directory tells them apart.
    assert a_vs_b.labels == ("lightgbm/a/run", "lightgbm/b/run")
    assert a_vs_b.horizons == (1, 5, 10) and a_vs_b.partial_horizons == {}
    json.dumps(a_vs_b.to_dict())  # JSON-serializable as it is


@pytest.mark.parametrize("horizon", [1, 5, 10])
@pytest.mark.parametrize("metric", ["rank_ic", "long_short_net"])
def test_paired_t_matches_scipy_on_the_common_days(
    runs: dict[str, Path], a_vs_b: RunComparison, horizon: int, metric: str
) -> None:
    a = daily_values(runs["a"], horizon, metric)
    b = daily_values(runs["b"], horizon, metric)
    common = sorted(set(a) & set(b))
    assert 0 < len(common) < min(len(a), len(b))  # the runs overlap only partly
    if metric == "rank_ic" and horizon == 1:
        assert NULLED_DAY in a and NULLED_DAY not in common
    x_a = np.array([a[d] for d in common])
    x_b = np.array([b[d] for d in common])
    row = pair(a_vs_b, horizon, metric, "lightgbm/a/run", "lightgbm/b/run")

    assert row.n_common_days == len(common)
    assert row.mean_a == pytest.approx(x_a.mean(), rel=1e-12)
    assert row.mean_b == pytest.approx(x_b.mean(), rel=1e-12)
    assert row.mean_diff == pytest.approx((x_a - x_b).mean(), rel=1e-12)
    assert row.std_diff == pytest.approx((x_a - x_b).std(ddof=1), rel=1e-12)
    assert row.t_stat == pytest.approx(ttest_rel(x_a, x_b).statistic, rel=1e-10)
    # Newey-West: the automatic lag rule, at least h - 1 for the RankIC of h-day targets.
    auto = math.floor(4 * (len(common) / 100) ** (2 / 9))
    expected_lags = max(auto, horizon - 1) if metric == "rank_ic" else auto
    assert row.nw_lags == expected_lags
    assert row.nw_t_stat == pytest.approx(newey_west_t(x_a - x_b, expected_lags), rel=1e-10)
    assert row.note == ""


def test_a_day_without_rankic_is_left_out_of_the_rankic_pair_only(a_vs_b: RunComparison) -> None:
    labels = ("lightgbm/a/run", "lightgbm/b/run")
    rank_ic = pair(a_vs_b, 1, "rank_ic", *labels)
    net = pair(a_vs_b, 1, "long_short_net", *labels)
    assert net.n_common_days == rank_ic.n_common_days + 1


def test_summary_rows_are_each_runs_summary(runs: dict[str, Path], a_vs_b: RunComparison) -> None:
    summaries = [read_summary(runs["a"]), read_summary(runs["b"])]
    rows = {(r.horizon, r.metric): r.values for r in a_vs_b.summary}
    assert len(rows) == 3 * len(SUMMARY_FIELDS)
    for h in (1, 5, 10):
        for metric in SUMMARY_FIELDS:
            assert rows[h, metric] == tuple(s[h][metric] for s in summaries)


def test_three_runs_one_without_common_days(runs: dict[str, Path], tmp_path: Path) -> None:
    comparison = compare_runs([runs["a"], runs["b"], runs["c"]])
    a, b, c = comparison.labels
    assert c == "atft_gat_fan/late"
    assert comparison.horizons == (1, 5)  # C has no 10d
    assert comparison.partial_horizons == {10: (a, b)}
    # C shares no day with A or B: its rows say so; A vs B is still compared.
    for other in (a, b):
        row = pair(comparison, 1, "rank_ic", other, c)
        assert row.n_common_days == 0 and row.t_stat is None and row.nw_t_stat is None
        assert row.note.startswith("no common days") and "2024-01-01.." in row.note
        assert row.verdict == "—"
    assert pair(comparison, 1, "rank_ic", a, b).n_common_days > 0
    assert len(comparison.pairs) == 2 * 3 * 2  # horizons x pairs x daily metrics

    page = write_comparison_html(comparison, tmp_path / "compare.html").read_text("utf-8")
    assert "10d only in lightgbm/a/run, lightgbm/b/run" in page
    assert "no common days (lightgbm/a/run 2022-06-01..2023-07-25, atft_gat_fan/late" in page


def test_html_page(a_vs_b: RunComparison, tmp_path: Path) -> None:
    out = write_comparison_html(a_vs_b, tmp_path / "out" / "compare.html")
    assert out == tmp_path / "out" / "compare.html"
    assert sorted(p.name for p in out.parent.iterdir()) == ["compare.html"]  # no temporary left
    page = out.read_text(encoding="utf-8")
    assert "<title>kizashi run comparison — lightgbm/a/run vs lightgbm/b/run</title>" in page
    assert "<script" not in page and "<link" not in page
    for h in (1, 5, 10):
        assert f'<h2 id="h{h}">Horizon {h}d</h2>' in page
        assert f'<table id="pairs-h{h}" class="wide">' in page
        row = pair(a_vs_b, h, "rank_ic", *a_vs_b.labels)
        cells = (
            f'<td class="num">{row.n_common_days:,}</td><td class="num">{row.mean_a:+.4f}</td>'
            f'<td class="num">{row.mean_b:+.4f}</td><td class="num">{row.mean_diff:+.4f}</td>'
            f'<td class="num">{row.t_stat:+.2f}</td>'
            f'<td class="num">{row.nw_t_stat:+.2f} (L={row.nw_lags})</td>'
        )
        assert cells in page
    # The side-by-side summary: RankIC mean of both runs, as the report formats it.
    summary = page[page.index('id="summary-h5"') :]
    a, b = (read_summary(p)[5]["rank_ic_mean"] for p in (a_vs_b.runs[0].path, a_vs_b.runs[1].path))
    assert re.search(
        rf'title="rank_ic_mean">RankIC mean</td><td class="num">{a:.4f}</td>'
        rf'<td class="num">{b:.4f}</td>',
        summary,
    )
    assert page.count('<img src="data:image/png;base64,') == 3


def test_html_page_fits_a_1400px_window(a_vs_b: RunComparison, tmp_path: Path) -> None:
    browser = require_browser()
    page = write_comparison_html(a_vs_b, tmp_path / "compare.html")
    assert overflowing_tables(browser, page, 1400) == []


def test_terminal_tables(a_vs_b: RunComparison) -> None:
    texts = comparison_text_tables(a_vs_b)
    assert [t.title for t in texts][:3] == [
        "runs",
        "1d: summary (each run on its own test days)",
        "1d: paired daily differences (a − b) on common days",
    ]
    pairs = texts[2]
    assert pairs.headers == PAIR_HEADERS and len(pairs.rows) == 2
    row = pair(a_vs_b, 1, "long_short_net", *a_vs_b.labels)
    (net,) = [r for r in pairs.rows if r[0] == "daily net long-short return (bp)"]
    assert net[6] == f"{row.mean_diff * 1e4:+.2f}" and net[7] == f"{row.t_stat:+.2f}"

    console = Console(record=True, width=300)
    for table in comparison_tables(a_vs_b):
        console.print(table)
    text = console.export_text()
    assert "lightgbm/a/run" in text and "RankIC t-stat" in text
    assert f"{pair(a_vs_b, 5, 'rank_ic', *a_vs_b.labels).t_stat:+.2f}" in text


def test_identical_runs_have_no_t_statistic(runs: dict[str, Path], tmp_path: Path) -> None:
    copy = shutil.copytree(runs["a"], tmp_path / "copy")
    comparison = compare_runs([runs["a"], copy])
    assert comparison.labels == ("lightgbm/run", "lightgbm/copy")
    row = pair(comparison, 1, "rank_ic", *comparison.labels)
    assert row.n_common_days == 300 and row.mean_diff == 0.0
    assert row.t_stat is None and row.nw_t_stat is None and row.verdict == "—"
    assert "constant" in row.note


# --------------------------------------------------------------------------- errors


def test_fewer_than_two_runs(runs: dict[str, Path]) -> None:
    with pytest.raises(KizashiError, match=r"at least 2 run directories, got 0$"):
        compare_runs([])
    with pytest.raises(KizashiError, match=rf"got 1: {re.escape(str(runs['a']))}"):
        compare_runs([runs["a"]])


def test_a_run_given_twice(runs: dict[str, Path]) -> None:
    with pytest.raises(KizashiError, match=rf"^{re.escape(str(runs['a']))}: the same run"):
        compare_runs([runs["a"], runs["b"], runs["a"]])


def test_not_a_run_directory_names_the_path_and_the_missing_file(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    absent = tmp_path / "absent"
    with pytest.raises(KizashiError, match=rf"^{re.escape(str(absent))}: no such run directory"):
        compare_runs([runs["a"], absent])
    partial = shutil.copytree(runs["b"], tmp_path / "partial")
    (partial / DAILY).unlink()
    with pytest.raises(
        KizashiError,
        match=rf"^{re.escape(str(partial))}: not a complete run .*missing daily\.parquet",
    ):
        compare_runs([runs["a"], partial])
    (partial / RUN_INFO).unlink()
    with pytest.raises(KizashiError, match=r"missing run\.json, daily\.parquet"):
        compare_runs([partial, runs["a"]])


def test_bad_daily_table_names_the_file(runs: dict[str, Path], tmp_path: Path) -> None:
    bad = shutil.copytree(runs["b"], tmp_path / "bad")
    pl.read_parquet(bad / DAILY).drop("rank_ic").write_parquet(bad / DAILY)
    with pytest.raises(
        KizashiError, match=rf"{re.escape(str(bad / DAILY))}: missing column\(s\) rank_ic"
    ):
        compare_runs([runs["a"], bad])
    daily = pl.read_parquet(runs["b"] / DAILY)
    pl.concat([daily, daily.head(1)]).write_parquet(bad / DAILY)
    with pytest.raises(
        KizashiError,
        match=rf"{re.escape(str(bad / DAILY))}: 1 \(horizon, date\) pair\(s\) on more than one "
        r"row, e\.g\. horizon 1 on 2022-09-01",
    ):
        compare_runs([runs["a"], bad])


def test_no_common_horizon(runs: dict[str, Path], tmp_path: Path) -> None:
    other = make_run_dir(tmp_path / "h20", horizons=(20,))
    with pytest.raises(KizashiError, match="share no horizon") as error:
        compare_runs([runs["a"], other])
    assert f"{runs['a']}: 1d, 5d, 10d" in str(error.value) and f"{other}: 20d" in str(error.value)


def test_no_common_day_on_any_horizon(runs: dict[str, Path]) -> None:
    with pytest.raises(KizashiError, match="no two runs share a test day") as error:
        compare_runs([runs["a"], runs["c"]])
    message = str(error.value)
    assert f"{runs['a']}: 1d 2022-06-01..2023-07-25" in message
    assert f"{runs['c']}: 1d 2024-01-01.." in message
