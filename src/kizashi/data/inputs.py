"""One entry point for raw inputs: read, validate, adjust and attach sectors.

:func:`load_inputs` turns an :class:`~kizashi.config.InputConfig` (or, with no path, the
embedded synthetic market) into an adjusted panel ready for feature building, plus every
validation report. Synthetic data goes through the same validation and adjustment path as
a real file. :func:`check_inputs` takes the same path without raising and returns what it
found (the ``kizashi data check`` command).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from kizashi.config import InputConfig, SyntheticMarketConfig, dump_config
from kizashi.data.panel.adjust import adjust_prices
from kizashi.data.panel.read import read_margin, read_panel, read_sectors
from kizashi.data.panel.validate import validate_margin, validate_panel, validate_sectors
from kizashi.data.report import ValidationIssue, ValidationReport
from kizashi.data.schema import CODE, SECTOR
from kizashi.data.synthetic import generate_market

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


@dataclass
class ValidatedInputs:
    """The validated (not yet adjusted) frames of one input configuration and their reports.
    ``sectors`` / ``margin`` are None when not configured."""

    panel: pl.DataFrame
    sectors: pl.DataFrame | None
    margin: pl.DataFrame | None
    reports: list[ValidationReport]
    notes: list[str]
    source: str

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.reports)


@dataclass
class InputCheck:
    """What :func:`check_inputs` found: reader notes and one report per input (the panel's
    report carries the price adjustment's issues when the panel has no error)."""

    notes: list[str]
    reports: list[ValidationReport]

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.reports)

    def to_dict(self) -> dict[str, object]:
        return {"notes": self.notes, "reports": [report.to_dict() for report in self.reports]}


def _panel_codes(panel: pl.DataFrame) -> pl.Series | None:
    return panel.get_column(CODE).unique() if CODE in panel.columns else None


def validate_inputs(config: InputConfig, *, raise_on_error: bool = True) -> ValidatedInputs:
    """Read and validate the configured files (``config.path`` must be set): the panel,
    then the sector table (against the panel's codes) and margin balances when configured.

    With ``raise_on_error`` (default) the first input with an error raises a
    DataValidationError listing all of its errors; otherwise every input is read and
    validated and the reports carry the errors."""
    if config.path is None:
        raise ValueError("validate_inputs reads files: input.path is null (the synthetic market)")
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
    panel, panel_report = validate_panel(raw, str(path), config, raise_on_error=raise_on_error)
    reports = [panel_report]
    sectors = None
    if config.sectors is not None:
        sectors_raw = read_sectors(config.sectors, preset=config.sectors_preset, columns=config.sector_columns)
        sectors, sector_report = validate_sectors(
            sectors_raw, _panel_codes(panel), str(config.sectors), config, raise_on_error=raise_on_error
        )
        reports.append(sector_report)
    margin = None
    if config.margin is not None:
        margin_raw = read_margin(config.margin, preset=config.margin_preset, columns=config.margin_columns)
        margin, margin_report = validate_margin(
            margin_raw, str(config.margin), config, raise_on_error=raise_on_error
        )
        reports.append(margin_report)
    return ValidatedInputs(panel, sectors, margin, reports, notes, str(path))


def check_inputs(config: InputConfig, synthetic: SyntheticMarketConfig | None = None) -> InputCheck:
    """Validate the configured inputs as :func:`load_inputs` does, but collect every error
    instead of raising; when the panel has no error, its report also carries the price
    adjustment's issues."""
    if config.path is None:
        inputs = _load_synthetic(config, synthetic or SyntheticMarketConfig())
        inputs.reports[0].issues.extend(inputs.adjustment_issues)
        return InputCheck(inputs.notes, inputs.reports)
    validated = validate_inputs(config, raise_on_error=False)
    panel_report = validated.reports[0]
    if panel_report.ok:
        _, adjustment = adjust_prices(validated.panel)
        panel_report.issues.extend(adjustment)
    return InputCheck(validated.notes, validated.reports)


def input_hashes(config: InputConfig, synthetic: SyntheticMarketConfig | None = None) -> dict[str, str]:
    """Content hashes of the configured inputs, keyed by path (the quotes, the sector table and
    margin balances when configured), or of the synthetic market's config when
    ``config.path`` is null. Equal hashes: equal inputs (``LoadedInputs.input_hashes``)."""
    if config.path is None:
        settings = dump_config(synthetic or SyntheticMarketConfig())
        return {"synthetic_config": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()}
    hashes = {str(Path(config.path)): file_digest(Path(config.path))}
    for extra in (config.sectors, config.margin):
        if extra is not None:
            hashes[str(extra)] = file_digest(Path(extra))
    return hashes


def load_inputs(config: InputConfig, synthetic: SyntheticMarketConfig | None = None) -> LoadedInputs:
    """Read, validate and adjust the configured inputs (synthetic market when ``config.path``
    is null). Raises DataValidationError listing every error found."""
    if config.path is None:
        return _load_synthetic(config, synthetic or SyntheticMarketConfig())
    validated = validate_inputs(config)
    panel, notes = validated.panel, validated.notes
    if validated.sectors is not None:
        sectors = validated.sectors
    else:
        sectors = panel.select(pl.col(CODE).unique().sort(), pl.lit("UNKNOWN").alias(SECTOR))
        notes.append("no sector table given: every stock is in sector UNKNOWN")
    level = config.sector_level if config.sectors is not None else SECTOR
    adjusted, adjustment_issues = adjust_prices(panel)
    return LoadedInputs(
        panel=_attach_sectors(adjusted, sectors, level),
        sectors=sectors,
        margin=validated.margin,
        reports=validated.reports,
        adjustment_issues=adjustment_issues,
        notes=notes,
        input_hashes=input_hashes(config),
        source=validated.source,
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
    inputs.input_hashes = input_hashes(config, synthetic)
    return inputs
