"""Baselines and scores for masked reconstruction (Stage-1).

:func:`interpolate_masked` fills every masked span of a window by linear interpolation
between the nearest unmasked bars on either side (a span touching the window's edge is
held at its one unmasked neighbour): the "no model" reference a reconstruction must beat.
"""

from __future__ import annotations

import torch
from torch import Tensor


def interpolate_masked(values: Tensor, masked: Tensor) -> Tensor:
    """``values [B, T, C]``, ``masked [B, T]`` bool -> ``[B, T, C]`` with the masked
    positions replaced by linear interpolation along T (unmasked positions unchanged). A
    window with every position masked is returned as zeros."""
    batch, steps, _ = values.shape
    out = values.clone()
    position = torch.arange(steps, device=values.device)
    for b in range(batch):
        known = torch.nonzero(~masked[b]).flatten()
        hidden = torch.nonzero(masked[b]).flatten()
        if len(hidden) == 0:
            continue
        if len(known) == 0:
            out[b] = 0.0
            continue
        right = torch.searchsorted(known, hidden).clamp(max=len(known) - 1)
        left = (torch.searchsorted(known, hidden) - 1).clamp(min=0)
        x0, x1 = known[left], known[right]
        y0, y1 = values[b, x0], values[b, x1]
        span = (x1 - x0).clamp(min=1).to(values.dtype).unsqueeze(-1)
        weight = ((position[hidden] - x0).to(values.dtype).unsqueeze(-1) / span).clamp(0.0, 1.0)
        same = (x1 == x0).unsqueeze(-1)
        out[b, hidden] = torch.where(same, y0, y0 + weight * (y1 - y0))
    return out


def masked_mse(prediction: Tensor, target: Tensor, masked: Tensor) -> float:
    """Mean squared error over the masked positions (all channels)."""
    where = masked.unsqueeze(-1).expand_as(target)
    return float((prediction[where] - target[where]).double().square().mean())
