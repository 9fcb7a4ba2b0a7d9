"""Optimizer parameter groups: no weight decay on norms, biases and LayerScale gammas, and
per-module learning-rate factors.

A parameter gets no weight decay when its module is a normalization layer or
:class:`~kizashi.layers.heads.LayerScale`, when its own name starts or ends with ``bias``
(``bias``, LSTM ``bias_ih_l0``, the VSN's ``feature_bias``), or when it has at most one
dimension. Everything else (weights, GATv2 ``att`` vectors) is decayed.

``lr_factors`` maps a module-name prefix (``"gat"``, ``"heads.heads.0"``, as in
``model.named_modules()``) to a factor on the base ``lr``; the longest matching prefix wins
and unmatched parameters use 1.0. A prefix that matches no trainable parameter is an error.
Every group carries ``lr``, ``weight_decay``, ``lr_factor``, ``name`` and ``param_names``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from kizashi.layers.heads import LayerScale

NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.modules.batchnorm._NormBase,
    LayerScale,
)


def _matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _no_decay(module: nn.Module, local_name: str, param: nn.Parameter) -> bool:
    return (
        isinstance(module, NO_DECAY_MODULES)
        or local_name.startswith("bias")
        or local_name.endswith("bias")
        or param.ndim <= 1
    )


def param_groups(
    model: nn.Module,
    weight_decay: float,
    lr: float,
    lr_factors: Mapping[str, float] | None = None,
    *,
    frozen_to_include: Iterable[nn.Parameter] = (),
) -> list[dict[str, Any]]:
    """Parameter groups for ``torch.optim`` (e.g. ``AdamW(param_groups(...))``).

    One group per (lr factor, decay / no decay) that has parameters; each trainable
    parameter appears exactly once, frozen ones (``requires_grad=False``) not at all, except
    those in ``frozen_to_include`` (frozen now and unfrozen later by gradual unfreezing; the
    optimizer skips them while they have no gradient).
    """
    include = {id(p) for p in frozen_to_include}
    lr_factors = dict(lr_factors or {})
    for prefix, factor in lr_factors.items():
        if not factor > 0:
            raise ValueError(f"lr factor for {prefix!r} must be > 0, got {factor}")
    seen: set[int] = set()
    used_prefixes: set[str] = set()
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for module_name, module in model.named_modules():
        for local_name, param in module.named_parameters(recurse=False):
            if (not param.requires_grad and id(param) not in include) or id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{module_name}.{local_name}" if module_name else local_name
            matching = [p for p in lr_factors if _matches(name, p)]
            prefix = max(matching, key=len) if matching else ""
            if matching:
                used_prefixes.add(prefix)
            decay = not _no_decay(module, local_name, param)
            key = (prefix, decay)
            if key not in groups:
                factor = lr_factors.get(prefix, 1.0)
                groups[key] = {
                    "params": [],
                    "param_names": [],
                    "lr": lr * factor,
                    "lr_factor": factor,
                    "weight_decay": weight_decay if decay else 0.0,
                    "name": f"{prefix or 'default'}/{'decay' if decay else 'no_decay'}",
                }
            groups[key]["params"].append(param)
            groups[key]["param_names"].append(name)
    unused = sorted(set(lr_factors) - used_prefixes)
    if unused:
        top_level = [name for name, _ in model.named_children()]
        raise ValueError(
            f"lr_factors prefix(es) {unused} match no trainable parameter; "
            f"top-level modules: {top_level}"
        )
    return list(groups.values())


def adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``groups`` (from :func:`param_groups`): the fused
    implementation (one kernel launch per step for all parameters) when every parameter is a
    CUDA tensor, PyTorch's default otherwise. Same update rule either way."""
    params = [p for group in groups for p in group["params"]]
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, fused=True if fused else None)


def check_optimizer_coverage(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Raise ``ValueError`` naming every trainable parameter of ``model`` that is missing
    from ``optimizer`` or appears in it more than once."""
    counts: dict[int, int] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            counts[id(param)] = counts.get(id(param), 0) + 1
    trainable: Iterable[tuple[str, nn.Parameter]] = (
        (n, p) for n, p in model.named_parameters() if p.requires_grad
    )
    missing, duplicated = [], []
    for name, param in trainable:
        count = counts.get(id(param), 0)
        if count == 0:
            missing.append(name)
        elif count > 1:
            duplicated.append(name)
    if missing or duplicated:
        raise ValueError(
            f"optimizer coverage: missing {missing or 'none'}; duplicated {duplicated or 'none'}"
        )
