"""The settings models: strategy blocks by ``kind``, defaults, clear validation errors."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from kizashi.portfolio import (
    HysteresisStrategy,
    PortfolioSettings,
    RebalanceEveryStrategy,
    TopkDropoutStrategy,
)

YAML = """
strategies:
  daily: {kind: decile}
  weekly: {kind: rebalance_every, every: 5}
  qlib: {kind: topk_dropout, top_k: 30, n_drop: 3}
costs:
  cost_bps: 5
  impact: {book_size: 5.0e7}
"""


def test_strategy_blocks_are_parsed_by_kind():
    settings = PortfolioSettings.model_validate(yaml.safe_load(YAML))
    assert list(settings.strategies) == ["daily", "weekly", "qlib"]
    assert isinstance(settings.strategies["weekly"], RebalanceEveryStrategy)
    assert (
        settings.strategies["weekly"].every == 5 and settings.strategies["weekly"].quantile == 0.1
    )
    assert settings.strategies["qlib"] == TopkDropoutStrategy(top_k=30, n_drop=3)
    assert settings.costs.impact is not None and settings.costs.impact.book_size == 5e7
    assert settings.tradability.enforce is True and settings.selection_metric == "net_sharpe"


def test_the_default_is_the_standard_candidate_set():
    import polars as pl

    from kizashi.portfolio.walk_forward import candidate_strategies

    settings = PortfolioSettings()
    assert settings.strategies is None
    assert settings.costs.cost_bps == 10.0 and settings.costs.impact is None
    # null = the overview set, TopkDropout sized to the median daily universe (here 40 names)
    test = pl.DataFrame({"date": [1] * 40 + [2] * 40, "code": [str(i) for i in range(40)] * 2})
    kinds = [s.kind for s in candidate_strategies(settings, test).values()]
    assert kinds == ["decile", "rebalance_every", "hysteresis", "ema", "topk_dropout"]
    assert candidate_strategies(settings, test)["TopkDropout (10% held, 2% replaced a day)"].top_k == 4


@pytest.mark.parametrize(
    "block, message",
    [
        ({"kind": "momentum"}, "kind"),
        ({"kind": "decile", "every": 5}, "every"),
        ({"kind": "rebalance_every", "every": 0}, "every"),
        ({"kind": "hysteresis", "enter_quantile": 0.2, "exit_quantile": 0.1}, "exit_quantile"),
    ],
)
def test_bad_blocks_are_rejected_with_the_key(block, message):
    with pytest.raises(ValidationError, match=message):
        PortfolioSettings.model_validate({"strategies": {"x": block}})


def test_no_strategy_is_an_error():
    with pytest.raises(ValidationError, match="at least one"):
        PortfolioSettings(strategies={})


def test_hysteresis_defaults_enter_before_exit():
    h = HysteresisStrategy()
    assert h.enter_quantile < h.exit_quantile
