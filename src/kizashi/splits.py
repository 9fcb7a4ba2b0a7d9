"""Walk-forward folds with purge and embargo, counted in trading days.

A fold is three slices of the trading calendar, in time order::

    [ train ............ ] <purge> [ val ] <purge + embargo> [ test ]     (val_days > 0)
    [ train .................... ] <purge + embargo>          [ test ]     (val_days = 0)

"A gap of g trading days" means g calendar dates are left out between the last date of
one part and the first date of the next, so any train date and any test date are more than
``purge + embargo`` trading days apart. With ``purge`` at least the longest target horizon,
no training label (a forward return over ``h`` trading days) overlaps the period whose
returns are tested; the embargo adds a further margin against serial correlation.

The ``n_folds`` test windows (``test_days`` each, consecutive and non-overlapping) are the
last ones of the calendar; the last test window ends on the last calendar date. Training is
expanding from the first date, or rolling over the last ``train_days`` dates when set
(``train_days`` and ``min_train_days`` count the train part only, not the validation slice).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from kizashi.config import SplitConfig
from kizashi.data.calendar import trading_calendar

logger = logging.getLogger(__name__)

FOLD_PARTS = ("train", "val", "test")
FoldPart = pl.Enum(list(FOLD_PARTS))


@dataclass(frozen=True, eq=False)
class Fold:
    """One walk-forward fold: sorted ``datetime64[D]`` arrays of calendar dates.

    ``val_dates`` is empty when the split has no validation slice. ``purge_days`` and
    ``embargo_days`` record the gaps the fold was built with.
    """

    index: int
    train_dates: np.ndarray
    val_dates: np.ndarray
    test_dates: np.ndarray
    purge_days: int = 0
    embargo_days: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary: index, gaps, and first/last date (ISO) and count of each part."""
        out: dict[str, Any] = {
            "index": int(self.index),
            "purge_days": int(self.purge_days),
            "embargo_days": int(self.embargo_days),
        }
        parts = (("train", self.train_dates), ("val", self.val_dates), ("test", self.test_dates))
        for name, part in parts:
            out[f"{name}_first"] = str(part[0]) if len(part) else None
            out[f"{name}_last"] = str(part[-1]) if len(part) else None
            out[f"{name}_n_days"] = int(len(part))
        return out


#: Splits fitted to the data (:func:`fit_splits_to_calendar`): the first fold trains on this
#: share of the days left after the gaps, the rest is cut into test windows of at least
#: MIN_FITTED_TEST_DAYS days (a quarter), at most MAX_FITTED_FOLDS of them.
FITTED_TRAIN_SHARE = 0.5
MIN_FITTED_TEST_DAYS = 63
MAX_FITTED_FOLDS = 8
MIN_FITTED_TRAIN_DAYS = 60


def fit_splits_to_calendar(n_dates: int, config: SplitConfig, max_horizon: int) -> SplitConfig:
    """``config`` with ``n_folds``, ``test_days`` and ``min_train_days`` chosen for a calendar
    of ``n_dates`` trading days; the gaps, validation slice and ``train_days`` are kept.

    Of the days left after the validation slice and the gaps, the first fold trains on
    :data:`FITTED_TRAIN_SHARE`; the rest is cut into ``n_folds`` equal test windows of at
    least :data:`MIN_FITTED_TEST_DAYS` days (fewer days: one window), at most
    :data:`MAX_FITTED_FOLDS`. Raises ``ValueError`` when even one fold with
    :data:`MIN_FITTED_TRAIN_DAYS` training days and a test window of 20 days does not fit."""
    purge = int(config.purge_days if config.purge_days is not None else max_horizon)
    val_block = config.val_days + purge if config.val_days > 0 else 0
    available = n_dates - val_block - purge - config.embargo_days
    min_train = max(MIN_FITTED_TRAIN_DAYS, int(available * FITTED_TRAIN_SHARE))
    if config.train_days is not None:
        min_train = min(min_train, config.train_days)
    test_total = available - min_train
    if min_train < MIN_FITTED_TRAIN_DAYS or test_total < 20:
        raise ValueError(
            f"{n_dates:,} trading days are too few to fit walk-forward splits: one fold needs at least "
            f"{MIN_FITTED_TRAIN_DAYS + 20 + val_block + purge + config.embargo_days:,} "
            f"({MIN_FITTED_TRAIN_DAYS} training + 20 test + validation {config.val_days} and gaps "
            f"{val_block - config.val_days + purge + config.embargo_days}); give a longer input"
        )
    n_folds = max(1, min(MAX_FITTED_FOLDS, test_total // MIN_FITTED_TEST_DAYS))
    return config.model_copy(
        update={"n_folds": n_folds, "test_days": test_total // n_folds, "min_train_days": min_train}
    )


def walk_forward_folds(dates: Any, config: SplitConfig, max_horizon: int) -> list[Fold]:
    """Build ``config.n_folds`` walk-forward folds over the trading calendar ``dates``.

    ``max_horizon`` is the most trading days any target reads ahead
    (:func:`kizashi.features.targets.target_reach`). ``purge`` is ``config.purge_days`` or,
    when that is null, ``max_horizon``; a ``purge_days`` shorter than ``max_horizon`` is
    refused (``ValueError``). Folds are returned oldest first.

    Raises ``ValueError`` when the calendar is too short to give the first fold
    ``config.min_train_days`` training dates, naming the days needed and available.
    """
    calendar = trading_calendar(dates)
    n_dates = len(calendar)
    if int(max_horizon) != max_horizon or max_horizon < 0:
        raise ValueError(f"max_horizon must be a non-negative integer, got {max_horizon!r}")
    purge = int(config.purge_days if config.purge_days is not None else max_horizon)
    if purge < 0:
        raise ValueError(f"splits.purge_days must be >= 0, got {purge}")
    if purge < max_horizon:
        raise ValueError(
            f"splits.purge_days ({purge}) is shorter than the targets' reach ({max_horizon} trading "
            "days: the longest horizon plus targets.fill_end_days): training labels would overlap "
            "the validation and test days; raise it or leave it null"
        )
    embargo = int(config.embargo_days)
    gap = purge + embargo
    if config.train_days is not None and config.train_days < config.min_train_days:
        raise ValueError(
            f"splits.train_days ({config.train_days}) is shorter than splits.min_train_days "
            f"({config.min_train_days}): no fold could be trained; lower min_train_days or "
            "raise train_days"
        )

    test_total = config.n_folds * config.test_days
    val_block = config.val_days + purge if config.val_days > 0 else 0
    needed = config.min_train_days + val_block + gap + test_total
    if n_dates < needed:
        purge_part = (
            f"splits.purge_days {purge}"
            if config.purge_days is not None
            else f"purge {purge} (splits.purge_days null: the targets' reach)"
        )
        parts = [
            f"splits.min_train_days {config.min_train_days}",
            *([f"splits.val_days {config.val_days} + {purge_part}"] if val_block else []),
            f"{purge_part} + splits.embargo_days {embargo}",
            f"splits.n_folds {config.n_folds} x splits.test_days {config.test_days}",
        ]
        span = f" ({calendar[0]} .. {calendar[-1]})" if n_dates else ""
        raise ValueError(
            f"calendar too short for walk-forward splits: {needed:,} trading days needed "
            f"({' + '.join(parts)}), {n_dates:,} available{span}; lower splits.n_folds, "
            "splits.test_days or splits.min_train_days, or give a longer input"
        )

    folds: list[Fold] = []
    for k in range(config.n_folds):
        test_start = n_dates - (config.n_folds - k) * config.test_days
        test_end = test_start + config.test_days
        if config.val_days > 0:
            val_end = test_start - gap
            val_start = val_end - config.val_days
            train_end = val_start - purge
        else:
            val_start = val_end = test_start - gap
            train_end = test_start - gap
        train_start = 0 if config.train_days is None else max(0, train_end - config.train_days)
        folds.append(
            Fold(
                index=k,
                train_dates=_frozen(calendar[train_start:train_end]),
                val_dates=_frozen(calendar[val_start:val_end]),
                test_dates=_frozen(calendar[test_start:test_end]),
                purge_days=purge,
                embargo_days=embargo,
            )
        )
    logger.debug(
        "walk-forward: %d folds over %d trading days (purge %d, embargo %d, %s train)",
        len(folds),
        n_dates,
        purge,
        embargo,
        "expanding" if config.train_days is None else f"rolling {config.train_days}-day",
    )
    return folds


def fold_labels(dates: pl.Series | pl.Expr | str, fold: Fold) -> pl.Series | pl.Expr:
    """Tag dates as ``"train"``, ``"val"``, ``"test"`` or null (not in the fold).

    ``dates`` is a Date (or Datetime) Series, an expression, or a column name. A Series gives
    a Series named ``"fold_part"``; an expression or name gives an expression aliased
    ``"fold_part"``, for use in ``df.with_columns(fold_labels("date", fold))``. The result
    has dtype ``pl.Enum(["train", "val", "test"])``.
    """
    if isinstance(dates, pl.Series):
        frame = dates.to_frame("date")
        return frame.select(_label_expr(pl.col("date"), fold)).to_series()
    expr = pl.col(dates) if isinstance(dates, str) else dates
    return _label_expr(expr, fold)


def _label_expr(expr: pl.Expr, fold: Fold) -> pl.Expr:
    day = expr.cast(pl.Date)
    label = pl.when(day.is_in(_date_series(fold.train_dates))).then(pl.lit("train"))
    if len(fold.val_dates):
        label = label.when(day.is_in(_date_series(fold.val_dates))).then(pl.lit("val"))
    label = label.when(day.is_in(_date_series(fold.test_dates))).then(pl.lit("test"))
    return label.otherwise(pl.lit(None)).cast(FoldPart).alias("fold_part")


def _date_series(values: np.ndarray) -> pl.Series:
    # One list value: `is_in` tests membership in it (a bare Series is ambiguous in Polars 1.x).
    return pl.Series("dates", values, dtype=pl.Date).implode()


def _frozen(values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype="datetime64[D]")
    out.setflags(write=False)
    return out

