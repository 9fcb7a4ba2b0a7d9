"""Logging set-up (rich handler) and progress reports for long work. Library code logs through
``logging.getLogger(__name__)``; only the CLI calls :func:`setup_logging`.

:func:`progress` shows a transient progress bar on a terminal; without one (CI, ``nohup``, a
batch job: stderr is not a TTY) it logs INFO lines with counts, elapsed time and an ETA at
most every :data:`DEFAULT_PROGRESS_SECONDS` seconds (``KIZASHI_PROGRESS_SECONDS``), plus
the first and the last item."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Environment variable: seconds between two progress lines when stderr is not a terminal.
PROGRESS_SECONDS_ENV = "KIZASHI_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 30.0

# The stderr console of the log handler (set by setup_logging): a progress bar drawn on the
# same console keeps log lines above the bar instead of tearing it.
_console: Console | None = None


NOISY_LOGGERS = ("matplotlib", "PIL")
#: Messages of other libraries that advertise rather than report (dropped from the log).
ADVERTISEMENTS = ("💡 Tip: For seamless cloud logging",)


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(ADVERTISEMENTS)


def setup_logging(level: int | str = logging.INFO) -> None:
    """Log to stderr through rich, so stdout stays clean for tables and JSON."""
    global _console
    _console = Console(stderr=True)
    handler = RichHandler(console=_console, rich_tracebacks=False, show_path=False)
    handler.addFilter(_DropAdvertisements())
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True)
    # Third-party chatter (matplotlib's category-unit notes, font cache) stays at warnings.
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def route_library_logs() -> None:
    """One line per event once Lightning is imported: its package logger ``lightning`` has a
    console handler of its own and also propagates to the root's, so every Lightning line
    would print twice; its own console handlers are removed (the root's handler stays)."""
    if "lightning" not in sys.modules or not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for own in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(own)
        logger.propagate = True


def progress(
    items: Iterable[T],
    description: str,
    total: int | None = None,
    *,
    interval: float | None = None,
    stream: IO[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Iterate ``items``, reporting progress on ``stream`` (default stderr).

    On an interactive terminal: a transient rich progress bar. Otherwise: INFO log lines
    (logger ``kizashi.log``) such as ``walk-forward fits: 5/16 (31%), elapsed 0:12, ETA 0:26``
    after the first item, then at most one every ``interval`` seconds (default: the
    environment variable ``KIZASHI_PROGRESS_SECONDS``, else 30; 0 = every item), and after
    the last item always. An item counts as done when the loop asks for the next one.
    ``clock``: seconds, for the elapsed time and the ETA (tests pass a fake one).
    """
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    console = _progress_console(stream)
    if console.is_interactive and _isatty(stream if stream is not None else sys.stderr):
        return _bar(items, description, total, console)
    seconds = progress_interval() if interval is None else max(0.0, float(interval))
    return _logged(items, description, total, seconds, clock)


def progress_interval() -> float:
    """Seconds between two progress lines: ``KIZASHI_PROGRESS_SECONDS`` (>= 0), else
    :data:`DEFAULT_PROGRESS_SECONDS`; an unreadable value is a warning and the default."""
    text = os.environ.get(PROGRESS_SECONDS_ENV, "").strip()
    if not text:
        return DEFAULT_PROGRESS_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        log.warning("%s=%r is not a number of seconds >= 0; using %g",
                    PROGRESS_SECONDS_ENV, text, DEFAULT_PROGRESS_SECONDS)
        return DEFAULT_PROGRESS_SECONDS
    return value


def format_duration(seconds: float) -> str:
    """``seconds`` as ``M:SS`` (``H:MM:SS`` from one hour on)."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(description: str, done: int, total: int | None, elapsed: float) -> str:
    """One progress line: count, share, elapsed time and (while not finished) the ETA."""
    if total is None:
        return f"{description}: {done} done, elapsed {format_duration(elapsed)}"
    share = f" ({100 * done // total}%)" if total > 0 else ""
    line = f"{description}: {done}/{total}{share}, elapsed {format_duration(elapsed)}"
    if done >= total:
        return f"{line}, done"
    if done == 0:
        return line
    return f"{line}, ETA {format_duration(elapsed / done * (total - done))}"


def _logged(
    items: Iterable[T], description: str, total: int | None, interval: float, clock: Callable[[], float]
) -> Iterator[T]:
    started = clock()
    last_logged = started
    done = logged = 0
    for item in items:
        yield item
        done += 1
        now = clock()
        if done == 1 or done == total or now - last_logged >= interval:
            log.info("%s", progress_line(description, done, total, now - started))
            last_logged, logged = now, done
    if done != logged:  # fewer items than ``total``, or no ``total``: the end still shows
        log.info("%s", progress_line(description, done, total if total is not None and done >= total else None,
                                     clock() - started))


def _bar(items: Iterable[T], description: str, total: int | None, console: Console) -> Iterator[T]:
    columns = (
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _progress_console(stream: IO[str] | None) -> Console:
    if stream is not None:
        return Console(file=stream)
    return _console if _console is not None else Console(stderr=True)


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
