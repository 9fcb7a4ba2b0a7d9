"""Transfer-learning controls for a pretrained language-model encoder (Stage-1's
``transfer_learning`` keys): gradual unfreezing and the LM's learning-rate factor.

* :func:`unfrozen_blocks` / :func:`apply_unfreezing`: the unfreezing schedule that the
  :class:`~kizashi.training.callbacks.GradualUnfreezing` callback applies. The LM's
  pretrained parameters are frozen for the first ``freeze_epochs`` epochs. Then either
  everything is unfrozen at once (``blocks_per_epoch=None``) or ``blocks_per_epoch`` more
  encoder blocks per epoch, from the top block down; the LM's other parameters (embeddings,
  position bias, final norm) are unfrozen with the bottom block. The state is a function of
  the epoch number only, so a resumed run continues the same schedule.
* :func:`transfer_param_groups`: the optimizer's groups with the LM at
  ``lm_learning_rate_factor`` x the base learning rate, frozen LM parameters included (the
  optimizer skips them until they have gradients), no weight decay on norms and biases.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kizashi.config import PretrainConfig
from kizashi.errors import ConfigError
from kizashi.models import create_model
from kizashi.models.lm_adapter import LMEncoderAdapter
from kizashi.models.optim import param_groups
from kizashi.models.stage1 import Stage1Config, Stage1Model

log = logging.getLogger(__name__)


def find_lm_adapter(module: nn.Module) -> LMEncoderAdapter | None:
    """The (single) :class:`LMEncoderAdapter` inside ``module``, or None."""
    found = [m for m in module.modules() if isinstance(m, LMEncoderAdapter)]
    if len(found) > 1:
        raise ValueError(f"expected one language-model adapter, found {len(found)}")
    return found[0] if found else None


def fraction_frozen(parameters: Iterable[nn.Parameter]) -> float:
    """Share of the elements of ``parameters`` with ``requires_grad=False`` (0..1)."""
    total = frozen = 0
    for p in parameters:
        total += p.numel()
        frozen += 0 if p.requires_grad else p.numel()
    return frozen / total if total else 0.0


def unfrozen_blocks(epoch: int, freeze_epochs: int, n_blocks: int, blocks_per_epoch: int | None) -> int:
    """How many of ``n_blocks`` (counted from the top) are trainable during ``epoch`` (0-based)."""
    if epoch < freeze_epochs:
        return 0
    if blocks_per_epoch is None:
        return n_blocks
    return min(n_blocks, (epoch - freeze_epochs + 1) * blocks_per_epoch)


def apply_unfreezing(adapter: LMEncoderAdapter, n_unfrozen: int) -> None:
    """Make the top ``n_unfrozen`` blocks trainable and the others frozen; the LM's
    non-block parameters follow the bottom block."""
    blocks = adapter.lm_blocks()
    n_blocks = len(blocks)
    block_params = set()
    for index, block in enumerate(blocks):
        trainable = index >= n_blocks - n_unfrozen
        for p in block.parameters():
            p.requires_grad_(trainable)
            block_params.add(id(p))
    for p in adapter.lm_parameters():
        if id(p) not in block_params:
            p.requires_grad_(n_unfrozen >= n_blocks)


def transfer_param_groups(
    model: nn.Module, lr: float, weight_decay: float, lm_learning_rate_factor: float = 1.0
) -> list[dict[str, Any]]:
    """:func:`kizashi.models.optim.param_groups` with the LM adapter's pretrained
    parameters at ``lm_learning_rate_factor`` x ``lr`` (frozen ones included)."""
    adapter = find_lm_adapter(model)
    if adapter is None:
        return param_groups(model, weight_decay=weight_decay, lr=lr)
    prefix = next(name for name, module in model.named_modules() if module is adapter.lm)
    lm_params = list(adapter.lm_parameters())
    return param_groups(model, weight_decay=weight_decay, lr=lr, lr_factors={prefix: lm_learning_rate_factor},
                        frozen_to_include=lm_params)


def build_stage1_model(config: PretrainConfig, timeframes: list[str]) -> Stage1Model:
    """The Stage-1 model of ``config`` (``model``, ``transfer_learning``, ``windows``) over
    ``timeframes``; a bad combination is a :class:`ConfigError` naming the key."""
    spec, tl, w = config.model, config.transfer_learning, config.windows
    overrides = {**spec.overrides, "timeframes": tuple(timeframes), "seq_len": w.seq_len}
    if w.mode == "async":
        if overrides.get("fusion") != "separate" and len(timeframes) > 1:
            raise ConfigError("windows.mode: async windows are not aligned in time; set model.overrides.fusion: separate")
        overrides["seq_lens"] = dict(w.seq_lens) if w.seq_lens else None
    if tl.use_pretrained_lm:
        overrides.update(encoder="lm", lm_name_or_path=tl.lm_name_or_path, patch_len=tl.patch_len,
                         lm_layers=tl.lm_layers, lm_pretrained=tl.lm_weights == "pretrained")
    try:
        return create_model(spec.name, spec.preset, **overrides)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model: {err}") from None


def load_pretrained(path: str | Path) -> tuple[Stage1Model, dict[str, Any]]:
    """The model saved by ``kizashi pretrain`` (``encoder.pt``) and the saved payload."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    model = Stage1Model(Stage1Config(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model, payload
