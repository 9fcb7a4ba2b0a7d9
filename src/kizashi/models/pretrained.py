"""Save and load models in the Hugging Face convention: ``model.save_pretrained(DIR)`` and
``Model.from_pretrained(DIR)``, with :func:`load_pretrained_model` for "whichever model the
folder holds".

A pretrained folder ``DIR``::

    config.json         {"format": "kizashi-pretrained", "format_version": 1,
                         "model": the registry name (or the ``pretrained_kind`` of a model
                                  outside the registry, e.g. "stage1_forecaster"),
                         "class": the Python class name (informative),
                         "kizashi_version": the version that wrote it,
                         "config": the model's config dataclass as JSON (tuples as lists),
                         "extra": what else rebuilding needs (empty for registry models),
                         "metadata": what the writer added for its readers (not used to
                                     rebuild: window statistics, label scale, ...)}
    model.safetensors   the state dict (safetensors); a tensor shared by several names
                        (tied embeddings) is stored once, the other names are listed in
                        the file's metadata ``aliases`` ({name: stored name})

Everything a model needs to be rebuilt is in its config: for ATFT-GAT-FAN that includes
``n_features``, ``horizons`` and ``window``. ``from_pretrained`` rebuilds the model through
the registry (:func:`~kizashi.models.registry.create_model`), loads the weights strictly
(every key of the model, nothing else, same shapes) onto ``map_location`` and returns it in
``eval()`` mode. A missing file, a folder of another model and a weight that does not fit
raise :class:`PretrainedLoadError` naming the file.

This is the one place in ``models/`` that reads and writes files: the pretrained folder is
the model's own serialization, as in Hugging Face (the jobs decide where it goes).

Stage-1 models with ``encoder="lm"`` are rebuilt with ``lm_pretrained=False`` (the LM's
architecture from its config at ``lm_name_or_path``, without loading its weights, which
come from ``model.safetensors``); ``lm_name_or_path`` must still hold the LM's config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import nn

from kizashi import __version__
from kizashi.atomic import atomic_path
from kizashi.errors import KizashiError
from kizashi.models.registry import model_entry, registered_name

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "kizashi-pretrained"
FORMAT_VERSION = 1

_KINDS: dict[str, type[nn.Module]] = {}
"""Savable models outside the registry, by ``pretrained_kind`` (filled by subclassing)."""


class PretrainedLoadError(KizashiError):
    """A pretrained folder is missing a file, holds another model, or its weights do not fit."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """A model config dataclass as a JSON-ready dict (tuples as lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a config dataclass instance, got {type(config).__name__}")
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _tuples_back(config_cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON lists back to tuples for the fields declared as tuples."""
    out = dict(values)
    for f in dataclasses.fields(config_cls):
        declared = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if f.name in out and isinstance(out[f.name], list) and str(declared).lstrip().startswith("tuple"):
            out[f.name] = tuple(out[f.name])
    return out


def _model_kind(model_cls: type) -> str | None:
    """The name a folder records for ``model_cls``: its registry name, else its ``pretrained_kind``."""
    return registered_name(model_cls) or model_cls.__dict__.get("pretrained_kind")


def _class_of(kind: str) -> type[nn.Module] | None:
    entry = model_entry(kind)
    return entry.model_cls if entry is not None else _KINDS.get(kind)


def read_pretrained_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``DIR/config.json`` of a pretrained folder (checked: the format, the
    ``model`` and ``config`` keys)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise PretrainedLoadError(f"{folder}: no such pretrained model directory")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise PretrainedLoadError(f"{path}: missing (a pretrained folder holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PretrainedLoadError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PretrainedLoadError(f"{path}: not a kizashi pretrained config (format {FORMAT!r} expected)")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise PretrainedLoadError(f"{path}: format_version {data.get('format_version')} is newer than this "
                                  f"kizashi ({__version__}) reads ({FORMAT_VERSION})")
    for key, kind in (("model", str), ("config", dict)):
        if not isinstance(data.get(key), kind):
            raise PretrainedLoadError(f"{path}: the key {key!r} is missing or not a {kind.__name__}")
    return data


def _save_weights(model: nn.Module, path: Path) -> int:
    """``model``'s state dict to ``path`` (safetensors), each storage once; returns the
    number of aliases (names of an already stored tensor)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}  # (storage, offset, shape, stride, dtype) -> stored name
    storages: set[tuple[str, int]] = set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        shared = False
        if tensor.numel():
            storage = (str(tensor.device), tensor.untyped_storage().data_ptr())
            view = (storage, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
            if view in seen:  # the same tensor under another name (tied weights)
                aliases[name] = seen[view]
                continue
            seen[view] = name
            shared = storage in storages  # another view of a stored storage: stored as its own copy
            storages.add(storage)
        tensor = tensor.to("cpu")
        tensors[name] = tensor.clone() if shared or not tensor.is_contiguous() else tensor
    save_file(tensors, str(path), metadata={"format": "pt", "aliases": json.dumps(aliases)})
    return len(aliases)


def _load_weights(model: nn.Module, path: Path, device: str) -> None:
    """Load ``path`` into ``model`` strictly (aliases resolved), tensors created on ``device``."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise PretrainedLoadError(f"{path}: missing (the weights of the pretrained folder)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise PretrainedLoadError(f"{path}: not a readable safetensors file ({err})") from None
    for name, stored in json.loads(metadata.get("aliases", "{}")).items():
        if stored in state:
            state[name] = state[stored]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"missing {missing[:8]}" if missing else "", f"unexpected {unexpected[:8]}" if unexpected else "",
                 "shape mismatch " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                                               for k in wrong[:8]) if wrong else ""]
        raise PretrainedLoadError(f"{path}: the weights do not fit {type(model).__name__}: "
                                  + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)


class PretrainedMixin:
    """``save_pretrained(DIR)`` / ``from_pretrained(DIR)`` for an ``nn.Module`` with a config
    dataclass in ``self.config`` (module docstring for the folder layout).

    A registered model is rebuilt with ``create_model(name, config=...)``. A model outside
    the registry sets ``pretrained_kind`` (the name its folder records) and overrides
    :meth:`pretrained_config`, :meth:`pretrained_extra` and :meth:`build_pretrained`."""

    pretrained_kind: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("pretrained_kind")
        if kind is not None:
            existing = _KINDS.get(kind)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise ValueError(f"pretrained_kind {kind!r} is already used by {existing}")
            _KINDS[kind] = cls

    def pretrained_config(self) -> dict[str, Any]:
        """The config dataclass as JSON (``config.json``'s ``config``)."""
        return config_to_dict(self.config)  # type: ignore[attr-defined]

    def pretrained_extra(self) -> dict[str, Any]:
        """What rebuilding needs beyond the config (``config.json``'s ``extra``)."""
        return {}

    @classmethod
    def build_pretrained(cls, kind: str, config: Mapping[str, Any], extra: Mapping[str, Any]) -> nn.Module:
        """A freshly initialized model of ``config.json``'s ``config`` and ``extra`` (the
        weights are loaded afterwards)."""
        from kizashi.models.registry import create_model

        entry = model_entry(kind)
        if entry is None:
            raise PretrainedLoadError(f"{cls.__name__}.build_pretrained: {kind!r} is not a registered model")
        return create_model(kind, config=_tuples_back(entry.config_cls, config))

    def save_pretrained(self, directory: str | Path, *, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write ``DIR/config.json`` and ``DIR/model.safetensors`` (atomically: an existing
        folder is replaced as a whole). ``metadata`` (JSON-ready) is stored for readers and
        not used to rebuild. Returns ``DIR``."""
        assert isinstance(self, nn.Module), "PretrainedMixin needs an nn.Module"
        kind = _model_kind(type(self))
        if kind is None:
            raise TypeError(f"{type(self).__name__} is neither a registered model nor has a pretrained_kind")
        payload = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "model": kind, "class": type(self).__name__,
            "kizashi_version": __version__, "config": self.pretrained_config(), "extra": _jsonable(self.pretrained_extra()),
            "metadata": _jsonable(dict(metadata or {})),
        }
        text = json.dumps(payload, indent=2, allow_nan=True) + "\n"
        folder = Path(directory)
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / CONFIG_NAME).write_text(text, encoding="utf-8")
            aliases = _save_weights(self, tmp / WEIGHTS_NAME)
        log.info("saved %s (%s parameters%s) to %s", kind, f"{sum(p.numel() for p in self.parameters()):,}",
                 f", {aliases} tied" if aliases else "", folder)
        return folder

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> Self:
        """The model saved in ``DIR``, its weights on ``map_location``, in ``eval()`` mode.
        ``DIR`` must hold this class (or a subclass of it)."""
        folder = Path(directory)
        data = read_pretrained_config(folder)
        kind = data["model"]
        target = _class_of(kind)
        if target is None:
            raise PretrainedLoadError(f"{folder / CONFIG_NAME}: unknown model {kind!r} (registered: "
                                      f"{sorted(_known_kinds())})")
        if not (cls is PretrainedMixin or issubclass(target, cls)):
            raise PretrainedLoadError(f"{folder / CONFIG_NAME}: the folder holds a {kind!r} model "
                                      f"({target.__name__}), not a {cls.__name__}")
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise PretrainedLoadError(f"{weights}: missing (the weights of the pretrained folder)")
        try:
            model = target.build_pretrained(kind, data["config"], data.get("extra") or {})  # type: ignore[attr-defined]
        except (TypeError, ValueError) as err:
            raise PretrainedLoadError(f"{folder / CONFIG_NAME}: cannot rebuild {kind!r}: {err}") from None
        device = torch.device(map_location)
        model.to(device)
        _load_weights(model, weights, str(device))
        model.eval()
        log.info("loaded %s from %s onto %s", kind, folder, device)
        return model  # type: ignore[return-value]


def _known_kinds() -> set[str]:
    from kizashi.models.registry import list_models

    return set(list_models()) | set(_KINDS)


def load_pretrained_model(directory: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Whichever savable model ``DIR`` holds (a registered model or, e.g., a Stage-1
    forecaster), weights on ``map_location``, in ``eval()`` mode."""
    import kizashi.models  # noqa: F401  (fills the registry)

    return PretrainedMixin.from_pretrained(directory, map_location)


__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "WEIGHTS_NAME",
    "PretrainedLoadError",
    "PretrainedMixin",
    "config_to_dict",
    "load_pretrained_model",
    "read_pretrained_config",
]
