"""Metrics and long-short backtest of ``kizashi.evaluation``: against scipy and hand computations."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from scipy import stats

from kizashi.errors import KizashiError
from kizashi.evaluation.backtest import (
    LongShortConfig,
    long_short_returns,
    long_short_weights,
    max_drawdown,
    portfolio_stats,
)
from kizashi.evaluation.metrics import (
    DAILY_SCHEMA,
    daily_ic,
    evaluate_predictions,
    quantile_returns,
    quantile_spread,
    summarize_ic,
    summary_table,
)
from kizashi.evaluation.run_dir import PREDICTION_SCHEMA, SUMMARY_FIELDS

DAILY_COLUMNS = ["horizon", "date", "n", "ic", "rank_ic", "long_short_gross", "long_short_net", "turnover"]
D0 = dt.date(2024, 1, 4)


def day(i: int) -> dt.date:
    return D0 + dt.timedelta(days=i)


def random_panel(
    n_days: int, n_stocks: int, horizons: tuple[int, ...] = (1,), signal: float = 0.0, seed: int = 0
) -> pl.DataFrame:
    """A predictions frame (PREDICTION_SCHEMA): target = signal * prediction + noise."""
    rng = np.random.default_rng(seed)
    n = n_days * n_stocks
    parts = []
    for h in horizons:
        prediction = rng.normal(size=n)
        noise = rng.normal(size=n)
        parts.append(
            pl.DataFrame(
                {
                    "date": [day(i) for i in range(n_days) for _ in range(n_stocks)],
                    "code": [f"{c:04d}" for _ in range(n_days) for c in range(n_stocks)],
                    "fold": np.zeros(n, dtype=np.int32),
                    "horizon": np.full(n, h, dtype=np.int32),
                    "prediction": prediction,
                    "target": signal * prediction + noise,
                    "forward_return_1d": 0.01 * (signal * prediction + noise),
                },
                schema=PREDICTION_SCHEMA,
            )
        )
    return pl.concat(parts)


# ---------------------------------------------------------------------------------- daily IC


def test_daily_ic_matches_scipy_with_ties_and_nulls() -> None:
    rng = np.random.default_rng(42)
    rows = []
    for h in (1, 5):
        for d in range(8):
            n = int(rng.integers(5, 15))
            # integers 0..3 -> many ties on both sides
            pred = rng.integers(0, 4, size=n).astype(float)
            target = rng.integers(0, 5, size=n).astype(float) + (0.1 * rng.normal(size=n) if d % 2 else 0.0)
            pred_list: list[float | None] = list(pred)
            target_list: list[float | None] = list(target)
            pred_list[0] = None
            target_list[1] = float("nan")
            if n > 6:
                pred_list[2] = float("inf")
                target_list[3] = None
            rows += [(h, day(d), p, t) for p, t in zip(pred_list, target_list, strict=True)]
    frame = pl.DataFrame(
        rows, schema={"horizon": pl.Int32, "date": pl.Date, "prediction": pl.Float64, "target": pl.Float64},
        orient="row",
    )
    result = daily_ic(frame)
    assert result.columns == ["horizon", "date", "n", "ic", "rank_ic"]
    assert result.schema["n"] == pl.Int32
    assert result.height == 16

    checked = 0
    for (h, d), group in frame.group_by(["horizon", "date"]):
        p = group["prediction"].fill_null(float("nan")).to_numpy()
        t = group["target"].fill_null(float("nan")).to_numpy()
        ok = np.isfinite(p) & np.isfinite(t)
        row = result.filter((pl.col("horizon") == h) & (pl.col("date") == d)).row(0, named=True)
        assert row["n"] == ok.sum()
        if np.ptp(p[ok]) == 0 or np.ptp(t[ok]) == 0:
            assert row["ic"] is None and row["rank_ic"] is None
            continue
        assert row["ic"] == pytest.approx(stats.pearsonr(p[ok], t[ok])[0], abs=1e-12)
        assert row["rank_ic"] == pytest.approx(stats.spearmanr(p[ok], t[ok])[0], abs=1e-12)
        checked += 1
    assert checked >= 12


def test_daily_ic_null_when_undefined_and_keeps_empty_days() -> None:
    frame = pl.DataFrame(
        {
            "date": [day(0)] * 3 + [day(1)] * 3 + [day(2)] * 2 + [day(3)] * 2,
            "prediction": [1.0, 1.0, 1.0, 1.0, 2.0, None, 5.0, None, 1.0, 2.0],
            "target": [0.1, 0.2, 0.3, 0.5, 0.4, 0.3, 0.2, 0.1, 2.0, 4.0],
        }
    )
    # no horizon column: both by=("date",) and the default by are accepted
    result = daily_ic(frame, by=("date",))
    assert daily_ic(frame).equals(result)
    assert result["n"].to_list() == [3, 2, 1, 2]
    assert result["ic"].to_list()[:3] == [None, pytest.approx(-1.0), None]  # constant / n=2 / n=1
    assert result["rank_ic"].to_list()[:3] == [None, pytest.approx(-1.0), None]
    assert result["ic"][3] == pytest.approx(1.0)
    with pytest.raises(KizashiError, match="missing column"):
        daily_ic(frame, by=("fold", "date"))


# ------------------------------------------------------------------------------ summarize_ic


def test_summarize_ic_matches_numpy() -> None:
    values = [0.05, -0.02, None, 0.10, float("nan"), 0.01, 0.03]
    clean = np.array([0.05, -0.02, 0.10, 0.01, 0.03])
    mean = clean.sum() / 5
    std = math.sqrt(((clean - mean) ** 2).sum() / 4)
    out = summarize_ic(pl.Series(values, dtype=pl.Float64))
    assert out["n"] == 5
    assert out["mean"] == pytest.approx(mean)
    assert out["std"] == pytest.approx(std)
    assert out["ir"] == pytest.approx(mean / std)
    assert out["tstat"] == pytest.approx(mean / std * math.sqrt(5))
    assert out["hit_rate"] == pytest.approx(4 / 5)
    with_nan = np.array([np.nan, 0.05, -0.02, 0.10, 0.01, 0.03, np.inf])
    assert summarize_ic(with_nan)["mean"] == pytest.approx(mean)
    json.dumps(out)


def test_summarize_ic_degenerate_cases_give_none() -> None:
    constant = summarize_ic(np.array([0.1, 0.1, 0.1]))
    assert constant["mean"] == pytest.approx(0.1) and constant["std"] == 0.0
    assert constant["ir"] is None and constant["tstat"] is None and constant["hit_rate"] == 1.0
    single = summarize_ic([0.2])
    assert single["n"] == 1 and single["mean"] == pytest.approx(0.2) and single["std"] is None
    empty = summarize_ic(pl.Series([None, None], dtype=pl.Float64))
    assert empty == {"mean": None, "std": None, "ir": None, "tstat": None, "hit_rate": None, "n": 0}


# --------------------------------------------------------------------------------- quantiles


def test_quantile_returns_by_hand() -> None:
    # day 0: 10 stocks, predictions 1..10; bottom half (pred 1..5) and top half (6..10)
    targets_0 = [0.01, 0.02, -0.01, 0.00, 0.03, 0.05, 0.04, 0.02, 0.06, 0.03]
    # day 1: 10 stocks, predictions in reverse order of the codes
    targets_1 = [0.10, 0.00, 0.00, 0.00, 0.00, -0.05, 0.00, 0.00, 0.00, 0.00]
    # day 2: only 1 stock -> fewer than 2 quantiles -> skipped
    frame = pl.DataFrame(
        {
            "horizon": [1] * 21,
            "date": [day(0)] * 10 + [day(1)] * 10 + [day(2)],
            "prediction": list(range(1, 11)) + list(range(10, 0, -1)) + [1.0],
            "target": targets_0 + targets_1 + [9.9],
        },
        schema_overrides={"horizon": pl.Int32, "prediction": pl.Float64},
    )
    result = quantile_returns(frame, n_quantiles=2)
    # day 0: bottom mean(0.01, 0.02, -0.01, 0, 0.03) = 0.01, top mean(.05,.04,.02,.06,.03) = 0.04
    # day 1: bottom = last five codes (pred 5..1): mean(-0.05, 0, 0, 0, 0) = -0.01; top = 0.02
    assert result.columns == ["horizon", "decile", "mean_return", "n_days"]
    assert result["decile"].to_list() == [1, 2]
    assert result["mean_return"].to_list() == pytest.approx([(0.01 - 0.01) / 2, (0.04 + 0.02) / 2])
    assert result["n_days"].to_list() == [2, 2]
    spread = quantile_spread(frame, n_quantiles=2)
    assert spread["horizon"].to_list() == [1]
    assert spread["spread"][0] == pytest.approx(0.03 - 0.0)


def test_quantile_ties_share_a_bucket() -> None:
    # average ranks 1, 2.5, 2.5, 4 -> buckets floor((r-1)*2/4)+1 = 1, 1, 1, 2
    frame = pl.DataFrame(
        {"date": [day(0)] * 4, "prediction": [1.0, 2.0, 2.0, 3.0], "target": [0.0, 0.3, 0.6, 1.0]}
    )
    result = quantile_returns(frame, n_quantiles=2, by=("date",))
    assert result.columns == ["decile", "mean_return", "n_days"]
    assert result["mean_return"].to_list() == pytest.approx([0.3, 1.0])
    with pytest.raises(KizashiError, match="must contain"):
        quantile_returns(frame, by=("prediction",))


# ------------------------------------------------------------------------------- long-short


def hand_backtest_frame() -> pl.DataFrame:
    """4 stocks x 3 days (+ a second horizon on day 0) with known picks for top_k = 1."""
    preds = {  # day -> prediction of A, B, C, D
        0: [4.0, 3.0, 2.0, 1.0],  # long A, short D
        1: [4.0, 1.0, 2.0, 3.0],  # long A, short B
        2: [1.0, 2.0, 4.0, 3.0],  # long C, short A
    }
    realized = {
        0: [0.02, 0.05, 0.07, -0.01],
        1: [0.01, 0.03, 0.00, 0.09],
        2: [0.00, 0.04, -0.01, 0.02],
    }
    rows = []
    for d in range(3):
        for code, p, r in zip("ABCD", preds[d], realized[d], strict=True):
            rows.append((day(d), code, 0, 1, p, 0.0, r))
    # horizon 5, one day, a tie at the top (A and C at 4.0; C wins on code) and D not tradable
    for code, p, r in zip("ABCD", [4.0, 1.0, 4.0, 9.0], [0.02, 0.01, 0.03, None], strict=True):
        rows.append((day(0), code, 0, 5, p, 0.0, r))
    return pl.DataFrame(rows, schema=PREDICTION_SCHEMA, orient="row")


def test_long_short_by_hand() -> None:
    frame = hand_backtest_frame()
    result = long_short_returns(frame, LongShortConfig(top_k=1, cost_bps=10.0))
    assert result.columns == ["horizon", "date", "gross", "net", "turnover", "n_long", "n_short"]
    h1 = result.filter(pl.col("horizon") == 1)
    # day 0: +A -D: 0.02 - (-0.01) = 0.03; turnover |+1| + |-1| = 2
    # day 1: +A -B: 0.01 - 0.03 = -0.02; turnover A 0, D |0 - (-1)| = 1, B |-1 - 0| = 1 -> 2
    # day 2: +C -A: -0.01 - 0.00 = -0.01; turnover A |-1 - 1| = 2, B 1, C 1 -> 4
    assert h1["gross"].to_list() == pytest.approx([0.03, -0.02, -0.01])
    assert h1["turnover"].to_list() == pytest.approx([2.0, 2.0, 4.0])
    cost = 10.0 / 1e4
    assert h1["net"].to_list() == pytest.approx([0.03 - 2 * cost, -0.02 - 2 * cost, -0.01 - 4 * cost])
    assert h1["n_long"].to_list() == [1, 1, 1] and h1["n_short"].to_list() == [1, 1, 1]
    # horizon 5 is its own portfolio: D (no realized return) is skipped, tie A/C -> C long, B short
    h5 = result.filter(pl.col("horizon") == 5).row(0, named=True)
    assert h5["gross"] == pytest.approx(0.03 - 0.01)
    assert h5["turnover"] == pytest.approx(2.0)
    weights = long_short_weights(frame.filter(pl.col("horizon") == 5), LongShortConfig(top_k=1))
    assert dict(zip(weights["code"], weights["weight"], strict=True)) == {"B": -1.0, "C": 1.0}


def test_long_short_quantile_legs_and_no_horizon() -> None:
    frame = hand_backtest_frame().filter(pl.col("horizon") == 1).drop("horizon")
    result = long_short_returns(frame, LongShortConfig(quantile=0.5, cost_bps=5.0), by=())
    # k = floor(0.5 * 4) = 2, weights +-0.5
    # day 0: long A,B short C,D: .5*(.02+.05) - .5*(.07-.01) = 0.005; turnover 2
    # day 1: preds A4 B1 C2 D3 -> long A,D short B,C: .5*(.01+.09) - .5*(.03+0) = 0.035
    #        turnover: A 0, B |-.5-.5| = 1, C 0, D |.5+.5| = 1 -> 2
    # day 2: preds A1 B2 C4 D3 -> long C,D short A,B: .5*(-.01+.02) - .5*(0+.04) = -0.015
    #        turnover: A |-.5-.5| = 1, B 0, C |.5+.5| = 1, D 0 -> 2
    assert result.columns == ["date", "gross", "net", "turnover", "n_long", "n_short"]
    assert result["gross"].to_list() == pytest.approx([0.005, 0.035, -0.015])
    assert result["turnover"].to_list() == pytest.approx([2.0, 2.0, 2.0])
    assert result["net"].to_list() == pytest.approx([0.005 - 0.001, 0.035 - 0.001, -0.015 - 0.001])
    assert result["n_long"].to_list() == [2, 2, 2]
    # top_k larger than half the day is capped at n // 2
    capped = long_short_returns(frame, LongShortConfig(top_k=3), by=())
    assert capped["n_long"].to_list() == [2, 2, 2]
    assert capped["gross"].to_list() == pytest.approx(result["gross"].to_list())


def test_long_short_config_validates() -> None:
    assert LongShortConfig().quantile == 0.1 and LongShortConfig().top_k is None
    with pytest.raises(ValidationError):
        LongShortConfig(quantile=0.0)
    with pytest.raises(ValidationError):
        LongShortConfig(top_k=0)
    with pytest.raises(ValidationError):
        LongShortConfig(cost=1.0)  # type: ignore[call-arg]


# ------------------------------------------------------------------------ portfolio stats


def test_max_drawdown_by_hand() -> None:
    # equity 1.1, 0.88, 0.924, 0.8316, 1.08108: peak 1.1 -> trough 0.8316
    assert max_drawdown(np.array([0.1, -0.2, 0.05, -0.1, 0.3])) == pytest.approx(0.8316 / 1.1 - 1)
    assert max_drawdown(np.array([-0.1, 0.05])) == pytest.approx(-0.1)  # the start is a peak
    assert max_drawdown(np.array([0.01, 0.02])) == 0.0
    assert max_drawdown(np.array([np.nan])) is None


def test_portfolio_stats_by_hand() -> None:
    r = [0.01, -0.005, 0.02, 0.0]
    mean = sum(r) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / 3)
    out = portfolio_stats(np.array(r), np.array([2.0, 1.0, 3.0, np.nan]), periods_per_year=252)
    assert out["annual_return"] == pytest.approx(mean * 252)
    assert out["annual_volatility"] == pytest.approx(std * math.sqrt(252))
    assert out["sharpe"] == pytest.approx(mean / std * math.sqrt(252))
    assert out["max_drawdown"] == pytest.approx(-0.005)
    assert out["turnover"] == pytest.approx(2.0)
    flat = portfolio_stats(np.array([0.001] * 5), None)
    assert flat["annual_volatility"] == 0.0 and flat["sharpe"] is None and flat["turnover"] is None
    assert portfolio_stats(np.array([]))["annual_return"] is None


# ----------------------------------------------------------------------- signal sanity


def test_perfect_foresight() -> None:
    frame = random_panel(20, 30, seed=1).with_columns(
        pl.col("target").alias("prediction"), (0.01 * pl.col("target")).alias("forward_return_1d")
    )
    ic = daily_ic(frame)
    assert ic["rank_ic"].to_list() == pytest.approx([1.0] * 20)
    assert ic["ic"].to_list() == pytest.approx([1.0] * 20)
    assert quantile_spread(frame)["spread"][0] > 1.0
    ls = long_short_returns(frame, LongShortConfig(top_k=3))
    assert (ls["gross"] > 0).all()


def test_random_prediction_has_no_rank_ic() -> None:
    ic = daily_ic(random_panel(400, 50, seed=3))
    stats_ = summarize_ic(ic["rank_ic"])
    assert stats_["n"] == 400
    # per-day RankIC sd ~ 1/sqrt(49) = 0.14 -> sd of the mean over 400 days ~ 0.007
    assert abs(stats_["mean"]) < 0.03
    assert abs(stats_["tstat"]) < 4.0
    assert 0.10 < stats_["std"] < 0.20


# ---------------------------------------------------------------------- evaluate_predictions


def test_evaluate_predictions_fills_run_dir_tables(tmp_path) -> None:
    frame = random_panel(60, 40, horizons=(1, 5), signal=0.5, seed=7)
    # a null target and a missing next-day return are tolerated
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("target")).alias("target"),
        pl.when(pl.col("date") == day(59)).then(None).otherwise(pl.col("forward_return_1d")).alias(
            "forward_return_1d"
        ),
    )
    result = evaluate_predictions(frame, n_quantiles=5, long_short=LongShortConfig(quantile=0.2, cost_bps=10))

    assert result.daily.columns == DAILY_COLUMNS
    assert result.daily.schema == pl.Schema(DAILY_SCHEMA)
    assert result.daily.height == 2 * 60
    # the last day has no next-day return: IC yes, portfolio no
    last = result.daily.filter(pl.col("date") == day(59))
    assert last["ic"].null_count() == 0 and last["long_short_gross"].null_count() == 2
    assert sorted(result.summary) == [1, 5]
    for h, summary in result.summary.items():
        assert list(summary) == list(SUMMARY_FIELDS)
        assert all(v is None or type(v) in (int, float) for v in summary.values())
        days = result.daily.filter(pl.col("horizon") == h)
        assert summary["n_days"] == 60
        assert summary["ic_mean"] == pytest.approx(days["ic"].mean())
        assert summary["rank_ic_mean"] == pytest.approx(days["rank_ic"].mean())
        assert summary["rank_ic_std"] == pytest.approx(days["rank_ic"].std(ddof=1))
        assert summary["hit_rate"] == pytest.approx((days["rank_ic"] > 0).mean())
        assert summary["rank_ic_mean"] > 0.2  # planted signal: corr ~ 0.45
        deciles = result.deciles.filter(pl.col("horizon") == h)
        assert deciles["decile"].to_list() == [1, 2, 3, 4, 5]
        assert deciles["n_days"].to_list() == [60] * 5
        top_minus_bottom = deciles["mean_return"][4] - deciles["mean_return"][0]
        assert summary["decile_spread"] == pytest.approx(top_minus_bottom)
        assert summary["decile_spread"] > 0
        assert summary["ls_turnover"] == pytest.approx(days["turnover"].mean())
        assert summary["ls_annual_return"] == pytest.approx(days["long_short_gross"].mean() * 252)
        assert summary["ls_annual_return_net"] < summary["ls_annual_return"]
        assert summary["ls_max_drawdown"] <= 0.0
    # JSON and CSV round trips
    assert json.loads(json.dumps(result.summary))["5"]["n_days"] == 60
    table = summary_table(result.summary)
    assert table.columns == ["horizon", *SUMMARY_FIELDS]
    assert table["horizon"].to_list() == [1, 5]
    expected_ic = [result.summary[1]["ic_mean"], result.summary[5]["ic_mean"]]
    assert table["ic_mean"].to_list() == pytest.approx(expected_ic)
    table.write_csv(tmp_path / "summary.csv")
    result.daily.write_parquet(tmp_path / "daily.parquet")
    assert pl.read_parquet(tmp_path / "daily.parquet").equals(result.daily)


def test_evaluate_predictions_rejects_bad_frames() -> None:
    frame = random_panel(3, 5, seed=0)
    with pytest.raises(KizashiError, match="forward_return_1d"):
        evaluate_predictions(frame.drop("forward_return_1d"))
    with pytest.raises(KizashiError, match=r"share a \(date, code, horizon\) key"):
        evaluate_predictions(pl.concat([frame, frame.head(2)]))
