"""One-trading-day panels for cross-sectional models (ATFT-GAT-FAN): a torch ``Dataset``
of days over a :class:`~kizashi.datasets.day_panel_cache.DayPanelCache`, a collate
function, a loader, and the mapping of walk-forward folds to cache days.

    DayPanelCache        [T, N, F] features, [T, N, H] targets, [T, N] alive, CSR edges
      -> fold_day_indices      a fold's train / val / test dates -> day indices
      -> FeatureStats.fit      per-feature mean / std over the training days only
                               (:mod:`kizashi.datasets.statistics`)
      -> DayPanelDataset       item = one day: the stocks alive that day, a window of the last
                               L days of features, targets, masks and that day's graph
      -> collate_days / day_loader   several days in one batch (graph-batch offsets)

Items read only their window from the memmap (one fancy index of ``[L, N_d, F]``), so a
cache far larger than RAM works; worker processes reopen the cache by path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from kizashi.datasets.day_panel_cache import DayPanelCache
from kizashi.datasets.statistics import FeatureStats, fill_missing_
from kizashi.datasets.workers import ignore_stop_signals
from kizashi.splits import Fold

log = logging.getLogger(__name__)

TargetKind = Literal["return", "rank"]


class DayPanelDataset(Dataset):
    """Item ``i`` = trading day ``d = days[i]`` with the ``N_d`` stocks alive on ``d`` that
    have at least ``min_history`` observed days in the window::

        x          [N_d, L, F] float32  features of days d-L+1..d; stats applied if given;
                                        0 where missing (no row, before listing or before
                                        the calendar start, or a null value)
        mask       [N_d, L]    bool     True = the stock has a row that day
        y          [N_d, H]    float32  targets (forward returns, or ranks), NaN -> 0
        y_mask     [N_d, H]    bool     True = valid target
        edge_index [2, E_d]    int64    that day's graph re-indexed into 0..N_d-1 (edges with an
                                        endpoint not in the day's stocks are dropped); [2, 0]
                                        when the day has no graph
        edge_attr  [E_d, 3]    float32  correlation, abs_correlation, same_sector
        codes      [N_d]       int64    code indices (``cache.codes``)
        node_day   [N_d]       int64    the day index ``d`` of every node
        day        int                  day index (``cache.dates[day]``)

    ``with_features=False`` leaves ``x`` and ``mask`` out (the CPU work that dominates):
    :class:`kizashi.datasets.device_panel.DeviceFeaturePanel` gathers them on the device
    from ``node_day`` and ``codes``, with the same values.

    Days of ``day_indices`` with no eligible stock are left out (counted in the log);
    ``days`` holds the ones kept, in the given order.

    Batched fetching: ``__getitems__`` (used by a DataLoader with a batch size) assembles
    several days straight into one buffer and returns ``[batch]``, a one-element list holding
    the already collated batch, which :func:`collate_days` passes through; so a multi-day batch
    costs no concatenation copy. Use :func:`collate_days` (or :func:`day_loader`) with it.
    """

    def __init__(
        self,
        cache: DayPanelCache,
        day_indices: Sequence[int] | np.ndarray,
        window: int = 20,
        stats: FeatureStats | None = None,
        min_history: int = 1,
        target: TargetKind = "return",
        with_features: bool = True,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 1 <= min_history <= window:
            raise ValueError(f"min_history must be in 1..window ({window}), got {min_history}")
        if stats is not None and list(stats.feature_columns) != list(cache.feature_columns):
            raise ValueError("stats were fitted on different feature columns than the cache has")
        if target not in ("return", "rank"):
            raise ValueError(f"target must be 'return' or 'rank', got {target!r}")
        if target == "rank" and cache.target_ranks is None:
            raise ValueError("target='rank': the cache has no rank targets")
        days = np.asarray(day_indices, dtype=np.int64).reshape(-1)
        if len(days) and (days.min() < 0 or days.max() >= cache.n_days):
            raise ValueError(f"day indices outside 0..{cache.n_days - 1}")
        self.cache = cache
        self.window = int(window)
        self.stats = stats
        self.min_history = int(min_history)
        self.target = target
        self.with_features = bool(with_features)
        eligible = self._eligible_counts(days)
        self.days = days[eligible > 0]
        if len(self.days) < len(days):
            log.info(
                "day-panel dataset: %d of %d days have no eligible stock and are left out",
                len(days) - len(self.days), len(days),
            )

    def _eligible_counts(self, days: np.ndarray) -> np.ndarray:
        """[len(days)] number of eligible stocks per day (vectorized over days and codes)."""
        alive = np.asarray(self.cache.alive)
        if self.min_history == 1:
            return alive[days].sum(axis=1)
        history = np.zeros((alive.shape[0] + 1, alive.shape[1]), dtype=np.int32)
        np.cumsum(alive, axis=0, out=history[1:])
        observed = history[days + 1] - history[np.maximum(days + 1 - self.window, 0)]
        return (alive[days] & (observed >= self.min_history)).sum(axis=1)

    def __len__(self) -> int:
        return len(self.days)

    def __getitem__(self, i: int) -> dict[str, Any]:
        batch = self.assemble([int(self.days[i])])
        item = {key: batch[key] for key in _NODE_KEYS + _EDGE_KEYS if key in batch}
        item["day"] = batch["days"][0]
        return item

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self.assemble([int(self.days[i]) for i in indices])]

    def _day_codes(self, day: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Eligible code indices [N_d] int64, the alive window [L', N] bool and the padding."""
        first = max(0, day - self.window + 1)
        alive_window = np.asarray(self.cache.alive[first : day + 1])
        eligible = alive_window[-1]
        if self.min_history > 1:
            eligible = eligible & (alive_window.sum(axis=0) >= self.min_history)
        return np.flatnonzero(eligible), alive_window, self.window - (day + 1 - first)

    def assemble(self, days: Sequence[int]) -> dict[str, Any]:
        """The collated batch (see :func:`collate_days`) of cache days ``days``, each day's
        window gathered from the memmap once, straight into the batch buffer."""
        if len(days) == 0:
            raise ValueError("assemble: no days")
        cache, window, n_features = self.cache, self.window, self.cache.n_features
        per_day = [self._day_codes(int(day)) for day in days]
        sizes = np.array([len(codes) for codes, _, _ in per_day], dtype=np.int64)
        node_ptr = np.zeros(len(days) + 1, dtype=np.int64)
        np.cumsum(sizes, out=node_ptr[1:])
        n_nodes = int(node_ptr[-1])
        features = self.with_features
        x = np.empty((n_nodes, window, n_features) if features else (0, window, n_features), dtype=np.float32)
        mask = np.zeros((n_nodes, window) if features else (0, window), dtype=np.bool_)
        y = np.empty((n_nodes, len(cache.horizons)), dtype=np.float32)
        targets = cache.targets if self.target == "return" else cache.target_ranks
        direct = cache.features.dtype == np.float32
        edge_parts, attr_parts = [], []
        for b, (day, (codes, alive_window, pad)) in enumerate(zip(days, per_day)):
            start, stop = node_ptr[b], node_ptr[b + 1]
            if features:
                first = int(day) + 1 - alive_window.shape[0]
                x_day = x[start:stop]
                x_day[:, :pad] = np.nan  # before the calendar start: missing, filled with 0 below
                stock_major = cache.features[first : int(day) + 1].transpose(1, 0, 2)  # [N, L', F] view
                if direct:  # mode="clip" (codes are in range anyway): np.take writes out unbuffered
                    np.take(stock_major, codes, axis=0, out=x_day[:, pad:], mode="clip")
                else:
                    x_day[:, pad:] = stock_major[codes]
                mask[start:stop, pad:] = alive_window[:, codes].T
            np.take(targets[int(day)], codes, axis=0, out=y[start:stop], mode="clip")
            edge_index, edge_attr = self._day_graph(int(day), codes)
            edge_parts.append(edge_index + start)
            attr_parts.append(edge_attr)
        # numpy, not torch, for these element-wise passes: no intra-op thread pool to wake
        if self.stats is not None:
            self.stats.apply_(x)
        else:
            fill_missing_(x)
        y_mask = np.isfinite(y)
        y[~y_mask] = 0.0
        codes_all = np.concatenate([codes for codes, _, _ in per_day]) if per_day else np.empty(0, np.int64)
        node_features = {"x": torch.from_numpy(x), "mask": torch.from_numpy(mask)} if features else {}
        return {
            **node_features,
            "node_day": torch.from_numpy(np.repeat(np.asarray(days, dtype=np.int64), sizes)),
            "y": torch.from_numpy(y),
            "y_mask": torch.from_numpy(y_mask),
            "edge_index": torch.from_numpy(np.concatenate(edge_parts, axis=1) if len(edge_parts) > 1 else edge_parts[0]),
            "edge_attr": torch.from_numpy(np.concatenate(attr_parts) if len(attr_parts) > 1 else attr_parts[0]),
            "codes": torch.from_numpy(codes_all.astype(np.int64, copy=False)),
            "batch_day": torch.from_numpy(np.repeat(np.arange(len(days), dtype=np.int64), sizes)),
            "node_ptr": torch.from_numpy(node_ptr),
            "days": [int(day) for day in days],
        }

    def _day_graph(self, day: int, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """edge_index [2, E_d] int64 into 0..N_d-1 and edge_attr [E_d, 3] float32 (new arrays)."""
        src, dst, attr = self.cache.day_edges(day)
        local = np.full(self.cache.n_codes, -1, dtype=np.int64)
        local[codes] = np.arange(len(codes))
        src_local, dst_local = local[src], local[dst]
        keep = (src_local >= 0) & (dst_local >= 0)
        edge_index = np.empty((2, int(keep.sum())), dtype=np.int64)
        edge_index[0] = src_local[keep]
        edge_index[1] = dst_local[keep]
        return edge_index, np.ascontiguousarray(attr[keep], dtype=np.float32)


_NODE_KEYS = ("x", "mask", "y", "y_mask", "codes", "node_day")  # x, mask: not without_features
_EDGE_KEYS = ("edge_index", "edge_attr")


def _as_batch(item: dict[str, Any]) -> dict[str, Any]:
    """A one-day item as a one-day batch (no tensor copied); a batch unchanged."""
    if "node_ptr" in item:
        return item
    n_nodes = item["codes"].shape[0]
    return {
        **{key: item[key] for key in _NODE_KEYS + _EDGE_KEYS if key in item},
        "batch_day": torch.zeros(n_nodes, dtype=torch.int64),
        "node_ptr": torch.tensor([0, n_nodes], dtype=torch.int64),
        "days": [int(item["day"])],
    }


def collate_days(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate days into one graph batch (N = sum of N_d, E = sum of E_d, B days).

    Returns ``x`` [N, L, F], ``mask`` [N, L] (unless built ``with_features=False``),
    ``y`` / ``y_mask`` [N, H], ``node_day`` [N], ``edge_index``
    [2, E] (each day's node indices shifted by the nodes of the days before it),
    ``edge_attr`` [E, 3], ``codes`` [N] int64, ``batch_day`` [N] int64 (position 0..B-1 of
    the node's day in the batch), ``node_ptr`` [B + 1] int64 (day b's nodes are
    node_ptr[b]:node_ptr[b+1]) and ``days`` (list of B day indices).

    ``items`` are one-day items or already collated batches (from
    ``DayPanelDataset.__getitems__``), mixed freely; a single one is passed through
    without copying its tensors.
    """
    if not items:
        raise ValueError("collate_days: no items")
    batches = [_as_batch(item) for item in items]
    if len(batches) == 1:
        return batches[0]
    node_counts = torch.tensor([int(batch["node_ptr"][-1]) for batch in batches], dtype=torch.int64)
    node_offsets = torch.cumsum(node_counts, dim=0) - node_counts
    day_offsets = np.cumsum([0] + [len(batch["days"]) for batch in batches])
    out = {key: torch.cat([batch[key] for batch in batches]) for key in _NODE_KEYS + ("edge_attr",) if key in batches[0]}
    out["edge_index"] = torch.cat([batch["edge_index"] + node_offsets[b] for b, batch in enumerate(batches)], dim=1)
    out["batch_day"] = torch.cat([batch["batch_day"] + int(day_offsets[b]) for b, batch in enumerate(batches)])
    out["node_ptr"] = torch.cat(
        [torch.zeros(1, dtype=torch.int64)]
        + [batch["node_ptr"][1:] + node_offsets[b] for b, batch in enumerate(batches)]
    )
    out["days"] = [day for batch in batches for day in batch["days"]]
    return out


class FoldDays(NamedTuple):
    """Day indices of a fold's parts in a :class:`DayPanelCache`: each [K_part] int64,
    sorted."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def fold_day_indices(cache: DayPanelCache, fold: Fold) -> FoldDays:
    """Map a :class:`kizashi.splits.Fold` (datetime64 date arrays) to cache day indices;
    a fold date that is not a trading day of the cache is an error."""
    return FoldDays(
        train=cache.day_indices(fold.train_dates),
        val=cache.day_indices(fold.val_dates),
        test=cache.day_indices(fold.test_dates),
    )


def day_loader(
    dataset: DayPanelDataset,
    days_per_batch: int = 1,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    *,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader of :func:`collate_days` batches of ``days_per_batch`` days; the day order
    is shuffled from ``seed`` when ``shuffle`` (same seed, same order). Workers reopen the
    cache's memmaps by path (nothing is copied into them)."""
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=days_per_batch,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_days,
        generator=generator,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
    )
