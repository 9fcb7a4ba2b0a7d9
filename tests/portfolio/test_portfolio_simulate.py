"""The simulator: the decile strategy reproduces evaluation.backtest, tradability keeps blocked
positions and counts them, input errors are clear."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from portfolio_cases import day, frame, matrix

from kizashi.config import LongShortConfig
from kizashi.errors import KizashiError
from kizashi.evaluation.backtest import long_short_returns, long_short_weights
from kizashi.portfolio import (
    CostSettings,
    DecileStrategy,
    ImpactSettings,
    PortfolioSettings,
    RebalanceEveryStrategy,
    SectorNeutralStrategy,
    TradabilitySettings,
    run_strategies,
    simulate,
)

FREE = TradabilitySettings(enforce=False)


def _predictions(seed: int, n_codes: int = 40, n_days: int = 30) -> pl.DataFrame:
    """Two horizons, tied predictions, missing rows, null / NaN values and a thin day."""
    rng = np.random.default_rng(seed)
    rows = []
    for horizon in (1, 5):
        for i in range(n_days):
            for c in range(
                n_codes if i != 7 else 2
            ):  # day 7 has only 2 names (one with a null return)
                if rng.random() < 0.1:
                    continue
                prediction = float(np.round(rng.normal(), 1))  # many ties
                if rng.random() < 0.02:
                    prediction = float("nan")
                ret = (
                    None
                    if rng.random() < 0.05 or (i == 7 and c == 1)
                    else float(rng.normal(0, 0.02))
                )
                rows.append((day(i), f"C{c:03d}", horizon, prediction, ret))
    schema = {
        "date": pl.Date,
        "code": pl.Utf8,
        "horizon": pl.Int32,
        "prediction": pl.Float64,
        "forward_return_1d": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row").sample(
        fraction=1.0, shuffle=True, seed=seed
    )


@pytest.mark.parametrize(
    "config",
    [
        LongShortConfig(),
        LongShortConfig(quantile=0.29, cost_bps=25.0),
        LongShortConfig(top_k=3, cost_bps=3.0),
    ],
    ids=["decile", "q029", "top3"],
)
def test_decile_reproduces_the_backtest(config):
    predictions = _predictions(seed=4)
    strategy = DecileStrategy(top_k=config.top_k, quantile=config.quantile)
    run = simulate(
        predictions,
        strategy,
        costs=CostSettings(cost_bps=config.cost_bps),
        tradability=FREE,
        by=("horizon",),
    )
    expected_weights = long_short_weights(predictions, config).drop("forward_return_1d")
    assert (
        run.weights.filter(pl.col("weight") != 0)
        .select(expected_weights.columns)
        .equals(expected_weights)
    )
    assert (run.weights["weight"] == run.weights["target_weight"]).all()
    expected = long_short_returns(predictions, config)
    got = run.daily.select(expected.columns)
    assert got.select("horizon", "date", "n_long", "n_short").equals(
        expected.select("horizon", "date", "n_long", "n_short")
    )
    assert day(7) not in got["date"].to_list()  # fewer than 2 tradable names: no portfolio day
    for column in ("gross", "net", "turnover"):
        # the same terms; numpy and polars only add them in a different order
        np.testing.assert_allclose(got[column], expected[column], rtol=0, atol=1e-15)


def test_several_horizons_without_by_is_an_error():
    with pytest.raises(KizashiError, match="several horizons"):
        simulate(_predictions(seed=1), DecileStrategy())


def test_duplicate_rows_are_an_error():
    data = frame({"A": [1.0], "B": [2.0]}, 0.0)
    with pytest.raises(KizashiError, match="share"):
        simulate(pl.concat([data, data.head(1)]), DecileStrategy())


def test_missing_market_columns_are_named():
    data = frame({"A": [1.0], "B": [2.0]}, 0.0)
    with pytest.raises(KizashiError, match="sector"):
        simulate(data, SectorNeutralStrategy())
    with pytest.raises(KizashiError, match="dollar_volume, volatility"):
        simulate(data, DecileStrategy(), costs=CostSettings(impact=ImpactSettings()))


def _blocked_case(can_buy_a_day1: bool) -> pl.DataFrame:
    # Day 0: long D, short A. Day 1: the target is long A, short D; A is at its upper limit.
    scores = {"A": [1, 4], "B": [2, 3], "C": [3, 2], "D": [4, 1]}
    returns = {"A": [0.0, 0.01], "B": [0.0, 0.0], "C": [0.0, 0.0], "D": [0.0, -0.03]}
    can_buy = {code: [True, True] for code in "ABCD"} | {"A": [True, can_buy_a_day1]}
    return frame(scores, returns, can_buy=can_buy)


def test_a_blocked_buy_keeps_the_old_weight_and_is_counted():
    run = simulate(_blocked_case(False), DecileStrategy(quantile=0.25))
    w = matrix(run.weights, list("ABCD"), 2)
    target = matrix(run.weights, list("ABCD"), 2, "target_weight")
    np.testing.assert_array_equal(target[1], [1, 0, 0, -1])
    # A stays short (-1): its buy is refused; D is sold to -1 as wanted. No renormalisation.
    np.testing.assert_array_equal(w[1], [-1, 0, 0, -1])
    day1 = run.daily.row(1, named=True)
    assert (day1["n_blocked_buy"], day1["n_blocked_sell"]) == (1, 0)
    assert day1["turnover"] == pytest.approx(2.0)  # only D traded: 1 -> -1
    assert day1["gross"] == pytest.approx(-1 * 0.01 + -1 * -0.03)
    assert (day1["long_exposure"], day1["short_exposure"]) == (0.0, 2.0)
    assert run.daily["n_blocked_buy"].to_list() == [0, 1]


def test_tradability_off_or_allowed_trades_reach_the_target():
    for run in (
        simulate(_blocked_case(False), DecileStrategy(quantile=0.25), tradability=FREE),
        simulate(_blocked_case(True), DecileStrategy(quantile=0.25)),
    ):
        np.testing.assert_array_equal(matrix(run.weights, list("ABCD"), 2)[1], [1, 0, 0, -1])
        assert run.daily["n_blocked_buy"].sum() == 0


def test_a_blocked_sell_keeps_a_long_position():
    scores = {"A": [1, 4], "B": [2, 3], "C": [3, 2], "D": [4, 1]}
    can_sell = {code: [True, True] for code in "ABCD"} | {
        "D": [True, False]
    }  # D at its lower limit on day 1
    run = simulate(frame(scores, 0.0, can_sell=can_sell), DecileStrategy(quantile=0.25))
    np.testing.assert_array_equal(matrix(run.weights, list("ABCD"), 2)[1], [1, 0, 0, 1])
    assert run.daily["n_blocked_sell"].to_list() == [0, 1]


def test_a_position_without_a_market_row_is_kept_stale_and_earns_nothing():
    # The market has no row for D on day 1 (halted, or after its last row): D cannot be sold.
    scores = {"A": [1, 1, 1], "B": [2, 2, 2], "C": [3, 3, 3], "D": [4, None, None]}
    predictions = frame(scores, 0.0)
    market = frame(scores, {c: [0.01, 0.02, 0.03] for c in "ABCD"}).select(
        "date", "code", "forward_return_1d"
    )
    run = simulate(predictions, DecileStrategy(quantile=0.25), market=market)
    w = matrix(run.weights, list("ABCD"), 3)
    np.testing.assert_array_equal(w, [[-1, 0, 0, 1], [-1, 0, 1, 1], [-1, 0, 1, 1]])
    assert run.daily["n_stale"].to_list() == [0, 1, 1]
    assert run.daily["n_blocked_sell"].to_list() == [0, 1, 1]
    # Day 1 gross: -A + C (+ D earning 0) = -0.02 + 0.02.
    assert run.daily["gross"][1] == pytest.approx(0.0, abs=1e-15)
    # Without tradability D is sold at day 1's target (the backtest's convention).
    free = simulate(predictions, DecileStrategy(quantile=0.25), market=market, tradability=FREE)
    np.testing.assert_array_equal(matrix(free.weights, list("ABCD"), 3)[1], [-1, 0, 1, 0])


def test_market_returns_are_used_for_names_held_without_a_prediction():
    # rebalance_every keeps D on day 1 although D has no prediction; its return comes from the market.
    scores = {"A": [1, 1], "B": [2, 2], "C": [3, 3], "D": [4, None]}
    market = frame(
        {c: [0.0, 0.0] for c in "ABCD"}, {c: [0.0, 0.05 if c == "D" else 0.0] for c in "ABCD"}
    )
    run = simulate(
        frame(scores, 0.0),
        RebalanceEveryStrategy(every=5, quantile=0.25),
        market=market.drop("prediction"),
    )
    assert run.daily["gross"].to_list() == pytest.approx([0.0, 0.05])


def test_run_strategies_stacks_named_strategies_and_groups_books():
    predictions = _predictions(seed=2).filter(pl.col("horizon") == 1)
    settings = PortfolioSettings.model_validate(
        {
            "strategies": {
                "daily": {"kind": "decile"},
                "weekly": {"kind": "rebalance_every", "every": 5},
            }
        }
    )
    folds = predictions.with_columns(fold=(pl.col("date") > day(15)).cast(pl.Int32))
    run = run_strategies(folds, settings.strategies, tradability=FREE, by=("fold",))
    assert run.daily["strategy"].unique(maintain_order=True).to_list() == ["daily", "weekly"]
    first_days = run.daily.group_by("strategy", "fold").agg(
        pl.col("turnover").first(), pl.col("date").min()
    )
    # each fold's book starts from cash: gross exposure 2 traded on its first day
    np.testing.assert_allclose(first_days["turnover"], 2.0)
    alone = simulate(
        folds.filter(pl.col("fold") == 1), settings.strategies["weekly"], tradability=FREE
    )
    together = run.daily.filter((pl.col("strategy") == "weekly") & (pl.col("fold") == 1)).drop(
        "strategy", "fold"
    )
    assert together.equals(alone.daily)
