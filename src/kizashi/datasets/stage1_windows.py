"""Stage-1 inputs from bars: validated base bars per symbol, the timeframes built from them,
and the purged training / validation (/ test) windows shared by pretraining and fine-tuning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from kizashi.config import PretrainConfig
from kizashi.data.bars import (
    BAR_COLUMNS,
    INVALID_RANGE,
    OPEN_TIME,
    TIMESTAMP,
    build_timeframes,
    read_bars,
    resample_bars,
    validate_bars,
)
from kizashi.data.synthetic.intraday import SyntheticBarsConfig, generate_bars
from kizashi.data.timeframes import DEFAULT_TIMEFRAMES, coarser_timeframes, timeframe_minutes, timeframe_name
from kizashi.datasets.multi_timeframe import LabelConfig, MaskConfig, MultiTimeframeWindows, label_horizon
from kizashi.errors import ConfigError, KizashiError

log = logging.getLogger(__name__)


def load_bar_series(
    config: PretrainConfig, base_timeframe: str | None = None
) -> tuple[dict[str, pl.DataFrame], dict[str, Any], str]:
    """Validated base bars per symbol, their reports (as dicts) and the common base timeframe.

    ``base_timeframe`` (e.g. a pretrained encoder's base): a symbol whose bars are finer
    (``m15`` or ``m1`` data for an ``m30`` encoder) is resampled up to it
    (:func:`coarsen_base_bars`, logged); bars coarser than it, or not dividing it, are a
    :class:`ConfigError`."""
    data = config.data
    raw: dict[str, pl.DataFrame] = {}
    sources: dict[str, str] = {}
    if data.paths:
        for path in data.paths:
            symbol = Path(path).stem
            if symbol in raw:
                raise ConfigError(f"data.paths: two files named {symbol!r}")
            raw[symbol], sources[symbol] = read_bars(path), str(path)
    else:
        s = data.synthetic
        raw = generate_bars(SyntheticBarsConfig(symbols=tuple(s.symbols), timeframe=s.timeframe, n_days=s.n_days,
                                                seed=s.seed, session=s.session))
        sources = {symbol: f"data.synthetic ({symbol})" for symbol in raw}
    bars, reports, bases = {}, {}, set()
    for symbol, frame in raw.items():
        validated, report = validate_bars(frame, source=symbol, duplicates=data.duplicates)
        bars[symbol], reports[symbol] = validated, report.to_dict()
        base = report.base_timeframe
        if base_timeframe is not None and timeframe_minutes(base) != timeframe_minutes(base_timeframe):
            finer = timeframe_minutes(base) < timeframe_minutes(base_timeframe)
            if not finer or timeframe_minutes(base_timeframe) % timeframe_minutes(base):
                raise ConfigError(
                    f"{sources[symbol]}: the bars' base timeframe is {base}, which cannot be resampled to the "
                    f"required base {base_timeframe} (only finer data that divides it can: a model pretrained on "
                    f"{base_timeframe} bars cannot read {base} bars)")
            bars[symbol] = coarsen_base_bars(validated, base, base_timeframe)
            log.info("%s: base timeframe %s resampled up to %s (the required base): %d -> %d bars", sources[symbol],
                     base, base_timeframe, validated.height, bars[symbol].height)
            reports[symbol]["resampled_to"] = base_timeframe
            base = timeframe_name(timeframe_minutes(base_timeframe))
        bases.add(base)
    if len(bases) != 1:
        raise KizashiError(f"the symbols have different base timeframes {sorted(bases)}; pretrain them separately")
    return bars, reports, bases.pop()


def coarsen_base_bars(bars: pl.DataFrame, base: str, target: str) -> pl.DataFrame:
    """Validated ``base`` bars (open-time ``timestamp``) resampled to ``target`` bars in the
    same layout (open-time ``timestamp``, OHLCV, ``invalid_range``), so that they are the
    base bars of :func:`build_timeframes`. A bucket with missing base bars is kept (its
    close is the last base bar's); a bucket holding an invalid bar is flagged invalid."""
    coarse = resample_bars(bars, base, target)
    return coarse.select(pl.col(OPEN_TIME).alias(TIMESTAMP), *BAR_COLUMNS[1:], INVALID_RANGE)


def stage1_timeframes(config: PretrainConfig, base: str) -> list[str]:
    if config.timeframes is None:
        return [base, *coarser_timeframes(base, DEFAULT_TIMEFRAMES)]
    chosen = sorted(config.timeframes, key=timeframe_minutes)
    if chosen[0] != base:
        raise ConfigError(f"timeframes: the finest must be the data's base timeframe {base}, got {chosen}")
    return chosen


def train_end_of(config: PretrainConfig, series: dict[str, dict[str, pl.DataFrame]], base: str) -> np.datetime64:
    if config.train_end is not None:
        return np.datetime64(config.train_end, "us")
    closes = np.concatenate([frames[base]["timestamp"].dt.epoch("us").to_numpy() for frames in series.values()])
    return np.datetime64(int(np.quantile(closes, 0.8)), "us")


class WindowSplit(NamedTuple):
    """Training and validation windows (and test windows when asked for), purged.

    ``purge`` = ``label_horizon`` + ``longest_window`` (the longest timeframe window's span,
    ``(T_tf + 1) x duration(tf)``: its bars plus the one in progress at the anchor).
    Validation anchors lie in ``[val_start, val_end)`` with ``val_start = train_end + purge``,
    and no validation window holds a bar that opens before ``train_end + label_horizon``;
    test anchors (if any) likewise after ``val_end``."""

    train: MultiTimeframeWindows
    val: MultiTimeframeWindows
    train_end: np.datetime64
    val_start: np.datetime64
    label_horizon: np.timedelta64
    longest_window: np.timedelta64
    test: MultiTimeframeWindows | None = None
    test_start: np.datetime64 | None = None

    @property
    def purge(self) -> np.timedelta64:
        return self.label_horizon + self.longest_window

    def info(self) -> dict[str, Any]:
        """The split and purge, JSON-ready (stats.json, pretrain.json)."""
        minutes = lambda delta: int(delta // np.timedelta64(1, "m"))  # noqa: E731
        out = {"train_end": str(self.train_end), "val_start": str(self.val_start),
               "purge_minutes": minutes(self.purge), "label_horizon_minutes": minutes(self.label_horizon),
               "longest_window_minutes": minutes(self.longest_window), "label_timeframe": self.train.label_timeframe,
               "label_bars": self.train.label.bars}
        if self.test_start is not None:
            out["test_start"] = str(self.test_start)
        return out


def label_config(config: PretrainConfig, timeframes: list[str]) -> tuple[LabelConfig, np.timedelta64]:
    """The label settings (``config.label``) and the horizon, checked against the
    timeframes: a :class:`ConfigError` naming the key when the horizon is not whole base
    bars."""
    label = LabelConfig(timeframe=config.label.timeframe, bars=config.label.bars)
    try:
        _, horizon_us = label_horizon(label, timeframes)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return label, np.timedelta64(horizon_us, "us")


def window_datasets(
    config: PretrainConfig,
    bars: dict[str, pl.DataFrame],
    base: str,
    timeframes: list[str],
    seq_len: int,
    mask: MaskConfig,
    seq_lens: dict[str, int] | None = None,
    *,
    with_test: bool = False,
) -> WindowSplit:
    """The timeframes built from ``bars`` and the purged windows (``config.windows.mode``):
    training windows ending before ``train_end``, validation windows in
    ``[train_end + purge, val_end)`` (:class:`WindowSplit`; no statistics set yet).
    ``with_test``: also the windows after ``val_end + purge`` to the data's end (needs
    ``val_end``). Shared by pretraining and fine-tuning, so both split alike. ``seq_lens``
    (async) defaults to ``config.windows.seq_lens``."""
    series = {symbol: build_timeframes(frame, base, timeframes[1:]) for symbol, frame in bars.items()}
    train_end = train_end_of(config, series, base)
    val_end = np.datetime64(config.val_end, "us") if config.val_end is not None else None
    if with_test and val_end is None:
        raise ConfigError("val_end: test windows follow the validation range, which needs an end (val_end)")
    w = config.windows
    label, horizon = label_config(config, timeframes)
    shape: dict[str, Any] = {"mode": w.mode, "label": label}
    if w.mode == "async":
        shape["seq_lens"] = seq_lens if seq_lens is not None else w.seq_lens
    lengths = {tf: (shape.get("seq_lens") or {}).get(tf, seq_len) for tf in timeframes}
    longest = max((lengths[tf] + 1) * timeframe_minutes(tf) for tf in timeframes)
    longest_window = np.timedelta64(longest, "m").astype("timedelta64[us]")
    purge = horizon + longest_window

    def later(start: np.datetime64, end: np.datetime64 | None, seed: int) -> MultiTimeframeWindows:
        return MultiTimeframeWindows(series, timeframes, seq_len, time_range=(start + purge, end), mask=mask,
                                     anchor_stride=w.val_anchor_stride, seed=seed, earliest_input=start + horizon,
                                     **shape)

    try:
        train = MultiTimeframeWindows(series, timeframes, seq_len, time_range=(None, train_end), mask=mask,
                                      anchor_stride=w.anchor_stride, seed=config.seed, **shape,
                                      **({"strides": w.strides} if w.mode == "async" else {}))
        val = later(train_end, val_end, config.seed + 1)
        test = later(val_end, None, config.seed + 2) if with_test else None
    except ValueError as err:
        raise ConfigError(f"windows: {err} (validation windows start after the purge of {_duration(purge)} = label "
                          f"horizon {_duration(horizon)} + longest window {_duration(longest_window)})") from None
    split = WindowSplit(train, val, train_end, train_end + purge, horizon, longest_window, test,
                        val_end + purge if with_test else None)
    log.info("purge: validation windows start at %s (train_end %s + label horizon %s + longest window %s) and hold "
             "no bar opening before %s; %d training, %d validation windows%s", split.val_start, train_end,
             _duration(horizon), _duration(longest_window), train_end + horizon, len(train), len(val),
             f", {len(test)} test windows from {split.test_start}" if test is not None else "")
    return split


def _duration(delta: np.timedelta64) -> str:
    """``np.timedelta64`` as words: ``34 days``, ``1 day 4 hours``, ``15 minutes``; units
    that are zero are left out (``0 minutes`` for a zero duration)."""
    us = int(delta.astype("timedelta64[us]").astype(np.int64))
    sign, us = ("-", -us) if us < 0 else ("", us)
    parts = []
    for name, size in (("day", 86_400_000_000), ("hour", 3_600_000_000), ("minute", 60_000_000),
                       ("second", 1_000_000), ("microsecond", 1)):
        count, us = divmod(us, size)
        if count:
            parts.append(f"{count} {name}{'s' if count != 1 else ''}")
    return sign + (" ".join(parts) if parts else "0 minutes")


__all__ = [
    "WindowSplit",
    "coarsen_base_bars",
    "label_config",
    "load_bar_series",
    "stage1_timeframes",
    "train_end_of",
    "window_datasets",
]
