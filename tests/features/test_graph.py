"""Per-day correlation graphs: values and neighbour sets against a dense pandas recomputation,
leak safety, sectors, every_n_days, and pairwise-complete correlation against pandas."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import polars as pl
import pytest

from kizashi.config import GraphConfig
from kizashi.features.graph import EDGE_SCHEMA, correlation_graphs, default_min_periods, pairwise_correlation

N_STOCKS = 12
N_DAYS = 100


# --------------------------------------------------------------------------- fixtures


def make_panel(seed: int = 0) -> pl.DataFrame:
    """12 stocks x 100 trading days in 3 correlated groups, with gaps, a halt, null and NaN
    returns, a late listing and a delisting."""
    rng = np.random.default_rng(seed)
    days = np.arange(np.datetime64("2022-01-03"), np.datetime64("2022-01-03") + 200)
    calendar = days[np.is_busday(days)][:N_DAYS]
    factors = rng.standard_normal((N_DAYS, 3)) * 0.01
    group = np.arange(N_STOCKS) % 3
    loading = rng.uniform(0.3, 1.5, N_STOCKS)
    returns = factors[:, group] * loading + rng.standard_normal((N_DAYS, N_STOCKS)) * 0.01
    noise = 0.004 * rng.standard_normal(N_DAYS)
    returns[:, 11] = 0.5 * returns[:, 10] + 0.5 * returns[:, 2] + noise
    present = rng.random((N_DAYS, N_STOCKS)) > 0.06  # scattered gaps (missing rows)
    present[:45, 7] = False  # late listing
    present[80:, 4] = False  # delisted
    present[30:42, 9] = False  # a halt longer than the window's slack
    codes = [f"{1300 + 7 * i}" for i in range(N_STOCKS)]
    rows = [
        (codes[j], calendar[t].astype(dt.date), float(returns[t, j]))
        for t in range(N_DAYS)
        for j in range(N_STOCKS)
        if present[t, j]
    ]
    schema = {"code": pl.Utf8, "date": pl.Date, "return_1d": pl.Float64}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    # a few null and NaN returns on rows that exist
    frame = frame.with_row_index("i").with_columns(
        pl.when(pl.col("i") % 97 == 5)
        .then(None)
        .when(pl.col("i") % 89 == 3)
        .then(float("nan"))
        .otherwise(pl.col("return_1d"))
        .alias("return_1d")
    )
    # shuffled: row order must not matter
    return frame.drop("i").sample(fraction=1.0, shuffle=True, seed=seed)


SECTORS = pl.DataFrame(
    {
        "code": [f"{1300 + 7 * i}" for i in range(10)],  # the last two codes have no sector
        "sector": ["tech", "bank", "tech", "food", "bank", "tech", "food", "food", "bank", "tech"],
    }
)


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return make_panel()


def wide(panel: pl.DataFrame) -> pd.DataFrame:
    frame = panel.to_pandas()
    table = frame.pivot(index="date", columns="code", values="return_1d").sort_index()
    return table.sort_index(axis=1)


def reference_graphs(panel: pl.DataFrame, config: GraphConfig) -> dict[tuple, float]:
    """Dense per-day recomputation: {(date, src, dst): correlation}."""
    table = wide(panel)
    min_periods = default_min_periods(config)
    last = len(table.index) - 1
    edges: dict[tuple, float] = {}
    for t, day in enumerate(table.index):
        if (last - t) % config.every_n_days:
            continue
        window = table.iloc[max(0, t - config.window + 1) : t + 1]
        corr = window.corr(min_periods=min_periods)
        today = window.iloc[-1]
        nodes = [
            c
            for c in table.columns
            if np.isfinite(today[c]) and window[c].notna().sum() >= min_periods
        ]
        chosen: set[tuple[str, str]] = set()
        for dst in nodes:
            candidates = [
                (abs(corr.loc[dst, src]), src)
                for src in nodes
                if src != dst and np.isfinite(corr.loc[dst, src])
            ]
            if config.threshold is not None:
                candidates = [c for c in candidates if c[0] >= config.threshold]
            candidates.sort(key=lambda c: (-c[0], c[1]))
            if config.top_k is not None:
                candidates = candidates[: config.top_k]
            chosen |= {(src, dst) for _, src in candidates}
        if config.symmetric:
            chosen |= {(dst, src) for src, dst in chosen}
        for src, dst in chosen:
            edges[(day, src, dst)] = float(corr.loc[dst, src])
    return edges


def as_edge_dict(graphs: pl.DataFrame) -> dict[tuple, float]:
    return {
        (pd.Timestamp(d), s, t): c
        for d, s, t, c in graphs.select("date", "src_code", "dst_code", "correlation").iter_rows()
    }


def assert_sorted_by_date_dst_rank(graphs: pl.DataFrame) -> None:
    ordered = graphs.with_row_index("row").sort(
        ["date", "dst_code", "abs_correlation", "src_code"], descending=[False, False, True, False]
    )
    assert ordered["row"].to_list() == list(range(graphs.height))


# --------------------------------------------------------------------------- pairwise correlation


def test_pairwise_correlation_matches_pandas_pairwise_complete() -> None:
    rng = np.random.default_rng(1)
    batch = rng.standard_normal((3, 40, 9)) @ rng.standard_normal((9, 9)) * 0.02
    batch[:, :, 2] += 50.0  # a large mean must not hurt (centring)
    batch[rng.random(batch.shape) < 0.25] = np.nan
    batch[0, :30, 4] = np.nan  # too few joint observations with anyone
    batch[1, :, 6] = np.inf  # inf counts as missing
    batch[1, ::2, 6] = 0.3
    for min_periods in (5, 20):
        got64 = pairwise_correlation(batch, min_periods)
        got32 = pairwise_correlation(batch, min_periods, dtype=np.float32)
        assert got64.shape == (3, 9, 9) and got64.dtype == np.float64 and got32.dtype == np.float32
        for b in range(3):
            frame = pd.DataFrame(np.where(np.isfinite(batch[b]), batch[b], np.nan))
            expected = frame.corr(min_periods=min_periods).to_numpy()
            assert np.array_equal(np.isnan(got64[b]), np.isnan(expected))
            np.testing.assert_allclose(got64[b], expected, atol=1e-12, equal_nan=True)
            np.testing.assert_allclose(got32[b], expected, atol=1e-5, equal_nan=True)
            # a single [W, N] window works too
            np.testing.assert_array_equal(pairwise_correlation(batch[b], min_periods), got64[b])
    assert np.isnan(pairwise_correlation(batch, 20)[0, 4]).all()
    assert np.isnan(pairwise_correlation(batch, 20)[1, 6]).all()  # constant -> NaN


def test_pairwise_correlation_constant_series_is_nan_and_result_symmetric() -> None:
    rng = np.random.default_rng(2)
    window = rng.standard_normal((30, 6))
    window[:, 1] = 1234.5678  # constant, far from zero
    window[:15, 3] = np.nan
    window[15:, 4] = 7.0  # constant over its joint dates with 3 only
    corr = pairwise_correlation(window, 5)
    assert np.isnan(corr[1]).all() and np.isnan(corr[:, 1]).all()
    assert np.isnan(corr[3, 4]) and np.isfinite(corr[0, 4])
    assert np.array_equal(corr, corr.T, equal_nan=True)
    assert np.nanmax(np.abs(corr)) <= 1.0


# --------------------------------------------------------------------------- graphs vs reference


@pytest.mark.parametrize(
    "options",
    [
        dict(window=20, top_k=3),
        dict(window=20, top_k=3, min_periods=10),
        dict(window=15, top_k=None, threshold=0.35),
        dict(window=20, top_k=4, threshold=0.3),
        dict(window=20, top_k=2, symmetric=True),
        dict(window=25, top_k=20),  # k larger than the number of candidates
    ],
)
def test_graphs_match_dense_recomputation(panel: pl.DataFrame, options: dict) -> None:
    config = GraphConfig(**options)
    expected = reference_graphs(panel, config)
    for dtype, atol in ((np.float64, 1e-6), (np.float32, 1e-5)):
        graphs = correlation_graphs(panel, config, sectors=SECTORS, dtype=dtype, batch_days=7)
        assert graphs.schema == pl.Schema(EDGE_SCHEMA)
        got = as_edge_dict(graphs)
        assert len(got) == graphs.height, "no duplicate edges"
        assert set(got) == set(expected), f"{dtype.__name__}: neighbour sets differ"
        diffs = [abs(got[key] - value) for key, value in expected.items()]
        assert max(diffs) < atol
        assert (graphs["src_code"] != graphs["dst_code"]).all(), "no self-loops"
        np.testing.assert_array_equal(graphs["abs_correlation"], graphs["correlation"].abs())
        assert_sorted_by_date_dst_rank(graphs)
    if config.top_k is not None and not config.symmetric:
        assert graphs.group_by("date", "dst_code").len()["len"].max() <= config.top_k
    if config.symmetric:
        pairs = set(zip(graphs["date"], graphs["src_code"], graphs["dst_code"], strict=True))
        assert all((d, t, s) in pairs for d, s, t in pairs)


def test_late_listed_and_delisted_stocks_are_nodes_only_with_history(panel: pl.DataFrame) -> None:
    config = GraphConfig(window=20, top_k=3)  # min_periods = ceil(40 / 3) = 14
    assert default_min_periods(config) == math.ceil(2 * 20 / 3) == 14
    graphs = correlation_graphs(panel, config)
    late = graphs.filter((pl.col("src_code") == "1349") | (pl.col("dst_code") == "1349"))
    calendar = panel["date"].unique().sort()
    listed = panel.filter(pl.col("code") == "1349")["date"].min()
    assert late["date"].min() >= calendar[calendar.search_sorted(listed) + 13]
    delisted = graphs.filter((pl.col("src_code") == "1328") | (pl.col("dst_code") == "1328"))
    assert delisted["date"].max() <= panel.filter(pl.col("code") == "1328")["date"].max()


def test_same_sector_flag(panel: pl.DataFrame) -> None:
    config = GraphConfig(window=20, top_k=5, symmetric=True)
    graphs = correlation_graphs(panel, config, sectors=SECTORS)
    sector = dict(SECTORS.iter_rows())
    expected = [
        int(s in sector and t in sector and sector[s] == sector[t])
        for s, t in zip(graphs["src_code"], graphs["dst_code"], strict=True)
    ]
    assert graphs["same_sector"].to_list() == expected
    assert 0 < sum(expected) < len(expected)
    unknown = graphs.filter(pl.col("src_code").is_in(["1370", "1377"]))
    assert unknown.height and (unknown["same_sector"] == 0).all()
    no_table = correlation_graphs(panel, config)
    assert (no_table["same_sector"] == 0).all()
    assert no_table.drop("same_sector").equals(graphs.drop("same_sector"))
    conflicting = pl.concat([SECTORS, pl.DataFrame({"code": ["1300"], "sector": ["bank"]})])
    with pytest.raises(ValueError, match="more than one `sector`"):
        correlation_graphs(panel, config, sectors=conflicting)


# --------------------------------------------------------------------------- leak safety, days


def test_graphs_do_not_look_ahead(panel: pl.DataFrame) -> None:
    config = GraphConfig(window=20, top_k=3, symmetric=True)
    calendar = panel["date"].unique().sort()
    cutoff = calendar[60]
    rng = np.random.default_rng(5)
    perturbed = panel.with_columns(
        pl.when(pl.col("date") > cutoff)
        .then(pl.Series(rng.standard_normal(panel.height)))
        .otherwise(pl.col("return_1d"))
        .alias("return_1d")
    )
    # a stock listed after the cutoff changes the code universe but not the past graphs
    newcomer = pl.DataFrame(
        {"code": "9999", "date": calendar.filter(calendar > cutoff), "return_1d": 0.01}
    ).with_columns(pl.col("return_1d") * pl.int_range(pl.len()).sin())
    perturbed = pl.concat([perturbed, newcomer])
    before = correlation_graphs(panel, config, batch_days=8)
    after = correlation_graphs(perturbed, config, batch_days=8)
    past = pl.col("date") <= cutoff
    a, b = before.filter(past), after.filter(past)
    assert a.height > 0
    assert a.drop("correlation", "abs_correlation").equals(b.drop("correlation", "abs_correlation"))
    np.testing.assert_allclose(a["correlation"], b["correlation"], atol=1e-6)
    assert not before.filter(~past).equals(after.filter(~past))


def test_every_n_days_keeps_the_last_day_and_dates_filter(panel: pl.DataFrame) -> None:
    calendar = panel["date"].unique().sort()
    config = GraphConfig(window=20, top_k=3, every_n_days=7)
    graphs = correlation_graphs(panel, config)
    days = graphs["date"].unique().sort()
    assert days[-1] == calendar[-1]
    expected_days = [d for i, d in enumerate(calendar) if (len(calendar) - 1 - i) % 7 == 0]
    assert set(days) <= set(expected_days) and len(days) >= len(expected_days) - 2
    daily = correlation_graphs(panel, GraphConfig(window=20, top_k=3))
    assert graphs.equals(daily.filter(pl.col("date").is_in(days.implode())))

    # 51, 52: off the every-7-days grid; 1999-01-01: not in the calendar
    wanted = [calendar[51], calendar[52], calendar[-1], dt.date(1999, 1, 1)]
    subset = correlation_graphs(panel, GraphConfig(window=20, top_k=3), dates=wanted)
    assert subset["date"].unique().sort().to_list() == sorted(wanted[:3])
    assert subset.equals(daily.filter(pl.col("date").is_in(wanted[:3])))
    both = correlation_graphs(panel, config, dates=wanted)
    assert both["date"].unique().to_list() == [calendar[-1]]


def test_value_column_and_input_errors(panel: pl.DataFrame) -> None:
    config = GraphConfig(window=20, top_k=3)
    renamed = panel.rename({"return_1d": "residual_return"})
    assert correlation_graphs(renamed, config, value="residual_return").equals(
        correlation_graphs(panel, config)
    )
    with pytest.raises(ValueError, match="return_1d"):
        correlation_graphs(renamed, config)
    with pytest.raises(ValueError, match="duplicated"):
        correlation_graphs(pl.concat([panel, panel.head(3)]), config)
    with pytest.raises(ValueError, match="min_periods"):
        correlation_graphs(panel, GraphConfig(window=20, min_periods=21))
    disabled = correlation_graphs(panel, GraphConfig(enabled=False))
    assert disabled.height == 0 and disabled.schema == pl.Schema(EDGE_SCHEMA)


def test_ties_go_to_the_smaller_code() -> None:
    rng = np.random.default_rng(7)
    days = [dt.date(2023, 1, 2) + dt.timedelta(days=i) for i in range(30)]
    base = rng.standard_normal(30)
    twin = base + 0.2 * rng.standard_normal(30)  # three identical neighbours of "A": an exact tie
    series = {"A": base, "D": twin, "B": twin, "C": twin, "E": rng.standard_normal(30)}
    frame = pl.DataFrame(
        [
            (code, day, float(values[i]))
            for code, values in series.items()
            for i, day in enumerate(days)
        ],
        schema={"code": pl.Utf8, "date": pl.Date, "return_1d": pl.Float64},
        orient="row",
    )
    for dtype in (np.float32, np.float64):
        graphs = correlation_graphs(frame, GraphConfig(window=10, top_k=2), dtype=dtype)
        to_a = graphs.filter(pl.col("dst_code") == "A").group_by("date").agg(pl.col("src_code"))
        assert to_a.height == 30 - 6  # from the 7th date (min_periods = 7) on
        assert all(sources.to_list() == ["B", "C"] for sources in to_a["src_code"])


def test_synthetic_market_neighbours_share_sector_and_peer_group() -> None:
    from kizashi.data.synthetic import generate_market

    market = generate_market(
        n_stocks=60, n_days=300, n_sectors=4, n_peer_groups=6, split_probability=0.0
    )
    returns = market.quotes.sort("code", "date").select(
        "code", "date", pl.col("close").log().diff().over("code").alias("return_1d")
    )
    graphs = correlation_graphs(returns, GraphConfig(window=60, top_k=5), sectors=market.sectors)
    peer = dict(market.peer_groups.select("code", "peer_group").iter_rows())
    sector = dict(market.sectors.select("code", "sector").iter_rows())
    codes = sorted(peer)
    pairs = [(a, b) for a in codes for b in codes if a != b]
    base_peer = np.mean([peer[a] == peer[b] for a, b in pairs])
    base_sector = np.mean([sector[a] == sector[b] for a, b in pairs])
    src, dst = graphs["src_code"].to_list(), graphs["dst_code"].to_list()
    edge_peer = np.mean([peer[a] == peer[b] for a, b in zip(src, dst, strict=True)])
    assert edge_peer > 3 * base_peer  # correlation neighbours recover the hidden clusters
    assert graphs["same_sector"].mean() > 1.5 * base_sector
