"""No look-ahead: every feature family, evaluated over the whole pipeline (validation,
adjustment, market/sector tables, margin as-of join, per-day normalization), gives the same
values at dates <= t whatever happens to the raw data after t."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from kizashi.config import GraphConfig, InputConfig
from kizashi.data.inputs import inputs_from_frames
from kizashi.features.pipeline import compute_features
from kizashi.features.registry import FAMILY_NAMES

CUTOFF_INDEX = 300  # t = the 300th trading day of the 400-day market (past every warm-up)


def _build(quotes: pl.DataFrame, sectors: pl.DataFrame, margin: pl.DataFrame | None) -> tuple[pl.DataFrame, list]:
    inputs = inputs_from_frames(quotes, sectors, margin, InputConfig(), "leakage-test")
    # With graphs (float64 sums, so that values compare to 1e-9): the peers family reads them.
    graph = GraphConfig(dtype="float64")
    return compute_features(inputs.panel, inputs.margin, dtype=pl.Float64(), normalization="robust", graph=graph)


def _perturb_after(quotes: pl.DataFrame, margin: pl.DataFrame, cutoff: dt.date, seed: int):
    """Change every raw value after the cutoff: prices (OHLC scaled together so bars stay
    valid), volume, turnover, split factors, the oracle; margin rows published after it."""
    rng = np.random.default_rng(seed)
    n = quotes.height
    after = (quotes.get_column("date") > cutoff).to_numpy()
    price_factor = np.where(after, np.exp(rng.normal(0.0, 0.3, n)), 1.0)
    volume_factor = np.where(after, np.exp(rng.normal(0.0, 0.7, n)), 1.0)
    split = np.where(after & (rng.random(n) < 0.03), 0.5, 1.0)
    noise = np.where(after, rng.normal(0.0, 0.05, n), 0.0)
    perturbed = quotes.with_columns(
        *(pl.col(c) * price_factor for c in ("open", "high", "low", "close")),
        pl.col("volume") * volume_factor,
        pl.col("turnover_value") * price_factor * volume_factor,
        pl.col("adjustment_factor") * split,
        *(pl.col(c) + noise for c in quotes.columns if c.startswith("oracle_")),
    )
    m_after = (margin.get_column("published_date") > cutoff).to_numpy()
    m_factor = np.where(m_after, np.exp(rng.normal(0.0, 0.5, margin.height)), 1.0)
    perturbed_margin = margin.with_columns(
        pl.col("long_margin_volume") * m_factor, pl.col("short_margin_volume") / m_factor
    )
    return perturbed, perturbed_margin


@pytest.fixture(scope="module")
def scenarios(small_market):
    quotes, sectors, margin = small_market.quotes, small_market.sectors, small_market.margin
    dates = quotes.get_column("date").unique().sort()
    cutoff = dates[CUTOFF_INDEX]
    base, specs = _build(quotes, sectors, margin)
    perturbed_quotes, perturbed_margin = _perturb_after(quotes, margin, cutoff, seed=5)
    perturbed, _ = _build(perturbed_quotes, sectors, perturbed_margin)
    truncated, _ = _build(
        quotes.filter(pl.col("date") <= cutoff), sectors, margin.filter(pl.col("published_date") <= cutoff)
    )
    return {"cutoff": cutoff, "specs": specs, "base": base, "perturbed": perturbed, "truncated": truncated}


def _upto(frame: pl.DataFrame, cutoff: dt.date, columns: list[str]) -> pl.DataFrame:
    return frame.filter(pl.col("date") <= cutoff).sort("code", "date").select("code", "date", *columns)


def _assert_same(left: pl.DataFrame, right: pl.DataFrame, columns: list[str], scenario: str) -> None:
    assert left.select("code", "date").equals(right.select("code", "date")), f"{scenario}: row set differs"
    for name in columns:
        a = left.get_column(name).to_numpy().astype(float)
        b = right.get_column(name).to_numpy().astype(float)
        same_nulls = np.array_equal(np.isnan(a), np.isnan(b))
        close = np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
        assert same_nulls and close, (
            f"{scenario}: feature {name} at dates <= t changed when data after t changed "
            f"(max abs diff {np.nanmax(np.abs(a - b)):.3g})"
        )


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_is_unchanged_by_the_future(scenarios, family):
    cutoff = scenarios["cutoff"]
    columns = [s.name for s in scenarios["specs"] if s.family == family]
    assert columns, f"family {family} built no column on the test market"
    base = _upto(scenarios["base"], cutoff, columns)
    # Not vacuous: every column has values before the cutoff ...
    empty = [c for c in columns if base.get_column(c).null_count() == base.height]
    assert not empty, f"{family}: columns all-null before the cutoff: {empty}"
    _assert_same(base, _upto(scenarios["perturbed"], cutoff, columns), columns, "perturbed")
    _assert_same(base, _upto(scenarios["truncated"], cutoff, columns), columns, "truncated")


def test_perturbation_reaches_features_after_cutoff(scenarios):
    """The perturbation is real: most stock-level features do change after t."""
    cutoff = scenarios["cutoff"]
    names = [s.name for s in scenarios["specs"] if s.family in ("returns", "volume", "margin")]
    after = [f.filter(pl.col("date") > cutoff).sort("code", "date").select(names) for f in (scenarios["base"], scenarios["perturbed"])]
    changed = [n for n in names if not after[0].get_column(n).equals(after[1].get_column(n))]
    assert len(changed) >= 0.9 * len(names), f"only {len(changed)}/{len(names)} features changed after t"


def test_targets_are_the_only_forward_columns(scenarios):
    """Targets at t do change with data after t (they are forward returns) and are named
    target_*; no feature expression reads a target_* or oracle_* column."""
    cutoff = scenarios["cutoff"]
    base = scenarios["base"].filter(pl.col("date") < cutoff).sort("code", "date")
    perturbed = scenarios["perturbed"].filter(pl.col("date") < cutoff).sort("code", "date")
    assert not base.get_column("target_return_20d").equals(perturbed.get_column("target_return_20d"))
    for spec in scenarios["specs"]:
        roots = spec.expr.meta.root_names()
        assert not any(r.startswith(("target_", "oracle_")) for r in roots), f"{spec.name} reads {roots}"
        assert not spec.name.startswith(("target_", "oracle_"))
