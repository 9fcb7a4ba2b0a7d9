"""Selection on validation slices, with test figures reported and marked as not used."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from portfolio_cases import day, random_market

from kizashi.errors import KizashiError
from kizashi.portfolio import (
    DecileStrategy,
    RebalanceEveryStrategy,
    TradabilitySettings,
    run_strategies,
    select_by_validation,
    strategy_stats,
)
from kizashi.portfolio.simulate import DAILY_COLUMNS


def _candidate(name: str, net: list[float]) -> pl.DataFrame:
    n = len(net)
    columns = {c: [0.0] * n for c in DAILY_COLUMNS} | {
        c: [0] * n for c in DAILY_COLUMNS if c.startswith("n_")
    }
    columns |= {
        "participation_mean": [None] * n,
        "participation_max": [None] * n,
        "book_size": [None] * n,
    }
    columns |= {"net": net, "gross": net}
    return pl.DataFrame({"strategy": [name] * n, "date": [day(i) for i in range(n)]} | columns)


def test_the_choice_is_made_on_validation_and_test_figures_are_marked():
    # "steady" wins on validation, "lucky" on test: steady must be chosen.
    validation = pl.concat(
        [
            _candidate("lucky", [0.01, -0.01, 0.012, -0.008]),
            _candidate("steady", [0.01, 0.008, 0.012, 0.009]),
        ]
    )
    test = pl.concat(
        [
            _candidate("lucky", [0.03, 0.031, 0.029, 0.03]),
            _candidate("steady", [0.001, -0.002, 0.0, 0.001]),
        ]
    )
    selection = select_by_validation(validation, test)
    assert selection.selected == "steady" and selection.metric == "net_sharpe"
    table = selection.table
    assert table.select("strategy", "part").rows() == [
        ("lucky", "validation"),
        ("lucky", "test"),
        ("steady", "validation"),
        ("steady", "test"),
    ]
    assert table["used_for_selection"].to_list() == [True, False, True, False]
    assert table["selected"].to_list() == [False, False, True, True]
    assert set(table.filter(pl.col("part") == "test")["note"]) == {
        "test period: not used for selection"
    }
    # the test figures are there, and they are the test frame's
    lucky_test = table.filter((pl.col("strategy") == "lucky") & (pl.col("part") == "test")).row(
        0, named=True
    )
    assert lucky_test["net_sharpe"] == pytest.approx(
        strategy_stats(test.filter(pl.col("strategy") == "lucky"))["net_sharpe"]
    )


def test_the_test_frame_does_not_move_the_choice():
    validation = pl.concat(
        [_candidate("a", [0.01, 0.0, 0.02]), _candidate("b", [0.0, 0.001, -0.001])]
    )
    for test_net in ([0.05, 0.04, 0.06], [-0.05, -0.04, -0.06]):
        test = pl.concat([_candidate("a", test_net), _candidate("b", [-x for x in test_net])])
        assert select_by_validation(validation, test).selected == "a"


def test_other_metrics_and_unselectable_candidates():
    validation = pl.concat(
        [_candidate("flat", [0.0, 0.0, 0.0]), _candidate("up", [0.001, 0.002, 0.0])]
    )
    test = validation
    assert select_by_validation(validation, test).selected == "up"  # "flat" has no Sharpe
    assert select_by_validation(validation, test, metric="net_annual_return").selected == "up"
    with pytest.raises(KizashiError, match="no candidate"):
        select_by_validation(_candidate("flat", [0.0, 0.0]), _candidate("flat", [0.0, 0.0]))


def test_validation_and_test_must_name_the_same_candidates():
    with pytest.raises(KizashiError, match="only in validation"):
        select_by_validation(_candidate("a", [0.01, 0.02]), _candidate("b", [0.01, 0.02]))


def test_per_fold_validation_books_feed_the_selection():
    # Validation slices of two folds share dates; each fold is its own book (by=("fold",)).
    data = random_market(n_codes=20, n_days=30, seed=4)
    validation = pl.concat(
        [
            data.filter(pl.col("date") <= day(14)).with_columns(fold=pl.lit(0, pl.Int32)),
            data.filter((pl.col("date") >= day(8)) & (pl.col("date") <= day(20))).with_columns(
                fold=pl.lit(1, pl.Int32)
            ),
        ]
    )
    test = data.filter(pl.col("date") > day(20))
    candidates = {
        "daily": DecileStrategy(quantile=0.2),
        "weekly": RebalanceEveryStrategy(every=5, quantile=0.2),
    }
    free = TradabilitySettings(enforce=False)
    val_daily = run_strategies(validation, candidates, tradability=free, by=("fold",)).daily
    test_daily = run_strategies(test, candidates, tradability=free).daily
    selection = select_by_validation(val_daily, test_daily)
    sharpe = {
        name: strategy_stats(val_daily.filter(pl.col("strategy") == name))["net_sharpe"]
        for name in candidates
    }
    assert selection.selected == max(sharpe, key=lambda k: sharpe[k])
    n_val_days = selection.table.filter(pl.col("part") == "validation")["n_days"].to_list()
    assert n_val_days == [val_daily.filter(pl.col("strategy") == n).height for n in candidates]
    assert np.all(np.array(n_val_days) == 15 + 13)  # both folds' days are pooled
