"""The HTML report of a run directory: structure, plots, caveats, control banner, and that
every image really loads in a headless browser."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from browser import dump_dom, image_load_states, require_browser
from matplotlib import colormaps
from matplotlib.colors import to_hex

from kizashi.errors import KizashiError
from kizashi.evaluation.report import (
    CONTROL_BANNER,
    HEATMAP_CMAP,
    MONTHS,
    NO_CAVEATS,
    TURNOVER_WINDOW,
    write_report,
)
from kizashi.evaluation.run_dir import (
    DAILY,
    DECILES,
    FEATURE_IMPORTANCE,
    FOLDS,
    PREDICTION_SCHEMA,
    PREDICTIONS,
    RUN_INFO,
    SUMMARY_CSV,
    SUMMARY_FIELDS,
    SUMMARY_JSON,
    RunInfo,
)

HORIZONS = [1, 5]
N_DAYS = 300
N_CODES = 24
N_FEATURES = 40
PLOTS_PER_HORIZON = (
    "cumulative_ic",
    "rank_ic_by_year",
    "rank_ic_monthly",
    "deciles",
    "long_short",
    "turnover",
    "feature_importance",
)
RUN_PLOTS = ("ic_decay.png",)
CAVEAT = "Universe = today's <S&P 500> members: survivorship bias inflates returns"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _business_days(start: dt.date, n: int) -> list[dt.date]:
    days, day = [], start
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def make_run_dir(
    path: Path,
    *,
    control: bool = False,
    caveats: list[str] | None = None,
    seed: int = 3,
    start: dt.date = dt.date(2022, 6, 1),
    horizons: Sequence[int] = tuple(HORIZONS),
    model: str = "lightgbm",
) -> Path:
    """A small but self-consistent run directory: every table is derived from the predictions
    (``N_DAYS`` business days from ``start``, ``N_CODES`` stocks, one prediction per horizon)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    dates = _business_days(start, N_DAYS)  # by default spans 2022 and 2023
    codes = [f"{1300 + i}" for i in range(N_CODES)]
    features = [f"feature_{i:02d}" for i in range(N_FEATURES)]
    fold_of_day = np.repeat([0, 1], N_DAYS // 2)

    n = N_DAYS * N_CODES
    signal = rng.normal(size=n)
    next_day = 0.002 * signal + 0.01 * rng.normal(size=n)
    frames = []
    for h in horizons:
        target = 0.002 * h * signal + 0.01 * np.sqrt(h) * rng.normal(size=n)
        frames.append(
            pl.DataFrame(
                {
                    "date": [d for d in dates for _ in codes],
                    "code": codes * N_DAYS,
                    "fold": np.repeat(fold_of_day, N_CODES),
                    "horizon": h,
                    "prediction": signal + rng.normal(size=n),
                    "target": target,
                    "forward_return_1d": next_day,
                },
                schema=PREDICTION_SCHEMA,
            )
        )
    predictions = pl.concat(frames)
    predictions.write_parquet(path / PREDICTIONS)

    ranked = predictions.with_columns(
        (
            (pl.col("prediction").rank("ordinal").over("horizon", "date") - 1)
            * 10
            // pl.len().over("horizon", "date")
            + 1
        )
        .cast(pl.Int32)
        .alias("decile")
    )
    daily = (
        ranked.group_by("horizon", "date")
        .agg(
            pl.len().cast(pl.Int32).alias("n"),
            pl.corr("prediction", "target").alias("ic"),
            pl.corr("prediction", "target", method="spearman").alias("rank_ic"),
            (
                pl.col("forward_return_1d").filter(pl.col("decile") == 10).mean()
                - pl.col("forward_return_1d").filter(pl.col("decile") == 1).mean()
            ).alias("long_short_gross"),
        )
        .sort("horizon", "date")
    )
    # A turnover that changes over time (so its rolling mean is not flat), net = gross - cost.
    daily = (
        daily.with_columns(pl.Series("turnover", rng.uniform(0.1, 0.7, size=daily.height)))
        .with_columns(
            (pl.col("long_short_gross") - 0.001 * pl.col("turnover")).alias("long_short_net")
        )
        .select(
            "horizon",
            "date",
            "n",
            "ic",
            "rank_ic",
            "long_short_gross",
            "long_short_net",
            "turnover",
        )
    )
    daily.write_parquet(path / DAILY)

    deciles = (
        ranked.group_by("horizon", "date", "decile")
        .agg(pl.col("target").mean())
        .group_by("horizon", "decile")
        .agg(pl.col("target").mean().alias("mean_return"), pl.len().cast(pl.Int32).alias("n_days"))
        .sort("horizon", "decile")
    )
    deciles.write_csv(path / DECILES)

    summary = {}
    for h in horizons:
        day = daily.filter(pl.col("horizon") == h)
        ic, ric = day["ic"].to_numpy(), day["rank_ic"].to_numpy()
        gross, net = day["long_short_gross"].to_numpy(), day["long_short_net"].to_numpy()
        wealth = np.cumprod(1 + gross)
        dec = deciles.filter(pl.col("horizon") == h)["mean_return"].to_numpy()
        values = {
            "n_days": day.height,
            "ic_mean": ic.mean(),
            "ic_std": ic.std(),
            "icir": ic.mean() / ic.std(),
            "ic_tstat": ic.mean() / ic.std() * np.sqrt(len(ic)),
            "rank_ic_mean": ric.mean(),
            "rank_ic_std": ric.std(),
            "rank_icir": ric.mean() / ric.std(),
            "rank_ic_tstat": ric.mean() / ric.std() * np.sqrt(len(ric)),
            "hit_rate": (ric > 0).mean(),
            "decile_spread": dec[-1] - dec[0],
            "ls_annual_return": gross.mean() * 252,
            "ls_annual_volatility": gross.std() * np.sqrt(252),
            "ls_sharpe": gross.mean() / gross.std() * np.sqrt(252),
            "ls_max_drawdown": (wealth / np.maximum.accumulate(wealth) - 1).min(),
            "ls_turnover": day["turnover"].mean(),
            "ls_annual_return_net": net.mean() * 252,
            "ls_sharpe_net": float("nan") if h == 5 else net.mean() / net.std() * np.sqrt(252),
        }
        assert tuple(values) == SUMMARY_FIELDS
        summary[str(h)] = {
            k: (None if isinstance(v, float) and np.isnan(v) else float(v))
            for k, v in values.items()
        }
    (path / SUMMARY_JSON).write_text(json.dumps(summary), encoding="utf-8")
    pl.DataFrame([{"horizon": int(h), **m} for h, m in summary.items()]).write_csv(
        path / SUMMARY_CSV
    )

    half = N_DAYS // 2
    pl.DataFrame(
        [
            {
                "fold": fold,
                "horizon": h,
                "train_start": dt.date(2018, 1, 1),
                "train_end": dates[fold * half] - dt.timedelta(days=20),
                "valid_start": dates[fold * half] - dt.timedelta(days=15),
                "valid_end": dates[fold * half] - dt.timedelta(days=5),
                "test_start": dates[fold * half],
                "test_end": dates[fold * half + half - 1],
                "best_iteration": 120 + 10 * fold,
                "n_test_days": half,
                "ic_mean": 0.05,
                "rank_ic_mean": 0.06,
            }
            for fold in (0, 1)
            for h in horizons
        ]
    ).write_csv(path / FOLDS)

    pl.DataFrame(
        [
            {
                "fold": fold,
                "horizon": h,
                "feature": f,
                "gain": float(rng.gamma(2.0) * (N_FEATURES - i)),
                "split": int(5 + i),
            }
            for fold in (0, 1)
            for h in horizons
            for i, f in enumerate(features)
        ]
    ).write_csv(path / FEATURE_IMPORTANCE)

    info = RunInfo(
        model=model,
        dataset="synthetic & <test>",
        horizons=list(horizons),
        seed=seed,
        control=control,
        n_folds=2,
        features=features,
        config={"model": {"num_leaves": 31}},
        caveats=[CAVEAT] if caveats is None else caveats,
        source="tests/evaluation/test_report.py",
        created="2024-01-02T03:04:05+00:00",
    )
    (path / RUN_INFO).write_text(json.dumps(info.to_dict()), encoding="utf-8")
    return path


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert len(data) > 5_000, f"{path.name} is suspiciously small ({len(data)} bytes)"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 300 and height > 200, f"{path.name} is {width}x{height}"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = make_run_dir(tmp_path_factory.mktemp("report") / "run")
    return write_report(run)


def test_report_lists_every_plot_as_a_valid_png(report: Path) -> None:
    run = report.parent.parent
    assert report == run / "report" / "index.html"
    page = report.read_text(encoding="utf-8")
    sources = image_sources(page)
    expected = {f"{name}_h{h}.png" for h in HORIZONS for name in PLOTS_PER_HORIZON}
    expected |= set(RUN_PLOTS)
    assert set(sources) == expected and len(sources) == len(expected)
    assert {p.name for p in report.parent.glob("*.png")} == expected
    for name in expected:
        assert_valid_png(report.parent / name)
    assert all(re.search(rf'<img src="{re.escape(s)}" alt="[^"]+"', page) for s in sources)
    # Nothing temporary is left beside the report.
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_report_html_content(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert "<title>kizashi run report — lightgbm on synthetic &amp; &lt;test&gt;</title>" in page
    assert "synthetic & <test>" not in page  # escaped everywhere
    # Run info.
    for text in (
        "2024-01-02T03:04:05+00:00",
        "<th>seed</th><td>3</td>",
        "<th>folds</th><td>2</td>",
        f"<th>features</th><td>{N_FEATURES}</td>",
        "<th>control (shuffled target)</th><td>no</td>",
    ):
        assert text in page
    # Caveats, escaped; no control banner.
    assert 'id="caveats">Data caveats</h2>' in page
    assert "Universe = today&#x27;s &lt;S&amp;P 500&gt; members" in page
    assert NO_CAVEATS not in page
    assert CONTROL_BANNER not in page and 'id="control-banner"' not in page
    # Summary table: one column per horizon, every field, sensible formats, NaN/None as a dash.
    summary = page[page.index('id="summary"') : page.index('id="decay"')]
    assert "<th>1d</th><th>5d</th>" in summary
    assert summary.count("<tr><th title=") == len(SUMMARY_FIELDS)
    assert re.search(r'title="n_days">days</th><td class="num">300</td>', summary)
    assert re.search(r'title="hit_rate">[^<]*</th><td class="num">\d+\.\d\d%</td>', summary)
    assert re.search(r'title="rank_ic_mean">[^<]*</th><td class="num">-?0\.\d{4}</td>', summary)
    assert re.search(
        r'title="ls_sharpe_net">[^<]*</th><td class="num">-?\d+\.\d\d</td><td class="num">—</td>',
        summary,
    )
    # Folds table: 2 folds x 2 horizons, dates shown as dates.
    folds = page[page.index('id="folds"') : page.index('id="h1"')]
    assert folds.count("<tr><td") == 4
    assert "best iter." in folds and "2018-01-01" in folds
    # Self-contained: inline CSS, no scripts, no external resources.
    assert "<style>" in page
    assert "<script" not in page and "<link" not in page and "http" not in page


def table_cells(page: str, table_id: str) -> list[list[str]]:
    """The rows of ``<table id=table_id>``: each row's cell texts (unescaped), header row first."""
    found = re.search(rf'<table id="{re.escape(table_id)}"[^>]*>(.*?)</table>', page, re.DOTALL)
    assert found, f"no table #{table_id} in the report"
    rows = re.findall(r"<tr>(.*?)</tr>", found.group(1), re.DOTALL)
    return [
        [html.unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.DOTALL)]
        for row in rows
    ]


def test_ic_decay_matches_the_daily_table_and_the_predictions(report: Path) -> None:
    run = report.parent.parent
    page = report.read_text(encoding="utf-8")
    daily = pl.read_parquet(run / DAILY)
    rows = {r[0]: r for r in table_cells(page, "decay-table")[1:]}
    assert list(rows) == [f"{h}d" for h in HORIZONS]
    for h in HORIZONS:
        ric = daily.filter(pl.col("horizon") == h)["rank_ic"].to_numpy()
        mean, se = ric.mean(), ric.std(ddof=1) / np.sqrt(len(ric))
        ic = daily.filter(pl.col("horizon") == h)["ic"].to_numpy().mean()
        assert rows[f"{h}d"] == [
            f"{h}d",
            f"{len(ric)}",
            f"{mean:+.4f}",
            f"{se:.4f}",
            f"{mean / se:+.2f}",
            f"[{mean - 1.96 * se:+.4f}, {mean + 1.96 * se:+.4f}]",
            f"{ic:+.4f}",
        ]

    # Cross-horizon: the 1-day prediction against the 5-day target, by scipy on each day.
    from scipy.stats import spearmanr

    predictions = pl.read_parquet(run / PREDICTIONS)
    paired = (
        predictions.filter(pl.col("horizon") == 1)
        .select("date", "code", "prediction")
        .join(
            predictions.filter(pl.col("horizon") == 5).select("date", "code", "target"),
            on=["date", "code"],
        )
    )
    per_day = np.array(
        [
            spearmanr(g["prediction"].to_numpy(), g["target"].to_numpy()).statistic
            for _, g in paired.group_by("date")
        ]
    )
    t = per_day.mean() / per_day.std(ddof=1) * np.sqrt(len(per_day))
    cross = table_cells(page, "cross-horizon-table")
    assert cross[0] == ["mean daily RankIC", "target 1d", "target 5d"]
    assert cross[1][0] == "prediction for 1d"
    assert cross[1][2] == f"{per_day.mean():+.4f} (t {t:+.1f})"
    # The diagonal is the run's own RankIC (daily.parquet), the same number as the decay table.
    assert cross[1][1].split(" ")[0] == rows["1d"][2]
    assert cross[2][2].split(" ")[0] == rows["5d"][2]
    assert "ic_decay.png" in image_sources(page[page.index('id="decay"') : page.index('id="folds"')])


def test_monthly_rank_ic_heatmap_table(report: Path) -> None:
    run = report.parent.parent
    page = report.read_text(encoding="utf-8")
    daily = pl.read_parquet(run / DAILY).filter(pl.col("horizon") == 5)
    dates, ric = daily["date"].to_list(), daily["rank_ic"].to_numpy()
    in_july = np.array([(d.year, d.month) == (2022, 7) for d in dates])
    in_2023 = np.array([d.year == 2023 for d in dates])
    rows = table_cells(page, "monthly-rank-ic-h5")
    assert rows[0] == ["year", *MONTHS, "whole year"]
    assert [r[0] for r in rows[1:]] == ["2022", "2023"]
    assert rows[1][1:6] == ["", "", "", "", ""]  # the test days start in June 2022
    assert rows[1][7] == f"{ric[in_july].mean():+.3f}"
    assert rows[2][13] == f"{ric[in_2023].mean():+.3f}"
    assert f'title="{in_july.sum()} days"' in page
    # The colour scale is centred at 0 and symmetric: the largest |month| gets an end colour.
    monthly = [float(c) for r in rows[1:] for c in r[1:13] if c]
    top = max(monthly, key=abs)
    end = colormaps[HEATMAP_CMAP](1.0 if top > 0 else 0.0)
    table = page[page.index('id="monthly-rank-ic-h5"') :]
    assert re.search(rf'style="background:{to_hex(end)};[^"]*">{re.escape(f"{top:+.3f}")}<', table)


def test_turnover_section_matches_a_rolling_mean_of_the_daily_table(report: Path) -> None:
    run = report.parent.parent
    page = report.read_text(encoding="utf-8")
    turnover = pl.read_parquet(run / DAILY).filter(pl.col("horizon") == 1)["turnover"].to_numpy()
    window = TURNOVER_WINDOW
    rolling = np.convolve(turnover, np.ones(window) / window, mode="valid")
    assert len(rolling) == N_DAYS - window + 1
    section = page[page.index('id="h1"') : page.index('id="h5"')]
    text = html.unescape(re.search(r'<p class="turnover">(.*?)</p>', section, re.DOTALL).group(1))
    assert text == (
        f"Mean daily turnover {turnover.mean() * 100:.1f}% over {N_DAYS} traded days "
        "(sum of absolute weight changes; 200% = the whole book replaced); "
        f"{window}-day rolling mean: last {rolling[-1] * 100:.1f}%, "
        f"lowest {rolling.min() * 100:.1f}%, highest {rolling.max() * 100:.1f}%."
    )
    assert "turnover_h1.png" in image_sources(section)


def test_folds_table_is_compact_and_styled_to_wrap(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    rows = table_cells(page, "folds-table")
    # 12 columns of folds.csv -> 9: each start/end pair is one "first – last" column.
    assert rows[0] == [
        "fold", "horizon", "train", "valid", "test", "best iter.", "test days", "IC mean",
        "RankIC mean",
    ]
    folds = pl.read_csv(report.parent.parent / FOLDS)
    first = folds.sort("horizon", "fold").row(0, named=True)
    assert rows[1][:5] == [
        "0",
        "1d",
        f"{first['train_start']} – {first['train_end']}",
        f"{first['valid_start']} – {first['valid_end']}",
        f"{first['test_start']} – {first['test_end']}",
    ]
    assert rows[1][7:] == ["+0.0500", "+0.0600"]
    style = re.search(r"<style>(.*?)</style>", page, re.DOTALL).group(1)
    assert re.search(r"table\.wide \{[^}]*table-layout: fixed;[^}]*width: 100%", style)
    assert re.search(r"th, td \{[^}]*overflow-wrap: anywhere", style)
    colgroup = r'<table id="folds-table" class="wide">\s*<colgroup>(<col style="width:[\d.]+%">){9}<'
    assert re.search(colgroup, page)


# Measures, after layout, whether any table (or anything else) is wider than the box it sits
# in, with the page laid out at a given width whatever the headless window's size.
_OVERFLOW_PROBE = """<style>html {{ width: {width}px; }}</style>
<script>
window.addEventListener("load", function () {{
  var out = {{body: [document.body.scrollWidth, document.body.clientWidth], tables: []}};
  document.querySelectorAll("table").forEach(function (t) {{
    out.tables.push({{id: t.id, width: t.getBoundingClientRect().width,
                      room: t.parentElement.clientWidth, scroll: t.scrollWidth}});
  }});
  var pre = document.createElement("pre");
  pre.id = "overflow-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}});
</script>"""


def overflowing_tables(browser: str, index: Path, width: int) -> list[dict]:
    """Tables of ``index`` wider than their container when the page is ``width`` px wide."""
    page = index.read_text(encoding="utf-8")
    probe = index.with_name(f".overflow-{width}.html")
    probe.write_text(page.replace("</body>", _OVERFLOW_PROBE.format(width=width) + "</body>"))
    try:
        dom = dump_dom(browser, probe)
    finally:
        probe.unlink()
    found = re.search(r'<pre id="overflow-probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, "the overflow probe did not run"
    result = json.loads(html.unescape(found.group(1)))
    assert len(result["tables"]) >= 5
    scroll, client = result["body"]
    assert client > width - 400, result  # the page is as wide as asked (up to its max-width)
    bad = [t for t in result["tables"] if max(t["width"], t["scroll"]) > t["room"] + 0.5]
    return bad + ([{"body": result["body"]}] if scroll > client else [])


def test_no_table_overflows_a_1400px_page(tmp_path: Path) -> None:
    browser = require_browser()
    run = make_run_dir(tmp_path / "run")
    # A folds table with more columns than kizashi writes today still fits: it wraps.
    folds = pl.read_csv(run / FOLDS)
    folds.with_columns(
        purge_days=pl.lit(5),
        embargo_days=pl.lit(5),
        valid_rank_ic_mean_over_all_validation_days=pl.lit(0.0123456),
        note=pl.lit("a-long-unbroken-remark-about-this-fold-" * 2),
    ).write_csv(run / FOLDS)
    index = write_report(run)
    assert overflowing_tables(browser, index, 1400) == []
    assert overflowing_tables(browser, index, 900) == []


def test_control_run_without_feature_importance(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", control=True, caveats=[])
    (run / FEATURE_IMPORTANCE).unlink()
    index = write_report(run, tmp_path / "elsewhere")
    assert index == tmp_path / "elsewhere" / "index.html"
    assert not (run / "report").exists()
    page = index.read_text(encoding="utf-8")
    assert page.count(CONTROL_BANNER) == 1 and 'id="control-banner"' in page
    assert "<th>control (shuffled target)</th><td>yes</td>" in page
    assert 'id="caveats">Data caveats</h2>' in page and NO_CAVEATS.replace("'", "&#x27;") in page
    assert "feature_importance.csv not found" in page
    sources = image_sources(page)
    assert not any(s.startswith("feature_importance") for s in sources)
    assert len(sources) == len(HORIZONS) * (len(PLOTS_PER_HORIZON) - 1) + len(RUN_PLOTS)
    assert {p.name for p in index.parent.glob("*.png")} == set(sources)


def test_one_horizon_run_without_turnover(tmp_path: Path) -> None:
    """One horizon: the decay table has one row and no cross-horizon table; an older
    daily.parquet without a turnover column gives a note, not an error."""
    run = make_run_dir(tmp_path / "run")
    for name in (DAILY, PREDICTIONS):
        table = pl.read_parquet(run / name).filter(pl.col("horizon") == 1)
        table.drop("turnover", strict=False).write_parquet(run / name)
    info = json.loads((run / RUN_INFO).read_text(encoding="utf-8"))
    (run / RUN_INFO).write_text(json.dumps({**info, "horizons": [1]}), encoding="utf-8")
    page = write_report(run).read_text(encoding="utf-8")
    assert [r[0] for r in table_cells(page, "decay-table")[1:]] == ["1d"]
    assert 'id="cross-horizon-table"' not in page
    assert "Cross-horizon decay not shown: one horizon only" in page
    assert "daily.parquet has no turnover column" in page
    assert not any(s.startswith("turnover_") for s in image_sources(page))


def test_rewrite_replaces_the_old_report(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    (run / "report").mkdir()
    (run / "report" / "stale.png").write_bytes(b"old")
    (run / DECILES).unlink()  # optional: the decile plot becomes a note
    index = write_report(run)
    assert not (run / "report" / "stale.png").exists()
    assert "deciles.csv not found" in index.read_text(encoding="utf-8")
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_missing_or_incomplete_run_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KizashiError, match="no such run directory"):
        write_report(tmp_path / "absent")
    run = tmp_path / "partial"
    run.mkdir()
    (run / RUN_INFO).write_text("{}", encoding="utf-8")
    with pytest.raises(KizashiError, match=r"missing .*daily\.parquet"):
        write_report(run)
    assert not (run / "report").exists()


def test_bad_daily_table_is_a_clear_error(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run")
    pl.read_parquet(run / DAILY).drop("rank_ic").write_parquet(run / DAILY)
    with pytest.raises(KizashiError, match=r"daily\.parquet: missing column\(s\) rank_ic"):
        write_report(run)
    assert not (run / "report").exists()


def test_every_image_loads_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    browser = require_browser()
    copy = shutil.copytree(report.parent, tmp_path / "report")
    expected = image_sources(report.read_text(encoding="utf-8"))
    # A deliberately broken image proves that the probe tells loaded from failed images.
    states = image_load_states(
        browser, copy / "index.html", extra_html='<img src="no-such-image.png" alt="broken">'
    )
    by_src = {s["src"]: s for s in states}
    assert len(states) == len(expected) + 1
    assert by_src["no-such-image.png"]["naturalWidth"] == 0
    not_loaded = [
        s for s in states if s["src"] in expected and not (s["complete"] and s["naturalWidth"] > 0)
    ]
    assert not_loaded == [], f"images that did not load in {browser}: {not_loaded}"
    assert all(
        by_src[s]["naturalWidth"] > 300 and by_src[s]["naturalHeight"] > 200 for s in expected
    )


# `write_report` in a child process that is killed (os._exit: no clean-up runs, as with
# SIGKILL) while it draws the decile plots, after some PNGs of the new report are written.
KILLED_WHILE_PLOTTING = """
import os, sys
import kizashi.evaluation.report as report

def killed(*args, **kwargs):
    os._exit(9)

report._plot_deciles = killed
report.write_report(sys.argv[1])
"""


def test_a_killed_report_writer_keeps_the_previous_report_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = make_run_dir(tmp_path / "run")
    index = write_report(run)
    before = {p.name: p.read_bytes() for p in index.parent.iterdir()}

    done = subprocess.run([sys.executable, "-c", KILLED_WHILE_PLOTTING, str(run)], capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 9, done.stdout + done.stderr
    assert {p.name: p.read_bytes() for p in index.parent.iterdir()} == before, "the previous report is intact"
    left = [p for p in run.iterdir() if p.name.startswith(".report.") and p.name.endswith(".tmp")]
    assert left and any(left[0].rglob("*.png")), "the killed writer left a half-built report aside"

    (run / DECILES).unlink()  # the next report differs from the previous one
    index = write_report(run)
    assert "deciles.csv not found" in index.read_text(encoding="utf-8")
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [], "no temporary is left behind"
