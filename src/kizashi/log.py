"""Logging set-up (rich handler) and progress bars for long work. Library code logs through
``logging.getLogger(__name__)``; only the CLI calls :func:`setup_logging`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

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


NOISY_LOGGERS = ("matplotlib", "PIL")
#: Messages of other libraries that advertise rather than report (dropped from the log).
ADVERTISEMENTS = ("💡 Tip: For seamless cloud logging",)


class _DropAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(ADVERTISEMENTS)


def setup_logging(level: int | str = logging.INFO) -> None:
    """Log to stderr through rich, so stdout stays clean for tables and JSON."""
    handler = RichHandler(console=Console(stderr=True), rich_tracebacks=False, show_path=False)
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


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` under a rich progress bar (transient, to stderr)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    columns = (
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
