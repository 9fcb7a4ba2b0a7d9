"""Small hand-built frames for the portfolio tests (imported by the test modules of this folder)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

START = dt.date(2024, 1, 1)


def day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def frame(
    scores: dict[str, list[float | None]],
    returns: dict[str, list[float | None]] | float = 0.0,
    **columns: dict[str, list[object]],
) -> pl.DataFrame:
    """Predictions (+ market columns) from per-code lists over days ``0..T-1``.

    A ``None`` score means the code has no row that day; a ``None`` return a null return.
    ``columns`` add per-code lists (e.g. ``sector={"A": ["X", "X"]}``).
    """
    rows = []
    for code, values in scores.items():
        for i, score in enumerate(values):
            if score is None:
                continue
            ret = returns if isinstance(returns, float) else returns[code][i]
            row = {
                "date": day(i),
                "code": code,
                "horizon": 1,
                "prediction": float(score),
                "forward_return_1d": ret,
            }
            row |= {name: per_code[code][i] for name, per_code in columns.items()}
            rows.append(row)
    out = pl.DataFrame(rows).with_columns(
        pl.col("horizon").cast(pl.Int32), pl.col("forward_return_1d").cast(pl.Float64)
    )
    return out.sort("date", "code")


def matrix(
    weights: pl.DataFrame, codes: list[str], n_days: int, column: str = "weight"
) -> np.ndarray:
    """``[n_days, len(codes)]`` weights from a weights frame (0 where absent)."""
    out = np.zeros((n_days, len(codes)))
    for row in weights.iter_rows(named=True):
        out[(row["date"] - START).days, codes.index(row["code"])] = row[column]
    return out


def random_market(n_codes: int = 12, n_days: int = 30, seed: int = 0) -> pl.DataFrame:
    """Random predictions + market columns (sectors, betas, flags, dollar volume, volatility)
    with a few missing rows and null returns."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_codes):
        for i in range(n_days):
            if rng.random() < 0.05:
                continue
            rows.append(
                {
                    "date": day(i),
                    "code": f"S{c:02d}",
                    "horizon": 1,
                    "prediction": float(rng.normal()),
                    "forward_return_1d": None
                    if rng.random() < 0.03
                    else float(rng.normal(0.001, 0.02)),
                    "sector": ["X", "Y", "Z"][c % 3],
                    "beta": float(rng.uniform(0.5, 1.5)),
                    "dollar_volume": float(rng.uniform(1e6, 1e7)),
                    "volatility": float(rng.uniform(0.01, 0.03)),
                    "can_buy": bool(rng.random() > 0.1),
                    "can_sell": bool(rng.random() > 0.1),
                }
            )
    return pl.DataFrame(rows).with_columns(pl.col("horizon").cast(pl.Int32)).sort("date", "code")
