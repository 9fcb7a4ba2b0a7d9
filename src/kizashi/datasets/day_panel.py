"""One-trading-day panels for cross-sectional models (ATFT-GAT-FAN): a dense, memory-mapped
cache of a built dataset, online feature statistics, a torch ``Dataset`` of days, a collate
function and a loader.

    dataset dir (Parquet, `kizashi data build`)
      -> DayPanelCache       dense .npy arrays, converted once (streamed row group by row
                             group with PyArrow), opened with np.load(mmap_mode="r")
      -> fit_feature_stats   per-feature mean/std over the training days only (chunked,
                             float64, Chan/Welford merge), saved as JSON
      -> DayPanelDataset     item = one day: the stocks alive that day, a window of the last
                             L days of features, targets, masks and that day's graph
      -> collate_days / day_loader   several days in one batch (graph-batch offsets)

Cache layout (``DIR/cache/day_panel/`` by default; T days, N codes, F features, H horizons,
E edges)::

    features.npy       [T, N, F] float32 | float16   NaN = missing (no row, or null value)
    targets.npy        [T, N, H] float32             target_return_{h}d, NaN = unknown
    target_ranks.npy   [T, N, H] float32             target_rank_{h}d (when the dataset has it)
    alive.npy          [T, N]    bool                the stock has a row that day
    edge_src.npy       [E]       int32               code index of the edge's source
    edge_dst.npy       [E]       int32               code index of the edge's destination
    edge_attr.npy      [E, 3]    float32             correlation, abs_correlation, same_sector
    edge_offsets.npy   [T + 1]   int64               edges of day t: offsets[t]:offsets[t+1]
    index.json                                       dates, codes, feature/target columns,
                                                     dtype, the dataset's fingerprint, counts

Edges keep the dataset's order within a day (by dst_code, then rank). The cache is written
into a temporary sibling and renamed (``kizashi.atomic.atomic_path``); it is reused while the
dataset's fingerprint (metadata ``created_utc``, config hash, row count, feature columns,
Parquet file names and sizes) and the feature dtype match, and rebuilt otherwise.

Memory: the build holds one Parquet record batch (``batch_rows`` rows) plus the output
memmaps' dirty pages; items read only their window from the memmap (one fancy index of
``[L, N_d, F]``), so a dataset far larger than RAM works, and worker processes share the
page cache (the cache pickles as its path, never as array data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from kizashi.atomic import atomic_path, write_json_atomic
from kizashi.datasets.store import FEATURES_DIR, GRAPHS_DIR, read_metadata
from kizashi.datasets.workers import ignore_stop_signals
from kizashi.log import progress
from kizashi.splits import Fold

log = logging.getLogger(__name__)

CACHE_SUBDIR = Path("cache") / "day_panel"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
EDGE_ATTR_COLUMNS = ("correlation", "abs_correlation", "same_sector")
FeatureDtype = Literal["float32", "float16"]
TargetKind = Literal["return", "rank"]
_FLOAT16_MAX = float(np.finfo(np.float16).max)
# About this many bytes of float32 values per Parquet record batch read during the build.
_BATCH_BYTES = 32 * 2**20
# About this many bytes of float64 working values per block of days in fit_feature_stats.
_STATS_BLOCK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------
# the cache
# --------------------------------------------------------------------------------------


class DayPanelCache:
    """Dense, memory-mapped arrays of a built dataset (see the module docstring for files).

    ``DayPanelCache(dataset_dir)`` converts the dataset on first use and reuses the cache
    afterwards; ``DayPanelCache.load(cache_dir)`` opens an existing cache without the
    dataset. Arrays are read-only ``np.memmap`` (zero copy):

    - ``features`` [T, N, F] float32 or float16, NaN = missing
    - ``targets`` [T, N, H] float32 forward returns, NaN = unknown
    - ``target_ranks`` [T, N, H] float32 or None
    - ``alive`` [T, N] bool
    - ``edge_src``, ``edge_dst`` [E] int32; ``edge_attr`` [E, 3] float32; ``edge_offsets`` [T + 1] int64

    Index: ``dates`` [T] datetime64[D], ``codes`` (list of N str), ``feature_columns``
    (F names), ``horizons`` (H ints). ``rebuilt`` tells whether this open built the cache.
    """

    features: np.ndarray
    targets: np.ndarray
    target_ranks: np.ndarray | None
    alive: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_attr: np.ndarray
    edge_offsets: np.ndarray

    def __init__(
        self,
        dataset_dir: str | Path,
        cache_dir: str | Path | None = None,
        *,
        feature_dtype: FeatureDtype = "float32",
        rebuild: bool = False,
        batch_rows: int | None = None,
    ) -> None:
        if feature_dtype not in ("float32", "float16"):
            raise ValueError(f"feature_dtype must be 'float32' or 'float16', got {feature_dtype!r}")
        dataset = Path(dataset_dir)
        cache = Path(cache_dir) if cache_dir is not None else dataset / CACHE_SUBDIR
        fingerprint = dataset_fingerprint(dataset)
        reason = "rebuild requested" if rebuild else _stale_reason(cache, fingerprint, feature_dtype)
        if reason is not None:
            log.info("day-panel cache %s: building (%s)", cache, reason)
            build_day_panel_cache(dataset, cache, feature_dtype=feature_dtype, batch_rows=batch_rows)
        else:
            log.info("day-panel cache %s: reusing (dataset unchanged)", cache)
        self.rebuilt = reason is not None
        self._open(cache)

    @classmethod
    def load(cls, cache_dir: str | Path) -> DayPanelCache:
        """Open an existing cache directory (no dataset needed, no freshness check)."""
        self = cls.__new__(cls)
        self.rebuilt = False
        self._open(Path(cache_dir))
        return self

    def _open(self, cache_dir: Path) -> None:
        index_path = cache_dir / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"{cache_dir}: not a day-panel cache (no {INDEX_FILE})")
        index = json.loads(index_path.read_text(encoding="utf-8"))
        self.cache_dir = cache_dir
        self.index = index
        self.dates = np.array(index["dates"], dtype="datetime64[D]")
        self.codes: list[str] = list(index["codes"])
        self.feature_columns: list[str] = list(index["feature_columns"])
        self.horizons: list[int] = [int(h) for h in index["horizons"]]
        self.feature_dtype: str = index["feature_dtype"]
        self.features = _open_array(cache_dir / "features.npy")
        self.targets = _open_array(cache_dir / "targets.npy")
        ranks = cache_dir / "target_ranks.npy"
        self.target_ranks = _open_array(ranks) if ranks.is_file() else None
        self.alive = _open_array(cache_dir / "alive.npy")
        self.edge_src = _open_array(cache_dir / "edge_src.npy")
        self.edge_dst = _open_array(cache_dir / "edge_dst.npy")
        self.edge_attr = _open_array(cache_dir / "edge_attr.npy")
        self.edge_offsets = _open_array(cache_dir / "edge_offsets.npy")
        expected = (self.n_days, self.n_codes, self.n_features)
        if self.features.shape != expected or self.edge_offsets.shape != (self.n_days + 1,):
            raise ValueError(f"{cache_dir}: arrays do not match {INDEX_FILE} (features {self.features.shape}, index {expected})")

    # Workers get the path, not the arrays: a pickled np.memmap would copy its data.
    def __getstate__(self) -> dict[str, Any]:
        return {"cache_dir": str(self.cache_dir), "rebuilt": self.rebuilt}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.rebuilt = state["rebuilt"]
        self._open(Path(state["cache_dir"]))

    @property
    def n_days(self) -> int:
        return len(self.dates)

    @property
    def n_codes(self) -> int:
        return len(self.codes)

    @property
    def n_features(self) -> int:
        return len(self.feature_columns)

    @property
    def n_edges(self) -> int:
        return int(self.edge_offsets[-1])

    def day_indices(self, dates: Any) -> np.ndarray:
        """[K] int64 positions of ``dates`` (anything ``np.asarray(..., 'datetime64[D]')``
        reads) in the cache calendar; a date not in it is an error."""
        wanted = np.asarray(dates, dtype="datetime64[D]").reshape(-1)
        pos = np.searchsorted(self.dates, wanted)
        clipped = np.minimum(pos, max(self.n_days - 1, 0))
        missing = (pos >= self.n_days) | (self.dates[clipped] != wanted)
        if missing.any():
            examples = ", ".join(str(d) for d in wanted[missing][:5])
            raise ValueError(
                f"{int(missing.sum())} of {len(wanted)} dates are not trading days of the cache "
                f"({self.dates[0]} .. {self.dates[-1]}): {examples}"
            )
        return pos.astype(np.int64)

    def day_edges(self, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views (no copy) of day ``day``'s edges: src [E_d] int32, dst [E_d] int32,
        attr [E_d, 3] float32, with global code indices."""
        start, stop = int(self.edge_offsets[day]), int(self.edge_offsets[day + 1])
        return self.edge_src[start:stop], self.edge_dst[start:stop], self.edge_attr[start:stop]

    def __repr__(self) -> str:
        return (
            f"DayPanelCache({str(self.cache_dir)!r}: {self.n_days} days x {self.n_codes} codes x "
            f"{self.n_features} features ({self.feature_dtype}), {len(self.horizons)} horizons, {self.n_edges} edges)"
        )


def _open_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the day-panel cache")
    return np.load(path, mmap_mode="r")


def dataset_fingerprint(dataset_dir: str | Path) -> dict[str, Any]:
    """What identifies a built dataset: metadata ``created_utc``, a hash of its config, its
    row count and feature columns, and the names and sizes of its Parquet files."""
    dataset = Path(dataset_dir)
    meta = read_metadata(dataset)
    files = [
        [path.relative_to(dataset).as_posix(), path.stat().st_size]
        for sub in (FEATURES_DIR, GRAPHS_DIR)
        for path in sorted((dataset / sub).glob("*/*.parquet"))
    ]
    return {
        "created_utc": meta.created_utc,
        "config_sha256": _sha256(meta.config),
        "n_rows": meta.n_rows,
        "feature_columns_sha256": _sha256(meta.feature_columns),
        "files": files,
    }


def _sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _stale_reason(cache_dir: Path, fingerprint: dict[str, Any], feature_dtype: str) -> str | None:
    """Why the cache must be (re)built, or None when it can be reused."""
    index_path = cache_dir / INDEX_FILE
    if not index_path.is_file():
        return "no cache yet"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return f"unreadable {INDEX_FILE}: {err}"
    if index.get("format_version") != FORMAT_VERSION:
        return f"cache format {index.get('format_version')} != {FORMAT_VERSION}"
    if index.get("feature_dtype") != feature_dtype:
        return f"feature dtype {index.get('feature_dtype')} != {feature_dtype}"
    cached = index.get("fingerprint") or {}
    changed = [key for key in fingerprint if cached.get(key) != fingerprint[key]]
    if changed:
        return f"dataset changed ({', '.join(changed)})"
    return None


# --------------------------------------------------------------------------------------
# building the cache
# --------------------------------------------------------------------------------------


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.parquet"))


def _iter_batches(
    files: list[Path], columns: list[str], batch_rows: int, numeric: Sequence[str] = ()
) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Record batches of ``columns``, file by file, row group by row group (never a whole
    file). Missing columns, or ``numeric`` columns of another type, are errors naming the file."""
    for path in files:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing[:10]}")
        wrong = [
            f"{c} ({schema.field(c).type})"
            for c in numeric
            if not (pa.types.is_floating(schema.field(c).type) or pa.types.is_integer(schema.field(c).type)
                    or pa.types.is_boolean(schema.field(c).type))
        ]
        if wrong:
            raise ValueError(f"{path}: non-numeric feature/target column(s) {wrong[:10]}")
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True):
            yield path, batch


def _n_batches(files: list[Path], batch_rows: int) -> int:
    total = 0
    for path in files:
        metadata = pq.ParquetFile(path).metadata
        total += sum(-(-metadata.row_group(i).num_rows // batch_rows) for i in range(metadata.num_row_groups))
    return total


def _day_numbers(column: pa.Array, path: Path) -> np.ndarray:
    """Days since the epoch, int64, of a Date column (nulls are an error)."""
    if column.null_count:
        raise ValueError(f"{path}: {column.null_count} null dates")
    return column.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)


def _code_positions(column: pa.Array, code_values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """[rows] int64 code indices (−1 where unknown) and the [rows] bool ``known`` mask."""
    found = pc.index_in(column.cast(pa.large_string()), value_set=code_values)
    known = found.is_valid().to_numpy(zero_copy_only=False)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), known


def _day_positions(days: np.ndarray, calendar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos = np.searchsorted(calendar, days)
    clipped = np.minimum(pos, len(calendar) - 1)
    known = (pos < len(calendar)) & (calendar[clipped] == days)
    return clipped.astype(np.int64), known


def build_day_panel_cache(
    dataset_dir: str | Path,
    cache_dir: str | Path,
    *,
    feature_dtype: FeatureDtype = "float32",
    batch_rows: int | None = None,
) -> Path:
    """Convert a built dataset into the day-panel cache at ``cache_dir`` (atomically).

    Three streaming passes over the Parquet files (one record batch in memory at a time):
    the date and code index; features, targets and alive; the graph edges (a counting pass
    for the CSR offsets, then a scatter pass that keeps each day's edge order). Values beyond
    the float16 range are clipped (counted and logged) when ``feature_dtype`` is float16.
    """
    started = time.perf_counter()
    dataset, final = Path(dataset_dir), Path(cache_dir)
    meta = read_metadata(dataset)
    fingerprint = dataset_fingerprint(dataset)
    feature_columns: list[str] = list(meta.feature_columns)
    horizons = meta.horizons
    return_columns = [f"target_return_{h}d" for h in horizons]
    rank_columns = [f"target_rank_{h}d" for h in horizons]
    feature_files = _parquet_files(dataset / FEATURES_DIR)
    if not feature_files:
        raise FileNotFoundError(f"{dataset / FEATURES_DIR}: no Parquet files")
    graph_files = _parquet_files(dataset / GRAPHS_DIR)
    schema_names = set(pq.ParquetFile(feature_files[0]).schema_arrow.names)
    with_ranks = all(c in schema_names for c in rank_columns)
    n_features, n_horizons = len(feature_columns), len(horizons)
    if batch_rows is None:
        batch_rows = max(1024, _BATCH_BYTES // (4 * (n_features + 2 * n_horizons)))

    # pass 1: the calendar and the codes
    day_parts, code_parts, n_rows = [], [], 0
    for path, batch in _iter_batches(feature_files, ["date", "code"], batch_rows):
        day_parts.append(np.unique(_day_numbers(batch.column("date"), path)))
        codes = batch.column("code")
        if codes.null_count:
            raise ValueError(f"{path}: {codes.null_count} null codes")
        code_parts.append(pc.unique(codes.cast(pa.large_string())))
        n_rows += batch.num_rows
    calendar = np.unique(np.concatenate(day_parts))
    code_values = pc.unique(pa.chunked_array(code_parts, type=pa.large_string()).combine_chunks())
    code_values = code_values.take(pc.array_sort_indices(code_values))
    codes_list: list[str] = code_values.to_pylist()
    n_days, n_codes = len(calendar), len(codes_list)
    storage = np.dtype(feature_dtype)
    log.info(
        "day-panel cache: %d rows -> %d days x %d codes x %d features (%s, %.1f MB) + %d horizons",
        n_rows, n_days, n_codes, n_features, feature_dtype,
        n_days * n_codes * n_features * storage.itemsize / 1e6, n_horizons,
    )

    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        features = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=storage, shape=(n_days, n_codes, n_features))
        targets = np.lib.format.open_memmap(tmp / "targets.npy", mode="w+", dtype=np.float32, shape=(n_days, n_codes, n_horizons))
        ranks = (
            np.lib.format.open_memmap(tmp / "target_ranks.npy", mode="w+", dtype=np.float32, shape=(n_days, n_codes, n_horizons))
            if with_ranks
            else None
        )
        alive = np.lib.format.open_memmap(tmp / "alive.npy", mode="w+", dtype=np.bool_, shape=(n_days, n_codes))
        for start in range(0, n_days, 64):  # NaN = no row; filled by blocks of days
            features[start : start + 64] = np.nan
            targets[start : start + 64] = np.nan
            if ranks is not None:
                ranks[start : start + 64] = np.nan

        # pass 2: features, targets, alive
        columns = ["date", "code", *feature_columns, *return_columns, *(rank_columns if with_ranks else [])]
        clipped = 0
        block = np.empty((batch_rows, n_features), dtype=np.float32)
        batches = _iter_batches(feature_files, columns, batch_rows, numeric=columns[2:])
        for path, batch in progress(batches, "day-panel features", total=_n_batches(feature_files, batch_rows)):
            rows = batch.num_rows
            t_idx, _ = _day_positions(_day_numbers(batch.column("date"), path), calendar)
            n_idx, _ = _code_positions(batch.column("code"), code_values)
            values = block[:rows]
            for j, name in enumerate(feature_columns):
                values[:, j] = batch.column(name).to_numpy(zero_copy_only=False)  # null -> NaN
            if storage == np.float16:
                over = np.abs(values) > _FLOAT16_MAX  # NaN compares False
                if over.any():
                    clipped += int(over.sum())
                    np.clip(values, -_FLOAT16_MAX, _FLOAT16_MAX, out=values)
            features[t_idx, n_idx] = values
            targets[t_idx, n_idx] = _column_block(batch, return_columns)
            if ranks is not None:
                ranks[t_idx, n_idx] = _column_block(batch, rank_columns)
            alive[t_idx, n_idx] = True
        n_alive = int(np.count_nonzero(alive))
        if n_alive != n_rows:
            raise ValueError(f"{dataset}: {n_rows - n_alive} duplicate (code, date) rows in the feature files")
        if clipped:
            log.warning("day-panel cache: %d feature values beyond the float16 range were clipped to +-%g", clipped, _FLOAT16_MAX)
        for array in (features, targets, ranks, alive):
            if array is not None:
                array.flush()
        del features, targets, ranks, alive

        # pass 3: graph edges as CSR by day
        n_edges, dropped = _write_edges(tmp, graph_files, calendar, code_values, batch_rows)

        seconds = time.perf_counter() - started
        index = {
            "format_version": FORMAT_VERSION,
            "dataset_dir": str(dataset.resolve()),
            "fingerprint": fingerprint,
            "feature_dtype": feature_dtype,
            "dates": [str(d) for d in calendar.astype("datetime64[D]")],
            "codes": codes_list,
            "feature_columns": feature_columns,
            "horizons": horizons,
            "target_columns": return_columns,
            "rank_target_columns": rank_columns if with_ranks else [],
            "edge_attr_columns": list(EDGE_ATTR_COLUMNS),
            "n_rows": n_rows,
            "n_edges": n_edges,
            "dropped_edges": dropped,
            "float16_clipped_values": clipped,
            "build_seconds": round(seconds, 3),
        }
        write_json_atomic(tmp / INDEX_FILE, index)
    log.info(
        "day-panel cache %s: %d stock-days, %d edges (%d dropped) in %.2fs",
        final, n_rows, n_edges, dropped, time.perf_counter() - started,
    )
    return final


def _column_block(batch: pa.RecordBatch, names: list[str]) -> np.ndarray:
    """[rows, len(names)] float32 of numeric columns, null -> NaN."""
    out = np.empty((batch.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        out[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
    return out


def _write_edges(
    out: Path, files: list[Path], calendar: np.ndarray, code_values: pa.Array, batch_rows: int
) -> tuple[int, int]:
    """Write edge_src/edge_dst/edge_attr/edge_offsets; returns (edges kept, edges dropped).

    Edges whose date or codes are not in the feature index are dropped (counted, logged).
    """
    n_days = len(calendar)
    key_columns = ["date", "src_code", "dst_code"]

    def positions(path: Path, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        t_idx, day_known = _day_positions(_day_numbers(batch.column("date"), path), calendar)
        src, src_known = _code_positions(batch.column("src_code"), code_values)
        dst, dst_known = _code_positions(batch.column("dst_code"), code_values)
        return t_idx, src, dst, day_known & src_known & dst_known

    counts = np.zeros(n_days, dtype=np.int64)
    dropped = 0
    for path, batch in _iter_batches(files, key_columns, batch_rows):
        t_idx, _, _, keep = positions(path, batch)
        counts += np.bincount(t_idx[keep], minlength=n_days)
        dropped += int((~keep).sum())
    offsets = np.zeros(n_days + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    n_edges = int(offsets[-1])
    np.save(out / "edge_offsets.npy", offsets)
    if n_edges == 0:
        log.info("day-panel cache: no graph edges (%s)", "no graph files" if not files else "none matched")
        np.save(out / "edge_src.npy", np.empty(0, dtype=np.int32))
        np.save(out / "edge_dst.npy", np.empty(0, dtype=np.int32))
        np.save(out / "edge_attr.npy", np.empty((0, len(EDGE_ATTR_COLUMNS)), dtype=np.float32))
        return 0, dropped
    edge_src = np.lib.format.open_memmap(out / "edge_src.npy", mode="w+", dtype=np.int32, shape=(n_edges,))
    edge_dst = np.lib.format.open_memmap(out / "edge_dst.npy", mode="w+", dtype=np.int32, shape=(n_edges,))
    edge_attr = np.lib.format.open_memmap(
        out / "edge_attr.npy", mode="w+", dtype=np.float32, shape=(n_edges, len(EDGE_ATTR_COLUMNS))
    )
    cursor = offsets[:-1].copy()  # next free slot of each day
    batches = _iter_batches(files, [*key_columns, *EDGE_ATTR_COLUMNS], batch_rows)
    for path, batch in progress(batches, "day-panel edges", total=_n_batches(files, batch_rows)):
        t_idx, src, dst, keep = positions(path, batch)
        order = np.flatnonzero(keep)[np.argsort(t_idx[keep], kind="stable")]  # by day, file order kept
        day = t_idx[order]
        rank_in_day = np.arange(len(order)) - np.searchsorted(day, day, side="left")
        slots = cursor[day] + rank_in_day
        edge_src[slots] = src[order]
        edge_dst[slots] = dst[order]
        edge_attr[slots] = _column_block(batch, list(EDGE_ATTR_COLUMNS))[order]
        cursor += np.bincount(day, minlength=n_days)
    if dropped:
        log.warning("day-panel cache: %d graph edges dropped (date or code not in the feature rows)", dropped)
    for array in (edge_src, edge_dst, edge_attr):
        array.flush()
    return n_edges, dropped


# --------------------------------------------------------------------------------------
# feature statistics (training days only)
# --------------------------------------------------------------------------------------


def fill_missing_(x: np.ndarray) -> np.ndarray:
    """Set NaN (and +-inf) entries of ``x`` to 0 in place; returns ``x``."""
    np.copyto(x, 0.0, where=~np.isfinite(x))
    return x


@dataclass
class FeatureStats:
    """Per-feature mean and standard deviation (population, ddof=0) over training stock-days.

    ``mean``, ``std`` [F] float64; ``count`` [F] int64 non-missing values. A feature with
    no value gets mean 0; one with fewer than two values or std below ``1e-8`` gets std 1.
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

    def apply(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Standardize ``x`` [..., F] (numpy or torch) and fill NaN with 0; returns a new
        float32 array/tensor (torch: on ``x``'s device)."""
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
    def from_dict(cls, data: dict[str, Any]) -> FeatureStats:
        return cls(
            feature_columns=list(data["feature_columns"]),
            mean=np.asarray(data["mean"], dtype=np.float64),
            std=np.asarray(data["std"], dtype=np.float64),
            count=np.asarray(data["count"], dtype=np.int64),
            n_days=int(data.get("n_days", 0)),
        )

    def save(self, path: str | Path) -> Path:
        """Write as JSON (atomically); float64 values round-trip exactly."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def fit_feature_stats(
    cache: DayPanelCache, train_day_indices: Sequence[int] | np.ndarray, *, block_bytes: int = _STATS_BLOCK_BYTES
) -> FeatureStats:
    """Mean/std of every feature over the stock-days of ``train_day_indices`` only.

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
    return FeatureStats(list(cache.feature_columns), mean, std, count, n_days=len(days))


# --------------------------------------------------------------------------------------
# the dataset of days
# --------------------------------------------------------------------------------------


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
    """Day indices (int64, sorted) of a fold's parts in a :class:`DayPanelCache`."""

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
