"""The day-panel cache, feature statistics, the one-day dataset, collate and loader, on a
small synthetic market (30 stocks x 300 days, late listings, graphs from day 30)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings

import numpy as np
import polars as pl
import pytest
import torch

from kizashi.datasets.build import build_dataset
from kizashi.datasets.store import read_metadata, scan_features, scan_graphs
from kizashi.config import DataBuildConfig, SplitConfig, config_from_dict
from kizashi.datasets import (
    DayPanelCache,
    DayPanelDataset,
    FeatureStats,
    collate_days,
    day_loader,
    fit_feature_stats,
    fold_day_indices,
)
from kizashi.datasets.statistics import FittedStatistics
from kizashi.splits import Fold, walk_forward_folds

SMALL = {
    "synthetic": {"n_stocks": 30, "n_days": 300, "seed": 3},
    "graph": {"window": 30, "top_k": 5},
}
HORIZONS = [1, 5, 10, 20]
SPLITS = {"n_folds": 2, "test_days": 40, "min_train_days": 100, "embargo_days": 5}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("day_panel") / "dataset"
    build_dataset(config_from_dict(DataBuildConfig, SMALL), out)
    return out


@pytest.fixture(scope="module")
def cache(dataset_dir):
    return DayPanelCache(dataset_dir)


@pytest.fixture(scope="module")
def frame(dataset_dir):
    return scan_features(dataset_dir).collect()


@pytest.fixture(scope="module")
def folds(cache):
    return walk_forward_folds(cache.dates, SplitConfig(**SPLITS), max(HORIZONS))


def _late_listing(frame: pl.DataFrame) -> tuple[str, np.datetime64]:
    first = frame.group_by("code").agg(pl.col("date").min()).sort("date", "code")
    code, date = first.row(-1)
    assert date > frame.get_column("date").min(), "the synthetic market lists some stocks late"
    return code, np.datetime64(date, "D")


def test_cache_matches_parquet(cache, frame, dataset_dir):
    meta = read_metadata(dataset_dir)
    features = meta.feature_columns
    assert cache.feature_columns == features and cache.horizons == HORIZONS
    assert cache.features.shape == (meta.n_days, meta.n_codes, len(features))
    assert cache.targets.shape == (meta.n_days, meta.n_codes, len(HORIZONS))
    assert int(cache.alive.sum()) == frame.height == meta.n_rows
    rows = frame.sample(12, seed=1).vstack(frame.filter(pl.col("date") == pl.col("date").max()).head(2))
    for row in rows.iter_rows(named=True):
        t = int(cache.day_indices(np.datetime64(row["date"], "D"))[0])
        n = cache.codes.index(row["code"])
        assert cache.alive[t, n]
        expected = np.array([np.nan if row[c] is None else row[c] for c in features], dtype=np.float32)
        np.testing.assert_array_equal(cache.features[t, n], expected)  # NaN == NaN here
        targets = np.array([np.nan if row[f"target_return_{h}d"] is None else row[f"target_return_{h}d"] for h in HORIZONS])
        np.testing.assert_allclose(cache.targets[t, n], targets, rtol=1e-6)
    assert np.isnan(cache.features[cache.alive == False]).all()  # noqa: E712  (no row -> NaN)
    code, listed = _late_listing(frame)
    n = cache.codes.index(code)
    t_listed = int(cache.day_indices(listed)[0])
    assert not cache.alive[:t_listed, n].any() and cache.alive[t_listed, n]


def test_arrays_are_memory_mapped_and_pickle_by_path(cache):
    for name in ("features", "targets", "alive", "edge_src", "edge_dst", "edge_attr", "edge_offsets"):
        assert isinstance(getattr(cache, name), np.memmap), name
        assert not getattr(cache, name).flags.writeable
    assert cache.edge_src.dtype == np.int32 and cache.edge_attr.shape[1] == 3 and cache.edge_offsets.dtype == np.int64
    blob = pickle.dumps(cache)
    assert len(blob) < 10_000, "the cache pickles as its path, not its arrays"
    again = pickle.loads(blob)
    assert isinstance(again.features, np.memmap) and again.features.shape == cache.features.shape


def test_window_for_a_late_listed_stock(cache, frame):
    code, listed = _late_listing(frame)
    n = cache.codes.index(code)
    t_listed = int(cache.day_indices(listed)[0])
    window = 10
    day = t_listed + 3  # 4 observed days, 6 before listing
    dataset = DayPanelDataset(cache, [day], window=window)
    item = dataset[0]
    row = int(np.flatnonzero(item["codes"].numpy() == n)[0])
    x, mask = item["x"][row].numpy(), item["mask"][row].numpy()
    assert item["x"].dtype == torch.float32 and item["x"].shape == (len(item["codes"]), window, cache.n_features)
    assert mask.tolist() == [False] * 6 + [True] * 4
    assert (x[:6] == 0).all()
    stock = frame.filter(pl.col("code") == code).sort("date").head(4).select(cache.feature_columns)
    np.testing.assert_array_equal(x[6:], np.nan_to_num(stock.to_numpy().astype(np.float32), nan=0.0))
    # the stock is alive that day; every node of the item is alive that day
    assert cache.alive[day, item["codes"].numpy()].all() and item["day"] == day
    assert int(cache.alive[day].sum()) == len(item["codes"])
    # near the calendar start the window is zero-padded
    early = DayPanelDataset(cache, [2], window=window)[0]
    assert not early["mask"][:, :7].any() and (early["x"][:, :7] == 0).all()
    # min_history keeps only stocks with enough observed days in the window
    strict = DayPanelDataset(cache, [day], window=window, min_history=5)[0]
    assert n not in strict["codes"].tolist() and (strict["mask"].sum(1) >= 5).all()


def test_targets_and_their_mask(cache, frame):
    last = cache.n_days - 1
    dataset = DayPanelDataset(cache, [last - 3, last], window=5)
    near_end = dataset[0]
    # 3 days before the end: the 1d target is known, the 5d+ ones are not
    assert near_end["y_mask"][:, 0].all() and not near_end["y_mask"][:, 1:].any()
    assert (near_end["y"][:, 1:] == 0).all()
    date = cache.dates[last - 3]
    expected = (
        frame.filter(pl.col("date") == date.astype(object))
        .sort("code")
        .get_column("target_return_1d")
        .to_numpy()
        .astype(np.float32)
    )
    np.testing.assert_allclose(near_end["y"][:, 0].numpy(), expected, rtol=1e-6)
    assert not dataset[1]["y_mask"].any() and (dataset[1]["y"] == 0).all()
    ranks = DayPanelDataset(cache, [100], window=5, target="rank")[0]
    assert ranks["y_mask"].all() and ranks["y"].min() >= -1 and ranks["y"].max() <= 1


def test_edges_are_reindexed_per_day(cache, dataset_dir):
    graphs = scan_graphs(dataset_dir).collect()
    first_graph_day = int(cache.day_indices(np.datetime64(graphs.get_column("date").min(), "D"))[0])
    assert first_graph_day > 0
    empty = DayPanelDataset(cache, [first_graph_day - 1], window=5)[0]
    assert empty["edge_index"].shape == (2, 0) and empty["edge_attr"].shape == (0, 3)
    assert empty["edge_index"].dtype == torch.int64

    day = first_graph_day + 40
    item = DayPanelDataset(cache, [day], window=5)[0]
    codes = [cache.codes[i] for i in item["codes"].tolist()]
    src = [codes[i] for i in item["edge_index"][0].tolist()]
    dst = [codes[i] for i in item["edge_index"][1].tolist()]
    got = pl.DataFrame({"src_code": src, "dst_code": dst, "correlation": item["edge_attr"][:, 0].numpy()})
    expected = graphs.filter(pl.col("date") == cache.dates[day].astype(object))
    assert expected.height == item["edge_index"].shape[1] > 0
    assert got.equals(expected.select("src_code", "dst_code", "correlation"))  # same order too
    np.testing.assert_array_equal(item["edge_attr"][:, 2].numpy(), expected.get_column("same_sector").to_numpy())

    # dropping nodes (min_history) drops exactly the edges that touch them
    strict = DayPanelDataset(cache, [day], window=60, min_history=60)[0]
    kept = {cache.codes[i] for i in strict["codes"].tolist()}
    assert 0 < len(kept) < len(codes)
    both = expected.filter(pl.col("src_code").is_in(list(kept)) & pl.col("dst_code").is_in(list(kept)))
    assert strict["edge_index"].shape[1] == both.height
    assert int(strict["edge_index"].max()) < len(kept)


def test_feature_stats_use_training_days_only(cache, folds, tmp_path):
    train = fold_day_indices(cache, folds[0]).train
    stats = fit_feature_stats(cache, train, block_bytes=200_000)  # many small blocks
    block = np.asarray(cache.features[train], dtype=np.float64).reshape(-1, cache.n_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN features
        mean, std = np.nanmean(block, axis=0), np.nanstd(block, axis=0)
    has = ~np.isnan(mean)
    np.testing.assert_allclose(stats.mean[has], mean[has], atol=1e-9, rtol=1e-9)
    usable = has & (std > 1e-8) & (stats.count >= 2)
    np.testing.assert_allclose(stats.std[usable], std[usable], rtol=1e-8)
    assert (stats.std[~usable] == 1.0).all() and (stats.mean[~has] == 0.0).all()
    assert stats.count.max() == int(cache.alive[train].sum())

    # a copy of the cache whose non-training days are scrambled gives the same statistics
    copy = tmp_path / "cache_copy"
    shutil.copytree(cache.cache_dir, copy)
    features = np.load(copy / "features.npy", mmap_mode="r+")
    others = np.setdiff1d(np.arange(cache.n_days), train)
    features[others] = features[others] * 7.0 + 3.0
    features.flush()
    del features
    scrambled = DayPanelCache.load(copy)
    assert not np.array_equal(np.asarray(scrambled.features[others[-1]]), np.asarray(cache.features[others[-1]]), equal_nan=True)
    again = fit_feature_stats(scrambled, train)
    np.testing.assert_allclose(again.mean, stats.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(again.std, stats.std, rtol=1e-12)

    # the FittedStatistics protocol: fit is fit_feature_stats
    assert isinstance(stats, FittedStatistics)
    refit = FeatureStats.fit(cache, train, block_bytes=200_000)
    np.testing.assert_array_equal(refit.mean, stats.mean)
    np.testing.assert_array_equal(refit.std, stats.std)

    # JSON round trip (feature_stats.json keeps its keys), and apply: standardized, NaN -> 0
    path = stats.save(tmp_path / "stats.json")
    raw = json.loads(path.read_text())
    assert list(raw) == ["feature_columns", "mean", "std", "count", "n_days"]
    assert raw["feature_columns"] == cache.feature_columns and raw["n_days"] == len(np.unique(train))
    assert raw == stats.to_dict()
    loaded = FeatureStats.load(path)
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.std, stats.std)
    np.testing.assert_array_equal(loaded.count, stats.count)
    assert loaded.feature_columns == stats.feature_columns and loaded.n_days == stats.n_days
    x = np.asarray(cache.features[train[-1]])
    np.testing.assert_array_equal(loaded.apply(x), stats.apply(x))
    np.testing.assert_array_equal(FeatureStats.from_dict(stats.to_dict()).apply(x), stats.apply(x))
    applied = loaded.apply(x)
    assert np.isfinite(applied).all() and applied.dtype == np.float32
    ok = ~np.isnan(x)
    np.testing.assert_allclose(applied[ok], ((x - stats.mean) / stats.std)[ok], rtol=1e-4, atol=1e-5)
    torch_applied = loaded.apply(torch.from_numpy(x.copy()))
    np.testing.assert_allclose(torch_applied.numpy(), applied, rtol=1e-6, atol=1e-6)
    # the dataset applies them to observed values and keeps padding at zero
    day = int(train[-1])
    item = DayPanelDataset(cache, [day], window=3, stats=stats)[0]
    n = int(item["codes"][0])
    np.testing.assert_allclose(item["x"][0, -1].numpy(), applied[n], rtol=1e-6, atol=1e-6)


def test_collate_offsets_for_two_days(cache):
    dataset = DayPanelDataset(cache, [120, 121], window=4)
    a, b = dataset[0], dataset[1]
    batch = collate_days([a, b])
    n_a, n_b = a["x"].shape[0], b["x"].shape[0]
    assert batch["x"].shape == (n_a + n_b, 4, cache.n_features)
    assert batch["node_ptr"].tolist() == [0, n_a, n_a + n_b]
    assert batch["batch_day"].tolist() == [0] * n_a + [1] * n_b
    assert batch["days"] == [120, 121]
    e_a = a["edge_index"].shape[1]
    assert torch.equal(batch["edge_index"][:, :e_a], a["edge_index"])
    assert torch.equal(batch["edge_index"][:, e_a:], b["edge_index"] + n_a)
    assert torch.equal(batch["edge_attr"], torch.cat([a["edge_attr"], b["edge_attr"]]))
    assert torch.equal(batch["codes"], torch.cat([a["codes"], b["codes"]]))
    single = collate_days([a])
    assert single["x"] is a["x"] and single["batch_day"].tolist() == [0] * n_a
    # batched fetching (what a DataLoader calls) assembles the same batch without a concat
    fetched = dataset.__getitems__([0, 1])
    assert len(fetched) == 1 and collate_days(fetched) is fetched[0]
    for key in ("x", "mask", "y", "y_mask", "edge_index", "edge_attr", "codes", "batch_day", "node_ptr"):
        assert torch.equal(fetched[0][key], batch[key]), key
    # batches and items mix: day offsets and node offsets both shift
    three = collate_days([fetched[0], DayPanelDataset(cache, [122], window=4)[0]])
    assert three["days"] == [120, 121, 122] and three["batch_day"].max() == 2
    assert three["node_ptr"].tolist()[:3] == [0, n_a, n_a + n_b] and len(three["node_ptr"]) == 4
    assert int(three["edge_index"][:, batch["edge_index"].shape[1]:].min()) >= n_a + n_b


def test_cache_reuse_and_rebuild(dataset_dir, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(dataset_dir, dataset, ignore=shutil.ignore_patterns("cache"))
    first = DayPanelCache(dataset)
    assert first.rebuilt and first.cache_dir == dataset / "cache" / "day_panel"
    index = first.cache_dir / "index.json"
    stamp = os.stat(index).st_mtime_ns
    second = DayPanelCache(dataset)
    assert not second.rebuilt and os.stat(index).st_mtime_ns == stamp
    meta_path = dataset / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["created_utc"] = "2030-01-01T00:00:00+00:00"  # as if the dataset had been rebuilt
    meta_path.write_text(json.dumps(meta))
    third = DayPanelCache(dataset)
    assert third.rebuilt and os.stat(index).st_mtime_ns != stamp
    assert json.loads(index.read_text())["fingerprint"]["created_utc"] == meta["created_utc"]
    # a different feature dtype rebuilds too; float16 stays within half precision
    half = DayPanelCache(dataset, tmp_path / "half", feature_dtype="float16")
    assert half.rebuilt and half.features.dtype == np.float16
    np.testing.assert_allclose(half.features[150], first.features[150], rtol=1e-3, atol=1e-4)
    assert not DayPanelCache(dataset, tmp_path / "half", feature_dtype="float16").rebuilt


def test_fold_days_and_loader(cache, folds):
    fold = folds[-1]
    days = fold_day_indices(cache, fold)
    assert len(days.train) == len(fold.train_dates) and len(days.test) == len(fold.test_dates)
    np.testing.assert_array_equal(cache.dates[days.test], fold.test_dates)
    bad = Fold(index=0, train_dates=np.array(["1999-01-04"], dtype="datetime64[D]"),
               val_dates=np.array([], dtype="datetime64[D]"), test_dates=fold.test_dates)
    with pytest.raises(ValueError, match="not trading days"):
        fold_day_indices(cache, bad)

    dataset = DayPanelDataset(cache, days.train[-30:], window=8)
    loader = day_loader(dataset, days_per_batch=4, shuffle=True, num_workers=0, seed=5)
    seen = []
    for batch in loader:
        n = batch["x"].shape[0]
        assert batch["mask"].shape == (n, 8) and batch["y"].shape == (n, len(HORIZONS))
        assert batch["batch_day"].shape == (n,) and int(batch["batch_day"].max()) == len(batch["days"]) - 1
        assert batch["edge_index"].shape[0] == 2 and (batch["edge_index"] < n).all()
        seen.extend(batch["days"])
    assert sorted(seen) == sorted(days.train[-30:].tolist())
    again = [d for batch in day_loader(dataset, days_per_batch=4, shuffle=True, seed=5) for d in batch["days"]]
    assert again == seen
