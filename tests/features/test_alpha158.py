"""The alpha158 family: equal to Qlib's Alpha158 where both are defined, optional in the
registry, and leak-free like every family.

The Qlib values come from ``tests/features/data/alpha158_qlib_fixture.parquet``, written by
``benchmarks/make_alpha158_fixture.py`` with Qlib's own ``Alpha158`` handler (raw features,
before any processor) on 4 S&P 500 stocks x 105 sessions (2012-11-15 .. 2013-04-18; ABMD
misses 2012-12-06, ABBV lists on 2013-01-02), so this test needs no Qlib.

Agreement: ``|kizashi - qlib| <= RTOL * |qlib| + atol`` with RTOL = 1e-5 and atol = 1e-12,
except CORR*, CORD* and WVMA* (atol 1e-5): Qlib stores prices and volumes as float32 and
evaluates element-wise operators (``Log($volume+1)``, ``$close/Ref($close,1)``, ``Abs(...)-1``)
in float32: a one-day price ratio carries ~6e-8 of round-off, which a correlation near zero or
a dispersion-over-mean ratio of small moves amplifies (here up to 5.3e-6 absolute on CORR5 and
9.4e-6 on WVMA5, 1.1e-5 of its value). With the same files read as float64
(``make_alpha158_fixture.py --check-float64``) every feature agrees to 1e-5 relative + 1e-12.

Not compared:
* VWAP0: the file has no VWAP, Qlib's column is all NaN and kizashi does not build it.
* Values Qlib has where kizashi is null: a window that is not full of consecutive sessions
  (a stock's first N - 1 sessions, or a window across its missing session): Qlib's rolling
  operators use ``min_periods=1`` and skip missing days; kizashi's lookbacks count market
  sessions and need every one of them. The test asserts that this is the only case.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_features_leakage import (  # tests/features is on sys.path
    CUTOFF_INDEX,
    MIN_HISTORY,
    _appear_and_disappear_after,
    _assert_same,
    _gapped_market,
    _perturb_after,
    _upto,
    _with_listing_events,
)

from kizashi.config import InputConfig
from kizashi.data.inputs import inputs_from_frames
from kizashi.errors import ConfigError
from kizashi.features.alpha158 import PREFIX, QLIB_NAMES
from kizashi.features.expressions import RUN_ROW
from kizashi.features.pipeline import compute_features, prepare_base
from kizashi.features.registry import (
    FAMILY_NAMES,
    OPTIONAL_FAMILY_NAMES,
    resolve_specs,
    select_families,
)
from kizashi.features.spec import FeatureContext

FIXTURE = Path(__file__).resolve().parent / "data" / "alpha158_qlib_fixture.parquet"
PRICES = ("open", "high", "low", "close", "volume")
RTOL = 1e-5
ATOL = 1e-12
FLOAT32_ATOL = 1e-5
FLOAT32_SENSITIVE = ("CORR", "CORD", "WVMA")
QLIB_ALPHA158_COLUMNS = 158


def _atol(name: str) -> float:
    return FLOAT32_ATOL if name.startswith(FLOAT32_SENSITIVE) else ATOL


@pytest.fixture(scope="module")
def compared() -> pl.DataFrame:
    """The fixture's rows with kizashi's alpha158 columns and each row's run length."""
    fixture = pl.read_parquet(FIXTURE)
    panel = fixture.select("code", "date", *(pl.col(p).cast(pl.Float64) for p in PRICES))
    built, _ = compute_features(panel, families=["alpha158"], horizons=(1,), normalization="none", dtype=pl.Float64())
    runs = prepare_base(panel, (1,)).select("code", "date", RUN_ROW)
    return fixture.join(built.drop("sector", "target_return_1d"), on=["code", "date"], how="left").join(
        runs, on=["code", "date"], how="left"
    )


def test_the_family_is_qlib_alpha158_but_vwap0():
    specs = resolve_specs(FeatureContext(), ["alpha158"])
    fixture_names = [n.removeprefix("qlib_") for n in pl.read_parquet_schema(FIXTURE) if n.startswith("qlib_")]
    assert len(fixture_names) == QLIB_ALPHA158_COLUMNS
    assert [s.name for s in specs] == [PREFIX + n for n in fixture_names if n != "VWAP0"]
    assert [s.name for s in specs] == [PREFIX + n for n in QLIB_NAMES]
    assert {s.family for s in specs} == {"alpha158"} and all(s.kind == "continuous" for s in specs)


def test_values_equal_qlib_where_both_are_defined(compared):
    lookback = {s.name: s.lookback for s in resolve_specs(FeatureContext(), ["alpha158"])}
    run_row = compared.get_column(RUN_ROW).to_numpy()
    failures = []
    for name in QLIB_NAMES:
        ours = compared.get_column(PREFIX + name).to_numpy().astype(float)
        qlib = compared.get_column(f"qlib_{name}").to_numpy().astype(float)
        both = ~np.isnan(ours) & ~np.isnan(qlib)
        assert both.sum() >= 100, f"{name}: only {both.sum()} values to compare"
        diff = np.abs(ours[both] - qlib[both])
        bad = diff > RTOL * np.abs(qlib[both]) + _atol(name)
        if bad.any():
            failures.append(f"{name}: {bad.sum()} values, max |diff| {diff.max():.3g}")
        only_ours = ~np.isnan(ours) & np.isnan(qlib)
        assert not only_ours.any(), f"{name}: kizashi has {only_ours.sum()} values where Qlib has none"
        # Qlib alone: only in windows that are not full of consecutive sessions.
        only_qlib = np.isnan(ours) & ~np.isnan(qlib)
        assert (run_row[only_qlib] < lookback[PREFIX + name]).all(), f"{name}: Qlib alone on full windows"
    assert not failures, "alpha158 differs from Qlib's Alpha158:\n" + "\n".join(failures)


def test_qlib_vwap0_is_empty_on_this_data(compared):
    """Qlib's VWAP0 reads $vwap, which the S&P 500 file does not have: all NaN."""
    assert compared.get_column("qlib_VWAP0").is_null().all()


def test_windows_across_a_missing_session_are_null_where_qlib_fills_them(compared):
    """ABMD has no row on 2012-12-06. Qlib computes its windows across that day from the
    rows it has; kizashi's are null until they hold only sessions after it."""
    abmd = compared.filter(pl.col("code") == "ABMD").sort("date")
    after = abmd.filter(pl.col("date") == dt.date(2012, 12, 7))
    assert after.get_column(f"{PREFIX}ROC5").is_null().all() and after.get_column("qlib_ROC5").is_not_null().all()
    assert after.get_column(f"{PREFIX}KMID").is_not_null().all()  # today-only features stay
    first_full = abmd.filter(pl.col("date") > dt.date(2012, 12, 6)).row(5, named=True)  # 5 sessions after
    assert first_full[f"{PREFIX}ROC5"] is not None and first_full[f"{PREFIX}MA5"] is not None


# ------------------------------------------------------------------------------- registry


def test_all_does_not_build_the_optional_family():
    assert "alpha158" in OPTIONAL_FAMILY_NAMES and "alpha158" not in FAMILY_NAMES
    assert [f.name for f in select_families("all")] == list(FAMILY_NAMES)
    with_alpha = [f.name for f in select_families(["all", "alpha158"])]
    assert with_alpha == [*FAMILY_NAMES, "alpha158"]
    assert [f.name for f in select_families(["returns", "alpha158"], exclude=["returns"])] == ["alpha158"]


def test_unknown_family_names_the_optional_ones():
    with pytest.raises(ConfigError, match="alpha158"):
        select_families(["alpha15"])


# ---------------------------------------------------------------------------- look-ahead


@pytest.mark.parametrize(
    "setting",
    [{"normalization": "robust", "chunk_days": None, "min_history": 1},
     {"normalization": "zscore", "chunk_days": 45, "min_history": MIN_HISTORY}],
    ids=["robust", "zscore_chunked_min_history"],
)
def test_alpha158_is_unchanged_by_the_future(small_market, setting):
    """The perturbation test of ``test_features_leakage.py`` for this optional family (that
    module builds ``families: all``): values at dates <= t are the same whatever happens to
    the raw data after t, and the same as a build of the data up to t only."""
    quotes, sectors, margin = small_market.quotes, small_market.sectors, small_market.margin
    dates = quotes.get_column("date").unique().sort()
    cutoff = dates[CUTOFF_INDEX]
    listing_events = setting["min_history"] > 1
    if listing_events:
        quotes = _with_listing_events(quotes, dates)
        newcomer_sector = sectors.filter(pl.col("code") == quotes.get_column("code").unique().sort()[4])
        sectors = pl.concat([sectors, newcomer_sector.with_columns(pl.lit("NEWCOMER").alias("code"))])

    def build(q, m):
        config = InputConfig(min_history=setting["min_history"], on_price_jump="keep")
        inputs = inputs_from_frames(q, sectors, m, config, "alpha158-leakage")
        frame, specs = compute_features(inputs.panel, inputs.margin, families=["alpha158"], dtype=pl.Float64(), **setting)
        return frame, [s.name for s in specs]

    base, columns = build(quotes, margin)
    perturbed_quotes, perturbed_margin = _perturb_after(quotes, margin, cutoff, seed=7)
    if listing_events:
        perturbed_quotes = _appear_and_disappear_after(perturbed_quotes, cutoff)
    perturbed, _ = build(perturbed_quotes, perturbed_margin)
    truncated, _ = build(quotes.filter(pl.col("date") <= cutoff), margin.filter(pl.col("published_date") <= cutoff))
    upto = _upto(base, cutoff, columns)
    empty = [c for c in columns if upto.get_column(c).null_count() == upto.height]
    assert not empty, f"columns all-null before the cutoff: {empty}"
    _assert_same(upto, _upto(perturbed, cutoff, columns), columns, "perturbed")
    _assert_same(upto, _upto(truncated, cutoff, columns), columns, "truncated")
    after = [f.filter(pl.col("date") > cutoff).sort("code", "date") for f in (base, perturbed)]
    changed = [c for c in columns if not after[0].get_column(c).equals(after[1].get_column(c))]
    assert len(changed) >= 0.9 * len(columns), "the perturbation after t reaches the features"


def test_alpha158_does_not_step_over_gaps(small_market):
    """After a stock's 30 missing sessions its alpha158 values read rows after the gap
    only: changing every price and volume before the gap leaves them unchanged."""
    quotes, code, gap = _gapped_market(small_market)
    rng = np.random.default_rng(3)
    before = ((quotes.get_column("code") == code) & (quotes.get_column("date") < gap[0])).to_numpy()
    factor = np.where(before, np.exp(rng.normal(0.0, 0.2, quotes.height)), 1.0)
    volume_factor = np.where(before, np.exp(rng.normal(0.0, 0.5, quotes.height)), 1.0)
    moved = quotes.with_columns(
        *(pl.col(p) * factor for p in ("open", "high", "low", "close")),
        pl.col("volume") * volume_factor,
        pl.col("turnover_value") * factor * volume_factor,
    )
    built = []
    for frame in (quotes, moved):
        inputs = inputs_from_frames(frame, small_market.sectors, None, InputConfig(), "gaps")
        out, specs = compute_features(inputs.panel, None, families=["alpha158"], normalization="none", dtype=pl.Float64())
        built.append(out.filter((pl.col("code") == code) & (pl.col("date") > gap[1])).sort("date"))
    columns = [s.name for s in specs]
    _assert_same(built[0], built[1], columns, "gap")
    later = built[0].filter(pl.col("date") > built[0].get_column("date")[61])
    assert all(later.get_column(c).null_count() < later.height for c in columns), "values come back after the gap"
