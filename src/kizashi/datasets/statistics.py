"""Fold-fitted statistics: fitted on the training part of a fold only, then applied to every
part (train, validation, test) and saved beside the run, behind one protocol,
:class:`FittedStatistics`::

    stats = Kind.fit(source, ...)     training days / windows of ``source`` only
    stats.apply(x)                    normalized copy of ``x``, non-finite values -> 0
    stats.to_dict() / Kind.from_dict(d)    JSON-ready values, exact round trip
    stats.save(path, **info) / Kind.load(path)    one JSON file, written atomically

Implementations:

- :class:`FeatureStats` (daily panel): per-feature mean / std over the training days of a
  :class:`~kizashi.datasets.day_panel_cache.DayPanelCache`; ``apply`` standardizes
  ``[..., F]`` features. File: ``feature_stats.json`` =
  ``{"feature_columns", "mean", "std", "count", "n_days"}``.
- :class:`WindowStats` (Stage-1 multi-timeframe bars): one :class:`TimeframeStats` per
  timeframe, fitted on windows of a
  :class:`~kizashi.datasets.multi_timeframe.MultiTimeframeWindows` built on the training
  range; ``apply`` normalizes ``{tf: [..., 6]}`` channels. File: ``stats.json`` =
  ``{"timeframes": {tf: {"price_scale", "volume_mean", "volume_std", "range_mean",
  "range_std"}}, **info}``; ``to_dict()`` is the ``"timeframes"`` value alone (the form kept
  in a pretrained encoder's ``"stats"``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

import numpy as np
import torch

from kizashi.atomic import write_json_atomic

if TYPE_CHECKING:
    from kizashi.datasets.day_panel_cache import DayPanelCache
    from kizashi.datasets.multi_timeframe import MultiTimeframeWindows

log = logging.getLogger(__name__)

# About this many bytes of float64 working values per block of days in FeatureStats.fit.
_STATS_BLOCK_BYTES = 64 * 2**20


@runtime_checkable
class FittedStatistics(Protocol):
    """Normalization statistics fitted on training data only (module docstring)."""

    @classmethod
    def fit(cls, source: Any, /, *args: Any, **kwargs: Any) -> Self:
        """Fit on the training days / windows of ``source`` (nothing else is read)."""
        ...

    def apply(self, x: Any) -> Any:
        """A normalized copy of ``x``; non-finite values become 0."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values; ``from_dict(to_dict())`` equals ``self``."""
        ...

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self: ...

    def save(self, path: str | Path, **info: Any) -> Path:
        """Write a JSON file atomically (``info``: extra JSON-ready keys, ignored by ``load``)."""
        ...

    @classmethod
    def load(cls, path: str | Path) -> Self: ...


def _merge_info(values: dict[str, Any], info: Mapping[str, Any], owner: str) -> dict[str, Any]:
    clash = sorted(set(values) & set(info))
    if clash:
        raise ValueError(f"{owner}.save: {clash} are the statistics' own keys")
    return {**values, **info}


def _read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------
# daily panel: per-feature mean / std
# --------------------------------------------------------------------------------------


def fill_missing_(x: np.ndarray) -> np.ndarray:
    """Set NaN (and +-inf) entries of ``x`` to 0 in place; returns ``x``."""
    np.copyto(x, 0.0, where=~np.isfinite(x))
    return x


@dataclass
class FeatureStats:
    """Per-feature mean and standard deviation (population, ddof=0) over training stock-days.

    ``mean``, ``std`` [F] float64; ``count`` [F] int64 non-missing values; ``n_days`` the
    training days fitted on. A feature with no value gets mean 0; one with fewer than two
    values or std below ``1e-8`` gets std 1. Implements :class:`FittedStatistics`.
    """

    feature_columns: list[str]
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray
    n_days: int = 0
    _mean32: np.ndarray = field(init=False, repr=False)
    _inv_std32: np.ndarray = field(init=False, repr=False)
    # mean / 1 / std as tensors per device (for torch inputs); not pickled
    _device_tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.std = np.asarray(self.std, dtype=np.float64)
        self.count = np.asarray(self.count, dtype=np.int64)
        if not (len(self.feature_columns) == len(self.mean) == len(self.std) == len(self.count)):
            raise ValueError("feature_columns, mean, std and count must have the same length")
        self._mean32 = self.mean.astype(np.float32)
        self._inv_std32 = (1.0 / self.std).astype(np.float32)

    @classmethod
    def fit(
        cls, cache: DayPanelCache, train_day_indices: Sequence[int] | np.ndarray, *, block_bytes: int = _STATS_BLOCK_BYTES
    ) -> FeatureStats:
        """Mean/std of every feature over the stock-days of ``train_day_indices`` [K] only
        (positions in ``cache.features`` [T, N, F]).

        Streams blocks of days from the memmap (about ``block_bytes`` of float64 working values
        each); each block's count, mean and sum of squared deviations (float64) are merged into
        the running totals with Chan's parallel update (Welford), which stays accurate when the
        mean is large against the spread. NaN (missing) values are ignored. Duplicate day indices
        count once.
        """
        started = time.perf_counter()
        days = np.unique(np.asarray(train_day_indices, dtype=np.int64))
        if len(days) == 0:
            raise ValueError("fit_feature_stats: no training days")
        if days[0] < 0 or days[-1] >= cache.n_days:
            raise ValueError(f"fit_feature_stats: day indices outside 0..{cache.n_days - 1}")
        n_features = cache.n_features
        count = np.zeros(n_features, dtype=np.int64)
        mean = np.zeros(n_features, dtype=np.float64)
        m2 = np.zeros(n_features, dtype=np.float64)
        days_per_block = max(1, block_bytes // max(1, cache.n_codes * n_features * 8))
        for start in range(0, len(days), days_per_block):
            chunk = np.asarray(cache.features[days[start : start + days_per_block]], dtype=np.float64)
            values = chunk.reshape(-1, n_features)
            valid = np.isfinite(values)
            n_block = valid.sum(axis=0)
            mean_block = np.where(valid, values, 0.0).sum(axis=0) / np.maximum(n_block, 1)
            deviation = np.where(valid, values - mean_block, 0.0)
            m2_block = np.einsum("ij,ij->j", deviation, deviation)
            total = count + n_block
            delta = mean_block - mean
            with np.errstate(invalid="ignore", divide="ignore"):
                weight = np.where(total > 0, n_block / np.maximum(total, 1), 0.0)
            mean += delta * weight
            m2 += m2_block + delta * delta * count * weight
            count = total
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(np.where(count > 0, m2 / np.maximum(count, 1), 0.0))
        empty = count == 0
        flat = (count < 2) | (std < 1e-8)
        std = np.where(flat, 1.0, std)
        if empty.any():
            log.warning("feature stats: %d features have no training value (mean 0, std 1)", int(empty.sum()))
        if (flat & ~empty).any():
            log.info("feature stats: %d constant features get std 1", int((flat & ~empty).sum()))
        log.info(
            "feature stats over %d training days (%d stock-day values max per feature) in %.2fs",
            len(days), int(count.max()), time.perf_counter() - started,
        )
        return cls(list(cache.feature_columns), mean, std, count, n_days=len(days))

    def apply(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Standardize ``x`` [..., F] (numpy or torch) and fill NaN with 0; returns a new
        float32 array/tensor [..., F] (torch: on ``x``'s device)."""
        if isinstance(x, torch.Tensor):
            key = str(x.device)
            if key not in self._device_tensors:  # one host-to-device copy per device
                self._device_tensors[key] = (
                    torch.from_numpy(self._mean32).to(x.device), torch.from_numpy(self._inv_std32).to(x.device)
                )
            mean, inv_std = self._device_tensors[key]
            out = (x.float() - mean) * inv_std
            return out.masked_fill_(~torch.isfinite(out), 0.0)
        out = np.asarray(x, dtype=np.float32).copy()
        self.apply_(out)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_device_tensors": {}}

    def apply_(self, x: np.ndarray) -> np.ndarray:
        """In-place version of :meth:`apply` for a float32 numpy array [..., F] (non-finite
        values become 0 too)."""
        np.subtract(x, self._mean32, out=x)
        np.multiply(x, self._inv_std32, out=x)
        return fill_missing_(x)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_columns": list(self.feature_columns),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "count": self.count.tolist(),
            "n_days": int(self.n_days),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureStats:
        return cls(
            feature_columns=list(data["feature_columns"]),
            mean=np.asarray(data["mean"], dtype=np.float64),
            std=np.asarray(data["std"], dtype=np.float64),
            count=np.asarray(data["count"], dtype=np.int64),
            n_days=int(data.get("n_days", 0)),
        )

    def save(self, path: str | Path, **info: Any) -> Path:
        """Write :meth:`to_dict` (plus ``info``) as JSON, atomically; float64 values
        round-trip exactly."""
        return write_json_atomic(path, _merge_info(self.to_dict(), info, "FeatureStats"))

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        return cls.from_dict(_read_json(path))


def fit_feature_stats(
    cache: DayPanelCache, train_day_indices: Sequence[int] | np.ndarray, *, block_bytes: int = _STATS_BLOCK_BYTES
) -> FeatureStats:
    """:meth:`FeatureStats.fit`."""
    return FeatureStats.fit(cache, train_day_indices, block_bytes=block_bytes)


# --------------------------------------------------------------------------------------
# Stage-1 multi-timeframe windows: per-timeframe channel scales
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeframeStats:
    """Normalization of one timeframe's ``C = 6`` window channels
    (:mod:`kizashi.datasets.multi_timeframe`): the price channels 0..3 are divided by
    ``price_scale`` (not shifted), volume (4) and range (5) are standardized."""

    price_scale: float
    volume_mean: float
    volume_std: float
    range_mean: float
    range_std: float

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalize channels ``x`` [..., 6]; returns a new float64 array [..., 6] with
        non-finite values set to 0."""
        out = np.array(x, dtype=np.float64)
        out[..., :4] /= self.price_scale
        out[..., 4] = (out[..., 4] - self.volume_mean) / self.volume_std
        out[..., 5] = (out[..., 5] - self.range_mean) / self.range_std
        return fill_missing_(out)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimeframeStats:
        return cls(**{f.name: float(data[f.name]) for f in fields(cls)})


class WindowStats(Mapping[str, TimeframeStats]):
    """Stage-1 window statistics: ``{tf: TimeframeStats}`` (a read-only mapping, in
    timeframe order; equal to any mapping with the same items). Implements
    :class:`FittedStatistics`; ``apply`` takes and returns ``{tf: [..., 6]}``."""

    def __init__(self, stats: Mapping[str, TimeframeStats]) -> None:
        wrong = [tf for tf, s in stats.items() if not isinstance(s, TimeframeStats)]
        if wrong:
            raise TypeError(f"WindowStats: values of {wrong} are not TimeframeStats")
        self._by_timeframe = dict(stats)

    def __getitem__(self, timeframe: str) -> TimeframeStats:
        return self._by_timeframe[timeframe]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_timeframe)

    def __len__(self) -> int:
        return len(self._by_timeframe)

    def __repr__(self) -> str:
        return f"WindowStats({self._by_timeframe!r})"

    @classmethod
    def fit(cls, dataset: MultiTimeframeWindows, max_windows: int = 2000, seed: int = 0) -> WindowStats:
        """Per-timeframe statistics from (up to ``max_windows``) windows of ``dataset`` (build
        it on the training range only): price scale = the RMS of the price channels, volume
        and range mean / std. Non-finite and invalid bars are ignored. Aligned: ``max_windows``
        items drawn at random; async: for each timeframe, up to ``max_windows`` of its own
        windows drawn at random (an async item repeats coarse windows)."""
        rng = np.random.default_rng(seed)
        values: dict[str, list[np.ndarray]] = {tf: [] for tf in dataset.timeframes}
        if dataset.mode == "aligned":
            picks = rng.choice(len(dataset), size=min(max_windows, len(dataset)), replace=False)
            for index in np.sort(picks):
                item = dataset.raw_item(int(index))
                for tf in dataset.timeframes:
                    values[tf].append(item["channels"][tf][item["valid"][tf]])
        else:
            for tf in dataset.timeframes:
                windows = dataset.timeframe_windows(tf)
                picks = rng.choice(len(windows), size=min(max_windows, len(windows)), replace=False)
                for index in np.sort(picks):
                    symbol, rows = windows[int(index)]
                    x, valid = dataset.window_channels(tf, symbol, rows)
                    values[tf].append(x[valid])
        stats = {}
        for tf, chunks in values.items():
            x = np.concatenate(chunks)
            x = x[np.isfinite(x).all(axis=1)]
            if len(x) < 2:
                raise ValueError(f"{tf}: not enough valid bars in the training windows for statistics")
            price_scale = float(np.sqrt(np.mean(np.square(x[:, :4]))))
            stats[tf] = TimeframeStats(
                price_scale=max(price_scale, 1e-8),
                volume_mean=float(x[:, 4].mean()), volume_std=max(float(x[:, 4].std()), 1e-8),
                range_mean=float(x[:, 5].mean()), range_std=max(float(x[:, 5].std()), 1e-8),
            )
        return cls(stats)

    def apply(self, x: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{tf: [..., 6]}`` channels -> ``{tf: [..., 6]}`` float64, each normalized by its
        timeframe's :meth:`TimeframeStats.apply`."""
        return {tf: self[tf].apply(channels) for tf, channels in x.items()}

    def to_dict(self) -> dict[str, Any]:
        """``{tf: {"price_scale", "volume_mean", "volume_std", "range_mean", "range_std"}}``."""
        return {tf: s.to_dict() for tf, s in self.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowStats:
        return cls({tf: TimeframeStats.from_dict(values) for tf, values in data.items()})

    def save(self, path: str | Path, **info: Any) -> Path:
        """Write ``stats.json``: ``{"timeframes": to_dict(), **info}`` (``info``: e.g. the
        training range and :meth:`MultiTimeframeWindows.window_metadata`), atomically."""
        path = Path(path)
        write_json_atomic(path, _merge_info({"timeframes": self.to_dict()}, info, "WindowStats"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> WindowStats:
        return cls.from_dict(_read_json(path)["timeframes"])


def fit_window_stats(dataset: MultiTimeframeWindows, max_windows: int = 2000, seed: int = 0) -> WindowStats:
    """:meth:`WindowStats.fit`."""
    return WindowStats.fit(dataset, max_windows, seed)
