"""The market frame: values by hand on a tiny panel, limit flags, and a look-ahead perturbation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from portfolio_cases import day

from kizashi.portfolio import MarketSettings, market_frame

SETTINGS = MarketSettings(
    dollar_volume_window=2, volatility_window=3, beta_window=4, daily_limit=0.1
)


def _panel() -> pl.DataFrame:
    # A trades every session; B has no row on session 3.
    a = {"close": [100, 110, 110, 99, 99, 108.9], "volume": [10, 10, 0, 10, 20, 10]}
    b = {"close": [50, 50, 55, None, 55, 55], "volume": [5, 5, 5, None, 5, 5]}
    rows = []
    for code, values in (("A", a), ("B", b)):
        for i in range(6):
            if values["close"][i] is not None:
                rows.append(
                    {
                        "code": code,
                        "date": day(i),
                        "close": float(values["close"][i]),
                        "volume": float(values["volume"][i]),
                    }
                )
    return pl.DataFrame(rows)


def _column(out: pl.DataFrame, code: str, name: str) -> list:
    return out.filter(pl.col("code") == code).sort("date")[name].to_list()


def test_market_frame_by_hand():
    out = market_frame(
        _panel(), SETTINGS, sectors=pl.DataFrame({"code": ["A"], "sector": ["Tech"]})
    )
    assert out.height == 11  # only the panel's rows
    np.testing.assert_allclose(
        _column(out, "A", "forward_return_1d")[:5], [0.1, 0.0, -0.1, 0.0, 0.1], atol=1e-12
    )
    assert _column(out, "A", "forward_return_1d")[5] is None
    # B: the session after its day 2 is missing -> null; its last row -> null.
    b_forward = _column(out, "B", "forward_return_1d")
    assert b_forward[2] is None and b_forward[4] is None
    np.testing.assert_allclose(
        [b_forward[0], b_forward[1], b_forward[3]], [0.0, 0.1, 0.0], atol=1e-12
    )
    # Dollar volume: mean of close * volume over 2 sessions (at least 1 present).
    np.testing.assert_allclose(
        _column(out, "A", "dollar_volume"), [1000, 1050, 550, 495, 1485, 1534.5]
    )
    assert _column(out, "B", "dollar_volume")[3] == pytest.approx(
        275.0
    )  # session 3 missing: only session 4
    # Volatility over 3 sessions, at least 2 returns: A's returns are [-, .1, 0, -.1, 0, .1].
    vol = _column(out, "A", "volatility")
    assert vol[:2] == [None, None]
    np.testing.assert_allclose(
        vol[2:], [np.std([0.1, 0], ddof=1), 0.1, np.std([0, -0.1, 0], ddof=1), 0.1], atol=1e-12
    )
    # Limits at +-10 %, and no trading without volume (A on session 2).
    assert _column(out, "A", "can_buy") == [True, False, False, True, True, False]
    assert _column(out, "A", "can_sell") == [True, True, False, False, True, True]
    assert _column(out, "B", "can_buy") == [True, True, False, True, True]
    assert _column(out, "A", "sector") == ["Tech"] * 6 and _column(out, "B", "sector") == [None] * 5


def test_beta_against_the_equal_weight_market_by_hand():
    out = market_frame(_panel(), SETTINGS)
    # Sessions 2..5: A's returns [0, -.1, 0, .1]; market (mean of A and B) [.05, -.1, 0, .05].
    r, m = np.array([0.0, -0.1, 0.0, 0.1]), np.array([0.05, -0.1, 0.0, 0.05])
    expected = np.cov(r, m, bias=True)[0, 1] / np.var(m)
    assert _column(out, "A", "beta")[5] == pytest.approx(expected)
    assert _column(out, "A", "beta")[0] is None  # no return yet


def test_limit_flags_from_the_panel_override_the_daily_limit():
    panel = _panel().with_columns(
        upper_limit=pl.when((pl.col("code") == "A") & (pl.col("date") == day(4)))
        .then(pl.lit("1"))
        .otherwise(pl.lit("0")),
        lower_limit=pl.lit("0"),
    )
    out = market_frame(panel, SETTINGS)
    assert _column(out, "A", "can_buy") == [
        True,
        True,
        False,
        True,
        False,
        True,
    ]  # flag on session 4 only (+ no volume on 2)
    assert _column(out, "A", "can_sell") == [True, True, False, True, True, True]


def test_market_columns_at_t_do_not_depend_on_later_rows(small_market):
    panel = small_market.quotes.select("code", "date", "close", "volume", "turnover_value")
    dates = panel["date"].unique().sort()
    cut = dates[200]
    later = pl.col("date") > cut
    rng = np.random.default_rng(0)
    factor = pl.Series(rng.uniform(0.5, 1.5, panel.height))
    perturbed = panel.with_columns(
        close=pl.when(later).then(pl.col("close") * factor).otherwise(pl.col("close")),
        volume=pl.when(later).then(pl.col("volume") * factor).otherwise(pl.col("volume")),
        turnover_value=pl.when(later)
        .then(pl.col("turnover_value") * factor)
        .otherwise(pl.col("turnover_value")),
    ).filter(~(later & (pl.col("code") == panel["code"][0])))
    settings = MarketSettings(daily_limit=0.05)
    base, moved = market_frame(panel, settings), market_frame(perturbed, settings)
    causal = ["date", "code", "dollar_volume", "volatility", "beta", "can_buy", "can_sell"]
    assert (
        base.filter(pl.col("date") <= cut)
        .select(causal)
        .equals(moved.filter(pl.col("date") <= cut).select(causal))
    )
    before = pl.col("date") < cut
    assert base.filter(before)["forward_return_1d"].equals(
        moved.filter(before)["forward_return_1d"]
    )
    assert not base.filter(later).select(causal).equals(moved.filter(later).select(causal))
