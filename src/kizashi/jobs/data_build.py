"""`kizashi data build` (:func:`kizashi.datasets.build.build_dataset`), `data check` and
`data columns`: all three read the inputs the same way (:mod:`kizashi.data.inputs`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


from kizashi.config import DataBuildConfig
from kizashi.errors import ConfigError, KizashiError
from kizashi.data.inputs import InputCheck, check_inputs, load_inputs
from kizashi.datasets.build import BuildResult, build_dataset, column_table, feature_specs_for
from kizashi.datasets.store import (
    read_metadata,
)
from kizashi.features.registry import KNOWN_FAMILY_NAMES, OPTIONAL_FAMILY_NAMES

log = logging.getLogger(__name__)

def check_data(config: DataBuildConfig) -> InputCheck:
    """`kizashi data check`: validate the configured inputs as `data build` reads them, every
    error collected instead of raised."""
    return check_inputs(config.input, config.synthetic)


def config_columns(config: DataBuildConfig) -> list[dict[str, Any]]:
    """The columns `data build` writes for ``config``: the same specs from the same inputs
    (read, because the sector and margin columns depend on them)."""
    log.info("reading the inputs: the sector and margin columns depend on them")
    return column_table(feature_specs_for(load_inputs(config.input, config.synthetic), config))


def dataset_columns(folder: Path) -> list[dict[str, Any]]:
    """The ``columns`` table of a built dataset's metadata.json."""
    try:
        metadata = read_metadata(folder)
    except FileNotFoundError as err:
        raise KizashiError(str(err)) from None
    return list(metadata.columns)


def family_columns(
    rows: list[dict[str, Any]], family: str, folder: Path | None, config: DataBuildConfig | None
) -> list[dict[str, Any]]:
    """The rows of ``family``, or a ConfigError naming the family, why it has no column, and
    the families that have columns (``folder``: the dataset the rows come from, when
    ``config`` is None)."""
    if family not in KNOWN_FAMILY_NAMES:
        raise ConfigError(f"--family: unknown family {family!r}; known: {', '.join(KNOWN_FAMILY_NAMES)}")
    selected = [row for row in rows if row["family"] == family]
    if selected:
        return selected
    present = ", ".join(dict.fromkeys(row["family"] for row in rows)) or "none"
    if config is None:
        raise ConfigError(
            f"--family: the dataset in {folder} has no column of family {family!r}; "
            f"families with columns: {present}"
        )
    reason = _why_no_columns(family, config)
    raise ConfigError(
        f"--family: family {family!r} builds no column for this config ({reason}); "
        f"families with columns: {present}"
    )


def _why_no_columns(family: str, config: DataBuildConfig) -> str:
    """Why ``family`` builds no column for ``config``, naming the config key where one decides it."""
    features = config.features
    if family in features.exclude_families:
        return "features.exclude_families lists it"
    if family in OPTIONAL_FAMILY_NAMES and family not in features.families:
        return f"{family} is optional: `all` does not build it; list it, e.g. features.families: [all, {family}]"
    if features.families != "all" and family not in features.families:
        return "features.families does not list it"
    if family == "peers" and not config.graph.enabled:
        return "its columns come from the correlation graphs and graph.enabled is false"
    if family == "margin":
        return "the inputs have no margin balances (input.margin)"
    return "the inputs give it nothing to build"


__all__ = ["BuildResult", "build_dataset", "check_data", "config_columns", "dataset_columns", "family_columns"]
