"""`kizashi strategies RUN_DIR`: choose a book for a run's signal on validation slices, fold by
fold, so that no choice reads a day after the test days it is judged on (:mod:`kizashi.portfolio`).

    RUN_DIR/validation_predictions.parquet (each fit's own validation slice, written by
    `kizashi evaluate`) -> the candidates (kizashi.portfolio.overview_strategies), one book
    per fold's slice -> for fold k: the best net Sharpe over the validation slices of folds
    0..k (all of them before fold k's test days; a later fold's slice can lie inside an
    earlier fold's test window, so it is never used for that fold)
    -> the test book of fold k's choice on fold k's test days, spliced into one series:
       "walk-forward choice", the figure to quote
    -> every candidate's own test figures beside it (not used for any choice), and the choice
       over all folds' slices: the book to trade from now on
    -> RUN_DIR/strategies.csv

Costs: the run's own ``metrics.long_short.cost_bps`` (one home for the cost). The
validation slices also early-stopped the model, so their figures lean optimistic; they are
still the only days a choice may read. Splicing ignores the turnover of switching books
between folds (at most one rebalance per fold boundary).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from kizashi.atomic import atomic_path
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import PREDICTIONS, VALIDATION_PREDICTIONS, read_run_info
from kizashi.portfolio import CostSettings, Selection, run_strategies, select_by_validation, strategy_stats
from kizashi.portfolio.overview import median_universe, overview_strategies

log = logging.getLogger(__name__)

STRATEGIES_FILE = "strategies.csv"


WALK_FORWARD_CHOICE = "walk-forward choice"


@dataclass
class StrategyChoice:
    """``selection``: the choice over all folds' validation slices (the book to trade now) and
    every candidate's validation and test rows; ``per_fold``: fold index -> the candidate chosen
    on the slices of folds 0..k; ``walk_forward``: the statistics of the spliced test series
    of those choices (:func:`kizashi.portfolio.strategy_stats`)."""

    selection: Selection
    per_fold: dict[int, str]
    walk_forward: dict[str, Any]
    horizon: int
    cost_bps: float


def choose_strategy(run_dir: str | Path, horizon: int | None = None) -> StrategyChoice:
    """Choose among the overview strategies on the validation slices of ``run_dir`` for
    ``horizon`` (default: the run's first), fold by fold (module docstring); writes
    ``RUN_DIR/strategies.csv``."""
    run = Path(run_dir)
    info = read_run_info(run)
    horizon = horizon if horizon is not None else info.horizons[0]
    if horizon not in info.horizons:
        raise KizashiError(f"{run}: no {horizon}d predictions (its horizons: {info.horizons})")
    validation_file = run / VALIDATION_PREDICTIONS
    if not validation_file.is_file():
        raise KizashiError(
            f"{validation_file}: missing: the run has no validation-slice predictions (runs of `kizashi evaluate` "
            "with splits.val_days > 0 write them; rerun it, --resume reuses nothing older)"
        )
    cost_bps = float(((info.config.get("metrics") or {}).get("long_short") or {}).get("cost_bps", 10.0))
    costs = CostSettings(cost_bps=cost_bps)
    validation = pl.read_parquet(validation_file).filter(pl.col("horizon") == horizon)
    test = pl.read_parquet(run / PREDICTIONS).filter(pl.col("horizon") == horizon)
    candidates = overview_strategies(median_universe(test))
    on_validation = run_strategies(validation, candidates, costs=costs, by=("fold",)).daily
    on_test = run_strategies(test, candidates, costs=costs).daily
    selection = select_by_validation(on_validation, on_test)

    per_fold: dict[int, str] = {}
    spliced = []
    for fold in sorted(info.folds, key=lambda f: f["index"]):
        k = fold["index"]
        seen = on_validation.filter(pl.col("fold") <= k)
        if seen.is_empty():
            continue
        per_fold[k] = select_by_validation(seen, on_test).selected
        first, last = (dt.date.fromisoformat(fold[f"test_{end}"]) for end in ("first", "last"))
        spliced.append(on_test.filter((pl.col("strategy") == per_fold[k]) & pl.col("date").is_between(first, last)))
    walk_forward = strategy_stats(pl.concat(spliced)) if spliced else {}
    rows = [{"strategy": WALK_FORWARD_CHOICE, "part": "test", "used_for_selection": False, "selected": False,
             "note": "each fold's test days traded with the choice on the slices of folds up to it: "
                     + ", ".join(f"{k}: {name}" for k, name in per_fold.items()),
             **walk_forward}]
    table = pl.concat([selection.table, pl.DataFrame(rows, schema=selection.table.schema)], how="vertical")
    with atomic_path(run / STRATEGIES_FILE) as tmp:
        table.write_csv(tmp)
    selection = Selection(selected=selection.selected, metric=selection.metric, table=table)
    log.info("strategies of %s, %dd: per fold %s; to trade now: %s (%s)", run, horizon, per_fold,
             selection.selected, run / STRATEGIES_FILE)
    return StrategyChoice(selection, per_fold, walk_forward, horizon, cost_bps)
