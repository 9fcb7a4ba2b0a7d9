"""`kizashi export alphalens RUN_DIR`: a run's predictions and prices as alphalens reads them.

    RUN_DIR/run.json + predictions.parquet (one horizon's test predictions)
    + the run's input panel, read again from its dataset's metadata (the adjusted close that
      the targets were computed from)
    -> OUT/factor.parquet, OUT/factor.csv   long: date, asset, factor (the prediction)
       OUT/prices.parquet, OUT/prices.csv   wide: date, then one column per asset (adjusted close)
       OUT/alphalens.md                     the lines of Python that open a tear sheet

``OUT`` defaults to ``RUN_DIR/alphalens``; every file is written atomically. The frames load
into what ``alphalens.utils.get_clean_factor_and_forward_returns`` takes with one line of
pandas each::

    factor = pd.read_parquet(OUT / "factor.parquet").set_index(["date", "asset"])["factor"]
    prices = pd.read_parquet(OUT / "prices.parquet").set_index("date")

(for the CSV files: ``pd.read_csv(..., parse_dates=["date"], dtype={"asset": str})`` and
``pd.read_csv(..., index_col="date", parse_dates=["date"])``). Dates are midnight timestamps
(nanoseconds, no time zone) in the Parquet files and ISO dates in the CSV files.

The factor is the prediction of one horizon (default: the run's shortest), on every test row
with a finite prediction. The prices cover the market calendar from the first test date to
the ``max(horizons)``-th session after the last one (or the panel's end), for the assets of
the factor; a missing (date, asset) is empty. alphalens computes forward returns from them as
``prices.ffill().pct_change(h).shift(-h)``: equal to kizashi's ``target`` wherever the asset has
a close on both sessions, while where kizashi's target is null (a halt, a delisting) the
forward fill gives alphalens a stale-price return instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from kizashi.atomic import atomic_path, write_text_atomic
from kizashi.data.schema import CODE, DATE
from kizashi.datasets.build import reload_inputs
from kizashi.errors import KizashiError
from kizashi.evaluation.run_dir import PREDICTIONS, RUN_INFO, RunInfo, read_run_info

log = logging.getLogger(__name__)

ALPHALENS_DIR = "alphalens"
FACTOR_PARQUET = "factor.parquet"
FACTOR_CSV = "factor.csv"
PRICES_PARQUET = "prices.parquet"
PRICES_CSV = "prices.csv"
GUIDE = "alphalens.md"
ASSET = "asset"
FACTOR = "factor"


@dataclass
class AlphalensFrames:
    """The two frames of an export (polars, ``date`` as ``pl.Date``).

    factor: ``[rows]`` ``date, asset, factor``, sorted by (date, asset).
    prices: ``[dates x (1 + assets)]`` ``date`` then one Float64 column per asset (sorted codes).
    horizon: the horizon whose predictions are the factor; periods: the run's horizons.
    """

    factor: pl.DataFrame
    prices: pl.DataFrame
    horizon: int
    periods: list[int]


def _run_info(run: Path) -> RunInfo:
    if not (run / RUN_INFO).is_file():
        raise KizashiError(f"{run}: not a run directory (no {RUN_INFO}); give a folder written by "
                           "`kizashi evaluate` or `kizashi train`")
    if not (run / PREDICTIONS).is_file():
        raise KizashiError(f"{run}: no {PREDICTIONS}; the run has no test predictions to export")
    return read_run_info(run)


def _input_close(run: Path, info: RunInfo) -> pl.DataFrame:
    """``code, date, close`` of the run's input panel (the adjusted close of its targets)."""
    try:
        inputs = reload_inputs(info.dataset)
    except (FileNotFoundError, KizashiError) as err:
        raise KizashiError(
            f"{run}: the prices cannot be read again from the run's dataset {info.dataset}: {err}"
        ) from None
    return inputs.panel.select(CODE, DATE, pl.col("close").cast(pl.Float64))


def alphalens_frames(run_dir: str | Path, horizon: int | None = None) -> AlphalensFrames:
    """The factor and prices frames of ``run_dir`` (module docstring), without writing them.

    Args:
        run_dir: a run directory with ``run.json`` and ``predictions.parquet``.
        horizon: the horizon whose predictions are the factor; default the run's shortest.
    """
    run = Path(run_dir)
    info = _run_info(run)
    predictions = pl.read_parquet(run / PREDICTIONS)
    horizons = sorted(int(h) for h in (info.horizons or predictions.get_column("horizon").unique().to_list()))
    if not horizons:
        raise KizashiError(f"{run}: the run has no horizons")
    chosen = horizons[0] if horizon is None else int(horizon)
    if chosen not in horizons:
        raise KizashiError(f"{run}: no {chosen}d predictions (its horizons: {horizons})")
    rows = predictions.filter(pl.col("horizon") == chosen)
    factor = (
        rows.filter(pl.col("prediction").is_finite().fill_null(False))
        .select(DATE, pl.col(CODE).alias(ASSET), pl.col("prediction").cast(pl.Float64).alias(FACTOR))
        .sort(DATE, ASSET)
    )
    if factor.height < rows.height:
        log.info("%s: %d of %d %dd prediction rows are not finite and left out of the factor",
                 run, rows.height - factor.height, rows.height, chosen)
    if factor.is_empty():
        raise KizashiError(f"{run}: no finite {chosen}d prediction to export")

    close = _input_close(run, info)
    calendar = close.get_column(DATE).unique().sort()
    first, last = factor.get_column(DATE).min(), factor.get_column(DATE).max()
    last_index = calendar.search_sorted(last)
    reach = max(horizons)
    end_index = min(last_index + reach, calendar.len() - 1)
    if last_index + reach > end_index:
        log.info("%s: the panel ends %d session(s) after the last test date %s, short of the longest horizon "
                 "(%d): alphalens drops the last test days' rows (their targets are missing in the run too)",
                 run, end_index - last_index, last, reach)
    assets = factor.get_column(ASSET).unique().sort()
    dates = calendar.filter(calendar.is_between(first, calendar[end_index]))
    prices = (
        close.filter(pl.col(CODE).is_in(assets.implode()) & pl.col(DATE).is_between(first, dates[-1]))
        .pivot(on=CODE, index=DATE, values="close")
    )
    prices = (
        pl.DataFrame({DATE: dates})
        .join(prices, on=DATE, how="left")
        .select(DATE, *[pl.col(a).cast(pl.Float64) if a in prices.columns else pl.lit(None, pl.Float64).alias(a)
                        for a in assets])
        .sort(DATE)
    )
    priced = set(close.get_column(CODE).unique().to_list())
    missing = [a for a in assets if a not in priced]
    if missing:
        log.warning("%s: %d asset(s) of the factor have no price in the run's input panel, e.g. %s",
                    run, len(missing), missing[:5])
    log.info("%s: factor of %d rows (%dd predictions, %s .. %s), prices of %d dates x %d assets",
             run, factor.height, chosen, first, last, prices.height, len(assets))
    return AlphalensFrames(factor=factor, prices=prices, horizon=chosen, periods=horizons)


def _guide(run: Path, out: Path, frames: AlphalensFrames) -> str:
    periods = ", ".join(str(p) for p in frames.periods) + ("," if len(frames.periods) == 1 else "")
    first, last = frames.factor.get_column(DATE).min(), frames.factor.get_column(DATE).max()
    return f"""# {run.name} in alphalens

The factor is the run's {frames.horizon}d prediction on its test days ({first} .. {last},
{frames.factor.height} rows); the prices are the adjusted close of the run's input panel, to
{max(frames.periods)} session(s) after the last test day. Written by `kizashi export alphalens {run}`.

```python
import pandas as pd, alphalens
factor = pd.read_parquet({str(out / FACTOR_PARQUET)!r}).set_index(["date", "asset"])["factor"]
prices = pd.read_parquet({str(out / PRICES_PARQUET)!r}).set_index("date")
data = alphalens.utils.get_clean_factor_and_forward_returns(factor, prices, periods=({periods}), quantiles=10)
alphalens.tears.create_full_tear_sheet(data)
```

From the CSV files instead:
`pd.read_csv({str(out / FACTOR_CSV)!r}, parse_dates=["date"], dtype={{"asset": str}}).set_index(["date", "asset"])["factor"]`
and `pd.read_csv({str(out / PRICES_CSV)!r}, index_col="date", parse_dates=["date"])`.

How alphalens's figures relate to kizashi's (docs/peers.md, "alphalens and empyrical"):

- IC: alphalens's is Spearman per day, kizashi's `rank_ic` (kizashi's `ic` is Pearson).
- Forward returns: alphalens computes them from these prices after a forward fill; they equal
  kizashi's targets wherever the asset has a close on both sessions.
- Quantiles: alphalens cuts each day with `pd.qcut`, kizashi ranks into equal-count buckets; the
  two agree when the day's number of assets is a multiple of the number of quantiles and no
  prediction is tied. Its mean return by quantile is demeaned by default (`demeaned=False`
  gives kizashi's `deciles.csv`).
- Turnover: alphalens's is the share of a quantile's names new since the previous day;
  kizashi's is the traded weight of its long-short book.
"""


def export_alphalens(run_dir: str | Path, out_dir: str | Path | None = None, horizon: int | None = None) -> Path:
    """Write the alphalens factor and prices of ``run_dir`` (module docstring); returns the folder.

    Args:
        run_dir: a run directory with ``run.json`` and ``predictions.parquet``, whose dataset's
            metadata (and inputs) can still be read.
        out_dir: where to write (default ``RUN_DIR/alphalens``); existing files of the same
            names are replaced, other files are left alone.
        horizon: the horizon whose predictions are the factor; default the run's shortest.

    Raises:
        KizashiError: naming the run directory, when run.json, the predictions, the horizon or
            the run's inputs are missing.
    """
    run = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run / ALPHALENS_DIR
    frames = alphalens_frames(run, horizon)
    stamped = [pl.col(DATE).cast(pl.Datetime("ns"))]
    for name, frame, parquet in (
        (FACTOR_CSV, frames.factor, False), (FACTOR_PARQUET, frames.factor, True),
        (PRICES_CSV, frames.prices, False), (PRICES_PARQUET, frames.prices, True),
    ):
        with atomic_path(out / name) as tmp:
            if parquet:
                frame.with_columns(stamped).write_parquet(tmp)
            else:
                frame.write_csv(tmp)
    write_text_atomic(out / GUIDE, _guide(run, out.absolute(), frames))
    log.info("wrote %s (factor, prices, %s)", out, GUIDE)
    return out
