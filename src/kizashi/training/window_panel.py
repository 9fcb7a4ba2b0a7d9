"""The inputs of a day-panel model (ATFT-GAT-FAN) for a few days of new data, built from
those days only and equal to what a full build's day-panel cache gives the model.

    DataBuildConfig (+ QUOTES) and the days to score first .. last, window L
      -> the features of the L - 1 trading days before ``first`` through ``last``, each
         stock with its longest lookback as warm-up, and the correlation graphs of the days
         they read, each from its full window of the whole panel, in one pass over the inputs
         (kizashi.datasets.build.build_feature_rows: equal to a full build's rows and graphs)
      -> WindowPanel: those rows and graphs as the arrays of a DayPanelCache
         ([T', N', F] features, [T', N'] alive, CSR edges per day), so that
         kizashi.datasets.DayPanelDataset assembles each scored day's [N_d, L, F] window,
         mask and graph exactly as over the cache (missing days, days before the calendar
         start, nulls and edges to stocks not alive that day handled the same way)

The panel's codes are the window's codes, sorted as the cache sorts its codes, so a day's
stocks come in the same order and its graph's edges in the same order as over the cache.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from kizashi.config import DataBuildConfig
from kizashi.datasets.build import FeatureRows, build_feature_rows
from kizashi.datasets.day_panel_cache import EDGE_ATTR_COLUMNS

log = logging.getLogger(__name__)


class WindowPanel:
    """In-memory day panel with the attributes :class:`~kizashi.datasets.DayPanelDataset`
    reads from a :class:`~kizashi.datasets.DayPanelCache` (T' days, N' codes, F features,
    H horizons, E edges)::

        dates          [T'] datetime64[D]    the window's trading days, sorted
        codes          N' str                sorted
        features       [T', N', F] float32   NaN = no row or a null value
        alive          [T', N'] bool         the stock has a row that day
        targets, target_ranks  [T', N', H] float32, all NaN (new days have no known target)
        edge_src, edge_dst [E] int32; edge_attr [E, 3] float32; edge_offsets [T' + 1] int64
    """

    def __init__(
        self,
        dates: np.ndarray,
        codes: Sequence[str],
        feature_columns: Sequence[str],
        horizons: Sequence[int],
        features: np.ndarray,
        alive: np.ndarray,
        edge_src: np.ndarray,
        edge_dst: np.ndarray,
        edge_attr: np.ndarray,
        edge_offsets: np.ndarray,
    ) -> None:
        self.dates = np.asarray(dates, dtype="datetime64[D]")
        self.codes = list(codes)
        self.feature_columns = list(feature_columns)
        self.horizons = [int(h) for h in horizons]
        self.features = features
        self.alive = alive
        self.targets = np.full((len(self.dates), len(self.codes), len(self.horizons)), np.nan, dtype=np.float32)
        self.target_ranks = self.targets
        self.edge_src, self.edge_dst, self.edge_attr, self.edge_offsets = edge_src, edge_dst, edge_attr, edge_offsets
        if features.shape != (self.n_days, self.n_codes, self.n_features) or alive.shape != (self.n_days, self.n_codes):
            raise ValueError(f"WindowPanel: features {features.shape} / alive {alive.shape} do not match "
                             f"{self.n_days} days x {self.n_codes} codes x {self.n_features} features")

    @property
    def n_days(self) -> int:
        return len(self.dates)

    @property
    def n_codes(self) -> int:
        return len(self.codes)

    @property
    def n_features(self) -> int:
        return len(self.feature_columns)

    def day_indices(self, dates: object) -> np.ndarray:
        """[K] int64 positions of ``dates`` in the panel's calendar (each must be in it)."""
        wanted = np.asarray(dates, dtype="datetime64[D]").reshape(-1)
        pos = np.searchsorted(self.dates, wanted)
        clipped = np.minimum(pos, max(self.n_days - 1, 0))
        if ((pos >= self.n_days) | (self.dates[clipped] != wanted)).any():
            raise ValueError(f"dates outside the panel's days ({self.dates[0]} .. {self.dates[-1]})")
        return pos.astype(np.int64)

    def day_edges(self, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """src [E_d] int32, dst [E_d] int32, attr [E_d, 3] float32 of day ``day`` (code indices)."""
        start, stop = int(self.edge_offsets[day]), int(self.edge_offsets[day + 1])
        return self.edge_src[start:stop], self.edge_dst[start:stop], self.edge_attr[start:stop]

    @classmethod
    def from_rows(
        cls,
        frame: pl.DataFrame,
        feature_columns: Sequence[str],
        dates: Sequence[dt.date],
        edges: pl.DataFrame | None,
        horizons: Sequence[int],
    ) -> WindowPanel:
        """The panel of ``dates`` from feature rows ``frame`` (``date, code`` and
        ``feature_columns``; rows of other dates are ignored) and graph edges ``edges``
        (``date, src_code, dst_code, correlation, abs_correlation, same_sector``; edges of
        other dates or codes are dropped, a day's edges keep their order)."""
        calendar = np.asarray(list(dates), dtype="datetime64[D]")
        frame = frame.filter(pl.col("date").is_in(list(dates)))
        codes = frame.get_column("code").unique().sort().to_list()
        t_idx = np.searchsorted(calendar, frame.get_column("date").to_numpy().astype("datetime64[D]"))
        n_idx = np.searchsorted(np.asarray(codes, dtype=object), frame.get_column("code").to_numpy())
        features = np.full((len(calendar), len(codes), len(feature_columns)), np.nan, dtype=np.float32)
        values = frame.select(pl.col(name).cast(pl.Float64) for name in feature_columns).to_numpy()  # null -> NaN
        features[t_idx, n_idx] = values
        alive = np.zeros((len(calendar), len(codes)), dtype=np.bool_)
        alive[t_idx, n_idx] = True
        src, dst, attr, offsets = _csr_edges(edges, calendar, codes)
        return cls(calendar, codes, feature_columns, horizons, features, alive, src, dst, attr, offsets)


def _csr_edges(
    edges: pl.DataFrame | None, calendar: np.ndarray, codes: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges by day (CSR over ``calendar``), each day's in the frame's order, as the cache
    stores them; edges whose day or codes are not in the panel are dropped."""
    offsets = np.zeros(len(calendar) + 1, dtype=np.int64)
    empty = (np.empty(0, np.int32), np.empty(0, np.int32), np.empty((0, len(EDGE_ATTR_COLUMNS)), np.float32))
    if edges is None or edges.is_empty():
        return (*empty, offsets)
    code_index = pl.DataFrame({"code": codes, "_index": np.arange(len(codes), dtype=np.int32)})
    located = (
        edges.with_row_index("_order")
        .join(code_index.rename({"code": "src_code", "_index": "_src"}), on="src_code", how="inner")
        .join(code_index.rename({"code": "dst_code", "_index": "_dst"}), on="dst_code", how="inner")
        .filter(pl.col("date").is_in(calendar.astype(dt.date).tolist()))
        .sort("_order")
    )
    if located.is_empty():
        return (*empty, offsets)
    day = np.searchsorted(calendar, located.get_column("date").to_numpy().astype("datetime64[D]"))
    order = np.argsort(day, kind="stable")  # by day, the frame's order kept within a day
    np.cumsum(np.bincount(day, minlength=len(calendar)), out=offsets[1:])
    attr = located.select(pl.col(c).cast(pl.Float32) for c in EDGE_ATTR_COLUMNS).to_numpy()
    return (
        located.get_column("_src").to_numpy()[order].astype(np.int32),
        located.get_column("_dst").to_numpy()[order].astype(np.int32),
        np.ascontiguousarray(attr[order], dtype=np.float32),
        offsets,
    )


@dataclass
class WindowInputs:
    """What a day-panel model needs to score ``days``: ``rows`` (the features of the window
    days, ``rows.frame`` sorted by (date, code)), the ``panel`` of those days and the
    positions ``day_indices`` [K] of ``days`` in it."""

    rows: FeatureRows
    panel: WindowPanel
    days: list[dt.date]
    day_indices: np.ndarray

    def day_rows(self) -> pl.DataFrame:
        """``rows.frame`` on the scored days only."""
        return self.rows.frame.filter(pl.col("date").is_in(self.days))


def window_inputs(
    config: DataBuildConfig, first: dt.date | None, last: dt.date | None, window: int, horizons: Sequence[int]
) -> WindowInputs:
    """The inputs of the days ``first`` .. ``last`` (default: the data's last day; ``first``
    defaults to ``last``) of the data of ``config`` for a model reading ``window`` days
    (module docstring). A day not in the data's universe is a ConfigError naming the data."""
    started = time.perf_counter()
    rows = build_feature_rows(config, first, last, window=window)
    start, stop = rows.dates.index(rows.first), rows.dates.index(rows.last)
    days = rows.dates[start : stop + 1]
    window_days = rows.dates[max(0, start - window + 1) : stop + 1]
    panel = WindowPanel.from_rows(rows.frame, rows.feature_columns, window_days, rows.edges, horizons)
    log.info("inputs of %d day(s) %s .. %s: %d window days, %d stocks, %d graph edges (%.1fs)",
             len(days), days[0], days[-1], len(window_days), panel.n_codes, len(panel.edge_src),
             time.perf_counter() - started)
    return WindowInputs(rows=rows, panel=panel, days=days, day_indices=panel.day_indices(days))


__all__ = ["WindowInputs", "WindowPanel", "window_inputs"]
