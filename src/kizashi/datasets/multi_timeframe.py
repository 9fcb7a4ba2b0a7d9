"""Multi-timeframe bar windows (aligned or async) for Stage-1 masked reconstruction.

Input: per symbol, ``{timeframe: frame}`` from :func:`kizashi.data.bars.build_timeframes`
(bars labelled by their close time ``timestamp``; the base timeframe first).

Windows ("aligned" mode). An item is an *anchor* ``t``: the close time of a base bar. For
every timeframe the window is its last ``T`` bars with ``timestamp <= t`` (the no-look-ahead
rule of ``kizashi.data.bars``: no coarse bar that has not closed by ``t``). Anchors are the
base closes inside the requested time range for which every timeframe has ``T`` visible
bars, every ``anchor_stride`` base bars.

Windows ("async" mode). Each timeframe is sampled on its own: a window of timeframe ``tf``
is its last ``T_tf`` bars (``seq_lens[tf]``, default ``seq_len``) ending at one of its own
bars, whose close time (the window's end) is inside the time range, every ``stride_tf`` of
those bars (``strides[tf]`` in bars of ``tf``, default ``anchor_stride``), per symbol. The
timeframes of an item are NOT aligned in time. Item -> windows, per symbol ``s`` with
``n_tf`` windows of ``tf`` (in time order) and ``n_s = max_tf n_tf`` items: local item
``i`` in ``[0, n_s)`` takes window ``floor(i * n_tf / n_s)`` of every ``tf`` (the timeframe
with the most windows takes each once, every other takes each ``floor`` or ``ceil`` of
``n_s / n_tf`` times, in time order); items are the symbols' items concatenated in symbol
order, and an item never mixes symbols. A symbol lacking a window in some timeframe gives
no item (logged). Span masks are drawn per timeframe (synchronized masking needs aligned
windows: ``ValueError``); there are no ``groups`` / ``complete`` (the consistency loss
needs bars matched by time). The item's ``anchor_time`` is the latest window end.

Channels (``C = 6``) per bar, in the window's own units; ``a`` = the anchor price: aligned,
the close of the base bar closing at ``t`` (the same anchor for every timeframe, so all
timeframes share one price scale); async, the close of the timeframe window's own last bar::

    0..3  log(open / a), log(high / a), log(low / a), log(close / a)   / price_scale[tf]
    4     (log1p(volume) - volume_mean[tf]) / volume_std[tf]
    5     (log(high / low) - range_mean[tf]) / range_std[tf]

Targets: channels 0..3 (``[T, 4]``). The price channels are divided by one positive scale
per timeframe and not shifted, so ``price = exp(target * price_scale) * a`` and the
cross-timeframe consistency can undo the normalization exactly. Statistics come from the
training range only (:meth:`kizashi.datasets.statistics.WindowStats.fit`, one
:class:`~kizashi.datasets.statistics.TimeframeStats` per timeframe, saved as ``stats.json``
by ``WindowStats.save``; pass :meth:`MultiTimeframeWindows.window_metadata` to it to record
the mode, lengths and strides: the two modes' price scales differ, as their anchors do).

Per item (aligned): ``inputs`` / ``targets`` ``{tf: [T, 6] / [T, 4]}`` float32, ``masked`` ``{tf: [T]}``
bool (span masking, optionally synchronized by wall-clock time), ``valid`` ``{tf: [T]}``
bool (False for bars flagged ``invalid_range``: their inputs are 0 and they never count in
the loss), ``groups`` ``{tf: [T]}`` int64 for each timeframe but the coarsest (the index,
in the next coarser timeframe's window, of the bar that contains this bar, -1 if none) and
``complete`` ``{tf: [T]}`` bool for each but the finest (the coarse bar is not partial and
all of its finer bars are inside the finer window): what the consistency loss compares.
Async items have ``inputs`` / ``targets`` / ``masked`` / ``valid`` of ``[T_tf, ...]`` per
timeframe. Both modes: ``symbol``, ``anchor_time`` (epoch us) and ``forward_return``.

The label (``forward_return``, float, the fine-tuning target; :class:`LabelConfig`). With
``t`` the item's anchor (aligned: the anchor; async: the latest window end) and the horizon
``H = label.bars x duration(label.timeframe)`` (default: one bar of the coarsest timeframe)::

    forward_return = log(P(t + H) / P(t))      unscaled log return

where ``P(s)`` is the close of the BASE bar closing exactly at ``s``. ``P(t)``, the base
price, is the close of the bar closing at the anchor (aligned: the anchor bar itself; async:
the base bar closing at the latest window end, which exists unless the data has a gap
there); ``P(t + H)`` comes from a bar closing strictly after the anchor. So the label
depends on bars closing after the anchor and on the anchor's own close only, while the
inputs depend on bars closing at or before it (both proven by perturbation tests). NaN when
either bar is missing (a gap, a closed session, the end of the data) or flagged
``invalid_range``. ``H`` must be a whole number of base bars.

Purging. ``earliest_input`` leaves out the windows that hold a bar opening before that
instant (a window is counted in bars, so a gap in the data stretches it back in time):
with the training labels' end as ``earliest_input``, validation inputs never overlap them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from kizashi.data.timeframes import timeframe_minutes
from kizashi.datasets.masking import span_mask, synchronized_span_masks
from kizashi.datasets.statistics import TimeframeStats, WindowStats

log = logging.getLogger(__name__)

N_CHANNELS = 6
_US_PER_MINUTE = 60_000_000


@dataclass(frozen=True)
class MaskConfig:
    ratio: float = 0.15
    min_span: int = 3
    max_span: int = 10
    synchronized: bool = False  # the same wall-clock intervals in every timeframe


@dataclass(frozen=True)
class LabelConfig:
    """The label's horizon: ``bars`` bars of ``timeframe`` (None: the coarsest of the
    windows' timeframes), measured from the anchor (module docstring)."""

    timeframe: str | None = None
    bars: int = 1


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


WindowMode = Literal["aligned", "async"]
WINDOW_MODES = ("aligned", "async")


class MultiTimeframeWindows(Dataset):
    """Aligned or async windows over several symbols (module docstring).

    Args:
        series: ``{symbol: {timeframe: frame}}`` (``build_timeframes`` output).
        timeframes: the model's timeframes; the finest must be the data's base.
        seq_len: ``T`` bars per timeframe (async: the default of ``seq_lens``).
        mode: ``"aligned"`` (every timeframe's window ends at the same anchor) or ``"async"``
            (each timeframe sampled with its own length and stride).
        seq_lens: async only: ``{tf: T_tf}`` (missing timeframes: ``seq_len``).
        strides: async only: ``{tf: n}``, a window every ``n`` bars of ``tf`` (missing
            timeframes: ``anchor_stride``).
        time_range: ``(start, end)``: window ends ``t`` with ``start <= t < end`` (datetimes,
            epoch microseconds or None); aligned, ``t`` is the anchor.
        stats: per-timeframe statistics (None: raw, unnormalized channels; see
            :meth:`~kizashi.datasets.statistics.WindowStats.fit`).
        mask: span masking; ``seed`` with the item index makes masks reproducible.
        anchor_stride: aligned: keep every n-th eligible anchor (in base bars); async: the
            default stride of every timeframe.
        label: the horizon of ``forward_return`` (module docstring).
        earliest_input: leave out windows holding a bar that opens before this instant
            (datetime, epoch microseconds or None); the purge after a training range.
    """

    def __init__(
        self,
        series: Mapping[str, Mapping[str, pl.DataFrame]],
        timeframes: Sequence[str],
        seq_len: int,
        *,
        mode: WindowMode = "aligned",
        seq_lens: Mapping[str, int] | None = None,
        strides: Mapping[str, int] | None = None,
        time_range: tuple[Any, Any] = (None, None),
        stats: Mapping[str, TimeframeStats] | None = None,
        mask: MaskConfig = MaskConfig(),
        anchor_stride: int = 1,
        seed: int = 0,
        label: LabelConfig = LabelConfig(),
        earliest_input: Any = None,
    ) -> None:
        if seq_len < 1 or anchor_stride < 1:
            raise ValueError("seq_len and anchor_stride must be >= 1")
        if mode not in WINDOW_MODES:
            raise ValueError(f"mode must be one of {WINDOW_MODES}, got {mode!r}")
        self.timeframes = _ordered(timeframes)
        self.base = self.timeframes[0]
        self.mode: WindowMode = mode
        self.seq_len, self.mask, self.seed = int(seq_len), mask, int(seed)
        self.anchor_stride = int(anchor_stride)
        if mode == "aligned":
            if seq_lens is not None or strides is not None:
                raise ValueError("seq_lens and strides are options of mode='async'; aligned windows share seq_len "
                                 "and anchor_stride")
        elif mask.synchronized:
            raise ValueError("synchronized masking hides the same wall-clock time in every timeframe and needs "
                             "aligned windows; mode='async' windows are not aligned in time (set "
                             "synchronized=False or mode='aligned')")
        self.seq_lens = _per_timeframe("seq_lens", seq_lens, self.timeframes, self.seq_len)
        self.strides = _per_timeframe("strides", strides, self.timeframes, self.anchor_stride) if mode == "async" else None
        self.stats = WindowStats(stats) if stats is not None else None
        self.minutes = {tf: timeframe_minutes(tf) for tf in self.timeframes}
        self.label = label
        self.label_timeframe, self.label_horizon_us = label_horizon(label, self.timeframes)
        self.earliest_input_us = _to_us(earliest_input)
        self.symbols = sorted(series)
        self.data: dict[str, dict[str, _Series]] = {}
        for symbol in self.symbols:
            frames = series[symbol]
            missing = [tf for tf in self.timeframes if tf not in frames]
            if missing:
                raise ValueError(f"{symbol}: timeframes {missing} missing; built: {sorted(frames)}")
            self.data[symbol] = {tf: _Series(frames[tf]) for tf in self.timeframes}
        start_us, end_us = (_to_us(v) for v in time_range)
        if mode == "aligned":
            self._build_anchors(start_us, end_us)
        else:
            self._build_async(start_us, end_us)
        if len(self) == 0:
            lengths = self.seq_len if mode == "aligned" else self.seq_lens
            start, end = (_format_instant(_to_us(v)) for v in time_range)
            raise ValueError(f"no window of {lengths} bars in every timeframe within ({start}, {end})")

    def _build_anchors(self, start_us: int | None, end_us: int | None) -> None:
        anchors: list[tuple[int, int]] = []  # (symbol index, base bar index)
        for s, symbol in enumerate(self.symbols):
            data = self.data[symbol]
            base_close = data[self.base].close_us
            enough = np.ones(len(base_close), dtype=bool)
            for tf in self.timeframes:
                visible = np.searchsorted(data[tf].close_us, base_close, side="right")  # bars closed by t
                enough &= visible >= self.seq_len
                if self.earliest_input_us is not None:
                    enough &= self._opens_after_earliest_input(tf, data[tf].close_us, visible - self.seq_len)
            if start_us is not None:
                enough &= base_close >= start_us
            if end_us is not None:
                enough &= base_close < end_us
            eligible = np.flatnonzero(enough)[::self.anchor_stride]
            anchors.extend((s, int(i)) for i in eligible)
        self.anchors = np.asarray(anchors, dtype=np.int64).reshape(-1, 2)

    def _build_async(self, start_us: int | None, end_us: int | None) -> None:
        # window_ends[s][tf]: [n_tf] int64, the last bar index of each of the symbol's windows of tf
        self.window_ends: list[dict[str, np.ndarray]] = []
        counts = []
        for symbol in self.symbols:
            ends = {}
            for tf, series in self.data[symbol].items():
                close = series.close_us
                eligible = np.arange(len(close)) >= self.seq_lens[tf] - 1  # T_tf bars up to and with this one
                if self.earliest_input_us is not None:
                    first_rows = np.arange(len(close)) - self.seq_lens[tf] + 1
                    eligible &= self._opens_after_earliest_input(tf, close, first_rows)
                if start_us is not None:
                    eligible &= close >= start_us
                if end_us is not None:
                    eligible &= close < end_us
                ends[tf] = np.flatnonzero(eligible)[:: self.strides[tf]].astype(np.int64)
            empty = [tf for tf, e in ends.items() if len(e) == 0]
            if empty and len(empty) < len(ends):
                log.warning("%s: no window of timeframes %s within the time range; the symbol gives no item",
                            symbol, empty)
            self.window_ends.append(ends)
            counts.append(0 if empty else max(len(e) for e in ends.values()))
        self.item_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # [n_symbols + 1]

    def _opens_after_earliest_input(self, tf: str, close_us: np.ndarray, first_rows: np.ndarray) -> np.ndarray:
        """``[N]`` bool: the window whose first bar of ``tf`` is row ``first_rows`` ``[N]``
        (clipped at 0) opens at or after ``earliest_input``."""
        first = np.clip(first_rows, 0, None)
        return close_us[first] - self.minutes[tf] * _US_PER_MINUTE >= self.earliest_input_us

    def __len__(self) -> int:
        return len(self.anchors) if self.mode == "aligned" else int(self.item_offsets[-1])

    def window_indices(self, index: int) -> tuple[str, int, dict[str, np.ndarray]]:
        """``(symbol, anchor close (us), {tf: [T_tf] bar indices})`` of item ``index``
        (async: the anchor is the latest window end)."""
        if self.mode == "async":
            return self._async_window_indices(index)
        s, base_index = self.anchors[index]
        symbol = self.symbols[s]
        data = self.data[symbol]
        t = int(data[self.base].close_us[base_index])
        out = {}
        for tf in self.timeframes:
            last = int(np.searchsorted(data[tf].close_us, t, side="right")) - 1
            out[tf] = np.arange(last - self.seq_len + 1, last + 1)
        return symbol, t, out

    def _async_window_indices(self, index: int) -> tuple[str, int, dict[str, np.ndarray]]:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        s = int(np.searchsorted(self.item_offsets, index, side="right")) - 1
        local, n_items = index - int(self.item_offsets[s]), int(self.item_offsets[s + 1] - self.item_offsets[s])
        symbol = self.symbols[s]
        out = {}
        for tf, ends in self.window_ends[s].items():
            last = int(ends[local * len(ends) // n_items])  # module docstring: item -> window
            out[tf] = np.arange(last - self.seq_lens[tf] + 1, last + 1)
        t = max(int(self.data[symbol][tf].close_us[rows[-1]]) for tf, rows in out.items())
        return symbol, t, out

    def timeframe_windows(self, tf: str) -> list[tuple[str, np.ndarray]]:
        """The windows of ``tf`` as ``(symbol, [T_tf] bar indices)``: aligned, one per item
        (in item order; items may share a coarse window); async, each of the timeframe's
        windows once (in symbol, then time order)."""
        if self.mode == "aligned":
            return [(symbol, rows[tf]) for symbol, _, rows in map(self.window_indices, range(len(self)))]
        return [(symbol, np.arange(last - self.seq_lens[tf] + 1, last + 1))
                for symbol, ends in zip(self.symbols, self.window_ends) for last in ends[tf].tolist()]

    def _channels(self, series: _Series, rows: np.ndarray, anchor: float) -> tuple[np.ndarray, np.ndarray]:
        """Unnormalized ``[T, 6]`` channels of bars ``rows`` (NaN where invalid) and ``[T]`` validity."""
        ohlc = series.ohlc[rows]
        bad = series.invalid[rows] | ~(ohlc > 0).all(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            prices = np.log(ohlc / anchor)
            spread = np.log(ohlc[:, 1] / ohlc[:, 2])
        x = np.column_stack([prices, np.log1p(np.maximum(series.volume[rows], 0.0)), spread])
        x[bad] = np.nan
        return x, ~bad

    def window_channels(self, tf: str, symbol: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unnormalized ``[T_tf, 6]`` channels of ``symbol``'s bars ``rows`` ``[T_tf]`` of
        ``tf``, anchored at the close of the last of them (the async anchor), and ``[T_tf]``
        validity."""
        series = self.data[symbol][tf]
        return self._channels(series, rows, series.ohlc[rows[-1], 3])

    def raw_item(self, index: int) -> dict[str, Any]:
        """Unnormalized channels ``{tf: [T_tf, 6]}`` (price channels as log ratios to the
        anchor), validity, bar close times and the anchor prices ``{tf: float}`` (aligned:
        also ``anchor_price``, the one shared anchor)."""
        symbol, t, indices = self.window_indices(index)
        data = self.data[symbol]
        if self.mode == "aligned":
            anchor = data[self.base].ohlc[indices[self.base][-1], 3]  # the base bar closing at t
            anchors = {tf: anchor for tf in indices}
        else:
            anchors = {tf: data[tf].ohlc[rows[-1], 3] for tf, rows in indices.items()}  # each window's last close
        channels, valid, closes, partial = {}, {}, {}, {}
        for tf, rows in indices.items():
            series = data[tf]
            channels[tf], valid[tf] = self._channels(series, rows, anchors[tf])
            closes[tf], partial[tf] = series.close_us[rows], series.partial[rows]
        item = {"symbol": symbol, "anchor_time": t, "anchor_prices": {tf: float(a) for tf, a in anchors.items()},
                "channels": channels, "valid": valid, "close_us": closes, "partial": partial, "rows": indices}
        if self.mode == "aligned":
            item["anchor_price"] = float(anchors[self.base])
        return item

    def _normalize(self, tf: str, x: np.ndarray) -> np.ndarray:
        """``[T, 6]`` channels normalized by ``stats[tf]`` (raw without stats), non-finite -> 0."""
        if self.stats is not None:
            return self.stats[tf].apply(x)
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def _masks(self, index: int, closes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(index)])
        m = self.mask
        if m.synchronized:  # aligned only (checked on construction)
            durations = {tf: self.minutes[tf] * _US_PER_MINUTE for tf in self.timeframes}
            return synchronized_span_masks(closes, durations, m.ratio, m.min_span, m.max_span, rng)
        return {tf: span_mask(self.seq_lens[tf], m.ratio, m.min_span, m.max_span, rng) for tf in self.timeframes}

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
        inputs, targets = {}, {}
        for tf in self.timeframes:
            x = self._normalize(tf, item["channels"][tf]).astype(np.float32)
            inputs[tf], targets[tf] = torch.from_numpy(x), torch.from_numpy(x[:, :4].copy())
        out: dict[str, Any] = {
            "inputs": inputs,
            "targets": targets,
            "masked": {tf: torch.from_numpy(masks[tf] & item["valid"][tf]) for tf in self.timeframes},
            "valid": {tf: torch.from_numpy(item["valid"][tf]) for tf in self.timeframes},
        }
        if self.mode == "aligned":
            groups, complete = self._consistency_maps(item)
            out["groups"] = {tf: torch.from_numpy(g.astype(np.int64)) for tf, g in groups.items()}
            out["complete"] = {tf: torch.from_numpy(c) for tf, c in complete.items()}
        out["symbol"] = item["symbol"]
        out["anchor_time"] = item["anchor_time"]
        out["forward_return"] = float(self._forward_returns(item["symbol"], np.array([item["anchor_time"]]))[0])
        return out

    def _forward_returns(self, symbol: str, anchors_us: np.ndarray) -> np.ndarray:
        """``[N]`` labels of ``symbol``'s items with anchors ``anchors_us`` ``[N]`` int64:
        log(close at anchor + horizon / close at anchor), both base bars closing exactly at
        those instants; NaN where either is missing or invalid (module docstring)."""
        base = self.data[symbol][self.base]
        close_us, n = base.close_us, len(base.close_us)

        def bar_at(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            index = np.searchsorted(close_us, times)
            safe = np.minimum(index, n - 1)
            found = (index < n) & (close_us[safe] == times)
            found &= ~base.invalid[safe] & (base.ohlc[safe, 3] > 0)
            return safe, found

        start, has_start = bar_at(anchors_us)
        end, has_end = bar_at(anchors_us + self.label_horizon_us)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.log(base.ohlc[end, 3] / base.ohlc[start, 3])
        return np.where(has_start & has_end, value, np.nan)

    def anchor_times(self) -> np.ndarray:
        """``[N]`` int64: every item's anchor (epoch us; async: the latest window end), in
        item order."""
        if self.mode == "aligned":
            out = np.empty(len(self), dtype=np.int64)
            for s, symbol in enumerate(self.symbols):
                rows = self.anchors[:, 0] == s
                out[rows] = self.data[symbol][self.base].close_us[self.anchors[rows, 1]]
            return out
        parts = []
        for s, symbol in enumerate(self.symbols):
            n_items = int(self.item_offsets[s + 1] - self.item_offsets[s])
            local = np.arange(n_items)
            ends = [self.data[symbol][tf].close_us[e[local * len(e) // n_items]]
                    for tf, e in self.window_ends[s].items() if n_items]
            parts.append(np.max(ends, axis=0) if ends else np.empty(0, np.int64))
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)

    def item_symbols(self) -> list[str]:
        """Every item's symbol, in item order."""
        if self.mode == "aligned":
            return [self.symbols[s] for s in self.anchors[:, 0].tolist()]
        counts = np.diff(self.item_offsets)
        return [symbol for symbol, n in zip(self.symbols, counts.tolist()) for _ in range(n)]

    def labels(self) -> np.ndarray:
        """``[N]`` float64: every item's ``forward_return`` (without building the items)."""
        anchors, symbols = self.anchor_times(), np.asarray(self.item_symbols(), dtype=object)
        out = np.full(len(self), np.nan)
        for symbol in self.symbols:
            rows = symbols == symbol
            if rows.any():
                out[rows] = self._forward_returns(symbol, anchors[rows])
        return out

    def window_metadata(self) -> dict[str, Any]:
        """The window set-up, JSON-ready, for ``WindowStats.save(path, **metadata)``:
        ``window_mode``, ``seq_lens`` and ``anchor_stride`` (aligned) or ``strides`` (async)."""
        out: dict[str, Any] = {"window_mode": self.mode, "seq_lens": dict(self.seq_lens)}
        if self.mode == "aligned":
            out["anchor_stride"] = self.anchor_stride
        else:
            out["strides"] = dict(self.strides or {})
        return out


def label_horizon(label: LabelConfig, timeframes: Sequence[str]) -> tuple[str, int]:
    """``(label timeframe, horizon in epoch us)``; ``ValueError`` naming ``label.timeframe``
    / ``label.bars`` when the horizon is not a positive whole number of base bars."""
    bars = label.bars
    if isinstance(bars, bool) or not isinstance(bars, int | np.integer) or bars < 1:
        raise ValueError(f"label.bars must be a positive int, got {bars!r}")
    timeframe = label.timeframe if label.timeframe is not None else timeframes[-1]
    try:
        minutes = timeframe_minutes(timeframe)
    except ValueError as err:
        raise ValueError(f"label.timeframe: {err}") from None
    base_minutes = timeframe_minutes(timeframes[0])
    if (minutes * bars) % base_minutes:
        raise ValueError(f"label.timeframe={timeframe!r} x label.bars={bars} is {minutes * bars} minutes, not a whole "
                         f"number of base {timeframes[0]} bars: the label's end must be a base bar close")
    return timeframe, int(minutes * bars * _US_PER_MINUTE)


def _per_timeframe(name: str, values: Mapping[str, int] | None, timeframes: Sequence[str], default: int) -> dict[str, int]:
    """``{tf: int}`` for every timeframe: ``values`` where given, else ``default``."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(timeframes))
    if unknown:
        raise ValueError(f"{name}: timeframes {unknown} are not among {list(timeframes)}")
    out = {}
    for tf in timeframes:
        value = values.get(tf, default)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name}[{tf!r}] must be a positive int, got {value!r}")
        out[tf] = int(value)
    return out


def collate_windows(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack items: every ``{tf: [T_tf, ...]}`` becomes ``{tf: [B, T_tf, ...]}``. ``groups``
    and ``complete`` only when the items have them (aligned mode); ``symbol`` a list of
    ``B`` names, ``anchor_time`` ``[B]`` int64, ``forward_return`` ``[B]`` float32."""
    out: dict[str, Any] = {}
    for key in ("inputs", "targets", "masked", "valid", "groups", "complete"):
        if key in items[0]:
            out[key] = {tf: torch.stack([item[key][tf] for item in items]) for tf in items[0][key]}
    out["symbol"] = [item["symbol"] for item in items]
    out["anchor_time"] = torch.tensor([item["anchor_time"] for item in items], dtype=torch.int64)
    out["forward_return"] = torch.tensor([item["forward_return"] for item in items], dtype=torch.float32)
    return out


def _to_us(value: Any) -> int | None:
    if value is None:
        return None
    return int(np.datetime64(value, "us").astype(np.int64)) if not isinstance(value, int) else int(value)


def _format_instant(us: int | None) -> str:
    """Epoch microseconds as ISO text at the finest unit it needs (``2024-01-05T00:00``,
    ``2024-01-05T00:00:30``); ``None`` (an open end) as ``None``."""
    if us is None:
        return "None"
    unit = "m" if us % 60_000_000 == 0 else "s" if us % 1_000_000 == 0 else "us"
    return str(np.datetime64(us, "us").astype(f"datetime64[{unit}]"))
