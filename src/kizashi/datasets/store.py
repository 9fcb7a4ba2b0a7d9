"""The on-disk dataset format written by ``kizashi data build`` and read by every job.

Layout (a dataset folder; written atomically by the build)::

    DIR/features/year=YYYY/part-NNN.parquet   code, date, sector, features, target_*, oracle_*
                                              (rows sorted by date, code)
    DIR/graphs/year=YYYY/part-NNN.parquet     date, src_code, dst_code, correlation,
                                              abs_correlation, same_sector
    DIR/metadata.json                         :class:`DatasetMetadata`

The ``year=YYYY`` folders only spread the files; :func:`scan_features` and
:func:`scan_graphs` return the files' own columns (no ``year`` partition column).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from kizashi.atomic import restore_interrupted_output, write_json_atomic
from kizashi.errors import KizashiError
from kizashi.features.targets import target_reach

FEATURES_DIR = "features"
GRAPHS_DIR = "graphs"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class DatasetMetadata:
    """What a dataset folder holds and how it was built (``metadata.json``).

    ``config`` is the full :class:`~kizashi.config.DataBuildConfig` as a dict (the build's
    settings, also what decides whether a dataset can be reused); ``columns`` lists every
    feature column as ``{name, family, lookback, kind, normalized}`` in column order.
    """

    kizashi_version: str
    created_utc: str
    source: str
    input_hashes: dict[str, str]
    n_rows: int
    n_codes: int
    n_days: int
    date_min: str
    date_max: str
    key_columns: list[str]
    feature_columns: list[str]
    columns: list[dict[str, Any]]
    families: dict[str, int]
    target_columns: list[str]
    oracle_columns: list[str]
    normalization: dict[str, Any]
    graph: dict[str, Any]
    config: dict[str, Any]
    layout: dict[str, str] = field(default_factory=dict)
    validation: list[dict[str, Any]] = field(default_factory=list)
    adjustment: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def horizons(self) -> list[int]:
        """The target horizons built (trading days)."""
        return [int(h) for h in self.config["targets"]["horizons"]]

    @property
    def fill_end_days(self) -> int:
        """The build's ``targets.fill_end_days``."""
        return int(self.config.get("targets", {}).get("fill_end_days", 0))

    def target_reach(self, horizons: list[int]) -> int:
        """The trading days the targets at ``horizons`` read ahead: the purge a split of this
        dataset needs (the longest horizon plus ``targets.fill_end_days``)."""
        return target_reach(horizons, self.fill_end_days)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "metadata") -> DatasetMetadata:
        """Read a metadata dict; missing or unknown keys are an error naming ``source``."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing, unknown = sorted(required - set(values)), sorted(set(values) - names)
        if missing or unknown:
            raise KizashiError(
                f"{source}: not a kizashi dataset metadata file "
                f"(missing keys: {missing or 'none'}; unknown keys: {unknown or 'none'}); "
                "rebuild it with `kizashi data build`"
            )
        return cls(**values)


def metadata_path(dataset_dir: str | Path) -> Path:
    return Path(dataset_dir) / METADATA_FILE


def read_metadata(dataset_dir: str | Path) -> DatasetMetadata:
    """The dataset's metadata. A dataset whose rewrite was killed in the middle of the swap is
    first put back (:func:`kizashi.atomic.restore_interrupted_output`)."""
    path = metadata_path(dataset_dir)
    if not path.is_file():
        restore_interrupted_output(dataset_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no dataset metadata (build one with `kizashi data build`)")
    return DatasetMetadata.from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))


def write_metadata(dataset_dir: str | Path, metadata: DatasetMetadata) -> None:
    write_json_atomic(metadata_path(dataset_dir), metadata.to_dict())


def _scan(root: Path) -> pl.LazyFrame:
    return pl.scan_parquet(root / "**" / "*.parquet", hive_partitioning=False)


def scan_features(dataset_dir: str | Path) -> pl.LazyFrame:
    """Lazy scan of a dataset's feature rows: code, date, sector, features, targets, oracles."""
    return _scan(Path(dataset_dir) / FEATURES_DIR)


def scan_graphs(dataset_dir: str | Path) -> pl.LazyFrame:
    """Lazy scan of a dataset's graph edges (date, src_code, dst_code, ...)."""
    return _scan(Path(dataset_dir) / GRAPHS_DIR)


def write_partitioned(frame: pl.DataFrame, root: Path, part: int) -> None:
    """Write ``frame`` under root/year=YYYY/part-NNN.parquet, one file per year present."""
    years = frame.get_column("date").dt.year()
    for year in years.unique().sort().to_list():
        folder = root / f"year={year}"
        folder.mkdir(parents=True, exist_ok=True)
        frame.filter(years == year).write_parquet(folder / f"part-{part:03d}.parquet", statistics=True)


__all__ = [
    "FEATURES_DIR",
    "GRAPHS_DIR",
    "METADATA_FILE",
    "DatasetMetadata",
    "metadata_path",
    "read_metadata",
    "scan_features",
    "scan_graphs",
    "write_metadata",
    "write_partitioned",
]
