"""kizashi.log.progress without a terminal: log lines with counts and an ETA, at an interval,
on a fake clock (nothing sleeps)."""

from __future__ import annotations

import io
import logging

import pytest

from kizashi.log import PROGRESS_SECONDS_ENV, format_duration, progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kizashi.log" and r.levelno == logging.INFO]


def _run(items, clock: FakeClock, seconds_per_item: float, **kwargs) -> list:
    seen = []
    for item in progress(items, "walk-forward fits", stream=io.StringIO(), clock=clock, **kwargs):
        clock.now += seconds_per_item  # the loop body's work
        seen.append(item)
    return seen


def test_without_a_terminal_lines_come_at_the_interval_with_counts_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="kizashi.log")
    clock = FakeClock()
    assert _run(range(16), clock, 4.0, interval=30) == list(range(16))
    # items end at 4, 8, ..., 64 s: the first, then the first at >= 30 s after the last line
    # (item 9 at 36 s, item 17 would be at 68 s), and the last always
    assert _lines(caplog) == [
        "walk-forward fits: 1/16 (6%), elapsed 0:04, ETA 1:00",
        "walk-forward fits: 9/16 (56%), elapsed 0:36, ETA 0:28",
        "walk-forward fits: 16/16 (100%), elapsed 1:04, done",
    ]


def test_the_last_item_always_logs_and_the_eta_follows_the_rate(caplog):
    caplog.set_level(logging.INFO, logger="kizashi.log")
    clock = FakeClock()
    _run(range(5), clock, 3.0, interval=3600)
    assert _lines(caplog) == [
        "walk-forward fits: 1/5 (20%), elapsed 0:03, ETA 0:12",
        "walk-forward fits: 5/5 (100%), elapsed 0:15, done",
    ]


def test_the_interval_comes_from_the_environment(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="kizashi.log")
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "0")
    _run(range(4), FakeClock(), 1.0)
    assert [line.split(",")[0] for line in _lines(caplog)] == [f"walk-forward fits: {k}/4 ({25 * k}%)" for k in range(1, 5)]

    caplog.clear()
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "10")
    _run(range(30), FakeClock(), 1.0)
    assert [line.split(":")[1].split()[0] for line in _lines(caplog)] == ["1/30", "11/30", "21/30", "30/30"]


def test_a_bad_interval_in_the_environment_is_a_warning_and_the_default(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="kizashi.log")
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "soon")
    _run(range(40), FakeClock(), 1.0)  # default 30 s
    assert any(PROGRESS_SECONDS_ENV in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert [line.split(":")[1].split()[0] for line in _lines(caplog)] == ["1/40", "31/40", "40/40"]


def test_an_unknown_total_logs_counts_and_the_end(caplog):
    caplog.set_level(logging.INFO, logger="kizashi.log")
    clock = FakeClock()
    _run((i for i in range(3)), clock, 2.0, interval=100)
    assert _lines(caplog) == ["walk-forward fits: 1 done, elapsed 0:02", "walk-forward fits: 3 done, elapsed 0:06"]


def test_no_items_and_a_short_iterable_still_end_with_a_line(caplog):
    caplog.set_level(logging.INFO, logger="kizashi.log")
    _run([], FakeClock(), 1.0, interval=100)
    assert _lines(caplog) == []  # nothing ran, nothing to report
    _run(range(3), FakeClock(), 1.0, total=5, interval=100)
    assert _lines(caplog)[-1] == "walk-forward fits: 3 done, elapsed 0:03"


def test_on_a_terminal_a_bar_is_drawn_and_nothing_is_logged(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="kizashi.log")
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    terminal = FakeTerminal()
    assert list(progress(range(3), "bar", stream=terminal, interval=0)) == [0, 1, 2]
    assert _lines(caplog) == []


def test_a_forced_colour_console_without_a_tty_still_logs(caplog, monkeypatch):
    """CI often sets FORCE_COLOR: rich then calls stderr a terminal, but a bar's cursor
    movements would only litter the job's log."""
    caplog.set_level(logging.INFO, logger="kizashi.log")
    monkeypatch.setenv("FORCE_COLOR", "1")
    _run(range(2), FakeClock(), 1.0, interval=100)
    assert len(_lines(caplog)) == 2


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (4.4, "0:04"), (59.6, "1:00"), (3725, "1:02:05")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
