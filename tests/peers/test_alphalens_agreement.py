"""kizashi's signal and portfolio metrics against alphalens-reloaded and empyrical-reloaded, on
one small walk-forward run exported with `kizashi export alphalens`.

Opt-in: the peers are the ``peers`` extra (``pip install -e '.[peers]'``), never part of the
main install; without them every test here is skipped, the reason naming the missing module. A lighter setup than
the whole extra (no Qlib, no flash-linear-attention) is a virtualenv holding only the two
peers and pytest, seeing kizashi and its dependencies through a ``.pth`` file::

    python3.11 -m venv .venv-alphalens
    .venv/bin/pip freeze | grep -v -e '^-e' -e '^kizashi' > /tmp/constraints.txt
    .venv-alphalens/bin/pip install -c /tmp/constraints.txt alphalens-reloaded empyrical-reloaded pytest
    printf '%s\\n' "$PWD/.venv/lib/python3.11/site-packages" "$PWD/src" \\
        > .venv-alphalens/lib/python3.11/site-packages/kizashi-main-venv.pth
    .venv-alphalens/bin/python -m pytest tests/peers -q -p no:cacheprovider

(the constraints keep numpy / pandas / scipy / matplotlib at the main environment's versions,
which torch and polars there were installed with).

Where the definitions agree the figures agree to 1e-10; where they differ the test states the
difference and checks each side against its own formula (docs/peers.md, "alphalens and
empyrical"):

* forward returns: alphalens computes them from the exported prices after a forward fill;
  on this market (no halts, no listing or delisting inside the test days) they are kizashi's
  targets, row for row.
* IC: alphalens's ``factor_information_coefficient`` is the daily Spearman correlation,
  kizashi's ``rank_ic`` (average ranks for ties in both).
* quantiles: alphalens cuts each day with ``pd.qcut`` (sorted position ``i``, 0-based, goes to
  bucket ``k`` when ``(k-1)(n-1)/q < i <= k(n-1)/q``, up to the rounding of the interpolated
  edges), kizashi ranks into equal-count buckets (``(k-1)n/q <= i < kn/q``); the two coincide
  when ``q`` divides ``n`` and no prediction is tied, as on this run (40 stocks every day, 10
  buckets). ``mean_return_by_quantile`` demeans by default: it is then kizashi's decile return
  minus the mean over days of the day's mean return. ``compute_mean_returns_spread`` halves top minus bottom (a 100 % gross book),
  kizashi's ``decile_spread`` does not.
* turnover: alphalens's ``quantile_turnover`` is the share of a quantile's names that were not
  in it on the previous day; kizashi's is ``sum |w_t - w_{t-1}|`` of its long-short book (top
  and bottom ``k`` names, ``+-1/k`` each). With legs equal to the top and bottom deciles and ``k``
  fixed, each new name of a leg replaces one that left: ``turnover = 2 (top + bottom)``.
* empyrical: Sharpe (``mean / std(ddof=1) * sqrt(252)``), annual volatility and max drawdown
  (on the compounded curve, the start as the first peak) are kizashi's; ``annual_return`` is
  geometric, ``prod(1 + r) ** (252 / T) - 1``, where kizashi's ``ls_annual_return`` is the
  arithmetic ``252 * mean(r)``.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

from kizashi.config import EvaluateConfig, config_from_dict
from kizashi.evaluation.run_dir import read_summary
from kizashi.jobs.evaluate import run_walk_forward
from kizashi.jobs.export import FACTOR_PARQUET, GUIDE, PRICES_PARQUET, export_alphalens
from kizashi.portfolio import CostSettings, run_strategies, strategy_table
from kizashi.portfolio.overview import median_universe, overview_strategies

try:
    import alphalens
    import empyrical
    import pandas as pd
except ImportError as err:
    MISSING = f"peers extra not installed ({err}): pip install -e '.[peers]'"
else:
    MISSING = ""

# Skipped test by test (not the module at collection), so that `pytest tests/peers` without the
# extra exits 0 with every test skipped; alphalens-reloaded's own pandas-4 deprecations
# (dayofweek, set_index(inplace=True)) are not this test's concern.
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=MISSING),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:alphalens"),
]

HORIZONS = [1, 5]
QUANTILES = 10
EXACT = 1e-10


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """41 synthetic stocks, one delisted before the test days: 40 every test day, none listed late."""
    root = tmp_path_factory.mktemp("peers")
    config = config_from_dict(EvaluateConfig, {
        "data": {"synthetic": {"n_stocks": 41, "n_sectors": 4, "n_days": 400, "seed": 9, "n_peer_groups": 5,
                               "late_listing_fraction": 0.0},
                 "targets": {"horizons": HORIZONS}, "output": {"dir": str(root / "dataset")}},
        "horizons": HORIZONS,
        "splits": {"n_folds": 2, "test_days": 40, "min_train_days": 200, "val_days": 0, "embargo_days": 10},
        "model": {"n_estimators": 40, "early_stopping_rounds": 10},
        "output": {"dir": str(root / "run")},
    })
    run_dir = run_walk_forward(config).run_dir
    predictions = pl.read_parquet(run_dir / "predictions.parquet")
    per_day = predictions.group_by("horizon", "date").agg(
        n=pl.col("prediction").is_finite().sum(), distinct=pl.col("prediction").n_unique())
    # the preconditions of exact quantile agreement
    assert (per_day.get_column("n") == 40).all() and (per_day.get_column("distinct") == 40).all()
    return run_dir


@pytest.fixture(scope="module")
def factor_data(run, tmp_path_factory):
    """{horizon: (alphalens factor data of that horizon's predictions, forward-return column)}."""
    out = {}
    for h in HORIZONS:
        folder = export_alphalens(run, tmp_path_factory.mktemp(f"alphalens_{h}d"), horizon=h)
        factor = pd.read_parquet(folder / FACTOR_PARQUET).set_index(["date", "asset"])["factor"]
        prices = pd.read_parquet(folder / PRICES_PARQUET).set_index("date")
        data = alphalens.utils.get_clean_factor_and_forward_returns(
            factor, prices, periods=(h,), quantiles=QUANTILES, max_loss=0.5)
        (column,) = alphalens.utils.get_forward_returns_columns(data.columns)
        out[h] = (data, column)
    return out


def _kizashi(run, name: str, horizon: int) -> pl.DataFrame:
    if name == "predictions":
        return pl.read_parquet(run / "predictions.parquet").filter(pl.col("horizon") == horizon)
    if name == "daily":
        return pl.read_parquet(run / "daily.parquet").filter(pl.col("horizon") == horizon).sort("date")
    return pl.read_csv(run / "deciles.csv").filter(pl.col("horizon") == horizon).sort("decile")


def _by_date(series) -> pl.DataFrame:
    """A pandas Series indexed by date as a polars frame ``date (Date), value``."""
    series = series.dropna()
    return pl.DataFrame({"date": pl.Series(series.index.to_numpy()).cast(pl.Date),
                         "value": series.to_numpy().astype(float)})


# plotting noise: Agg cannot show, seaborn's own deprecation, and alphalens's warning about the
# non-return columns it is handed with the return columns (1D and 5D are both plotted)
@pytest.mark.filterwarnings("ignore:.*non-interactive:UserWarning", "ignore::PendingDeprecationWarning:seaborn",
                            "ignore:Skipping return periods:UserWarning")
def test_the_exports_guide_opens_a_full_tear_sheet(run, tmp_path):
    """The Python block of alphalens.md, run as written: every tear sheet of the run."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    folder = export_alphalens(run, tmp_path / "alphalens")
    (code,) = re.findall(r"```python\n(.*?)```", (folder / GUIDE).read_text(), re.S)
    namespace: dict = {}
    try:
        exec(code, namespace)
    finally:
        pyplot.close("all")
    assert set(namespace["data"].columns) == {"1D", "5D", "factor", "factor_quantile"}


@pytest.mark.parametrize("horizon", HORIZONS)
def test_alphalens_forward_returns_are_the_runs_targets(run, factor_data, horizon):
    data, column = factor_data[horizon]
    theirs = pl.DataFrame({
        "date": pl.Series(data.index.get_level_values("date").to_numpy()).cast(pl.Date),
        "code": data.index.get_level_values("asset").to_numpy().astype(str),
        "forward": data[column].to_numpy(),
    })
    ours = _kizashi(run, "predictions", horizon).filter(pl.col("target").is_finite())
    joined = ours.join(theirs, on=["date", "code"], how="full", coalesce=True)
    assert joined.height == ours.height == theirs.height, "alphalens kept other rows than those with a target"
    np.testing.assert_allclose(joined.get_column("forward").to_numpy(), joined.get_column("target").to_numpy(),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("horizon", HORIZONS)
def test_information_coefficient_is_kizashis_rank_ic(run, factor_data, horizon):
    data, column = factor_data[horizon]
    theirs = _by_date(alphalens.performance.factor_information_coefficient(data)[column])
    ours = _kizashi(run, "daily", horizon).filter(pl.col("rank_ic").is_not_null())
    joined = ours.join(theirs, on="date", how="full", coalesce=True)
    assert joined.height == ours.height == theirs.height > 0
    np.testing.assert_allclose(joined.get_column("value").to_numpy(), joined.get_column("rank_ic").to_numpy(),
                               rtol=0, atol=EXACT)


@pytest.mark.parametrize("horizon", HORIZONS)
def test_mean_return_by_quantile_is_kizashis_deciles(run, factor_data, horizon):
    data, column = factor_data[horizon]
    deciles = _kizashi(run, "deciles", horizon)
    assert deciles.get_column("decile").to_list() == list(range(1, QUANTILES + 1))
    mean, _ = alphalens.performance.mean_return_by_quantile(data, demeaned=False)
    np.testing.assert_allclose(mean[column].to_numpy(), deciles.get_column("mean_return").to_numpy(),
                               rtol=0, atol=EXACT)
    by_date, _ = alphalens.performance.mean_return_by_quantile(data, by_date=True, demeaned=False)
    n_days = by_date[column].groupby(level="factor_quantile").count().to_numpy()
    np.testing.assert_array_equal(n_days, deciles.get_column("n_days").to_numpy())

    # demeaned (alphalens's default): minus the mean over days of the day's mean return
    demeaned, _ = alphalens.performance.mean_return_by_quantile(data)
    day_mean = (_kizashi(run, "predictions", horizon).filter(pl.col("target").is_finite())
                .group_by("date").agg(pl.col("target").mean()).get_column("target").mean())
    np.testing.assert_allclose(demeaned[column].to_numpy(), deciles.get_column("mean_return").to_numpy() - day_mean,
                               rtol=0, atol=EXACT)

    # alphalens's daily spread is half of top minus bottom (a 100 % gross book); every bucket
    # has every day here, so twice its mean is kizashi's decile_spread
    spread, _ = alphalens.performance.compute_mean_returns_spread(by_date, QUANTILES, 1)
    summary = read_summary(run)[horizon]
    assert 2 * float(spread[column].mean()) == pytest.approx(summary["decile_spread"], rel=0, abs=EXACT)


@pytest.mark.parametrize("horizon", HORIZONS)
def test_long_short_turnover_is_twice_the_new_names_of_top_and_bottom(run, factor_data, horizon):
    data, _ = factor_data[horizon]
    quantile = data["factor_quantile"]
    sizes = quantile.groupby(level="date").value_counts()
    assert (sizes == 40 // QUANTILES).all(), "deciles of 4 names: the long-short legs of k = floor(0.1 * 40)"
    top = _by_date(alphalens.performance.quantile_turnover(quantile, QUANTILES, period=1)).rename({"value": "top"})
    bottom = _by_date(alphalens.performance.quantile_turnover(quantile, 1, period=1)).rename({"value": "bottom"})
    ours = _kizashi(run, "daily", horizon).filter(pl.col("turnover").is_not_null()).select("date", "turnover")
    joined = ours.join(top, on="date").join(bottom, on="date")
    # every day alphalens has a turnover (all but its first) is a day of kizashi's book
    assert joined.height == top.height == bottom.height > 0
    np.testing.assert_allclose(joined.get_column("turnover").to_numpy(),
                               2 * (joined.get_column("top") + joined.get_column("bottom")).to_numpy(),
                               rtol=0, atol=EXACT)


def _assert_empyrical_agrees(returns: np.ndarray, stats: dict, prefix: str = "") -> None:
    """``stats`` of kizashi.evaluation.backtest.portfolio_stats naming, empyrical on ``returns``."""
    assert stats[f"{prefix}sharpe"] == pytest.approx(empyrical.sharpe_ratio(returns), rel=EXACT)
    assert stats[f"{prefix}annual_volatility"] == pytest.approx(empyrical.annual_volatility(returns), rel=EXACT)
    assert stats[f"{prefix}max_drawdown"] == pytest.approx(empyrical.max_drawdown(returns), rel=EXACT)
    # annual return: kizashi's is arithmetic, empyrical's geometric; each is its own formula
    assert stats[f"{prefix}annual_return"] == pytest.approx(252 * returns.mean(), rel=EXACT)
    geometric = np.prod(1.0 + returns) ** (252 / returns.size) - 1.0
    assert empyrical.annual_return(returns) == pytest.approx(geometric, rel=EXACT)


@pytest.mark.parametrize("horizon", HORIZONS)
def test_long_short_statistics_agree_with_empyrical(run, horizon):
    daily = _kizashi(run, "daily", horizon).filter(pl.col("long_short_gross").is_not_null())
    gross = daily.get_column("long_short_gross").to_numpy()
    net = daily.get_column("long_short_net").to_numpy()
    summary = read_summary(run)[horizon]
    _assert_empyrical_agrees(gross, {name.removeprefix("ls_"): value for name, value in summary.items()})
    assert summary["ls_max_drawdown"] < 0, "a drawdown to compare"
    assert summary["ls_sharpe_net"] == pytest.approx(empyrical.sharpe_ratio(net), rel=EXACT)
    assert summary["ls_annual_return_net"] == pytest.approx(252 * net.mean(), rel=EXACT)


@pytest.mark.parametrize("horizon", HORIZONS)
def test_strategy_statistics_agree_with_empyrical(run, horizon):
    """The books of kizashi.portfolio on the run's test predictions (strategy_stats) against
    empyrical on each book's daily net return."""
    predictions = _kizashi(run, "predictions", horizon)
    candidates = overview_strategies(median_universe(predictions))
    daily = run_strategies(predictions, candidates, costs=CostSettings(cost_bps=10.0)).daily
    table = strategy_table(daily)
    assert table.height == len(candidates) > 1
    for row in table.iter_rows(named=True):
        book = daily.filter(pl.col("strategy") == row["strategy"])
        assert book.get_column("date").is_sorted()
        net = book.get_column("net").to_numpy()
        assert net.size == row["n_days"] > 1
        stats = {"sharpe": row["net_sharpe"], "annual_volatility": row["net_annual_volatility"],
                 "max_drawdown": row["max_drawdown"], "annual_return": row["net_annual_return"]}
        _assert_empyrical_agrees(net, stats)
