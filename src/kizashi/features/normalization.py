"""Normalization: per-day cross-sectional (z-score, or robust median/MAD) with winsorizing,
and training-fold statistics for anything fitted across days."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

MAD_TO_STD = 1.4826  # MAD of a normal distribution times this = its standard deviation
SPREAD_EPS = 1e-12


def _scaled(centered: pl.Expr, spread: pl.Expr) -> pl.Expr:
    """centered / spread; 0 where the spread vanishes (all stocks equal); null stays null."""
    return pl.when(spread > SPREAD_EPS).then(centered / spread).otherwise(centered * 0.0)


def cross_sectional_normalize(
    columns: Sequence[str], method: str = "robust", clip: float = 5.0, by: str = "date"
) -> list[pl.Expr]:
    """Expressions normalizing ``columns`` across the stocks of each day, clipped to
    [-clip, clip] (winsorized).

    ``robust``: (x - median) / (1.4826 * MAD); a MAD of zero (more than half the stocks
    share one value) falls back to the standard deviation. ``zscore``: (x - mean) / std.
    A day where every stock has the same value gives 0; null stays null.
    Fastest on a frame sorted by ``by`` (each group is then a contiguous slice).
    """
    if method == "none":
        return []
    if method not in ("robust", "zscore"):
        raise ValueError(f"unknown normalization method {method!r}: robust, zscore or none")
    exprs = []
    for name in columns:
        x = pl.col(name)
        std = x.std().over(by)
        if method == "robust":
            center = x.median().over(by)
            mad = MAD_TO_STD * (x - center).abs().median().over(by)
            spread = pl.when(mad > SPREAD_EPS).then(mad).otherwise(std)
        else:
            center, spread = x.mean().over(by), std
        exprs.append(_scaled(x - center, spread).clip(-clip, clip).alias(name))
    return exprs


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
