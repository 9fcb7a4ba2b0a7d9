"""Per-horizon prediction heads: a point forecast and quantiles for every horizon.

Each horizon has its own head::

    h         = x + LayerScale(MLP(LayerNorm(x)))      # MLP: D -> D_h -> ELU -> D
    point     = Linear(D -> 1)(h)                      # [N]
    quantiles = Linear(D -> Q)(h)                      # [N, Q], optionally monotone

Options:

- ``small_init``: the output layers start from a truncated normal (std 0.01, cut at 2 std)
  with zero bias, so the initial predictions are ~0 and the first steps do not fight a
  random readout.
- ``layerscale``: the residual branch is multiplied by a learnable per-channel ``gamma``
  (init ``layerscale_init``, e.g. 1e-2 or 1e-4); without it the branch is added as is.
- ``monotone_quantiles`` (default): the quantile levels must be sorted ascending; the
  output at the level nearest 0.5 is free and the others are built outward from it by
  cumulative softplus steps, so ``q_1 <= q_2 <= ... <= q_Q`` always holds (the initial
  outputs are symmetric around the median). Without it the Q outputs are unconstrained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SMALL_INIT_STD = 0.01


def small_init_(linear: nn.Linear, std: float = SMALL_INIT_STD) -> nn.Linear:
    """Truncated normal weights (std ``std``, cut at +-2 std) and zero bias, in place."""
    nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


class LayerScale(nn.Module):
    """``x * gamma`` with a learnable per-channel ``gamma [D]`` (Touvron et al. 2021)."""

    def __init__(self, d_model: int, init_value: float = 1e-2) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((d_model,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


def monotone_quantiles(raw: Tensor, median_index: int) -> Tensor:
    """``raw [..., Q]`` -> sorted ``[..., Q]``: ``raw[median_index]`` is kept; the others are
    built outward from it by cumulative ``softplus`` increments."""
    anchor = raw[..., median_index : median_index + 1]
    steps = F.softplus(raw)
    upper = anchor + torch.cumsum(steps[..., median_index + 1 :], dim=-1)
    lower = anchor - torch.cumsum(steps[..., :median_index].flip(-1), dim=-1).flip(-1)
    return torch.cat([lower, anchor, upper], dim=-1)


class HorizonHead(nn.Module):
    """One horizon. ``x [N, D]`` -> ``(point [N], quantiles [N, Q])``."""

    def __init__(
        self,
        d_model: int,
        n_quantiles: int,
        *,
        d_hidden: int | None = None,
        dropout: float = 0.0,
        small_init: bool = False,
        layerscale: bool = False,
        layerscale_init: float = 1e-2,
        monotone: bool = True,
        median_index: int = 0,
    ) -> None:
        super().__init__()
        d_hidden = d_model if d_hidden is None else d_hidden
        self.monotone, self.median_index = monotone, median_index
        self.norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_hidden),
            nn.ELU(),
            nn.Dropout(dropout),
            nn.Linear(d_hidden, d_model),
        )
        self.layer_scale = LayerScale(d_model, layerscale_init) if layerscale else nn.Identity()
        self.point = nn.Linear(d_model, 1)
        self.quantiles = nn.Linear(d_model, n_quantiles)
        if small_init:
            small_init_(self.point)
            small_init_(self.quantiles)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = x + self.layer_scale(self.mlp(self.norm(x)))
        raw = self.quantiles(h)
        quantiles = monotone_quantiles(raw, self.median_index) if self.monotone else raw
        return self.point(h).squeeze(-1), quantiles


class HorizonHeads(nn.Module):
    """All horizons. ``x [N, D]`` -> ``(point [N, H], quantiles [N, H, Q])``."""

    def __init__(
        self,
        d_model: int,
        n_horizons: int,
        quantile_levels: Sequence[float],
        *,
        d_hidden: int | None = None,
        dropout: float = 0.0,
        small_init: bool = False,
        layerscale: bool = False,
        layerscale_init: float = 1e-2,
        monotone_quantiles: bool = True,
    ) -> None:
        super().__init__()
        levels = [float(q) for q in quantile_levels]
        if not levels or any(not 0.0 < q < 1.0 for q in levels):
            raise ValueError(f"quantile levels must be in (0, 1), got {levels}")
        if monotone_quantiles and any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError(f"monotone quantiles need strictly ascending levels, got {levels}")
        median_index = min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))
        self.register_buffer("quantile_levels", torch.tensor(levels), persistent=False)
        self.heads = nn.ModuleList(
            HorizonHead(
                d_model,
                len(levels),
                d_hidden=d_hidden,
                dropout=dropout,
                small_init=small_init,
                layerscale=layerscale,
                layerscale_init=layerscale_init,
                monotone=monotone_quantiles,
                median_index=median_index,
            )
            for _ in range(n_horizons)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        outputs = [head(x) for head in self.heads]
        point = torch.stack([p for p, _ in outputs], dim=1)
        quantiles = torch.stack([q for _, q in outputs], dim=1)
        return point, quantiles
