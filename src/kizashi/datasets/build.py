"""The dataset builder: raw quotes -> features, targets, graphs and metadata, written
atomically (built in a temporary sibling, then renamed) in the on-disk format of
:mod:`kizashi.datasets.store`."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from kizashi import __version__
from kizashi.atomic import atomic_path
from kizashi.config import DATASET_NEUTRAL_KEYS, DataBuildConfig, anchor_paths, config_from_dict, dump_config
from kizashi.errors import ConfigError
from kizashi.data.inputs import LoadedInputs, input_hashes, load_inputs
from kizashi.datasets.store import (
    read_metadata,
    FEATURES_DIR,
    GRAPHS_DIR,
    DatasetMetadata,
    write_metadata,
    write_partitioned,
)
from kizashi.features.pipeline import (
    ContextTables,
    chunk_window,
    context_tables,
    feature_chunk,
    feature_context,
    iter_feature_chunks,
    prepare_base,
)
from kizashi.features.registry import resolve_specs
from kizashi.features.spec import FeatureSpec
from kizashi.features.expressions import IN_UNIVERSE
from kizashi.features.targets import target_columns
from kizashi.log import progress

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    out_dir: Path
    n_rows: int
    n_codes: int
    n_features: int
    n_edges: int
    date_min: dt.date
    date_max: dt.date
    seconds: float
    metadata: DatasetMetadata


def feature_specs_for(inputs: LoadedInputs, config: DataBuildConfig) -> list[FeatureSpec]:
    ctx = feature_context(inputs.panel, inputs.margin, has_graph=config.graph.enabled)
    return resolve_specs(ctx, config.features.families, config.features.exclude_families)


def column_table(specs: list[FeatureSpec]) -> list[dict[str, Any]]:
    return [
        {"name": s.name, "family": s.family, "lookback": s.lookback, "kind": s.kind, "normalized": s.normalize}
        for s in specs
    ]


def dataset_key(config: DataBuildConfig) -> dict[str, Any]:
    """What decides a dataset's content: every config key but :data:`DATASET_NEUTRAL_KEYS`,
    and the inputs' content hashes (a file edited in place is a new dataset)."""
    settings = {k: v for k, v in dump_config(config).items() if k not in DATASET_NEUTRAL_KEYS}
    return {"config": settings, "input_hashes": input_hashes(config.input, config.synthetic)}


def built_from(metadata: DatasetMetadata, config: DataBuildConfig) -> bool:
    """Whether the dataset of ``metadata`` is what ``config`` would build now."""
    settings = {k: v for k, v in metadata.config.items() if k not in DATASET_NEUTRAL_KEYS}
    return {"config": settings, "input_hashes": metadata.input_hashes} == dataset_key(config)


def build_dataset(
    config: DataBuildConfig,
    out_dir: str | Path | None = None,
    *,
    check_calendar: Callable[[pl.Series], object] | None = None,
) -> BuildResult:
    """Run the whole pipeline and write the dataset. Returns a summary.

    The output's lock is taken first (:func:`kizashi.atomic.atomic_path`): a second build
    into the same folder is refused before it reads anything, and the previous dataset stays
    in place until the new one is complete.

    ``check_calendar(dates)``: called with the dataset's trading days (a sorted Date Series)
    before the graphs and features are built, so that a job can refuse a calendar too short
    for its folds before the expensive work (it raises :class:`ConfigError`).
    """
    started = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else Path(config.output.dir)
    with atomic_path(out) as tmp:
        inputs, prepared, written = _prepare(config)
        horizons = config.targets.horizons
        dates = written.get_column("date").unique().sort()
        if check_calendar is not None:  # before the expensive work (graphs, features)
            check_calendar(dates)
        tables = _context(config, inputs, prepared)
        specs = feature_specs_for(inputs, config)
        calendar_days = prepared.get_column("date").n_unique()
        stocks_per_day = prepared.height / max(calendar_days, 1)
        chunk_days = max(20, int(config.output.chunk_rows / max(stocks_per_day, 1.0)))
        n_chunks = -(-calendar_days // chunk_days)
        dtype = pl.Float32() if config.features.dtype == "float32" else pl.Float64()
        log.info("features: %d columns over %d days, in %d chunks of up to %d days", len(specs), calendar_days,
                 n_chunks, chunk_days)
        n_rows = 0
        n_edges = 0
        chunks = iter_feature_chunks(
            prepared,
            specs,
            horizons,
            tables=tables,
            chunk_days=chunk_days,
            normalization=config.normalization.method,
            clip=config.normalization.clip,
            dtype=dtype,
        )
        for index, chunk in enumerate(progress(chunks, "features", total=n_chunks)):
            write_partitioned(chunk, tmp / FEATURES_DIR, index)
            n_rows += chunk.height
        if tables.edges is not None:
            write_partitioned(tables.edges, tmp / GRAPHS_DIR, 0)
            n_edges = tables.edges.height
        metadata = _metadata(config, inputs, specs, prepared, written, n_rows, n_edges, horizons)
        write_metadata(tmp, metadata)
    seconds = time.perf_counter() - started
    log.info("wrote %s: %d rows x %d features, %d graph edges in %.1fs", out, n_rows, len(specs), n_edges, seconds)
    return BuildResult(
        out_dir=out,
        n_rows=n_rows,
        n_codes=metadata.n_codes,
        n_features=len(specs),
        n_edges=n_edges,
        date_min=dates[0],
        date_max=dates[-1],
        seconds=seconds,
        metadata=metadata,
    )


def _prepare(config: DataBuildConfig) -> tuple[LoadedInputs, pl.DataFrame, pl.DataFrame]:
    """The inputs, the base panel with targets (:func:`prepare_base`; context tables are
    attached per chunk) and the (code, date) keys written: the point-in-time universe's rows."""
    inputs = load_inputs(config.input, config.synthetic)
    log.info("inputs: %s (%d rows, %d codes)", inputs.source, inputs.panel.height, inputs.panel.get_column("code").n_unique())
    stage = time.perf_counter()
    horizons = config.targets.horizons
    prepared = prepare_base(
        inputs.panel, horizons, min_history=config.input.min_history, fill_end_days=config.targets.fill_end_days
    )
    log.info("base panel and targets %s: %d rows (%.1fs)", list(horizons), prepared.height, time.perf_counter() - stage)
    written = prepared.lazy().filter(pl.col(IN_UNIVERSE)).select("code", "date").collect()
    if written.is_empty():
        raise ConfigError(
            f"input.min_history: no stock reaches {config.input.min_history} rows in {inputs.source}; "
            "nothing would be written (lower input.min_history)"
        )
    return inputs, prepared, written


def _context(
    config: DataBuildConfig, inputs: LoadedInputs, prepared: pl.DataFrame, graph_dates: Any = None
) -> ContextTables:
    """The per-date context tables of the whole panel (the graphs only of ``graph_dates``
    when given); the graphs first, since the peers family reads their per-day neighbour
    aggregates."""
    sectors = inputs.panel.select("code", "sector").unique()  # the configured sector level
    stage = time.perf_counter()
    tables = context_tables(prepared, inputs.margin, config.graph, sectors=sectors, graph_dates=graph_dates)
    log.info(
        "context tables (market, sector%s) (%.1fs)",
        f", correlation graphs: {tables.edges.height} edges" if tables.edges is not None else "",
        time.perf_counter() - stage,
    )
    return tables


@dataclass
class FeatureRows:
    """The rows of some dates as :func:`build_dataset` would write them.

    frame: ``code, date, sector``, the feature columns (``feature_columns``, in order), the
        targets (null where the future is not in the data yet); sorted by (date, code).
    dates: every date of the data's point-in-time universe (sorted).
    first, last: the dates asked for (``frame`` starts earlier with ``window > 1``).
    edges: the correlation graphs computed for those rows (``date, src_code, dst_code`` and
        the edge attributes; each day's graph equal to a full build's), None without graphs.
    """

    frame: pl.DataFrame
    feature_columns: list[str]
    dates: list[dt.date]
    source: str
    input_hashes: dict[str, str]
    first: dt.date
    last: dt.date
    edges: pl.DataFrame | None = None


def build_feature_rows(
    config: DataBuildConfig, first: dt.date | None = None, last: dt.date | None = None, window: int = 1
) -> FeatureRows:
    """Features and targets of the dates ``first`` .. ``last`` only (default: the data's last
    date), and of the ``window - 1`` universe dates before ``first`` (a model reading a window
    of days), equal to those of a full :func:`build_dataset` of ``config``: the inputs, their
    checks and adjustment and the per-date context tables (market, sectors, graphs) are
    computed as in a build (the graphs only of the days the features read); the features of
    just those dates, with each stock's longest lookback of earlier rows as warm-up
    (:func:`kizashi.features.pipeline.feature_chunk`)."""
    inputs, prepared, written = _prepare(config)
    dates = written.get_column("date").unique().sort().to_list()
    last = last if last is not None else dates[-1]
    first = first if first is not None else last
    if last not in dates or first not in dates:
        missing = last if last not in dates else first
        raise ConfigError(
            f"{inputs.source}: {missing} is not a date of the data's universe (its dates run {dates[0]} .. {dates[-1]})"
        )
    read_first = dates[max(0, dates.index(first) - max(window, 1) + 1)]
    specs = feature_specs_for(inputs, config)
    # the graphs of the days the chunk reads only (its dates and their warm-up rows' dates)
    read_dates = chunk_window(prepared, specs, read_first, last).get_column("date").unique()
    tables = _context(config, inputs, prepared, graph_dates=read_dates)
    frame = feature_chunk(
        prepared, specs, config.targets.horizons, read_first, last, tables=tables,
        normalization=config.normalization.method, clip=config.normalization.clip,
        dtype=pl.Float32() if config.features.dtype == "float32" else pl.Float64(),
    )
    return FeatureRows(frame, [s.name for s in specs], dates, inputs.source, inputs.input_hashes, first, last,
                       tables.edges)


def dataset_build_config(dataset_dir: str | Path) -> DataBuildConfig:
    """The settings a dataset was built from (its ``metadata.json``), input paths absolute;
    paths of older datasets, kept relative to the working directory, are anchored there."""
    metadata = read_metadata(Path(dataset_dir))
    return config_from_dict(
        DataBuildConfig,
        anchor_paths(metadata.config, DataBuildConfig, Path.cwd()),
        source=f"{dataset_dir}: metadata config",
    )


def reload_inputs(dataset_dir: str | Path) -> LoadedInputs:
    """The inputs a dataset was built from, read, validated and adjusted again (e.g. the
    prices and volumes behind a run's predictions). Raises FileNotFoundError / KizashiError
    when the dataset's metadata or its inputs are gone."""
    config = dataset_build_config(dataset_dir)
    return load_inputs(config.input, config.synthetic)


def _metadata(config, inputs, specs, prepared, written, n_rows, n_edges, horizons) -> DatasetMetadata:
    dates = written.get_column("date")
    return DatasetMetadata(**{
        "kizashi_version": __version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": inputs.source,
        "input_hashes": inputs.input_hashes,
        "n_rows": n_rows,
        "n_codes": written.get_column("code").n_unique(),
        "n_days": dates.n_unique(),
        "date_min": dates.min().isoformat(),
        "date_max": dates.max().isoformat(),
        "layout": {
            "features": f"{FEATURES_DIR}/year=YYYY/part-NNN.parquet (rows sorted by date, code)",
            "graphs": f"{GRAPHS_DIR}/year=YYYY/part-NNN.parquet",
        },
        "key_columns": ["code", "date", "sector"],
        "feature_columns": [s.name for s in specs],
        "columns": column_table(specs),
        "families": dict(Counter(s.family for s in specs)),
        "target_columns": target_columns(horizons),
        "oracle_columns": [n for n in prepared.columns if n.startswith("oracle_")],
        "normalization": dump_config(config.normalization),
        "graph": {"n_edges": n_edges, **dump_config(config.graph)},
        "validation": [report.to_dict() for report in inputs.reports],
        "adjustment": [vars(issue) for issue in inputs.adjustment_issues],
        "notes": inputs.notes,
        "config": dump_config(config),
    })


__all__ = [
    "BuildResult",
    "FeatureRows",
    "build_dataset",
    "build_feature_rows",
    "built_from",
    "column_table",
    "dataset_key",
    "feature_specs_for",
]
