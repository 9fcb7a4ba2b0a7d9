"""BK-Core Phase 1: a causal O(N) language model built on the resolvent diagonal.

``B`` sequences of ``N`` tokens, ``D = d_model``, ``H = num_heads``, ``V = vocab_size``::

    ids [B, N] -> embed                                                      [B, N, D]
      -> n_layers x Phase1Block:
           x = x + BKMixer(LayerNorm(x))      per head a tridiagonal over the sequence,
                                              its causal resolvent diagonal g [B, H, N]
                                              (Re, Im) mixed back through a projection
           x = x + FeedForward(LayerNorm(x))                                  [B, N, D]
      -> LayerNorm -> lm_head (Linear D -> V, untied unless tie_embeddings)   [B, N, V]

Causality: with ``causal=True`` (default) the mixer uses
:func:`~kizashi.models.bk.layers.bk_core_causal`, the resolvent of the leading submatrix
``T[:i+1, :i+1]`` at position ``i``, built from tokens ``<= i`` only (the full
``bk_core`` diagonal would see the future; see :mod:`kizashi.models.bk.layers`), and every
other operation is per position, so the logits at ``t`` do not depend on tokens after
``t`` (tested by perturbing the future). ``causal=False`` uses the two-sided ``bk_core``:
a bidirectional encoder (e.g. the shared encoder of Stage-1 pretraining), not a language
model. No position table: the recursion is order-aware by itself, so any length runs.

Cost: O(N) time and memory per layer (a chunked scan of ``~2 sqrt(N)`` vectorized steps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from kizashi.models.bk.config import PHASE1_PRESETS, Phase1Config
from kizashi.models.bk.layers import BKMixer, FeedForward, LayerNorm, kernel_backend
from kizashi.models.pretrained import PretrainedMixin
from kizashi.models.registry import register_model

PHASE1_DIAGNOSTIC_KEYS = ("resolvent_abs",)
"""Per-layer diagnostics of Phase 1: ``resolvent_abs [B, H, N]`` = ``|g|``."""


def linear_spectral_shifts(num_heads: int) -> Tensor:
    """Evenly spaced real parts of the heads' spectral shifts in ``[-1, 1]`` (``[H]``)."""
    if num_heads == 1:
        return torch.zeros(1)
    return torch.linspace(-1.0, 1.0, num_heads)


def residual_std(init_std: float, n_layers: int) -> float:
    """GPT-2's scaled init of the projections that write into the residual stream."""
    return init_std / (2 * n_layers) ** 0.5


class Phase1Block(nn.Module):
    """``x [B, N, D]`` -> ``[B, N, D]``: BK mixer and feed-forward, pre-norm residuals."""

    def __init__(self, config: Phase1Config, shift_real: Tensor) -> None:
        super().__init__()
        out_std = residual_std(config.init_std, config.n_layers)
        self.bk_norm = LayerNorm(config.d_model, backend=kernel_backend(config))
        self.bk = BKMixer(
            config.d_model, config.num_heads, causal=config.causal, spectral_shift_real=shift_real,
            spectral_shift_imag=config.spectral_shift_imag,
            spectral_shift_imag_min=config.spectral_shift_imag_min,
            backend=kernel_backend(config), dropout=config.dropout,
            init_std=config.init_std, out_std=out_std,
        )
        self.ffn_norm = LayerNorm(config.d_model, backend=kernel_backend(config))
        self.ffn = FeedForward(config.d_model, config.ffn_width, config.dropout)
        init_feed_forward(self.ffn, config.init_std, out_std)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, return_diagnostics: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """``(x [B, N, D], diagnostics)``; the dict is empty unless ``return_diagnostics``."""
        mixed, _, g = self.bk(self.bk_norm(x))
        x = x + mixed
        x = x + self.drop(self.ffn(self.ffn_norm(x)))
        return x, ({"resolvent_abs": g.detach().abs()} if return_diagnostics else {})


def init_feed_forward(ffn: FeedForward, init_std: float, out_std: float) -> None:
    nn.init.normal_(ffn.up.weight, std=init_std)
    nn.init.zeros_(ffn.up.bias)
    nn.init.normal_(ffn.down.weight, std=out_std)
    nn.init.zeros_(ffn.down.bias)


class BKLanguageModel(PretrainedMixin, nn.Module):
    """The frame both BK language models share: ``ids [B, N]`` -> token embedding (+ an
    optional position module) -> the blocks -> LayerNorm -> ``lm_head`` -> ``logits [B, N, V]``.

    ``make_position()`` -> a module with ``position(n) -> [N, D]`` or None; ``make_blocks()``
    -> the blocks, each ``block(h, return_diagnostics) -> (h, diagnostics dict)`` (an empty
    dict when not asked for: training does not pay for them). Both are called in this order
    after the embedding is built, so initialization draws random numbers in a fixed order."""

    def __init__(self, config: Any, make_blocks: Callable[[], list[nn.Module]],
                 make_position: Callable[[], nn.Module | None] = lambda: None) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.embed.weight, std=config.init_std)
        self.position = make_position()
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(make_blocks())
        self.final_norm = LayerNorm(config.d_model, backend=kernel_backend(config))
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=config.init_std)

    def embed_tokens(self, ids: Tensor) -> Tensor:
        """``ids [B, N]`` -> ``[B, N, D]``: token embedding (+ the position module's code)."""
        h = self.embed(ids)
        if self.position is not None:
            h = h + self.position(ids.shape[1]).to(h.dtype)
        return self.drop(h)

    def encode(self, h: Tensor, return_diagnostics: bool = False) -> Any:
        """The block stack on embeddings ``h [B, N, D]`` -> ``[B, N, D]`` (before the final
        norm); with ``return_diagnostics`` also the per-layer diagnostics."""
        diagnostics = []
        for block in self.blocks:
            h, layer = block(h, return_diagnostics)
            diagnostics.append(layer)
        return (h, diagnostics) if return_diagnostics else h

    def forward(self, ids: Tensor, return_diagnostics: bool = False) -> Any:
        """``ids [B, N]`` (int64) -> ``logits [B, N, V]``; with ``return_diagnostics`` a pair
        ``(logits, [one dict per layer])``."""
        encoded = self.encode(self.embed_tokens(ids), return_diagnostics=return_diagnostics)
        h, diagnostics = encoded if return_diagnostics else (encoded, None)
        logits = self.lm_head(self.final_norm(h))
        return (logits, diagnostics) if return_diagnostics else logits


@register_model("bk_phase1", config_cls=Phase1Config, presets=PHASE1_PRESETS)
class BKPhase1LM(BKLanguageModel):
    """Phase-1 BK-Core language model: ``ids [B, N]`` -> ``logits [B, N, V]``; diagnostics
    have the keys of ``PHASE1_DIAGNOSTIC_KEYS``."""

    def __init__(self, config: Phase1Config) -> None:
        super().__init__(config, lambda: [Phase1Block(config, linear_spectral_shifts(config.num_heads))
                                          for _ in range(config.n_layers)])

