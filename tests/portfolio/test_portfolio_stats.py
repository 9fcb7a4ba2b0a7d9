"""Strategy statistics, checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from portfolio_cases import frame

from kizashi.portfolio import (
    CostSettings,
    DecileStrategy,
    TradabilitySettings,
    simulate,
    strategy_stats,
    strategy_table,
)
from kizashi.portfolio.simulate import DAILY_COLUMNS


def _daily(**columns) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    base = {name: [0.0] * n for name in DAILY_COLUMNS} | {"book_size": [None] * n}
    base |= {name: [0] * n for name in DAILY_COLUMNS if name.startswith("n_")}
    base |= {"participation_mean": [None] * n, "participation_max": [None] * n}
    return pl.DataFrame(base | columns)


def test_return_sharpe_ir_and_hit_rate_by_hand():
    net = [0.01, -0.005, 0.02, 0.0]
    universe = [0.005, 0.0, 0.01, -0.01]
    daily = _daily(
        gross=[0.012, -0.003, 0.022, 0.002],
        net=net,
        benchmark_return=universe,
        turnover=[2.0, 1.0, 1.0, 0.0],
    )
    stats = strategy_stats(daily, periods_per_year=252)
    r = np.array(net)
    assert stats["net_annual_return"] == pytest.approx(r.mean() * 252)
    assert stats["net_sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert stats["gross_annual_return"] == pytest.approx(
        np.mean([0.012, -0.003, 0.022, 0.002]) * 252
    )
    active = r - np.array(universe)
    assert stats["information_ratio"] == pytest.approx(
        active.mean() / active.std(ddof=1) * math.sqrt(252)
    )
    assert stats["hit_rate"] == pytest.approx(0.5)  # 0.01 and 0.02 > 0; 0.0 is not a hit
    assert stats["turnover"] == pytest.approx(1.0)
    # equity 1.01 -> 1.00495: a fall of 0.5 % from the peak
    assert stats["max_drawdown"] == pytest.approx(1.01 * 0.995 / 1.01 - 1.0)
    assert stats["capacity"] is None  # no impact model


def test_blocked_share_and_participation_pool_the_days():
    daily = _daily(
        net=[0.01, 0.02],
        n_trades=[4, 2],
        n_unpriced=[1, 0],
        n_blocked_buy=[1, 0],
        n_blocked_sell=[0, 1],
        participation_mean=[0.03, 0.06],
        participation_max=[0.05, 0.07],
    )
    stats = strategy_stats(daily)
    assert stats["blocked_share"] == pytest.approx(2 / 8)  # 2 refused of 6 executed + 2 refused
    assert stats["participation_mean"] == pytest.approx(
        (0.03 * 3 + 0.06 * 2) / 5
    )  # over priced trades
    assert stats["participation_max"] == pytest.approx(0.07)
    assert (stats["n_blocked_buy"], stats["n_blocked_sell"], stats["n_unpriced"]) == (1, 1, 1)


def test_average_holding_period_is_measured_from_position_spells():
    # Day 0, 1: long D, short A; day 2: long C, short A. Spells: D 2 days, A 3 days, C 1 day -> mean 2.
    scores = {"A": [1, 1, 1], "B": [2, 2, 2], "C": [3, 3, 5], "D": [4, 4, 4]}
    run = simulate(
        frame(scores, 0.0),
        DecileStrategy(quantile=0.25),
        tradability=TradabilitySettings(enforce=False),
    )
    stats = strategy_stats(run.daily)
    assert stats["avg_holding_days"] == pytest.approx(2.0)
    assert stats["gross_exposure"] == pytest.approx(2.0)


def test_strategy_table_has_one_row_per_strategy_in_order():
    scores = {"A": [1, 2, 1], "B": [2, 1, 2], "C": [3, 3, 3], "D": [4, 4, 4]}
    returns = {
        "A": [0.01, -0.02, 0.0],
        "B": [0.0, 0.01, 0.02],
        "C": [0.01, 0.0, 0.0],
        "D": [0.03, 0.01, -0.01],
    }
    data = frame(scores, returns)
    parts = []
    for name, bps in (("cheap", 0.0), ("dear", 50.0)):
        run = simulate(data, DecileStrategy(quantile=0.25), costs=CostSettings(cost_bps=bps))
        parts.append(run.daily.with_columns(strategy=pl.lit(name)))
    table = strategy_table(pl.concat(parts))
    assert table["strategy"].to_list() == ["cheap", "dear"]
    cheap, dear = table.row(0, named=True), table.row(1, named=True)
    assert cheap["gross_annual_return"] == pytest.approx(dear["gross_annual_return"])
    # 50 bp on the same turnover: the annual return falls by mean(turnover) * 50 / 1e4 * 252
    assert cheap["net_annual_return"] - dear["net_annual_return"] == pytest.approx(
        cheap["turnover"] * 50 / 1e4 * 252
    )
    assert dear["linear_cost_annual"] == pytest.approx(cheap["turnover"] * 50 / 1e4 * 252)


def test_the_overview_runs_its_fixed_strategies_and_its_decile_row_is_the_backtest():
    """strategy_overview: the fixed set plus TopkDropout sized to the universe; its decile row
    is the evaluation backtest's long-short book (same net Sharpe)."""
    from kizashi.config import LongShortConfig
    from kizashi.evaluation.backtest import long_short_returns, portfolio_stats
    from kizashi.portfolio import strategy_overview

    rng = np.random.default_rng(0)
    days, codes = 120, [f"S{i:02d}" for i in range(40)]
    preds = pl.DataFrame({
        "date": np.repeat(np.arange(days), len(codes)).astype("datetime64[D]").astype("datetime64[ms]"),
        "code": codes * days,
        "horizon": np.ones(days * len(codes), dtype=np.int32),
        "prediction": rng.normal(size=days * len(codes)),
    }).with_columns(pl.col("date").cast(pl.Date))
    preds = preds.with_columns(forward_return_1d=pl.col("prediction") * 0.001 + pl.Series(rng.normal(0, 0.01, preds.height)))
    table = strategy_overview(preds, 1, 10.0)
    assert table.get_column("strategy").to_list()[0] == "daily decile long-short" and table.height == 5
    book = long_short_returns(preds, LongShortConfig(quantile=0.1, cost_bps=10.0), by=("horizon",))
    expected = portfolio_stats(book.get_column("net").to_numpy())["sharpe"]
    assert table.row(0, named=True)["net_sharpe"] == pytest.approx(expected, rel=1e-9)
