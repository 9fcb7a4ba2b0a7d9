"""The day-panel features held on the training device, windows gathered there.

With a GPU, the CPU side of :class:`~kizashi.datasets.day_panel.DayPanelDataset` (gather a
``[N_d, L, F]`` window per day from the memmap, standardize, copy to the device) limits the
trainer: a day batch of the S&P 500 at L = 20, F = 406 is ~16 MB of float32 per day. When
the whole panel fits in device memory, it is uploaded once and batches carry only indices:

    DayPanelDataset(..., with_features=False)   node_day [N] int64, codes [N] int64 (+ targets,
                                                graph; no x / mask)
      -> DeviceFeaturePanel.gather(node_day, codes, stats)   on the batch's device:
         x [N, L, F] float32, mask [N, L] bool  -- the same values the CPU path builds

Layout on the device (T days, N codes, F features, L window)::

    features [L - 1 + T, N, F]  the cache's dtype (float32 or float16); the first L - 1 rows
                                are NaN (days before the calendar), so the window of day d
                                is rows d .. d + L - 1 (no negative index, no clamping)
    alive    [L - 1 + T, N]     bool, False on the padding rows

``gather`` standardizes the gathered values with the fold's :class:`FeatureStats`
(``FeatureStats.apply``: float32 ``(x - mean) * (1 / std)``, non-finite -> 0), the same
operations, in the same order, as ``FeatureStats.apply_`` on the CPU, so both paths give
identical batches (test). The upload
streams blocks of days from the memmap, so host memory holds one block, not the panel.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kizashi.datasets.day_panel_cache import DayPanelCache
from kizashi.datasets.statistics import FeatureStats

log = logging.getLogger(__name__)

# About this many bytes of features per host-to-device copy during the upload.
_UPLOAD_BLOCK_BYTES = 256 * 2**20


def panel_bytes(cache: DayPanelCache, window: int) -> int:
    """Device bytes :class:`DeviceFeaturePanel` needs for ``cache`` at ``window``."""
    rows = cache.n_days + window - 1
    itemsize = np.dtype(cache.features.dtype).itemsize
    return rows * cache.n_codes * (cache.n_features * itemsize + 1)


class DeviceFeaturePanel:
    """The features and alive flags of a :class:`DayPanelCache`, uploaded lazily to each
    device that asks (one copy per device; a DDP process asks for its own) and gathered there
    into day-batch windows. Pickles without its tensors."""

    def __init__(self, cache: DayPanelCache, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.cache = cache
        self.window = int(window)
        self._tensors: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"cache": self.cache, "window": self.window}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cache"], state["window"])

    @property
    def nbytes(self) -> int:
        return panel_bytes(self.cache, self.window)

    def tensors(self, device: torch.device | str) -> tuple[Tensor, Tensor, Tensor]:
        """``(features [L-1+T, N, F], alive [L-1+T, N], offsets [L])`` on ``device``,
        uploaded on first use."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._tensors:
            self._tensors[device] = self._upload(device)
        return self._tensors[device]

    def _upload(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        started = time.perf_counter()
        cache, pad = self.cache, self.window - 1
        n_days, n_codes, n_features = cache.n_days, cache.n_codes, cache.n_features
        dtype = torch.float16 if cache.features.dtype == np.float16 else torch.float32
        features = torch.empty((pad + n_days, n_codes, n_features), dtype=dtype, device=device)
        features[:pad] = float("nan")
        alive = torch.zeros((pad + n_days, n_codes), dtype=torch.bool, device=device)
        alive[pad:] = torch.from_numpy(np.array(cache.alive, dtype=np.bool_)).to(device)
        day_bytes = max(1, n_codes * n_features * features.element_size())
        block = max(1, _UPLOAD_BLOCK_BYTES // day_bytes)
        for first in range(0, n_days, block):
            stop = min(first + block, n_days)
            host = torch.from_numpy(np.array(cache.features[first:stop]))  # a writable copy of the block
            features[pad + first : pad + stop].copy_(host, non_blocking=False)
        offsets = torch.arange(self.window, dtype=torch.int64, device=device)
        log.info(
            "feature panel on %s: %d days x %d codes x %d features (%s, %.2f GB) in %.1f s",
            device, n_days, n_codes, n_features, dtype, self.nbytes / 1e9, time.perf_counter() - started,
        )
        return features, alive, offsets

    def gather(self, node_day: Tensor, codes: Tensor, stats: FeatureStats | None) -> tuple[Tensor, Tensor]:
        """Windows of the batch's nodes on ``codes.device``.

        ``node_day`` [N] int64 (cache day index of each node), ``codes`` [N] int64 ->
        ``x`` [N, L, F] float32 (standardized with ``stats``, else raw; non-finite -> 0) and
        ``mask`` [N, L] bool (True = the stock has a row that day).
        """
        device = codes.device
        features, alive, offsets = self.tensors(device)
        rows = node_day.to(device).unsqueeze(1) + offsets  # [N, L], padded-row indices
        columns = codes.unsqueeze(1)
        x = features[rows, columns]  # [N, L, F], the cache's dtype
        mask = alive[rows, columns]
        if stats is not None:
            if list(stats.feature_columns) != list(self.cache.feature_columns):
                raise ValueError("stats were fitted on different feature columns than the cache has")
            return stats.apply(x), mask  # FeatureStats' float32 operations, on x's device
        x = x.float()
        return x.masked_fill_(~torch.isfinite(x), 0.0), mask

    def __repr__(self) -> str:
        return (
            f"DeviceFeaturePanel({self.cache.n_days} days x {self.cache.n_codes} codes x "
            f"{self.cache.n_features} features, window {self.window}, on {sorted(map(str, self._tensors))})"
        )
