"""No look-ahead: every feature family, evaluated over the whole pipeline (validation,
adjustment, market/sector tables, margin as-of join, per-day normalization), gives the same
values at dates <= t whatever happens to the raw data after t.

Two settings are checked: robust normalization over a whole-panel build (the first), and
z-score normalization over a chunked build with a point-in-time universe (``min_history``)
on a market where stocks list, delist, re-list, and appear or disappear after t (the
second). A third group of tests checks the market calendar: no feature or target steps over
a stock's missing days.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from conftest import require_shared_data

from kizashi.config import GraphConfig, InputConfig
from kizashi.data.inputs import inputs_from_frames, load_inputs
from kizashi.features.pipeline import compute_features
from kizashi.features.registry import FAMILY_NAMES

CUTOFF_INDEX = 300  # t = the 300th trading day of the 400-day market (past every warm-up)
MIN_HISTORY = 20  # the point-in-time universe setting: late listings enter before and after t

SETTINGS = {
    "robust": dict(normalization="robust", chunk_days=None, min_history=1),
    "zscore_chunked_min_history": dict(normalization="zscore", chunk_days=45, min_history=MIN_HISTORY),
}


def _build(
    quotes: pl.DataFrame,
    sectors: pl.DataFrame,
    margin: pl.DataFrame | None,
    *,
    normalization: str = "robust",
    chunk_days: int | None = None,
    min_history: int = 1,
) -> tuple[pl.DataFrame, list]:
    # The random perturbation after t can make isolated reversing jumps: keep them (the
    # look-ahead test wants every perturbed row, not the price-jump rule's verdict).
    config = InputConfig(min_history=min_history, on_price_jump="keep")
    inputs = inputs_from_frames(quotes, sectors, margin, config, "leakage-test")
    # With graphs (float64 sums, so that values compare to 1e-9): the peers family reads them.
    graph = GraphConfig(dtype="float64")
    return compute_features(
        inputs.panel,
        inputs.margin,
        dtype=pl.Float64(),
        normalization=normalization,
        graph=graph,
        chunk_days=chunk_days,
        min_history=min_history,
    )


def _perturb_after(quotes: pl.DataFrame, margin: pl.DataFrame, cutoff: dt.date, seed: int):
    """Change every raw value after the cutoff: prices (OHLC scaled together so bars stay
    valid), volume, turnover, split factors, the oracle; margin rows published after it."""
    rng = np.random.default_rng(seed)
    n = quotes.height
    after = (quotes.get_column("date") > cutoff).to_numpy()
    price_factor = np.where(after, np.exp(rng.normal(0.0, 0.3, n)), 1.0)
    volume_factor = np.where(after, np.exp(rng.normal(0.0, 0.7, n)), 1.0)
    split = np.where(after & (rng.random(n) < 0.03), 0.5, 1.0)
    noise = np.where(after, rng.normal(0.0, 0.05, n), 0.0)
    perturbed = quotes.with_columns(
        *(pl.col(c) * price_factor for c in ("open", "high", "low", "close")),
        pl.col("volume") * volume_factor,
        pl.col("turnover_value") * price_factor * volume_factor,
        pl.col("adjustment_factor") * split,
        *(pl.col(c) + noise for c in quotes.columns if c.startswith("oracle_")),
    )
    m_after = (margin.get_column("published_date") > cutoff).to_numpy()
    m_factor = np.where(m_after, np.exp(rng.normal(0.0, 0.5, margin.height)), 1.0)
    perturbed_margin = margin.with_columns(
        pl.col("long_margin_volume") * m_factor, pl.col("short_margin_volume") / m_factor
    )
    return perturbed, perturbed_margin


def _with_listing_events(quotes: pl.DataFrame, dates: pl.Series) -> pl.DataFrame:
    """The market with a stock that delists and re-lists before the cutoff (40 sessions
    missing), one that is missing 3 scattered sessions (halts), and one that lists 10
    sessions before the cutoff (fewer than MIN_HISTORY rows by then, many more after)."""
    codes = quotes.get_column("code").unique().sort().to_list()
    relisted, halted, late = codes[1], codes[2], codes[5]
    gap = (dates[CUTOFF_INDEX - 150], dates[CUTOFF_INDEX - 111])
    halts = [dates[CUTOFF_INDEX - k] for k in (90, 60, 59)]
    code, date = pl.col("code"), pl.col("date")
    return quotes.filter(
        ~((code == relisted) & date.is_between(*gap))
        & ~((code == halted) & date.is_in(halts))
        & ~((code == late) & (date < dates[CUTOFF_INDEX - 9]))
    )


def _appear_and_disappear_after(quotes: pl.DataFrame, cutoff: dt.date) -> pl.DataFrame:
    """After the cutoff: one stock stops trading (delists) and a new stock lists (a copy of
    another stock's later rows under a new code, in the same sector)."""
    codes = quotes.get_column("code").unique().sort().to_list()
    leaving, template = codes[3], codes[4]
    newcomer = quotes.filter((pl.col("code") == template) & (pl.col("date") > cutoff)).with_columns(
        pl.lit("NEWCOMER").alias("code")
    )
    kept = quotes.filter(~((pl.col("code") == leaving) & (pl.col("date") > cutoff)))
    return pl.concat([kept, newcomer]).sort("code", "date")


@pytest.fixture(scope="module", params=list(SETTINGS))
def scenarios(request, small_market):
    settings = SETTINGS[request.param]
    quotes, sectors, margin = small_market.quotes, small_market.sectors, small_market.margin
    dates = quotes.get_column("date").unique().sort()
    cutoff = dates[CUTOFF_INDEX]
    if request.param != "robust":
        quotes = _with_listing_events(quotes, dates)
        newcomer_sector = sectors.filter(pl.col("code") == quotes.get_column("code").unique().sort()[4])
        sectors = pl.concat([sectors, newcomer_sector.with_columns(pl.lit("NEWCOMER").alias("code"))])
    base, specs = _build(quotes, sectors, margin, **settings)
    perturbed_quotes, perturbed_margin = _perturb_after(quotes, margin, cutoff, seed=5)
    if request.param != "robust":
        perturbed_quotes = _appear_and_disappear_after(perturbed_quotes, cutoff)
    perturbed, _ = _build(perturbed_quotes, sectors, perturbed_margin, **settings)
    truncated, _ = _build(
        quotes.filter(pl.col("date") <= cutoff),
        sectors,
        margin.filter(pl.col("published_date") <= cutoff),
        **settings,
    )
    return {"cutoff": cutoff, "specs": specs, "base": base, "perturbed": perturbed, "truncated": truncated,
            "setting": request.param, "min_history": settings["min_history"], "quotes": quotes}


def _upto(frame: pl.DataFrame, cutoff: dt.date, columns: list[str]) -> pl.DataFrame:
    return frame.filter(pl.col("date") <= cutoff).sort("code", "date").select("code", "date", *columns)


def _assert_same(left: pl.DataFrame, right: pl.DataFrame, columns: list[str], scenario: str) -> None:
    assert left.select("code", "date").equals(right.select("code", "date")), f"{scenario}: row set differs"
    for name in columns:
        a = left.get_column(name).to_numpy().astype(float)
        b = right.get_column(name).to_numpy().astype(float)
        same_nulls = np.array_equal(np.isnan(a), np.isnan(b))
        close = np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
        assert same_nulls and close, (
            f"{scenario}: feature {name} at dates <= t changed when data after t changed "
            f"(max abs diff {np.nanmax(np.abs(a - b)):.3g})"
        )


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_is_unchanged_by_the_future(scenarios, family):
    cutoff = scenarios["cutoff"]
    columns = [s.name for s in scenarios["specs"] if s.family == family]
    assert columns, f"family {family} built no column on the test market"
    base = _upto(scenarios["base"], cutoff, columns)
    # Not vacuous: every column has values before the cutoff ...
    empty = [c for c in columns if base.get_column(c).null_count() == base.height]
    assert not empty, f"{family}: columns all-null before the cutoff: {empty}"
    _assert_same(base, _upto(scenarios["perturbed"], cutoff, columns), columns, "perturbed")
    _assert_same(base, _upto(scenarios["truncated"], cutoff, columns), columns, "truncated")


def test_perturbation_reaches_features_after_cutoff(scenarios):
    """The perturbation is real: most stock-level features do change after t."""
    cutoff = scenarios["cutoff"]
    names = [s.name for s in scenarios["specs"] if s.family in ("returns", "volume", "margin")]
    after = [f.filter(pl.col("date") > cutoff).sort("code", "date").select(names) for f in (scenarios["base"], scenarios["perturbed"])]
    changed = [n for n in names if not after[0].get_column(n).equals(after[1].get_column(n))]
    assert len(changed) >= 0.9 * len(names), f"only {len(changed)}/{len(names)} features changed after t"


def test_targets_are_the_only_forward_columns(scenarios):
    """Targets at t do change with data after t (they are forward returns) and are named
    target_*; no feature expression reads a target_* or oracle_* column."""
    cutoff = scenarios["cutoff"]
    base = scenarios["base"].filter(pl.col("date") < cutoff).sort("code", "date")
    perturbed = scenarios["perturbed"].filter(pl.col("date") < cutoff).sort("code", "date")
    assert not base.get_column("target_return_20d").equals(perturbed.get_column("target_return_20d"))
    for spec in scenarios["specs"]:
        roots = spec.expr.meta.root_names()
        assert not any(r.startswith(("target_", "oracle_")) for r in roots), f"{spec.name} reads {roots}"
        assert not spec.name.startswith(("target_", "oracle_"))


def test_universe_is_point_in_time(scenarios):
    """With min_history, a stock enters the universe on the day it has min_history rows up
    to that day: its first written row is its min_history-th input row, whatever its total
    row count, and stocks with fewer rows before t are already in it before t if they
    qualify by then."""
    min_history = scenarios["min_history"]
    if min_history == 1:
        pytest.skip("the point-in-time universe is exercised by the min_history setting")
    quotes = scenarios["quotes"].sort("code", "date")
    expected = (
        quotes.with_columns(pl.int_range(pl.len()).over("code").alias("row"))
        .filter(pl.col("row") == min_history - 1)
        .select("code", pl.col("date").alias("entry"))
    )
    written = scenarios["base"].group_by("code").agg(pl.col("date").min().alias("first_written"))
    joined = expected.join(written, on="code", how="full", coalesce=True)
    assert joined.filter(pl.col("entry") != pl.col("first_written")).is_empty()
    assert joined.get_column("entry").null_count() == 0 and joined.get_column("first_written").null_count() == 0
    # Late listings do enter mid-sample, so the rule is exercised on both sides of t.
    entries = joined.get_column("entry")
    first_day = quotes.get_column("date").min()
    assert (entries > first_day).sum() > 0 and (entries > scenarios["cutoff"]).sum() > 0


# --------------------------------------------------------------------------- market calendar

GAP_FAMILIES_EXEMPT = {"peers"}  # graphs: pairwise-complete correlation over calendar windows


def _gapped_market(small_market) -> tuple[pl.DataFrame, str, tuple[dt.date, dt.date]]:
    """The small market with one stock missing 30 sessions (a halt, or a gap in the data)."""
    quotes = small_market.quotes
    dates = quotes.get_column("date").unique().sort()
    code = quotes.get_column("code").unique().sort()[0]
    gap = (dates[200], dates[229])
    gapped = quotes.filter(~((pl.col("code") == code) & pl.col("date").is_between(*gap)))
    return gapped, code, gap


def _calendar_closes(panel: pl.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Adjusted closes as a dense [sessions, codes] matrix (NaN = no row that session)."""
    dates = panel.get_column("date").unique().sort()
    codes = panel.get_column("code").unique().sort().to_list()
    wide = panel.pivot(on="code", index="date", values="close").sort("date")
    full = dates.to_frame().join(wide, on="date", how="left").sort("date")
    return full.select(codes).to_numpy().astype(float), codes, dates.to_numpy()


@pytest.mark.parametrize("fill_end_days", [0, 2])
def test_targets_count_market_sessions(small_market, fill_end_days):
    """target_return_{h}d = close h sessions of the market calendar later over today's close,
    minus one; null when the stock has no close then (or, with fill_end_days = k, its next
    close within k further sessions) -- never a return over the stock's next h rows."""
    quotes, code, gap = _gapped_market(small_market)
    # Three short halts too, so that the fill rule has gaps of 1 and 2 sessions to bridge.
    dates = quotes.get_column("date").unique().sort()
    other = quotes.get_column("code").unique().sort()[1]
    halts = [dates[100], dates[150], dates[151]]
    quotes = quotes.filter(~((pl.col("code") == other) & pl.col("date").is_in(halts)))
    inputs = inputs_from_frames(quotes, small_market.sectors, None, InputConfig(), "gaps")
    horizons = (1, 5, 20)
    frame, _ = compute_features(
        inputs.panel, None, horizons=horizons, families=["returns"], normalization="none",
        dtype=pl.Float64(), fill_end_days=fill_end_days,
    )
    closes, codes, calendar = _calendar_closes(inputs.panel)
    row_of = {d: i for i, d in enumerate(calendar)}
    col_of = {c: j for j, c in enumerate(codes)}
    got = frame.select("code", "date", *(f"target_return_{h}d" for h in horizons))
    n_sessions = len(calendar)
    for h in horizons:
        expected = np.full(got.height, np.nan)
        for k, (c, d) in enumerate(zip(got.get_column("code").to_list(), got.get_column("date").to_numpy())):
            i, j = row_of[d], col_of[c]
            for end in range(i + h, min(i + h + fill_end_days, n_sessions - 1) + 1):
                if not np.isnan(closes[end, j]):
                    expected[k] = closes[end, j] / closes[i, j] - 1.0
                    break
        actual = got.get_column(f"target_return_{h}d").to_numpy().astype(float)
        assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"h={h}: null pattern differs"
        np.testing.assert_allclose(actual, expected, rtol=1e-12, equal_nan=True, err_msg=f"h={h}")
    # The row before the 30-session gap: no 1-day target (not the 31-session return).
    before = got.filter((pl.col("code") == code) & (pl.col("date") < gap[0])).sort("date").tail(1)
    assert before.get_column("target_return_1d").is_null().all()
    if fill_end_days:
        bridged = got.filter((pl.col("code") == other) & (pl.col("date") == dates[149]))
        assert bridged.get_column("target_return_1d").is_not_null().all(), "a 2-session halt is bridged"


def test_features_do_not_step_over_gaps(small_market):
    """After a stock's 30 missing sessions, each of its own time-series features is either
    null or computed from rows after the gap only: changing every price and volume of the
    stock before the gap leaves its non-null features after the gap unchanged. (Per-day
    market/sector columns and the graph-based peers family legitimately read other dates.)"""
    quotes, code, gap = _gapped_market(small_market)
    rng = np.random.default_rng(3)
    mask = ((quotes.get_column("code") == code) & (quotes.get_column("date") < gap[0])).to_numpy()
    factor = np.where(mask, np.exp(rng.normal(0.0, 0.2, quotes.height)), 1.0)
    volume_factor = np.where(mask, np.exp(rng.normal(0.0, 0.5, quotes.height)), 1.0)
    perturbed = quotes.with_columns(
        *(pl.col(c) * factor for c in ("open", "high", "low", "close")),
        pl.col("volume") * volume_factor,
        pl.col("turnover_value") * factor * volume_factor,
    )
    settings = dict(dtype=pl.Float64(), normalization="none", graph=GraphConfig(dtype="float64"))
    built = []
    for frame in (quotes, perturbed):
        inputs = inputs_from_frames(frame, small_market.sectors, None, InputConfig(), "gaps")
        built.append(compute_features(inputs.panel, None, **settings))
    (base, specs), (moved, _) = built
    own = [
        s.name for s in specs
        if s.stage == 1 and s.masked and not s.spans_gaps and s.family not in GAP_FAMILIES_EXEMPT
    ]
    after = [f.filter((pl.col("code") == code) & (pl.col("date") > gap[1])).sort("date") for f in (base, moved)]
    assert after[0].height > 150
    changed = []
    for name in own:
        a = after[0].get_column(name).to_numpy().astype(float)
        b = after[1].get_column(name).to_numpy().astype(float)
        both = ~np.isnan(a) & ~np.isnan(b)
        if not np.array_equal(np.isnan(a), np.isnan(b)) or not np.allclose(a[both], b[both], rtol=1e-9, atol=1e-12):
            changed.append(name)
    assert not changed, f"features after the gap read prices from before it: {changed[:10]}"
    # Not vacuous: right after the gap the window features are null; later they are back.
    first = after[0].head(1)
    assert first.get_column("return_1d").is_null().all() and first.get_column("realized_vol_20d").is_null().all()
    later = after[0].filter(pl.col("date") > after[0].get_column("date")[130])
    filled = [n for n in own if later.get_column(n).null_count() == 0]
    assert len(filled) >= 0.8 * len(own), f"only {len(filled)}/{len(own)} features are back after 130 sessions"


@pytest.mark.shared_data
def test_sp500_target_does_not_cross_a_gap_into_the_test_period(tmp_path):
    """The hostile tester's case on the real file: ABBV with its rows of 2017-08-02 ..
    2017-10-10 deleted. The training row of 2017-08-01 (a fold's last training day) used to
    carry close(2017-10-11) / close(2017-08-01) - 1 = +0.31 as its "1d" target, reaching
    49 sessions into the test days; on the market calendar it has no 1-day target."""
    path = require_shared_data("sp500", "daily_1999_2018.parquet")
    codes = ["ABBV", "AAPL", "MSFT", "JNJ"]
    gapped = pl.read_parquet(path).filter(
        pl.col("code").is_in(codes)
        & ~((pl.col("code") == "ABBV") & pl.col("date").is_between(dt.date(2017, 8, 2), dt.date(2017, 10, 10)))
    )
    file = tmp_path / "gapped.parquet"
    gapped.write_parquet(file)
    inputs = load_inputs(InputConfig(path=file, preset="sp500"))
    frame, _ = compute_features(inputs.panel, None, horizons=(1, 5), families=["returns"], normalization="none")
    abbv = frame.filter(pl.col("code") == "ABBV").sort("date")
    last_before = abbv.filter(pl.col("date") == dt.date(2017, 8, 1))
    first_after = abbv.filter(pl.col("date") == dt.date(2017, 10, 11))
    assert last_before.get_column("target_return_1d").is_null().all()
    assert last_before.get_column("target_return_5d").is_null().all()
    assert first_after.get_column("return_1d").is_null().all()
    # Elsewhere the targets are the plain one-session returns.
    day = abbv.filter(pl.col("date") == dt.date(2017, 7, 31)).get_column("target_return_1d").item()
    assert day == pytest.approx(58.960132 / 58.566395 - 1.0, rel=1e-5)
