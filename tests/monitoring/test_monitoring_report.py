"""monitor.json and monitor.html: content, self-containment, atomic writing, and every plot
loading in a headless browser."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from browser import image_load_states, require_browser

from kizashi.monitoring import (
    MONITOR_HTML,
    MONITOR_JSON,
    MonitorSettings,
    run_monitor,
    write_monitor_report,
)
from kizashi.monitoring.page import MAX_ALARM_ROWS
from monitoring_cases import reference_500, stream_factory  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def flipped_result(stream_factory, reference_500):
    """A 200-day stream whose signal flips on day 100 and whose feature beta triples on day 150."""
    stream = stream_factory(200, 500, seed=21, flip_day=100, beta_scale_day=150)
    return run_monitor(reference_500, stream.signals, features=stream.features, realized=stream.realized,
                       settings=MonitorSettings(rank_ic_window=40))


def test_monitor_json_holds_the_daily_table_alarms_and_settings(tmp_path, flipped_result):
    out = write_monitor_report(flipped_result, tmp_path / "monitor")
    document = json.loads((out / MONITOR_JSON).read_text(encoding="utf-8"))  # strict JSON: no NaN
    assert document["format"] == "kizashi.monitor"
    assert document["status"] == "alarm"
    assert document["settings"]["rank_ic_window"] == 40
    assert document["first_alarm"] == {k: v.isoformat() for k, v in flipped_result.first_alarms.items()}
    assert set(document["first_alarm"]) == {"feature_psi", "rank_ic"}
    assert document["alarms"] == [a.to_dict() for a in flipped_result.alarms]
    assert len(document["daily"]) == flipped_result.daily.height == 200
    assert set(document["daily"][0]) == set(flipped_result.daily.columns)
    assert document["daily"][0]["rank_ic_sd"] is None  # NaN (one value in the window) -> null
    assert document["daily"][-1]["date"] == str(flipped_result.daily["date"][-1])
    assert [row["beta"] for row in document["feature_psi"]] == pytest.approx(
        flipped_result.feature_psi["beta"].to_list())
    assert document["reference"]["features"] == ["alpha", "beta", "gamma"]
    # written aside and renamed: nothing but the two outputs is left behind
    assert sorted(p.name for p in out.iterdir()) == [MONITOR_HTML, MONITOR_JSON]


def test_monitor_html_is_self_contained_and_shows_the_alarms(tmp_path, flipped_result):
    out = write_monitor_report(flipped_result, tmp_path)
    page = (out / MONITOR_HTML).read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 5  # RankIC band, score PSI, score KS, feature PSI, coverage
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page
    assert "Status: ALARM" in page
    first_rank_ic = flipped_result.first_alarm("rank_ic")
    assert f"<tr><td>rank_ic</td><td>—</td><td>{first_rank_ic}</td></tr>" in page  # first-alarm table
    # the alarm table: the latest MAX_ALARM_ROWS records, newest first, and a note on the rest
    section = page.split("<h2>Alarms</h2>")[1].split("<h2>Settings</h2>")[0]
    total = len(flipped_result.alarms)
    assert total > MAX_ALARM_ROWS  # 208 records: the table is cut
    assert section.count("<tr><td") == MAX_ALARM_ROWS
    assert f"The latest {MAX_ALARM_ROWS} of {total} records" in section
    newest, oldest_shown = flipped_result.alarms[-1], flipped_result.alarms[-MAX_ALARM_ROWS]
    assert newest.date > oldest_shown.date
    assert section.index(f"<tr><td>{newest.date}</td>") < section.index(f"<tr><td>{oldest_shown.date}</td>")
    assert f"<tr><td>{flipped_result.alarms[0].date}</td>" not in section  # cut: only in the JSON


def test_monitor_html_plots_load_in_a_browser(tmp_path, flipped_result):
    browser = require_browser()
    out = write_monitor_report(flipped_result, tmp_path)
    states = image_load_states(browser, out / MONITOR_HTML)
    assert len(states) == 5
    assert all(s["complete"] and s["naturalWidth"] > 0 for s in states), states


def test_a_quiet_stream_without_returns_or_features_still_reports(tmp_path, stream_factory, reference_500):
    stream = stream_factory(20, 500, seed=22)
    reference = reference_500.model_copy(update={"features": {}})
    result = run_monitor(reference, stream.signals)
    assert "rank_ic" not in result.daily.columns and result.alarms == [] and result.status() == "ok"
    out = write_monitor_report(result, tmp_path)
    document = json.loads((out / MONITOR_JSON).read_text(encoding="utf-8"))
    assert document["status"] == "ok" and document["alarms"] == [] and document["first_alarm"] == {}
    page = (out / MONITOR_HTML).read_text(encoding="utf-8")
    assert "No alarm or warning." in page and "rolling RankIC with its confidence band: nothing to plot" in page
    assert pl.DataFrame(document["daily"]).height == 20
