"""Causal (forward) price adjustment: continuity across splits and dividends, no look-ahead."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from kizashi.data.panel.adjust import adjust_prices

START = dt.date(2020, 1, 1)


def true_path(n: int, seed: int = 0, start: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0, 0.01, n)))


def bars(code: str, close: np.ndarray, volume: np.ndarray | None = None) -> pl.DataFrame:
    n = len(close)
    volume = np.full(n, 1000.0) if volume is None else volume
    return pl.DataFrame(
        {
            "code": [code] * n,
            "date": [START + dt.timedelta(days=i) for i in range(n)],
            "open": close * 0.999,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": volume,
        }
    )


def split_panel(
    n: int = 20, split_day: int = 10, ratio: float = 2.0
) -> tuple[pl.DataFrame, np.ndarray]:
    """One stock, a ``ratio``-for-1 split on ``split_day`` (raw prices / ratio, volume * ratio)."""
    truth = true_path(n)
    post = np.arange(n) >= split_day
    raw = np.where(post, truth / ratio, truth)
    volume = np.where(post, 1000.0 * ratio, 1000.0)
    return bars("AAA", raw, volume), truth


def returns(df: pl.DataFrame, column: str = "close") -> np.ndarray:
    return df.get_column(column).pct_change().to_numpy()[1:]


@pytest.mark.parametrize("convention", ["adjustment_factor", "split_coefficient"])
def test_split_leaves_returns_and_volume_continuous(convention: str) -> None:
    panel, truth = split_panel()
    on_split = pl.col("date") == START + dt.timedelta(days=10)
    if convention == "adjustment_factor":
        panel = panel.with_columns(
            pl.when(on_split).then(0.5).otherwise(1.0).alias("adjustment_factor")
        )
    else:
        panel = panel.with_columns(
            pl.when(on_split).then(2.0).otherwise(1.0).alias("split_coefficient")
        )
    adjusted, _ = adjust_prices(panel)
    np.testing.assert_allclose(adjusted.get_column("close").to_numpy(), truth, rtol=1e-12)
    np.testing.assert_allclose(returns(adjusted), np.diff(truth) / truth[:-1], rtol=1e-9)
    np.testing.assert_allclose(adjusted.get_column("volume").to_numpy(), 1000.0)
    assert adjusted.get_column("adjustment_multiplier").to_list() == [1.0] * 10 + [2.0] * 10
    # turnover is raw currency traded: unchanged by the split
    np.testing.assert_allclose(
        adjusted.get_column("turnover_value").to_numpy(),
        (panel.get_column("close") * panel.get_column("volume")).to_numpy(),
    )
    assert adjusted.columns == [
        "code",
        "date",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "turnover_value",
        "adjustment_multiplier",
    ]


def test_dividends_give_total_return_continuity() -> None:
    close = np.array([100.0, 101.0, 99.0, 100.0, 100.0])
    dividend = np.array([0.0, 0.0, 2.0, 0.0, 0.0])  # ex-date: price drops by exactly the dividend
    panel = bars("AAA", close).with_columns(
        pl.lit(1.0).alias("split_coefficient"), pl.Series("dividend_amount", dividend)
    )
    adjusted, _ = adjust_prices(panel)
    ret = returns(adjusted)
    assert ret[1] == pytest.approx(0.0, abs=1e-12)  # 101 -> 99 with a 2.0 dividend: no loss
    assert ret[0] == pytest.approx(0.01) and ret[2] == pytest.approx(1 / 99)
    # volume is not touched by dividends
    np.testing.assert_allclose(adjusted.get_column("volume").to_numpy(), 1000.0)


def test_split_and_dividend_on_the_same_day() -> None:
    close = np.array(
        [100.0, 100.0, 49.0, 49.0]
    )  # 2-for-1 split and a 1.0 dividend (post-split units)
    panel = bars("AAA", close).with_columns(
        pl.Series("split_coefficient", [1.0, 1.0, 2.0, 1.0]),
        pl.Series("dividend_amount", [0.0, 0.0, 1.0, 0.0]),
        pl.Series("volume", [1000.0, 1000.0, 2000.0, 2000.0]),
    )
    adjusted, _ = adjust_prices(panel)
    assert returns(adjusted)[1] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(adjusted.get_column("volume").to_numpy(), 1000.0)


def test_events_on_a_first_row_are_ignored_and_codes_are_independent() -> None:
    a, _ = split_panel()
    b = bars("BBB", true_path(20, seed=1))
    panel = pl.concat([a, b]).with_columns(
        pl.when((pl.col("code") == "AAA") & (pl.col("date") == START + dt.timedelta(days=10)))
        .then(2.0)
        .when((pl.col("code") == "BBB") & (pl.col("date") == START))
        .then(3.0)  # before the data starts: nothing to adjust against
        .otherwise(1.0)
        .alias("split_coefficient")
    )
    adjusted, issues = adjust_prices(panel)
    bbb = adjusted.filter(pl.col("code") == "BBB")
    assert bbb.get_column("adjustment_multiplier").to_list() == [1.0] * 20
    assert bbb.get_column("close").equals(b.get_column("close"))
    method = next(i for i in issues if i.rule == "adjustment_method")
    assert "1 event(s) on a stock's first row ignored" in method.message


def test_no_adjustment_columns_leaves_prices_unchanged_and_keeps_oracles() -> None:
    panel = bars("AAA", true_path(5)).with_columns(
        pl.lit(0.3).alias("oracle_alpha"),
        pl.lit(7.0).alias("turnover_value"),
        pl.lit("x").alias("note"),
    )
    adjusted, issues = adjust_prices(panel)
    for column in ("open", "high", "low", "close", "volume"):
        assert adjusted.get_column(column).equals(panel.get_column(column))
    assert adjusted.get_column("adjustment_multiplier").to_list() == [1.0] * 5
    assert adjusted.get_column("oracle_alpha").to_list() == [0.3] * 5
    assert adjusted.get_column("turnover_value").to_list() == [7.0] * 5  # given turnover kept
    assert "note" not in adjusted.columns
    assert any(i.rule == "columns_not_carried" and "note" in i.message for i in issues)


def random_panel(seed: int, n_codes: int = 3, n_days: int = 60) -> pl.DataFrame:
    """Several stocks with random splits, J-Quants factors, dividends and adjusted_close."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_codes):
        close = true_path(n_days, seed=seed * 10 + k, start=50.0 + 10 * k)
        split = np.where(rng.random(n_days) < 0.08, rng.choice([2.0, 3.0, 0.5], n_days), 1.0)
        dividend = np.where(rng.random(n_days) < 0.1, rng.uniform(0.1, 1.0, n_days), 0.0)
        frame = bars(f"C{k}", close, rng.uniform(500, 1500, n_days)).with_columns(
            pl.Series("split_coefficient", split),
            pl.Series("adjustment_factor", 1.0 / split),
            pl.Series("dividend_amount", dividend),
            pl.Series("adjusted_close", close * rng.uniform(0.5, 1.5, n_days)),
        )
        frames.append(frame)
    return pl.concat(frames)


def perturb_after(panel: pl.DataFrame, cutoff: dt.date, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    after = pl.col("date") > cutoff
    noise = {
        c: pl.Series(rng.uniform(0.5, 2.0, panel.height))
        for c in panel.columns
        if panel.schema[c] == pl.Float64
    }
    return panel.with_columns(
        [pl.when(after).then(pl.col(c) * noise[c]).otherwise(pl.col(c)).alias(c) for c in noise]
    )


@pytest.mark.parametrize(
    "keep",
    [
        ("adjustment_factor",),
        ("split_coefficient", "dividend_amount"),
        ("split_coefficient", "dividend_amount", "adjusted_close"),
        ("adjusted_close",),
    ],
)
def test_adjusted_values_at_t_do_not_depend_on_data_after_t(keep: tuple[str, ...]) -> None:
    drop = {"adjustment_factor", "split_coefficient", "dividend_amount", "adjusted_close"} - set(
        keep
    )
    panel = random_panel(seed=5).drop(*drop)
    base, _ = adjust_prices(panel)
    for offset in (0, 17, 40):
        cutoff = START + dt.timedelta(days=offset)
        changed, _ = adjust_prices(perturb_after(panel, cutoff, seed=offset))
        before = pl.col("date") <= cutoff
        assert changed.filter(before).equals(base.filter(before)), (
            f"look-ahead with {keep} at {cutoff}"
        )
        assert not changed.filter(~before).equals(base.filter(~before))


def test_adjusted_close_path_matches_the_split_path() -> None:
    panel = random_panel(seed=11).drop("adjustment_factor", "adjusted_close")
    by_split, _ = adjust_prices(panel)
    # a vendor-style back-adjusted series consistent with the splits and dividends: C_t / C_T
    multiplier = by_split.get_column("adjustment_multiplier")
    last = by_split.select(pl.col("adjustment_multiplier").last().over("code")).to_series()
    consistent = panel.with_columns((pl.col("close") * multiplier / last).alias("adjusted_close"))
    by_adjusted_close, _ = adjust_prices(consistent.drop("split_coefficient", "dividend_amount"))
    for column in ("open", "high", "low", "close", "adjustment_multiplier"):
        np.testing.assert_allclose(
            by_adjusted_close.get_column(column).to_numpy(),
            by_split.get_column(column).to_numpy(),
            rtol=1e-10,
        )
    # both present: factors used, and the consistency check finds nothing, then one bad day
    _, issues = adjust_prices(consistent)
    check = next(i for i in issues if i.rule == "adjusted_close_mismatch")
    assert check.count == 0
    broken = consistent.with_columns(
        pl.when((pl.col("code") == "C1") & (pl.col("date") == START + dt.timedelta(days=30)))
        .then(pl.col("adjusted_close") * 1.02)
        .otherwise(pl.col("adjusted_close"))
        .alias("adjusted_close")
    )
    _, issues = adjust_prices(broken)
    check = next(i for i in issues if i.rule == "adjusted_close_mismatch")
    assert check.count == 2 and "C1" in check.examples  # the day and the day after


def test_unsorted_input_is_sorted_first() -> None:
    panel, truth = split_panel()
    panel = panel.with_columns(
        pl.when(pl.col("date") == START + dt.timedelta(days=10))
        .then(2.0)
        .otherwise(1.0)
        .alias("split_coefficient")
    )
    adjusted, issues = adjust_prices(panel.reverse())
    np.testing.assert_allclose(adjusted.get_column("close").to_numpy(), truth, rtol=1e-12)
    assert any(i.rule == "unsorted" for i in issues)
