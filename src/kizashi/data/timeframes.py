"""Bar timeframes: names like ``m1``, ``m15``, ``h1``, ``h4``, ``d1`` and their durations.

A timeframe name is a unit letter and a positive count: ``m`` minutes, ``h`` hours, ``d``
days (``m60`` and ``h1`` are the same duration; :func:`timeframe_name` gives the canonical
spelling, the largest unit that divides it). Bars of a timeframe are labelled by their
*open* time (the left edge of the interval) in the raw data; see ``kizashi.data.bars`` for
the close-time convention used once bars are resampled.
"""

from __future__ import annotations

import datetime as dt
import re

# The coarser timeframes built by default (those coarser than the data's base timeframe).
DEFAULT_TIMEFRAMES: tuple[str, ...] = ("m5", "m15", "m30", "h1", "h4", "d1")

_UNITS = {"m": 1, "h": 60, "d": 1440}  # minutes per unit
_NAME = re.compile(r"^([mhd])(\d+)$")


def timeframe_minutes(name: str) -> int:
    """Minutes in timeframe ``name`` (``"m15"`` -> 15, ``"h4"`` -> 240, ``"d1"`` -> 1440).

    Raises ``ValueError`` naming the accepted forms for anything else."""
    match = _NAME.match(str(name).strip().lower())
    if match is None or int(match.group(2)) < 1:
        raise ValueError(
            f"timeframe {name!r}: expected a unit letter m/h/d and a positive count, e.g. m1, m15, h1, h4, d1"
        )
    return _UNITS[match.group(1)] * int(match.group(2))


def timeframe_delta(name: str) -> dt.timedelta:
    """The duration of timeframe ``name`` as a ``timedelta``."""
    return dt.timedelta(minutes=timeframe_minutes(name))


def timeframe_name(minutes: int) -> str:
    """Canonical name of a duration in whole minutes (``60`` -> ``"h1"``, ``90`` -> ``"m90"``)."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
        raise ValueError(f"a timeframe is a positive whole number of minutes, got {minutes!r}")
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if minutes % size == 0:
            return f"{unit}{minutes // size}"
    raise AssertionError("unreachable: every minute count is divisible by 1")


def coarser_timeframes(base: str, candidates: tuple[str, ...] | list[str] = DEFAULT_TIMEFRAMES) -> list[str]:
    """The ``candidates`` strictly coarser than ``base`` that are whole multiples of it,
    ordered from fine to coarse (``coarser_timeframes("m30")`` -> ``["h1", "h4", "d1"]``)."""
    base_minutes = timeframe_minutes(base)
    chosen = [
        name for name in candidates
        if timeframe_minutes(name) > base_minutes and timeframe_minutes(name) % base_minutes == 0
    ]
    return sorted(chosen, key=timeframe_minutes)
