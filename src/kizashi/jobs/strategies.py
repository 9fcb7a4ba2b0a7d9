"""`kizashi strategies RUN_DIR`: choose a book for a run's signal on validation slices, fold by
fold, so that no choice reads a day after the test days it is judged on.

    RUN_DIR (predictions, each fit's validation slice, run.json's ``portfolio`` settings,
    the run's input panel for tradability and impact)
    -> kizashi.portfolio.run_books.write_run_strategies, per horizon
    -> RUN_DIR/strategies.csv, RUN_DIR/strategy_daily.parquet

`kizashi evaluate` and `kizashi train` do the same at the end of a run; this command redoes
it, e.g. with other ``--set portfolio...`` settings (the run's own are the default). The
rule of the choice is in :mod:`kizashi.portfolio.walk_forward`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kizashi.config import PortfolioSettings, config_from_dict, deep_merge
from kizashi.evaluation.run_dir import STRATEGIES, read_run_info
from kizashi.portfolio.run_books import run_portfolio_settings, write_run_strategies
from kizashi.portfolio.walk_forward import WalkForwardChoice

log = logging.getLogger(__name__)


def choose_strategies(
    run_dir: str | Path, horizons: Sequence[int] | None = None, overrides: dict[str, Any] | None = None
) -> list[WalkForwardChoice]:
    """The walk-forward book choice of ``run_dir`` for ``horizons`` (default: all), with the
    run's portfolio settings updated by ``overrides`` (a nested ``portfolio`` mapping, e.g.
    ``{"costs": {"cost_bps": 5}}``); writes the run's strategy files."""
    run = Path(run_dir)
    settings = run_portfolio_settings(read_run_info(run), str(run / "run.json"))
    if overrides:
        merged = deep_merge(settings.model_dump(mode="json"), overrides)
        settings = config_from_dict(PortfolioSettings, merged, source="--set portfolio")
    choices = write_run_strategies(run, settings, horizons)
    log.info("wrote %s", run / STRATEGIES)
    return choices

