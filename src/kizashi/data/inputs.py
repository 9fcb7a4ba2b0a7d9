"""One entry point for raw inputs: read, validate, adjust and attach sectors.

:func:`load_inputs` turns an :class:`~kizashi.config.InputConfig` (or, with no path, the
embedded synthetic market) into an adjusted panel ready for feature building, plus every
validation report. Synthetic data goes through the same validation and adjustment path as
a real file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from kizashi.config import InputConfig, SyntheticMarketConfig, dump_config
from kizashi.data.adjust import adjust_prices
from kizashi.data.readers import read_margin, read_panel, read_sectors
from kizashi.data.schema import CODE, SECTOR
from kizashi.data.synthetic import generate_market
from kizashi.data.validation import ValidationIssue, ValidationReport, validate_margin, validate_panel, validate_sectors

log = logging.getLogger(__name__)


@dataclass
class LoadedInputs:
    """An adjusted panel with a ``sector`` column, optional margin balances, and the
    record of what was read (reports, adjustment notes, content hashes)."""

    panel: pl.DataFrame
    sectors: pl.DataFrame
    margin: pl.DataFrame | None
    reports: list[ValidationReport]
    adjustment_issues: list[ValidationIssue]
    notes: list[str] = field(default_factory=list)
    input_hashes: dict[str, str] = field(default_factory=dict)
    source: str = ""


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _attach_sectors(panel: pl.DataFrame, sectors: pl.DataFrame, level: str) -> pl.DataFrame:
    table = sectors.select(pl.col(CODE), pl.col(level).alias(SECTOR))
    return panel.join(table, on=CODE, how="left")


def load_inputs(config: InputConfig, synthetic: SyntheticMarketConfig | None = None) -> LoadedInputs:
    """Read, validate and adjust the configured inputs (synthetic market when ``config.path``
    is null). Raises DataValidationError listing every error found."""
    if config.path is None:
        return _load_synthetic(config, synthetic or SyntheticMarketConfig())
    path = Path(config.path)
    raw, notes = read_panel(
        path,
        format=config.format,
        separator=config.separator,
        preset=config.preset,
        columns=config.columns,
        code_from_filename=config.code_from_filename,
        skip_bad_files=config.skip_bad_files,
    )
    panel, panel_report = validate_panel(raw, str(path), config)
    reports = [panel_report]
    hashes = {str(path): file_digest(path)}
    if config.sectors is not None:
        sectors_raw = read_sectors(config.sectors, preset=config.sectors_preset, columns=config.sector_columns)
        sectors, sector_report = validate_sectors(sectors_raw, panel.get_column(CODE).unique(), str(config.sectors), config)
        reports.append(sector_report)
        hashes[str(config.sectors)] = file_digest(Path(config.sectors))
    else:
        sectors = panel.select(pl.col(CODE).unique().sort(), pl.lit("UNKNOWN").alias(SECTOR))
        notes.append("no sector table given: every stock is in sector UNKNOWN")
    margin = None
    if config.margin is not None:
        margin_raw = read_margin(config.margin, preset=config.margin_preset, columns=config.margin_columns)
        margin, margin_report = validate_margin(margin_raw, str(config.margin), config)
        reports.append(margin_report)
        hashes[str(config.margin)] = file_digest(Path(config.margin))
    level = config.sector_level if config.sectors is not None else SECTOR
    adjusted, adjustment_issues = adjust_prices(panel)
    return LoadedInputs(
        panel=_attach_sectors(adjusted, sectors, level),
        sectors=sectors,
        margin=margin,
        reports=reports,
        adjustment_issues=adjustment_issues,
        notes=notes,
        input_hashes=hashes,
        source=str(path),
    )


def inputs_from_frames(
    quotes: pl.DataFrame,
    sectors: pl.DataFrame,
    margin: pl.DataFrame | None,
    config: InputConfig,
    source: str,
) -> LoadedInputs:
    """Validate and adjust in-memory raw frames (canonical column names) exactly as files
    would be: the path synthetic markets and tests take."""
    panel, panel_report = validate_panel(quotes, source, config)
    sectors, sector_report = validate_sectors(sectors, panel.get_column(CODE).unique(), f"{source}: sectors", config)
    reports = [panel_report, sector_report]
    if margin is not None:
        margin, margin_report = validate_margin(margin, f"{source}: margin", config)
        reports.append(margin_report)
    adjusted, adjustment_issues = adjust_prices(panel)
    return LoadedInputs(
        panel=_attach_sectors(adjusted, sectors, config.sector_level),
        sectors=sectors,
        margin=margin,
        reports=reports,
        adjustment_issues=adjustment_issues,
        source=source,
    )


def _load_synthetic(config: InputConfig, synthetic: SyntheticMarketConfig) -> LoadedInputs:
    market = generate_market(synthetic)
    source = f"synthetic market (seed={synthetic.seed}, {synthetic.n_stocks} stocks x {synthetic.n_days} days)"
    inputs = inputs_from_frames(market.quotes, market.sectors, market.margin, config, source)
    config_hash = hashlib.sha256(json.dumps(dump_config(synthetic), sort_keys=True).encode()).hexdigest()
    inputs.input_hashes = {"synthetic_config": config_hash}
    return inputs
