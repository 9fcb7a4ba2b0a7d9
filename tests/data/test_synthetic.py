"""Tests for kizashi.data.synthetic (daily): the deterministic synthetic market and its planted signal."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import polars as pl
import pytest

from kizashi.config import SyntheticMarketConfig
from kizashi.data.schema import MARGIN_DTYPES, PANEL_DTYPES
from kizashi.data.synthetic import (
    ORACLE_COLUMNS,
    QUOTE_COLUMNS,
    SyntheticMarket,
    default_market,
    generate_market,
)
from kizashi.errors import ConfigError

# Band for the oracle's mean daily RankIC vs the realized next-day return (measured ~0.11).
RANK_IC_BAND = (0.08, 0.15)


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return default_market()


@pytest.fixture(scope="module")
def split_market() -> SyntheticMarket:
    return generate_market(n_stocks=200, n_days=500, split_probability=0.5, seed=11)


def _with_returns(quotes: pl.DataFrame) -> pl.DataFrame:
    """Adjusted close, its log return into the day and the realized return to the next day."""
    adjusted = pl.col("close") / pl.col("adjustment_factor").cum_prod().over("code")
    return (
        quotes.with_columns(adjusted_close=adjusted)
        .with_columns(
            ret_1d=pl.col("adjusted_close").log().diff().over("code"),
            raw_ret_1d=pl.col("close").log().diff().over("code"),
            next_ret_1d=(pl.col("adjusted_close").shift(-1) / pl.col("adjusted_close") - 1.0).over(
                "code"
            ),
        )
    )


def _mean_rank_ic(frame: pl.DataFrame, column: str, target: str = "next_ret_1d") -> float:
    daily = (
        frame.drop_nulls(target)
        .group_by("date")
        .agg(pl.corr(column, target, method="spearman").alias("ic"))["ic"]
        .drop_nulls()
        .drop_nans()
    )
    assert daily.len() > 100
    return float(daily.mean())


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_frames_and_other_seed_differs() -> None:
    first = generate_market(n_stocks=40, n_days=120, seed=3)
    second = generate_market(n_stocks=40, n_days=120, seed=3)
    assert first.quotes.equals(second.quotes)
    assert first.sectors.equals(second.sectors)
    assert first.peer_groups.equals(second.peer_groups)
    assert first.margin is not None and second.margin is not None
    assert first.margin.equals(second.margin)

    other = generate_market(n_stocks=40, n_days=120, seed=4)
    assert not other.quotes.equals(first.quotes)
    joined = first.quotes.join(other.quotes, on=["code", "date"], suffix="_other")
    assert joined.height > 0
    assert (joined["close"] != joined["close_other"]).mean() > 0.99


def test_default_market_is_the_default_config_and_a_fresh_copy(market: SyntheticMarket) -> None:
    again = generate_market(SyntheticMarketConfig())
    assert market.quotes.equals(again.quotes)
    other_copy = default_market()
    assert other_copy is not market and other_copy.quotes is not market.quotes
    assert other_copy.quotes.equals(market.quotes)


# ----------------------------------------------------------------------------- schema


def test_schema_dtypes_and_order(market: SyntheticMarket) -> None:
    cfg = SyntheticMarketConfig()
    quotes = market.quotes
    assert quotes.columns == list(QUOTE_COLUMNS)
    for name, dtype in quotes.schema.items():
        expected = PANEL_DTYPES.get(name, pl.Float64())
        assert dtype == expected, name
    assert all(c.startswith("oracle_") for c in ORACLE_COLUMNS)
    assert quotes.null_count().sum_horizontal().item() == 0
    assert quotes.select(pl.exclude("code", "date").is_nan().any()).sum_horizontal().item() == 0
    assert quotes.equals(quotes.sort("code", "date"))

    codes = quotes["code"].unique().sort()
    assert codes.len() == cfg.n_stocks
    assert codes[0] == "S0001" and codes[-1] == f"S{cfg.n_stocks:04d}"

    assert market.sectors.schema == pl.Schema(
        {"code": pl.Utf8, "sector": pl.Utf8, "sector_2": pl.Utf8}
    )
    assert market.sectors.height == cfg.n_stocks
    assert market.sectors["sector"].n_unique() == cfg.n_sectors
    assert market.sectors["sector"].str.starts_with("Sector_").all()
    # sector_2 is coarser: each sector maps to exactly one group, and there are fewer groups.
    per_sector = market.sectors.group_by("sector").agg(pl.col("sector_2").n_unique())
    assert (per_sector["sector_2"] == 1).all()
    assert 1 < market.sectors["sector_2"].n_unique() < cfg.n_sectors

    assert market.peer_groups.schema == pl.Schema({"code": pl.Utf8, "peer_group": pl.Int32})
    assert market.peer_groups["peer_group"].n_unique() == cfg.n_peer_groups

    assert market.margin is not None
    assert dict(market.margin.schema) == MARGIN_DTYPES


def test_trading_calendar_is_weekdays_minus_a_few_holidays(market: SyntheticMarket) -> None:
    cfg = SyntheticMarketConfig()
    dates = market.quotes["date"].unique().sort()
    assert dates.len() == cfg.n_days
    assert dates[0] == cfg.start_date
    assert (dates.dt.weekday() <= 5).all()  # Monday=1 ... Friday=5
    n_weekdays = int(np.busday_count(dates[0], dates[-1] + dt.timedelta(days=1)))
    holidays_per_year = (n_weekdays - cfg.n_days) / (n_weekdays / 261)
    assert 4 <= holidays_per_year <= 12


def test_no_duplicate_code_date(market: SyntheticMarket) -> None:
    assert not market.quotes.select(pl.struct("code", "date").is_duplicated().any()).item()


# ----------------------------------------------------------------------------- prices


def test_ohlc_consistent_positive_and_realistic(market: SyntheticMarket) -> None:
    q = market.quotes
    checks = q.select(
        positive=(pl.min_horizontal("open", "high", "low", "close") > 0).all(),
        high_ok=(pl.col("high") >= pl.max_horizontal("open", "close")).all(),
        low_ok=(pl.col("low") <= pl.min_horizontal("open", "close")).all(),
    )
    assert checks.row(0) == (True, True, True)
    assert (q["volume"] > 0).all()
    # turnover = volume x a typical raw price of the day
    ratio = q["turnover_value"] / (q["volume"] * q["close"])
    assert ratio.min() > 0.8 and ratio.max() < 1.25
    # realistic price levels and daily volatility
    assert q["close"].quantile(0.01) > 5 and q["close"].quantile(0.99) < 10_000
    vol = _with_returns(q).group_by("code").agg(pl.col("ret_1d").std())["ret_1d"]
    assert 0.01 < vol.median() < 0.03
    # open = previous close x exp(gap): the overnight gap is a modest part of the move
    overnight = pl.col("open") / pl.col("close").shift(1) / pl.col("adjustment_factor")
    gap = q.select(overnight.log().over("code").alias("gap"))["gap"].drop_nulls()
    assert 0.002 < gap.std() < 0.02


def test_fat_tails_and_volatility_clustering(market: SyntheticMarket) -> None:
    r = _with_returns(market.quotes).drop_nulls("ret_1d")
    standardized = r.with_columns(
        z=((pl.col("ret_1d") - pl.col("ret_1d").mean()) / pl.col("ret_1d").std()).over("code")
    )["z"]
    excess_kurtosis = float((standardized**4).mean()) - 3.0
    assert excess_kurtosis > 1.0
    # |r| is autocorrelated (GARCH), r itself nearly not
    acf = r.with_columns(
        abs_r=pl.col("ret_1d").abs(), abs_prev=pl.col("ret_1d").abs().shift(1).over("code")
    ).drop_nulls("abs_prev")
    assert acf.select(pl.corr("abs_r", "abs_prev")).item() > 0.05


def test_volume_rises_with_absolute_return(market: SyntheticMarket) -> None:
    r = _with_returns(market.quotes).drop_nulls("ret_1d")
    per_stock = r.group_by("code").agg(
        pl.corr(pl.col("volume").log(), pl.col("ret_1d").abs()).alias("c")
    )["c"]
    assert per_stock.median() > 0.2


# ----------------------------------------------------------------------------- listings


def test_late_listings_and_delistings(market: SyntheticMarket) -> None:
    cfg = SyntheticMarketConfig()
    first_day = market.quotes["date"].min()
    last_day = market.quotes["date"].max()
    spans = market.quotes.group_by("code").agg(
        pl.col("date").min().alias("first"), pl.col("date").max().alias("last"), pl.len()
    )
    late = spans.filter(pl.col("first") > first_day)
    assert late.height == round(cfg.late_listing_fraction * cfg.n_stocks)
    assert late["first"].n_unique() > late.height // 2  # listing days are spread out
    assert spans.filter(pl.col("last") < last_day).height > 0  # a few delist
    # every listed stock trades on every calendar day between its first and last row
    n_calendar = market.quotes.select("date").unique().sort("date").with_row_index("i")
    indexed = spans.join(n_calendar.rename({"date": "first", "i": "i0"}), on="first").join(
        n_calendar.rename({"date": "last", "i": "i1"}), on="last"
    )
    assert (indexed["len"] == indexed["i1"] - indexed["i0"] + 1).all()


# ----------------------------------------------------------------------------- splits


def test_splits_follow_jquants_convention(split_market: SyntheticMarket) -> None:
    r = _with_returns(split_market.quotes)
    factors = r["adjustment_factor"]
    on_split = r.filter(pl.col("adjustment_factor") != 1.0)
    assert on_split.height >= 50
    assert set(factors.unique().to_list()) <= {1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 10}
    # raw prices drop by the ratio on the ex-date; adjusted returns stay continuous
    raw_jump = on_split["raw_ret_1d"] - on_split["adjustment_factor"].log()
    assert raw_jump.abs().max() < 0.35
    assert (on_split["raw_ret_1d"] < -0.3).mean() > 0.9
    assert on_split["ret_1d"].abs().max() < 0.35
    assert on_split["ret_1d"].std() < 2 * r["ret_1d"].std()
    # volume scales up by the ratio around the split (median of after/before)
    volume_jump = (
        r.with_columns(
            v_before=pl.col("volume").rolling_median(5).shift(1).over("code"),
            v_after=pl.col("volume").reverse().rolling_median(5).reverse().over("code"),
        )
        .filter(pl.col("adjustment_factor") != 1.0)
        .drop_nulls()
        .select((pl.col("v_after") / pl.col("v_before") * pl.col("adjustment_factor")).log())
        .to_series()
    )
    assert abs(volume_jump.median()) < 0.4


def test_no_splits_when_probability_is_zero() -> None:
    m = generate_market(n_stocks=50, n_days=200, split_probability=0.0, with_margin=False)
    assert (m.quotes["adjustment_factor"] == 1.0).all()
    assert m.margin is None


# ----------------------------------------------------------------------------- planted signal


def test_oracle_rank_ic_in_band_and_components(market: SyntheticMarket) -> None:
    r = _with_returns(market.quotes)
    total = sum(r[c] for c in ORACLE_COLUMNS[1:])
    assert np.allclose(r["oracle_return_1d"].to_numpy(), total.to_numpy(), atol=1e-12)

    ic = _mean_rank_ic(r, "oracle_return_1d")
    assert RANK_IC_BAND[0] <= ic <= RANK_IC_BAND[1], ic
    for component in ORACLE_COLUMNS[1:]:
        assert _mean_rank_ic(r, component) > 0.02, component

    variance = r.group_by("date").agg(pl.col(ORACLE_COLUMNS[1:]).var()).mean()
    own, sector, peer = (variance[c].item() for c in ORACLE_COLUMNS[1:])
    assert (own + sector) / (own + sector + peer) > 0.5


def test_signal_is_planted_not_an_artifact(market: SyntheticMarket) -> None:
    """With signal_strength=0 the same shocks give returns the oracle cannot predict."""
    unplanted = generate_market(signal_strength=0.0)
    assert (unplanted.quotes.select(pl.col(ORACLE_COLUMNS).abs().max()).row(0)) == (0.0,) * 4
    realized = _with_returns(unplanted.quotes).select("code", "date", "next_ret_1d")
    joined = market.quotes.select("code", "date", "oracle_return_1d").join(
        realized, on=["code", "date"]
    )
    assert joined.height == market.quotes.height
    assert abs(_mean_rank_ic(joined, "oracle_return_1d")) < 0.02


def test_signal_strength_scales_the_oracle(market: SyntheticMarket) -> None:
    half = generate_market(signal_strength=0.5)
    ratio = half.quotes["oracle_own"].std() / market.quotes["oracle_own"].std()
    assert ratio == pytest.approx(0.5, rel=1e-9)
    ic_half = _mean_rank_ic(_with_returns(half.quotes), "oracle_return_1d")
    ic_full = _mean_rank_ic(_with_returns(market.quotes), "oracle_return_1d")
    assert 0.3 * ic_full < ic_half < 0.8 * ic_full


def test_peer_group_members_are_more_correlated(market: SyntheticMarket) -> None:
    wide = (
        _with_returns(market.quotes)
        .pivot(on="code", index="date", values="ret_1d")
        .sort("date")
    )
    codes = wide.columns[1:]
    returns = wide.drop("date").to_numpy()
    corr = np.ma.corrcoef(np.ma.masked_invalid(returns).T).filled(np.nan)
    peer = dict(market.peer_groups.iter_rows())
    sector = dict(market.sectors.select("code", "sector").iter_rows())
    g = np.array([peer[c] for c in codes])
    s = np.array([sector[c] for c in codes])
    same_peer = g[:, None] == g[None, :]
    np.fill_diagonal(same_peer, False)
    other = g[:, None] != g[None, :]
    same_sector = s[:, None] == s[None, :]
    peer_corr = np.nanmean(corr[same_peer])
    assert peer_corr > np.nanmean(corr[other]) + 0.15
    assert peer_corr > np.nanmean(corr[other & same_sector]) + 0.1
    # peer groups cut across sectors
    spread = (
        market.peer_groups.join(market.sectors, on="code")
        .group_by("peer_group")
        .agg(pl.col("sector").n_unique())["sector"]
    )
    assert (spread > 1).mean() > 0.9


# ----------------------------------------------------------------------------- margin


def test_margin_weekly_published_after_record_date(market: SyntheticMarket) -> None:
    margin = market.margin
    assert margin is not None
    assert (margin["published_date"] > margin["date"]).all()
    assert not margin.select(pl.struct("code", "date").is_duplicated().any()).item()
    assert (margin["long_margin_volume"] > 0).all() and (margin["short_margin_volume"] > 0).all()

    calendar = market.quotes.select("date").unique().sort("date").with_row_index("i")
    record = margin.join(calendar, on="date", how="left").join(
        calendar.rename({"date": "published_date", "i": "j"}), on="published_date", how="left"
    )
    assert record["i"].null_count() == 0 and record["j"].null_count() == 0
    assert (record["j"] - record["i"] == 2).all()
    # the record date is the last trading day of its week: one date per calendar week
    weeks = calendar.with_columns(week=pl.col("date").dt.truncate("1w"))
    last_days = weeks.group_by("week").agg(pl.col("date").max())["date"]
    assert margin["date"].is_in(last_days.implode()).all()
    # persistent balances
    acf = (
        margin.with_columns(
            lv=pl.col("long_margin_volume").log(),
            lv_prev=pl.col("long_margin_volume").log().shift(1).over("code"),
        )
        .group_by("code")
        .agg(pl.corr("lv", "lv_prev"))["lv"]
    )
    assert acf.median() > 0.5


# ----------------------------------------------------------------------------- API


def test_bad_overrides_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="n_stock"):
        generate_market(n_stock=10)
    with pytest.raises(ConfigError, match="n_stocks"):
        generate_market(n_stocks=1)


def test_generation_logs_a_one_line_summary(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="kizashi.data.synthetic.daily"):
        generate_market(n_stocks=20, n_days=60)
    messages = [r.getMessage() for r in caplog.records if r.name == "kizashi.data.synthetic.daily"]
    assert len(messages) == 1 and "20 stocks x 60 days" in messages[0]
    assert "\n" not in messages[0]
