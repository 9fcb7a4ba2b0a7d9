"""Linear cost, square-root impact (by hand, and its sqrt(book) scaling) and capacity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from portfolio_cases import random_market

from kizashi.portfolio import (
    CostSettings,
    DecileStrategy,
    ImpactSettings,
    TradabilitySettings,
    capacity,
    impact_cost,
    linear_cost,
    simulate,
    strategy_stats,
)


def test_linear_cost_is_bps_per_unit_of_turnover():
    np.testing.assert_allclose(linear_cost(np.array([2.0, 0.5]), 10.0), [0.002, 0.0005])


def test_impact_cost_by_hand():
    # One trade of half the book: x = 0.5, B = 1e6, ADV = 1e6 -> participation 0.5;
    # cost = Y * sigma * x * sqrt(p) = 2 * 0.02 * 0.5 * sqrt(0.5). The untraded name costs nothing,
    # the traded name without a dollar volume is unpriced.
    trades = np.array([[0.5, 0.0, 0.25]])
    adv = np.array([[1e6, 1e6, np.nan]])
    result = impact_cost(trades, adv, 0.02, book_size=1e6, coefficient=2.0)
    assert result.cost[0] == pytest.approx(2 * 0.02 * 0.5 * math.sqrt(0.5))
    assert result.participation[0, 0] == pytest.approx(0.5)
    assert np.isnan(result.participation[0, 1:]).all()
    assert result.unpriced.tolist() == [[False, False, True]]


def test_impact_cost_scales_with_the_square_root_of_the_book():
    data = random_market(n_codes=20, n_days=20, seed=2)
    runs = {
        book: simulate(
            data,
            DecileStrategy(quantile=0.2),
            market=data,
            costs=CostSettings(impact=ImpactSettings(book_size=book)),
        )
        for book in (1e6, 4e6)
    }
    small, large = runs[1e6].daily, runs[4e6].daily
    assert small["impact_cost"].sum() > 0
    np.testing.assert_allclose(large["impact_cost"], 2.0 * small["impact_cost"], rtol=1e-12)
    np.testing.assert_allclose(
        large["participation_max"], 4.0 * small["participation_max"], rtol=1e-12
    )
    # nothing else depends on the book
    np.testing.assert_array_equal(large["gross"], small["gross"])
    np.testing.assert_allclose(
        large["net"], large["gross"] - large["linear_cost"] - large["impact_cost"], atol=1e-15
    )


def test_capacity_closed_form():
    # impact 0.0005 at 1e6 -> at B: 0.0005 * sqrt(B / 1e6) = 0.002 / 2 -> B = 4e6.
    assert capacity(0.002, 0.0005, 1e6) == pytest.approx(4e6)
    assert capacity(-0.001, 0.0005, 1e6) is None
    assert capacity(0.001, 0.0, 1e6) is None


def test_capacity_solves_its_equation_on_a_simulated_book():
    data = random_market(n_codes=20, n_days=40, seed=9)
    # Shift returns so that the book earns a positive gross return.
    data = data.with_columns(
        (data["forward_return_1d"] + 0.01 * data["prediction"]).alias("forward_return_1d")
    )
    free = TradabilitySettings(enforce=False)
    base = simulate(
        data,
        DecileStrategy(quantile=0.2),
        costs=CostSettings(impact=ImpactSettings(book_size=1e6)),
        tradability=free,
    )
    stats = strategy_stats(base.daily)
    assert stats["gross_annual_return"] > 0
    book = stats["capacity"]
    at_capacity = simulate(
        data,
        DecileStrategy(quantile=0.2),
        costs=CostSettings(impact=ImpactSettings(book_size=book)),
        tradability=free,
    )
    mean_impact = at_capacity.daily["impact_cost"].mean()
    mean_gross = at_capacity.daily["gross"].mean()
    assert mean_impact == pytest.approx(0.5 * mean_gross, rel=1e-9)
