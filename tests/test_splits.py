"""Walk-forward folds: purge/embargo gaps in trading days, test windows, train modes, errors."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import numpy as np
import polars as pl
import pytest

from kizashi.config import SplitConfig
from kizashi.data.calendar import trading_calendar
from kizashi.splits import (
    MAX_FITTED_FOLDS,
    MIN_FITTED_TEST_DAYS,
    Fold,
    fit_splits_to_calendar,
    fold_labels,
    walk_forward_folds,
)


def holiday_calendar(n_days: int, seed: int = 0) -> np.ndarray:
    """Weekdays from 2020-01-06 with ~4% random holidays removed: gaps of 1 to 5 calendar days."""
    rng = np.random.default_rng(seed)
    days = np.arange(np.datetime64("2020-01-06"), np.datetime64("2020-01-06") + 3 * n_days)
    weekdays = days[np.is_busday(days)]
    kept = weekdays[rng.random(weekdays.size) > 0.04]
    assert kept.size >= n_days
    return kept[:n_days]


def positions(calendar: np.ndarray, part: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(calendar, part)
    assert np.array_equal(calendar[pos], part), "fold dates must be calendar dates"
    return pos


def required_days(cfg: SplitConfig, purge: int) -> int:
    val_block = cfg.val_days + purge if cfg.val_days else 0
    return cfg.min_train_days + val_block + purge + cfg.embargo_days + cfg.n_folds * cfg.test_days


GRID = list(
    itertools.product(
        [1, 3],  # n_folds
        [5, 23],  # test_days
        [None, 70],  # train_days
        [30, 70],  # min_train_days
        [0, 11],  # val_days
        [None, 0, 4],  # purge_days
        [0, 6],  # embargo_days
        [1, 10],  # max_horizon
    )
)


@pytest.mark.parametrize("n_dates", [150, 260])
def test_gaps_and_windows_over_parameter_grid(n_dates: int) -> None:
    calendar = holiday_calendar(n_dates)
    built = refused = 0
    for n_folds, test_days, train_days, min_train, val_days, purge_days, embargo, horizon in GRID:
        if train_days is not None and train_days < min_train:
            continue  # a separate test covers this configuration error
        cfg = SplitConfig(
            n_folds=n_folds,
            test_days=test_days,
            train_days=train_days,
            min_train_days=min_train,
            val_days=val_days,
            purge_days=purge_days,
            embargo_days=embargo,
        )
        purge = horizon if purge_days is None else purge_days
        gap = purge + embargo
        label = f"cfg={cfg.model_dump()} horizon={horizon}"
        if purge < horizon:
            with pytest.raises(ValueError, match="purge_days .* shorter than the targets' reach"):
                walk_forward_folds(calendar, cfg, horizon)
            refused += 1
            continue
        if n_dates < required_days(cfg, purge):
            with pytest.raises(ValueError, match="too short"):
                walk_forward_folds(calendar, cfg, horizon)
            refused += 1
            continue
        folds = walk_forward_folds(calendar, cfg, horizon)
        built += 1
        assert [f.index for f in folds] == list(range(n_folds)), label

        test_positions = []
        for fold in folds:
            train = positions(calendar, fold.train_dates)
            val = positions(calendar, fold.val_dates)
            test = positions(calendar, fold.test_dates)
            for part in (train, val, test):
                assert np.all(np.diff(part) == 1), f"{label}: each part is a contiguous slice"
            assert fold.purge_days == purge and fold.embargo_days == embargo
            # no test date within purge + embargo trading days of any train / val date
            assert np.abs(test[:, None] - train[None, :]).min() > gap, label
            if val_days:
                assert val.size == val_days, label
                assert np.abs(test[:, None] - val[None, :]).min() > gap, label
                assert test[0] - val[-1] - 1 == gap, label
                assert np.abs(val[:, None] - train[None, :]).min() > purge, label
                assert val[0] - train[-1] - 1 == purge, label
            else:
                assert val.size == 0, label
                assert test[0] - train[-1] - 1 == gap, f"{label}: gap is exactly purge + embargo"
            assert train.size >= min_train, label
            if train_days is None:
                assert train[0] == 0, f"{label}: expanding train starts at the first date"
            else:
                assert train.size == min(train_days, train[-1] + 1), label
            assert test.size == test_days, label
            test_positions.append(test)

        # test windows: consecutive, non-overlapping, the last ones of the calendar
        joined = np.concatenate(test_positions)
        assert np.array_equal(joined, np.arange(n_dates - n_folds * test_days, n_dates)), label
    assert built > 20
    if n_dates == 150:
        assert refused > 5  # the short calendar exercises the error branch too


def test_gap_is_counted_in_trading_days_not_calendar_days() -> None:
    # Weekdays only, with a six-weekday closure in the middle of the purge + embargo gap.
    days = np.arange(np.datetime64("2021-01-04"), np.datetime64("2022-06-30"))
    weekdays = days[np.is_busday(days)]
    head, middle, test = weekdays[:-34], weekdays[-34:-20], weekdays[-20:]
    gap_dates = np.concatenate([middle[:4], middle[10:]])  # 8 trading dates, 14 weekdays
    calendar = np.concatenate([head, gap_dates, test])
    cfg = SplitConfig(n_folds=1, test_days=20, min_train_days=100, purge_days=5, embargo_days=3)
    fold = walk_forward_folds(calendar, cfg, max_horizon=1)[0]
    assert np.array_equal(fold.test_dates, test)
    assert fold.train_dates[-1] == head[-1]  # exactly the 8 trading dates are left out ...
    calendar_days = int((fold.test_dates[0] - fold.train_dates[-1]).astype(int))
    assert calendar_days >= 20  # ... which span 19 weekdays + weekends


def test_expanding_versus_rolling_train() -> None:
    calendar = holiday_calendar(400)
    base = dict(n_folds=3, test_days=30, min_train_days=100, purge_days=5, embargo_days=5)
    expanding = walk_forward_folds(calendar, SplitConfig(**base), 5)
    rolling = walk_forward_folds(calendar, SplitConfig(**base, train_days=150), 5)
    assert all(f.train_dates[0] == calendar[0] for f in expanding)
    sizes = [f.train_dates.size for f in expanding]
    assert sizes == sorted(sizes) and sizes[1] - sizes[0] == 30  # grows by one test window
    assert [f.train_dates.size for f in rolling] == [150, 150, 150]
    for e, r in zip(expanding, rolling, strict=True):
        assert e.train_dates[-1] == r.train_dates[-1]  # same end, different start
        assert np.array_equal(e.test_dates, r.test_dates)
    assert rolling[1].train_dates[0] > rolling[0].train_dates[0]


def test_rolling_window_longer_than_history_is_clipped_to_the_start() -> None:
    calendar = holiday_calendar(200)
    cfg = SplitConfig(n_folds=2, test_days=20, train_days=1000, min_train_days=50, embargo_days=0)
    folds = walk_forward_folds(calendar, cfg, 5)
    assert all(f.train_dates[0] == calendar[0] for f in folds)


def test_too_short_calendar_names_needed_and_available_days() -> None:
    calendar = holiday_calendar(300)
    cfg = SplitConfig(n_folds=2, test_days=50, min_train_days=150, val_days=10, embargo_days=5)
    # needed: 150 + (10 + 20) + (20 + 5) + 2 * 50 = 305
    with pytest.raises(ValueError, match=r"305 trading days needed.*300 available"):
        walk_forward_folds(calendar, cfg, max_horizon=20)
    assert len(walk_forward_folds(holiday_calendar(305), cfg, max_horizon=20)) == 2


def test_train_days_shorter_than_min_train_days_is_an_error() -> None:
    cfg = SplitConfig(train_days=100, min_train_days=250)
    expected = "train_days .100. is shorter than splits.min_train_days .250."
    with pytest.raises(ValueError, match=expected):
        walk_forward_folds(holiday_calendar(2000), cfg, 5)


def test_negative_horizon_is_an_error() -> None:
    with pytest.raises(ValueError, match="max_horizon"):
        walk_forward_folds(holiday_calendar(2000), SplitConfig(), -1)


def test_calendar_input_forms_are_deduplicated_and_sorted() -> None:
    calendar = holiday_calendar(320)
    shuffled = np.random.default_rng(3).permutation(np.concatenate([calendar, calendar[:40]]))
    as_dates = [d.astype(dt.date) for d in shuffled]
    forms = [
        shuffled,
        as_dates,
        [str(d) for d in shuffled],
        pl.Series("date", as_dates, dtype=pl.Date),
        pl.Series("ts", as_dates, dtype=pl.Date).cast(pl.Datetime("us")),
    ]
    for form in forms:
        assert np.array_equal(trading_calendar(form), calendar)
    cfg = SplitConfig(n_folds=2, test_days=20, min_train_days=100)
    reference = walk_forward_folds(calendar, cfg, 5)
    for form in forms:
        folds = walk_forward_folds(form, cfg, 5)
        for a, b in zip(folds, reference, strict=True):
            assert a.to_dict() == b.to_dict()
    with pytest.raises(ValueError, match="null"):
        trading_calendar(pl.Series([dt.date(2020, 1, 1), None]))


def test_fold_to_dict_is_json_safe() -> None:
    calendar = holiday_calendar(400)
    fold = walk_forward_folds(calendar, SplitConfig(n_folds=2, test_days=30, val_days=20), 5)[0]
    summary = json.loads(json.dumps(fold.to_dict()))
    assert summary["index"] == 0
    assert summary["test_n_days"] == 30 and summary["val_n_days"] == 20
    assert summary["train_first"] == str(calendar[0])
    assert summary["test_last"] == str(fold.test_dates[-1])
    assert summary["purge_days"] == 5 and summary["embargo_days"] == 20
    no_val = walk_forward_folds(calendar, SplitConfig(n_folds=2, test_days=30), 5)[1].to_dict()
    assert no_val["val_first"] is None and no_val["val_n_days"] == 0
    assert no_val["test_last"] == str(calendar[-1])
    with pytest.raises(ValueError):  # fold arrays are read-only
        fold.train_dates[0] = calendar[-1]


def test_fold_labels_tag_rows_of_a_panel() -> None:
    calendar = holiday_calendar(400)
    fold: Fold = walk_forward_folds(
        calendar, SplitConfig(n_folds=2, test_days=30, val_days=20, min_train_days=100), 5
    )[0]
    dates = [d.astype(dt.date) for d in calendar]
    panel = pl.DataFrame({"code": ["A"] * len(dates) + ["B"] * len(dates), "date": dates * 2})
    tagged = panel.with_columns(fold_labels("date", fold))
    assert tagged["fold_part"].dtype == pl.Enum(["train", "val", "test"])
    counts = dict(tagged.group_by("fold_part").len().iter_rows())
    assert counts["train"] == 2 * fold.train_dates.size
    assert counts["val"] == 2 * fold.val_dates.size
    assert counts["test"] == 2 * fold.test_dates.size
    assert counts[None] == 2 * (calendar.size - fold.train_dates.size - 20 - 30)
    first_test = tagged.filter(pl.col("fold_part") == "test")["date"].min()
    assert first_test == fold.test_dates[0].astype(dt.date)
    # Series in, Series out; an expression works the same in a lazy query
    series = fold_labels(panel["date"], fold)
    assert isinstance(series, pl.Series) and series.equals(tagged["fold_part"])
    lazy = panel.lazy().with_columns(fold_labels(pl.col("date"), fold)).collect()
    assert lazy["fold_part"].equals(tagged["fold_part"])


@pytest.mark.parametrize("n_dates", [120, 300, 600, 1000, 2600, 4693])
@pytest.mark.parametrize("val_days", [0, 60])
@pytest.mark.parametrize("max_horizon", [1, 20])
def test_splits_fitted_to_the_calendar_always_fit_it(n_dates: int, val_days: int, max_horizon: int) -> None:
    """Sized splits: folds that fit, test windows of at least a quarter where the data has
    room (one window otherwise), at most MAX_FITTED_FOLDS, the last one ending on the last day,
    the first fold trained on about half of what is left after the gaps."""
    calendar = holiday_calendar(n_dates)
    config = SplitConfig(val_days=val_days, embargo_days=20)
    gaps = (val_days + max_horizon if val_days else 0) + max_horizon + 20
    if n_dates < 60 + 20 + gaps:  # 60 training and 20 test days at least
        with pytest.raises(ValueError, match="too few"):
            fit_splits_to_calendar(n_dates, config, max_horizon)
        return
    fitted = fit_splits_to_calendar(n_dates, config, max_horizon)
    assert (fitted.val_days, fitted.embargo_days, fitted.purge_days) == (val_days, 20, None)
    folds = walk_forward_folds(calendar, fitted, max_horizon)
    assert len(folds) == fitted.n_folds <= MAX_FITTED_FOLDS
    assert folds[-1].test_dates[-1] == calendar[-1]
    assert fitted.n_folds == 1 or fitted.test_days >= MIN_FITTED_TEST_DAYS
    left = n_dates - gaps
    assert abs(fitted.min_train_days - left / 2) <= 1 or fitted.min_train_days == 60
    assert len(folds[0].train_dates) >= fitted.min_train_days
    # what is not tested is at most one window's rounding beyond the first fold's training
    assert n_dates - gaps - fitted.n_folds * fitted.test_days - fitted.min_train_days < fitted.n_folds


def test_a_calendar_too_short_to_fit_names_the_days_needed() -> None:
    with pytest.raises(ValueError, match=r"100 trading days are too few .* at least 105 "):
        fit_splits_to_calendar(100, SplitConfig(val_days=0, embargo_days=20), 5)
