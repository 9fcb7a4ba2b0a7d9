"""A BK-Core stack as a bidirectional sequence encoder (the Stage-1 shared encoder option).

    h [B, N, D] -> n_layers x Phase1Block(causal=False):
                     h + BKMixer(LayerNorm(h))      two-sided resolvent diag((T - zI)^-1)
                     h + FeedForward(LayerNorm(h))
                -> LayerNorm                                             [B, N, D]

The blocks are Phase 1's (:class:`~kizashi.models.bk.phase1.Phase1Block`) with
``causal=False``: a masked bar may read the bars on both sides, as the Transformer encoder
does. It runs on the PyTorch reference by default (``use_triton=False``: the resolvent and
the layer norms); the Stage-1 windows are short (tens to hundreds of tokens), where the
reference is adequate.
"""

from __future__ import annotations

from torch import Tensor, nn

from kizashi.models.bk.config import Phase1Config
from kizashi.models.bk.layers import LayerNorm, kernel_backend
from kizashi.models.bk.phase1 import Phase1Block, linear_spectral_shifts


class BKSequenceEncoder(nn.Module):
    """``h [B, N, D] -> [B, N, D]`` (module docstring)."""

    def __init__(self, d_model: int, n_layers: int, num_heads: int, dropout: float, *,
                 use_triton: bool = False) -> None:
        super().__init__()
        config = Phase1Config(vocab_size=1, d_model=d_model, n_layers=n_layers, num_heads=num_heads,
                              dropout=dropout, causal=False, use_triton_bk=use_triton)
        shifts = linear_spectral_shifts(num_heads)
        self.blocks = nn.ModuleList(Phase1Block(config, shifts) for _ in range(n_layers))
        self.norm = LayerNorm(d_model, backend=kernel_backend(config))

    def forward(self, h: Tensor) -> Tensor:
        for block in self.blocks:
            h, _ = block(h, return_diagnostics=False)
        return self.norm(h)
