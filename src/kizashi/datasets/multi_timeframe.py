"""Aligned multi-timeframe bar windows for Stage-1 masked reconstruction.

Input: per symbol, ``{timeframe: frame}`` from :func:`kizashi.data.bars.build_timeframes`
(bars labelled by their close time ``timestamp``; the base timeframe first).

Windows ("aligned" mode). An item is an *anchor* ``t``: the close time of a base bar. For
every timeframe the window is its last ``T`` bars with ``timestamp <= t`` (the no-look-ahead
rule of ``kizashi.data.bars``: no coarse bar that has not closed by ``t``). Anchors are the
base closes inside the requested time range for which every timeframe has ``T`` visible
bars, every ``anchor_stride`` base bars.

Channels (``C = 6``) per bar, in the window's own units; ``a`` = the close of the base bar
closing at ``t`` (the same anchor for every timeframe, so all timeframes share one price
scale)::

    0..3  log(open / a), log(high / a), log(low / a), log(close / a)   / price_scale[tf]
    4     (log1p(volume) - volume_mean[tf]) / volume_std[tf]
    5     (log(high / low) - range_mean[tf]) / range_std[tf]

Targets: channels 0..3 (``[T, 4]``). The price channels are divided by one positive scale
per timeframe and not shifted, so ``price = exp(target * price_scale) * a`` and the
cross-timeframe consistency can undo the normalization exactly. Statistics come from the
training range only (:func:`fit_window_stats`, saved as ``stats.json``).

Per item: ``inputs`` / ``targets`` ``{tf: [T, 6] / [T, 4]}`` float32, ``masked`` ``{tf: [T]}``
bool (span masking, optionally synchronized by wall-clock time), ``valid`` ``{tf: [T]}``
bool (False for bars flagged ``invalid_range``: their inputs are 0 and they never count in
the loss), ``groups`` ``{tf: [T]}`` int64 for each timeframe but the coarsest (the index,
in the next coarser timeframe's window, of the bar that contains this bar, -1 if none) and
``complete`` ``{tf: [T]}`` bool for each but the finest (the coarse bar is not partial and
all of its finer bars are inside the finer window): what the consistency loss compares;
``next_return`` (float, fine-tuning label): the coarsest timeframe's next-bar log return,
scaled (NaN when unknown).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from kizashi.data.timeframes import timeframe_minutes
from kizashi.datasets.masking import span_mask, synchronized_span_masks

log = logging.getLogger(__name__)

N_CHANNELS = 6
_US_PER_MINUTE = 60_000_000
_STATS_FIELDS = ("price_scale", "volume_mean", "volume_std", "range_mean", "range_std")


@dataclass(frozen=True)
class MaskConfig:
    ratio: float = 0.15
    min_span: int = 3
    max_span: int = 10
    synchronized: bool = False  # the same wall-clock intervals in every timeframe


@dataclass(frozen=True)
class TimeframeStats:
    """Normalization of one timeframe's channels (module docstring)."""

    price_scale: float
    volume_mean: float
    volume_std: float
    range_mean: float
    range_std: float


class _Series:
    """One symbol's bars of one timeframe as numpy arrays."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self.close_us = frame["timestamp"].dt.epoch("us").to_numpy().astype(np.int64)
        self.ohlc = frame.select(["open", "high", "low", "close"]).to_numpy().astype(np.float64)
        self.volume = frame["volume"].to_numpy().astype(np.float64)
        self.invalid = frame["invalid_range"].to_numpy() if "invalid_range" in frame.columns else np.zeros(len(frame), bool)
        self.partial = frame["partial"].to_numpy() if "partial" in frame.columns else np.zeros(len(frame), bool)


def _ordered(timeframes: Sequence[str]) -> list[str]:
    return sorted(timeframes, key=timeframe_minutes)


class MultiTimeframeWindows(Dataset):
    """Aligned windows over several symbols (module docstring).

    Args:
        series: ``{symbol: {timeframe: frame}}`` (``build_timeframes`` output).
        timeframes: the model's timeframes; the finest must be the data's base.
        seq_len: ``T`` bars per timeframe.
        time_range: ``(start, end)`` anchors with ``start <= t < end`` (datetimes or None).
        stats: per-timeframe statistics (None: raw, unnormalized channels; see
            :func:`fit_window_stats`).
        mask: span masking; ``seed`` with the item index makes masks reproducible.
        anchor_stride: keep every n-th eligible anchor.
    """

    def __init__(
        self,
        series: Mapping[str, Mapping[str, pl.DataFrame]],
        timeframes: Sequence[str],
        seq_len: int,
        *,
        time_range: tuple[Any, Any] = (None, None),
        stats: Mapping[str, TimeframeStats] | None = None,
        mask: MaskConfig = MaskConfig(),
        anchor_stride: int = 1,
        seed: int = 0,
    ) -> None:
        if seq_len < 1 or anchor_stride < 1:
            raise ValueError("seq_len and anchor_stride must be >= 1")
        self.timeframes = _ordered(timeframes)
        self.base = self.timeframes[0]
        self.seq_len, self.mask, self.seed = int(seq_len), mask, int(seed)
        self.stats = dict(stats) if stats is not None else None
        self.minutes = {tf: timeframe_minutes(tf) for tf in self.timeframes}
        self.symbols = sorted(series)
        self.data: dict[str, dict[str, _Series]] = {}
        anchors: list[tuple[int, int]] = []  # (symbol index, base bar index)
        start_us, end_us = (_to_us(v) for v in time_range)
        for s, symbol in enumerate(self.symbols):
            frames = series[symbol]
            missing = [tf for tf in self.timeframes if tf not in frames]
            if missing:
                raise ValueError(f"{symbol}: timeframes {missing} missing; built: {sorted(frames)}")
            data = {tf: _Series(frames[tf]) for tf in self.timeframes}
            self.data[symbol] = data
            base_close = data[self.base].close_us
            enough = np.ones(len(base_close), dtype=bool)
            for tf in self.timeframes:
                visible = np.searchsorted(data[tf].close_us, base_close, side="right")  # bars closed by t
                enough &= visible >= self.seq_len
            if start_us is not None:
                enough &= base_close >= start_us
            if end_us is not None:
                enough &= base_close < end_us
            eligible = np.flatnonzero(enough)[::anchor_stride]
            anchors.extend((s, int(i)) for i in eligible)
        if not anchors:
            raise ValueError(f"no window of {seq_len} bars in every timeframe within {time_range}")
        self.anchors = np.asarray(anchors, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.anchors)

    def window_indices(self, index: int) -> tuple[str, int, dict[str, np.ndarray]]:
        """``(symbol, anchor close (us), {tf: [T] bar indices})`` of item ``index``."""
        s, base_index = self.anchors[index]
        symbol = self.symbols[s]
        data = self.data[symbol]
        t = int(data[self.base].close_us[base_index])
        out = {}
        for tf in self.timeframes:
            last = int(np.searchsorted(data[tf].close_us, t, side="right")) - 1
            out[tf] = np.arange(last - self.seq_len + 1, last + 1)
        return symbol, t, out

    def raw_item(self, index: int) -> dict[str, Any]:
        """Unnormalized channels ``{tf: [T, 6]}`` (price channels as log ratios to the anchor),
        validity, bar close times and the anchor price."""
        symbol, t, indices = self.window_indices(index)
        data = self.data[symbol]
        anchor = data[self.base].ohlc[indices[self.base][-1], 3]  # the base bar closing at t
        channels, valid, closes, partial = {}, {}, {}, {}
        for tf, rows in indices.items():
            series = data[tf]
            ohlc = series.ohlc[rows]
            bad = series.invalid[rows] | ~(ohlc > 0).all(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                prices = np.log(ohlc / anchor)
                spread = np.log(ohlc[:, 1] / ohlc[:, 2])
            x = np.column_stack([prices, np.log1p(np.maximum(series.volume[rows], 0.0)), spread])
            x[bad] = np.nan
            channels[tf], valid[tf] = x, ~bad
            closes[tf], partial[tf] = series.close_us[rows], series.partial[rows]
        return {"symbol": symbol, "anchor_time": t, "anchor_price": float(anchor), "channels": channels,
                "valid": valid, "close_us": closes, "partial": partial, "rows": indices}

    def _normalize(self, tf: str, x: np.ndarray) -> np.ndarray:
        out = x.copy()
        if self.stats is not None:
            st = self.stats[tf]
            out[:, :4] /= st.price_scale
            out[:, 4] = (out[:, 4] - st.volume_mean) / st.volume_std
            out[:, 5] = (out[:, 5] - st.range_mean) / st.range_std
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)

    def _masks(self, index: int, closes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(index)])
        m = self.mask
        if m.synchronized:
            durations = {tf: self.minutes[tf] * _US_PER_MINUTE for tf in self.timeframes}
            return synchronized_span_masks(closes, durations, m.ratio, m.min_span, m.max_span, rng)
        return {tf: span_mask(self.seq_len, m.ratio, m.min_span, m.max_span, rng) for tf in self.timeframes}

    def _consistency_maps(self, item: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        groups, complete = {}, {}
        closes, partial = item["close_us"], item["partial"]
        for fine, coarse in zip(self.timeframes, self.timeframes[1:]):
            coarse_close = closes[coarse]
            start = coarse_close - self.minutes[coarse] * _US_PER_MINUTE
            fine_close = closes[fine]
            slot = np.searchsorted(coarse_close, fine_close, side="left")  # first coarse close >= fine close
            inside = slot < len(coarse_close)
            slot_c = np.minimum(slot, len(coarse_close) - 1)
            inside &= fine_close > start[slot_c]
            groups[fine] = np.where(inside, slot, -1)
            ratio = self.minutes[coarse] // self.minutes[fine]
            counts = np.bincount(groups[fine][inside], minlength=len(coarse_close))
            complete[coarse] = (counts == ratio) & ~partial[coarse]
        return groups, complete

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.raw_item(index)
        masks = self._masks(index, item["close_us"])
        groups, complete = self._consistency_maps(item)
        inputs, targets = {}, {}
        for tf in self.timeframes:
            x = self._normalize(tf, item["channels"][tf]).astype(np.float32)
            inputs[tf], targets[tf] = torch.from_numpy(x), torch.from_numpy(x[:, :4].copy())
        return {
            "inputs": inputs,
            "targets": targets,
            "masked": {tf: torch.from_numpy(masks[tf] & item["valid"][tf]) for tf in self.timeframes},
            "valid": {tf: torch.from_numpy(item["valid"][tf]) for tf in self.timeframes},
            "groups": {tf: torch.from_numpy(g.astype(np.int64)) for tf, g in groups.items()},
            "complete": {tf: torch.from_numpy(c) for tf, c in complete.items()},
            "anchor_time": item["anchor_time"],
            "next_return": self._next_return(item["symbol"], item["rows"]),
        }

    def _next_return(self, symbol: str, rows: Mapping[str, np.ndarray]) -> float:
        """The fine-tuning label of a window (``rows`` from :meth:`window_indices`): the log
        return of the coarsest timeframe's next bar (the first one closing after the anchor)
        over the last visible one, divided by that timeframe's price scale when statistics
        are set; NaN when there is no next bar or either bar is invalid. A future value by
        design (a label)."""
        coarsest = self.timeframes[-1]
        series = self.data[symbol][coarsest]
        last = int(rows[coarsest][-1])
        if last + 1 >= len(series.close_us) or series.invalid[last] or series.invalid[last + 1]:
            return float("nan")
        value = float(np.log(series.ohlc[last + 1, 3] / series.ohlc[last, 3]))
        return value / self.stats[coarsest].price_scale if self.stats is not None else value


def collate_windows(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack items: every ``{tf: [T, ...]}`` becomes ``{tf: [B, T, ...]}``."""
    out: dict[str, Any] = {}
    for key in ("inputs", "targets", "masked", "valid", "groups", "complete"):
        out[key] = {tf: torch.stack([item[key][tf] for item in items]) for tf in items[0][key]}
    out["anchor_time"] = torch.tensor([item["anchor_time"] for item in items], dtype=torch.int64)
    out["next_return"] = torch.tensor([item["next_return"] for item in items], dtype=torch.float32)
    return out


def fit_window_stats(dataset: MultiTimeframeWindows, max_windows: int = 2000, seed: int = 0) -> dict[str, TimeframeStats]:
    """Per-timeframe statistics from (up to ``max_windows``) windows of ``dataset`` (build it
    on the training range only): price scale = the RMS of the price channels, volume and
    range mean / std. Non-finite and invalid bars are ignored."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(max_windows, len(dataset)), replace=False)
    values: dict[str, list[np.ndarray]] = {tf: [] for tf in dataset.timeframes}
    for index in np.sort(picks):
        item = dataset.raw_item(int(index))
        for tf in dataset.timeframes:
            values[tf].append(item["channels"][tf][item["valid"][tf]])
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
    return stats


def save_window_stats(stats: Mapping[str, TimeframeStats], path: str | Path, **info: Any) -> Path:
    """Write ``stats.json``: ``{"timeframes": {tf: {...}}, **info}`` (e.g. the training range)."""
    from kizashi.atomic import write_json_atomic

    path = Path(path)
    if "timeframes" in info:
        raise ValueError("save_window_stats: 'timeframes' is the statistics' own key")
    write_json_atomic(path, {"timeframes": {tf: asdict(s) for tf, s in stats.items()}, **info})
    return path


def load_window_stats(path: str | Path) -> dict[str, TimeframeStats]:
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return {tf: TimeframeStats(**{k: float(v[k]) for k in _STATS_FIELDS}) for tf, v in raw["timeframes"].items()}


def _to_us(value: Any) -> int | None:
    if value is None:
        return None
    return int(np.datetime64(value, "us").astype(np.int64)) if not isinstance(value, int) else int(value)
