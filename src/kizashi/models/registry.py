"""Model registry (timm style): every model is built the same way, from a name plus a named
preset, a config, and keyword overrides.

A model file registers its class next to its definition::

    @register_model("atft_gat_fan", config_cls=ATFTGATFANConfig, presets={"small": {...}})
    class ATFTGATFAN(nn.Module):
        def __init__(self, config: ATFTGATFANConfig): ...

``config_cls`` is a dataclass (validated in its ``__post_init__`` / ``validate()``); a
preset is a dict of field values. ``create_model(name, preset=..., config=..., **overrides)``
resolves the config as: the config (an instance or a dict of fields) or the preset (not
both) or the defaults, then ``overrides`` on top. Unknown names, presets and keys raise
``ValueError`` naming the valid ones. ``kizashi.models`` imports every built-in model file,
so importing it fills the registry.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=type[nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its class, config dataclass and named presets."""

    name: str
    model_cls: type[nn.Module]
    config_cls: type
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def _field_names(config_cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config_cls)]


def _check_keys(keys: Mapping[str, Any], config_cls: type, what: str) -> None:
    valid = _field_names(config_cls)
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown {what} key(s) {unknown} for {config_cls.__name__}; valid keys: {valid}"
        )


def register_model(
    name: str,
    *,
    config_cls: type,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[[ModelT], ModelT]:
    """Class decorator: register ``model_cls(config)`` under ``name`` with named presets."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls of {name!r} must be a dataclass, got {config_cls!r}")
    presets = {key: dict(values) for key, values in (presets or {}).items()}
    for preset, values in presets.items():
        _check_keys(values, config_cls, f"preset {name}/{preset}")

    def decorator(model_cls: ModelT) -> ModelT:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.model_cls is not model_cls:
            raise ValueError(f"model name {name!r} is already registered by {existing.model_cls}")
        _REGISTRY[name] = ModelEntry(name, model_cls, config_cls, presets)
        return model_cls

    return decorator


def _entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {list_models()}") from None


def model_entry(name: str) -> ModelEntry | None:
    """The registry entry of ``name``, or None when no model has that name."""
    return _REGISTRY.get(name)


def registered_name(model_cls: type) -> str | None:
    """The name ``model_cls`` (exactly that class) is registered under, or None."""
    return next((entry.name for entry in _REGISTRY.values() if entry.model_cls is model_cls), None)


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def config_fields(name: str) -> list[str]:
    """The field names of model ``name``'s config dataclass (what ``overrides`` may set)."""
    return _field_names(_entry(name).config_cls)


def model_presets(name: str) -> dict[str, dict[str, Any]]:
    """The presets of model ``name`` (a copy): ``{preset: {field: value}}``."""
    return {key: dict(values) for key, values in _entry(name).presets.items()}


def model_config(
    name: str, preset: str | None = None, config: Any = None, **overrides: Any
) -> Any:
    """The validated config that :func:`create_model` would build ``name`` from."""
    entry = _entry(name)
    if preset is not None and config is not None:
        raise ValueError("pass either preset or config, not both (add overrides on top instead)")
    values: dict[str, Any]
    if config is None:
        values = {}
        if preset is not None:
            if preset not in entry.presets:
                raise ValueError(
                    f"unknown preset {preset!r} for model {name!r}; "
                    f"presets: {sorted(entry.presets)}"
                )
            values = dict(entry.presets[preset])
    elif isinstance(config, entry.config_cls):
        values = {f: getattr(config, f) for f in _field_names(entry.config_cls)}
    elif isinstance(config, Mapping):
        _check_keys(config, entry.config_cls, "config")
        values = dict(config)
    else:
        raise ValueError(
            f"config for {name!r} must be a {entry.config_cls.__name__} or a dict, "
            f"got {type(config).__name__}"
        )
    _check_keys(overrides, entry.config_cls, "override")
    values.update(overrides)
    return entry.config_cls(**values)


def create_model(
    name: str, preset: str | None = None, config: Any = None, **overrides: Any
) -> nn.Module:
    """Build model ``name`` from a preset or a config (instance or dict) plus overrides."""
    entry = _entry(name)
    resolved = model_config(name, preset=preset, config=config, **overrides)
    model = entry.model_cls(resolved)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("built %s (preset=%s): %s parameters", name, preset, f"{n_params:,}")
    return model


def parameter_count(name: str, preset: str | None = None, config: Any = None, **overrides: Any) -> int:
    """The number of parameters of ``create_model(name, preset, config, **overrides)``,
    counted on the ``meta`` device: shapes only, no memory allocated and no initialization
    run, so the largest presets count in well under a second."""
    entry = _entry(name)
    resolved = model_config(name, preset=preset, config=config, **overrides)
    with torch.device("meta"):
        model = entry.model_cls(resolved)
    return sum(p.numel() for p in model.parameters())
