"""A causal Transformer token language model: the O(N^2) baseline for BK-Core.

    ids [B, N] -> token embedding + sinusoidal positions                       [B, N, D]
      -> n_layers x pre-norm block: x + causal self-attention (SDPA, is_causal),
                                    x + feed-forward (GELU, ff_mult * D)
      -> LayerNorm -> linear head                                               [B, N, V]

Positions are sinusoidal (no parameters), so the model runs on any length and its
parameter count does not depend on the context; attention uses
``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels on
CUDA where they apply). Same interface as the BK language models: ``forward(ids)`` ->
logits, config fields ``vocab_size`` and ``n_seq``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kizashi.models.pretrained import PretrainedMixin
from kizashi.models.registry import register_model


@dataclass
class TransformerLMConfig:
    vocab_size: int = 50257
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    ff_mult: int = 4
    dropout: float = 0.1
    n_seq: int = 1024  # training context length (data loaders); the model runs on any length
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "ff_mult", "n_seq"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


PRESETS = {
    "small": dict(d_model=256, n_layers=4, n_heads=8),
    "base": dict(d_model=512, n_layers=6, n_heads=8),
    "large": dict(d_model=1024, n_layers=12, n_heads=16),
}


def sinusoidal_positions(n: int, d: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[n, d]`` the classic sin/cos position code."""
    position = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    code = torch.zeros(n, d, device=device, dtype=torch.float32)
    code[:, 0::2] = torch.sin(position * frequency)
    code[:, 1::2] = torch.cos(position * frequency[: d // 2])
    return code.to(dtype)


class CausalBlock(nn.Module):
    def __init__(self, config: TransformerLMConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads, self.dropout = config.n_heads, config.dropout
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, config.ff_mult * d), nn.GELU(), nn.Linear(config.ff_mult * d, d))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                  dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(attended.transpose(1, 2).reshape(batch, n, d)))
        return x + self.drop(self.ff(self.norm2(x)))


@register_model("transformer_lm", config_cls=TransformerLMConfig, presets=PRESETS)
class TransformerLM(PretrainedMixin, nn.Module):
    """``forward(ids [B, N]) -> logits [B, N, V]`` (module docstring)."""

    def __init__(self, config: TransformerLMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(CausalBlock(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.drop = nn.Dropout(config.dropout)
        nn.init.normal_(self.embed.weight, std=0.02)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight
        else:
            nn.init.normal_(self.head.weight, std=0.02)

    def forward(self, ids: Tensor) -> Tensor:
        if ids.dim() != 2:
            raise ValueError(f"ids must be [B, N], got {tuple(ids.shape)}")
        x = self.embed(ids)
        x = self.drop(x + sinusoidal_positions(ids.shape[1], x.shape[-1], x.device, x.dtype))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
