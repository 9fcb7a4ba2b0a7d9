"""Books of a run directory: the walk-forward choice of :mod:`kizashi.portfolio.walk_forward`
for every horizon of a run, on the run's own market data, written next to its predictions.

    RUN_DIR/predictions.parquet + validation_predictions.parquet (each fit's validation slice)
    + the run's portfolio settings (run.json ``config.portfolio``; the cost of runs written
      before that section existed is their ``metrics.long_short.cost_bps``)
    + the market frame of the run's input panel (the dataset's own input settings, read again:
      tradability, dollar volume and volatility for impact)
    -> RUN_DIR/strategies.csv, RUN_DIR/strategy_daily.parquet (rows of other horizons kept)

Without a market frame (the inputs moved, or the dataset's metadata is gone) the books trade
on the predictions' own next-day returns and every trade is allowed; a warning says so, and
an impact model then is an error (it needs each stock's dollar volume).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from kizashi.atomic import atomic_path
from kizashi.config import PortfolioSettings, config_from_dict
from kizashi.datasets.build import reload_inputs
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import (
    PREDICTIONS,
    STRATEGIES,
    STRATEGY_DAILY,
    VALIDATION_PREDICTIONS,
    RunInfo,
    read_run_info,
)
from kizashi.portfolio.market import market_frame
from kizashi.portfolio.walk_forward import TestWindow, WalkForwardChoice, choose_walk_forward

log = logging.getLogger(__name__)


def run_portfolio_settings(info: RunInfo, source: str = "run.json") -> PortfolioSettings:
    """The run's ``config.portfolio`` section; runs written before it existed get the default
    settings with their ``metrics.long_short.cost_bps`` as the cost."""
    config = info.config or {}
    if "portfolio" in config:
        return config_from_dict(PortfolioSettings, config["portfolio"] or {}, source=f"{source}: config.portfolio")
    legacy = ((config.get("metrics") or {}).get("long_short") or {}).get("cost_bps")
    settings = PortfolioSettings()
    if legacy is not None:
        settings = settings.model_copy(update={"costs": settings.costs.model_copy(update={"cost_bps": float(legacy)})})
    return settings


def run_market(info: RunInfo, settings: PortfolioSettings) -> pl.DataFrame | None:
    """The market frame of the run's input panel (module docstring), or None with a warning
    when the inputs cannot be read again."""
    try:
        inputs = reload_inputs(info.dataset)
    except (FileNotFoundError, KizashiError) as err:
        if settings.costs.impact is not None:
            raise KizashiError(
                f"portfolio.costs.impact needs the run's input panel (dollar volume, volatility), which cannot be "
                f"read again: {err}"
            ) from None
        log.warning("books trade on the predictions' returns with every trade allowed: the run's inputs cannot be "
                    "read again (%s)", err)
        return None
    sectors = inputs.panel.select("code", "sector").unique(subset="code") if "sector" in inputs.panel.columns else None
    return market_frame(inputs.panel, settings.market, sectors)


def _test_windows(info: RunInfo) -> list[TestWindow]:
    return [
        TestWindow(fold["index"], dt.date.fromisoformat(fold["test_first"]), dt.date.fromisoformat(fold["test_last"]))
        for fold in info.folds
    ]


def write_run_strategies(
    run_dir: str | Path,
    settings: PortfolioSettings | None = None,
    horizons: Sequence[int] | None = None,
    *,
    market: pl.DataFrame | None = None,
) -> list[WalkForwardChoice]:
    """Choose a book fold by fold for each of ``horizons`` (default: every horizon of the run)
    and write ``strategies.csv`` / ``strategy_daily.parquet`` (module docstring).

    Args:
        run_dir: a run directory with ``validation_predictions.parquet``.
        settings: default: the run's own (:func:`run_portfolio_settings`).
        horizons: horizons to (re)compute; the files keep other horizons' rows.
        market: a market frame to use instead of reading the run's inputs again.
    """
    run = Path(run_dir)
    info = read_run_info(run)
    settings = settings or run_portfolio_settings(info, str(run / "run.json"))
    horizons = list(horizons) if horizons is not None else list(info.horizons)
    unknown = sorted(set(horizons) - set(info.horizons))
    if unknown:
        raise KizashiError(f"{run}: no {unknown}d predictions (its horizons: {info.horizons})")
    validation_file = run / VALIDATION_PREDICTIONS
    if not validation_file.is_file():
        raise KizashiError(
            f"{validation_file}: missing: the run has no validation-slice predictions to choose a book on "
            "(`kizashi evaluate` and `kizashi train` write them when splits.val_days > 0; rerun the run)"
        )
    if market is None:
        market = run_market(info, settings)
    validation = pl.read_parquet(validation_file)
    test = pl.read_parquet(run / PREDICTIONS)
    periods = int(((info.config or {}).get("metrics") or {}).get("periods_per_year", 252))
    windows = _test_windows(info)
    choices = [
        choose_walk_forward(
            test.filter(pl.col("horizon") == h),
            validation.filter(pl.col("horizon") == h),
            windows,
            h,
            settings,
            market=market,
            periods_per_year=periods,
        )
        for h in horizons
    ]
    _write_long(run / STRATEGIES, pl.concat([c.table for c in choices], how="vertical"), horizons, csv=True)
    _write_long(run / STRATEGY_DAILY, pl.concat([c.daily for c in choices]), horizons, csv=False)
    return choices


def _write_long(path: Path, frame: pl.DataFrame, horizons: Sequence[int], *, csv: bool) -> None:
    """Write ``frame`` (a leading ``horizon`` column), keeping an existing file's rows of other horizons."""
    if path.is_file():
        old = pl.read_csv(path) if csv else pl.read_parquet(path)
        if old.columns == frame.columns:
            kept = old.filter(~pl.col("horizon").is_in(list(horizons))).cast(frame.schema, strict=False)
            frame = pl.concat([kept, frame], how="vertical").sort("horizon", maintain_order=True)
    with atomic_path(path) as tmp:
        frame.write_csv(tmp) if csv else frame.write_parquet(tmp)


__all__ = ["run_market", "run_portfolio_settings", "write_run_strategies"]
