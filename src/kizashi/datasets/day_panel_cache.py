"""The day-panel cache: a dense, memory-mapped copy of a built dataset (``kizashi data
build``), indexed by trading day and code, converted once and reused.

    dataset dir (Parquet) -> build_day_panel_cache   streamed row group by row group with
                                                     PyArrow into .npy files + index.json
                          -> DayPanelCache           the arrays as read-only np.memmap,
                                                     built on first use, reused while fresh

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
memmaps' dirty pages; readers slice the memmaps, so a dataset far larger than RAM works, and
worker processes share the page cache (the cache pickles as its path, never as array data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kizashi.atomic import atomic_path, write_json_atomic
from kizashi.datasets.store import FEATURES_DIR, GRAPHS_DIR, read_metadata
from kizashi.log import progress

log = logging.getLogger(__name__)

CACHE_SUBDIR = Path("cache") / "day_panel"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
EDGE_ATTR_COLUMNS = ("correlation", "abs_correlation", "same_sector")
FeatureDtype = Literal["float32", "float16"]
_FLOAT16_MAX = float(np.finfo(np.float16).max)
# About this many bytes of float32 values per Parquet record batch read during the build.
_BATCH_BYTES = 32 * 2**20


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
