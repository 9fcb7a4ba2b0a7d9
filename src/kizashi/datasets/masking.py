"""Span masking for masked reconstruction of bar windows.

:func:`span_mask` hides contiguous spans of one window of ``T`` bars: span lengths are drawn
uniformly from ``[min_span, max_span]`` (clipped to ``T``) at uniformly drawn starts until
``round(ratio * T)`` bars are hidden (spans may touch or overlap; the last one is cut so the
count is exact). At least one bar is hidden whenever ``ratio > 0``.

:func:`synchronized_span_masks` masks the same wall-clock intervals in every timeframe:
spans are drawn on the finest timeframe of the window and a coarse bar is hidden when its
interval overlaps a hidden fine interval. Every window then hides the same stretch of time
at every resolution, so the model cannot read a hidden fine span off its coarse bar.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def span_mask(
    length: int,
    ratio: float,
    min_span: int,
    max_span: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``[length]`` bool, True = hidden; exactly ``max(1, round(ratio * length))`` True
    values when ``ratio > 0`` (none when ``ratio == 0``)."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    if not 1 <= min_span <= max_span:
        raise ValueError(f"span lengths need 1 <= min_span <= max_span, got [{min_span}, {max_span}]")
    mask = np.zeros(length, dtype=bool)
    if ratio == 0.0:
        return mask
    target = max(1, int(round(ratio * length)))
    hidden = 0
    while hidden < target:
        span = min(int(rng.integers(min_span, max_span + 1)), length)
        start = int(rng.integers(0, length - span + 1))
        window = mask[start : start + span]
        new = np.flatnonzero(~window)
        take = new[: target - hidden]  # cut the last span so the count is exact
        window[take] = True
        hidden += len(take)
    return mask


def synchronized_span_masks(
    close_times: Mapping[str, np.ndarray],
    durations: Mapping[str, int],
    ratio: float,
    min_span: int,
    max_span: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Masks that hide the same wall-clock intervals in every timeframe.

    ``close_times[tf]``: ``[T_tf]`` int64 close times of the window's bars (any unit);
    ``durations[tf]``: one bar's duration in the same unit. Spans are drawn with
    :func:`span_mask` on the finest timeframe (smallest duration); a bar of another
    timeframe, covering ``(close - duration, close]``, is hidden when that interval overlaps
    a hidden fine bar's interval. Returns ``{tf: [T_tf] bool}``.
    """
    if set(close_times) != set(durations):
        raise ValueError("close_times and durations must have the same timeframes")
    finest = min(durations, key=lambda tf: durations[tf])
    fine_close = np.asarray(close_times[finest], dtype=np.int64)
    fine_mask = span_mask(len(fine_close), ratio, min_span, max_span, rng)
    hidden_end = fine_close[fine_mask]
    hidden_start = hidden_end - durations[finest]
    out = {finest: fine_mask}
    for tf, closes in close_times.items():
        if tf == finest:
            continue
        ends = np.asarray(closes, dtype=np.int64)
        starts = ends - durations[tf]
        # overlap of (starts, ends] with any (hidden_start, hidden_end]: hidden_start < end and start < hidden_end
        first_after = np.searchsorted(hidden_end, starts, side="right")  # hidden intervals ending after start
        candidate = np.minimum(first_after, len(hidden_end) - 1)
        overlaps = (first_after < len(hidden_end)) & (hidden_start[candidate] < ends) if len(hidden_end) else np.zeros(len(ends), bool)
        out[tf] = overlaps
    return out
