"""Normalization: per-day cross-sectional (z-score, or robust median/MAD) with winsorizing,
and training-fold statistics for anything fitted across days."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

MAD_TO_STD = 1.4826  # MAD of a normal distribution times this = its standard deviation
SPREAD_EPS = 1e-12


# Columns are normalized in batches: the robust method materializes |x - median| for one
# batch at a time (bounded extra memory on wide frames).
NORMALIZE_BATCH = 64


def _per_group(frame: pl.DataFrame, by: str, exprs: list[pl.Expr]) -> pl.DataFrame:
    """One row per value of ``by`` (ascending) with the aggregations ``exprs``."""
    return frame.group_by(by).agg(exprs).sort(by)


def _broadcast(stat: pl.Series, group_index: pl.Expr) -> pl.Expr:
    """The per-group values ``stat`` (one per group, ascending ``by``) on every row."""
    return pl.lit(stat).gather(group_index)


def _inverse_spread(spread: pl.Series) -> pl.Series:
    """1 / spread per group; 0 where the spread vanishes or is undefined (one stock, or all
    equal), so such a day normalizes to 0 while nulls stay null."""
    values = spread.cast(pl.Float64).to_numpy(allow_copy=True)
    out = np.zeros_like(values)
    ok = np.isfinite(values) & (values > SPREAD_EPS)
    out[ok] = 1.0 / values[ok]
    return pl.Series(out)


def cross_sectional_normalize(
    frame: pl.DataFrame, columns: Sequence[str], method: str = "zscore", clip: float = 5.0, by: str = "date"
) -> pl.DataFrame:
    """``frame`` with ``columns`` normalized across the rows of each ``by`` value (each day),
    clipped to [-clip, clip] (winsorized); dtypes are kept.

    ``zscore``: (x - mean) / std. ``robust``: (x - median) / (1.4826 * MAD); a MAD of zero
    (more than half the stocks share one value) falls back to the standard deviation. A day
    where every stock has the same value gives 0; null stays null.

    Per-day statistics come from one ``group_by`` aggregation over a batch of columns (not
    a window expression per column: Polars evaluates ``over`` once per column and does not
    share the grouping work) and are broadcast back to the rows by a gather.
    """
    if method == "none" or not columns:
        return frame
    if method not in ("robust", "zscore"):
        raise ValueError(f"unknown normalization method {method!r}: robust, zscore or none")
    group_index = frame.select((pl.col(by).rank("dense") - 1).cast(pl.UInt32)).to_series()
    index = pl.lit(group_index)  # a literal Series: the index column never joins the frame
    columns = list(columns)
    for start in range(0, len(columns), NORMALIZE_BATCH):
        batch = columns[start : start + NORMALIZE_BATCH]
        dtypes = {n: frame.schema[n] for n in batch}
        if method == "zscore":
            stats = _per_group(frame, by, [pl.col(n).mean().alias(f"c:{n}") for n in batch]
                               + [pl.col(n).std().alias(f"s:{n}") for n in batch])
            spreads = {n: stats.get_column(f"s:{n}") for n in batch}
        else:
            stats = _per_group(frame, by, [pl.col(n).median().alias(f"c:{n}") for n in batch]
                               + [pl.col(n).std().alias(f"s:{n}") for n in batch])
            deviations = frame.select(
                pl.col(by),
                *((pl.col(n) - _broadcast(stats.get_column(f"c:{n}"), index)).abs().alias(n) for n in batch),
            )
            mads = _per_group(deviations, by, [(pl.col(n).median() * MAD_TO_STD).alias(n) for n in batch])
            del deviations
            spreads = {}
            for n in batch:
                mad, std = mads.get_column(n), stats.get_column(f"s:{n}")
                spreads[n] = pl.select(pl.when(mad > SPREAD_EPS).then(mad).otherwise(std)).to_series()
        frame = frame.with_columns(
            (
                (pl.col(n) - _broadcast(stats.get_column(f"c:{n}"), index))
                * _broadcast(_inverse_spread(spreads[n]), index)
            )
            .clip(-clip, clip)
            .cast(dtypes[n])
            .alias(n)
            for n in batch
        )
    return frame


@dataclass
class FoldStatistics:
    """Per-column statistics fitted on the training rows of one fold only, then applied to
    every split of that fold (e.g. to standardize features across days, or fill nulls).

    ``center`` / ``scale`` are the mean and std (``method="zscore"``) or the median and
    1.4826 * MAD (``method="robust"``) of each column over the training rows.
    """

    method: str = "zscore"
    center: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, train: pl.DataFrame, columns: Sequence[str], method: str = "zscore") -> FoldStatistics:
        if train.height == 0:
            raise ValueError("cannot fit fold statistics on an empty training set")
        if method == "zscore":
            stats = train.select(
                *(pl.col(n).mean().alias(f"c:{n}") for n in columns),
                *(pl.col(n).std().alias(f"s:{n}") for n in columns),
            )
        elif method == "robust":
            stats = train.select(
                *(pl.col(n).median().alias(f"c:{n}") for n in columns),
                *((MAD_TO_STD * (pl.col(n) - pl.col(n).median()).abs().median()).alias(f"s:{n}") for n in columns),
            )
        else:
            raise ValueError(f"unknown method {method!r}: zscore or robust")
        row = stats.row(0, named=True)
        center = {n: float(row[f"c:{n}"]) if row[f"c:{n}"] is not None else 0.0 for n in columns}
        scale = {n: float(row[f"s:{n}"]) if row[f"s:{n}"] else 1.0 for n in columns}
        return cls(method=method, center=center, scale=scale)

    def transform(self, frame: pl.DataFrame, fill_null: float | None = 0.0, clip: float | None = None) -> pl.DataFrame:
        exprs = []
        for name, center in self.center.items():
            z = (pl.col(name) - center) / self.scale[name]
            if clip is not None:
                z = z.clip(-clip, clip)
            if fill_null is not None:
                z = z.fill_null(fill_null).fill_nan(fill_null)
            exprs.append(z.alias(name))
        return frame.with_columns(exprs)

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "center": self.center, "scale": self.scale}
