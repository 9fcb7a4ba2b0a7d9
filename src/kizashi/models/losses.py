"""Multi-horizon training losses: Huber (point), pinball (quantiles), and an optional
correlation-aware term, all masked by a validity mask ``[N, H]``.

Reduction, shared by every term: each horizon is averaged over its valid entries; the
horizons are then averaged with ``horizon_weights`` (default equal), renormalized over the
horizons that have at least one valid entry. A batch with no valid entry gives a zero loss
that is still connected to the graph. Targets at invalid positions may be NaN: they are
replaced before any arithmetic, so no NaN reaches the gradients.

The correlation term is ``1 - mean Pearson(pred, target)`` over the (day, horizon) groups
with at least two valid stocks; ``day [N]`` says which day each row belongs to (None = all
rows are one day, the usual one-day batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _valid_mask(target: Tensor, valid: Tensor | None) -> Tensor:
    finite = torch.isfinite(target)
    if valid is None:
        return finite
    if valid.shape != target.shape:
        raise ValueError(f"valid mask {tuple(valid.shape)} must match target {tuple(target.shape)}")
    return valid.bool() & finite


def _horizon_weights(
    weights: Sequence[float] | Tensor | None, n_horizons: int, like: Tensor
) -> Tensor:
    if weights is None:
        return torch.ones(n_horizons, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if w.shape != (n_horizons,):
        raise ValueError(f"horizon_weights has {tuple(w.shape)} entries, expected ({n_horizons},)")
    return w


def _reduce(per_entry: Tensor, valid: Tensor, weights: Tensor) -> Tensor:
    """``per_entry [N, H]`` -> scalar: masked mean per horizon, weighted mean over horizons."""
    valid_f = valid.to(per_entry.dtype)
    count = valid_f.sum(dim=0)  # [H]
    per_horizon = (per_entry * valid_f).sum(dim=0) / count.clamp_min(1.0)
    active = weights * (count > 0).to(weights.dtype)
    return (per_horizon * active).sum() / active.sum().clamp_min(torch.finfo(weights.dtype).tiny)


def multi_horizon_huber(
    pred: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    horizon_weights: Sequence[float] | Tensor | None = None,
    delta: float = 1.0,
) -> Tensor:
    """Huber loss. ``pred, target [N, H]``, ``valid [N, H]`` (True = use) -> scalar."""
    mask = _valid_mask(target, valid)
    clean = torch.where(mask, target, torch.zeros_like(target))
    per_entry = F.huber_loss(pred, clean.to(pred.dtype), reduction="none", delta=delta)
    return _reduce(per_entry, mask, _horizon_weights(horizon_weights, pred.shape[1], pred))


def pinball_loss(
    quantiles: Tensor,
    target: Tensor,
    levels: Sequence[float] | Tensor,
    valid: Tensor | None = None,
    horizon_weights: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """Quantile (pinball) loss averaged over levels. ``quantiles [N, H, Q]``,
    ``target [N, H]``, ``levels [Q]`` -> scalar."""
    tau = torch.as_tensor(levels, dtype=quantiles.dtype, device=quantiles.device)
    if tau.shape != (quantiles.shape[-1],):
        raise ValueError(f"{tuple(tau.shape)} levels for {quantiles.shape[-1]} quantile outputs")
    mask = _valid_mask(target, valid)
    clean = torch.where(mask, target, torch.zeros_like(target)).to(quantiles.dtype)
    error = clean.unsqueeze(-1) - quantiles  # [N, H, Q]
    per_entry = torch.maximum(tau * error, (tau - 1.0) * error).mean(dim=-1)
    weights = _horizon_weights(horizon_weights, quantiles.shape[1], quantiles)
    return _reduce(per_entry, mask, weights)


def correlation_loss(
    pred: Tensor,
    target: Tensor,
    day: Tensor | None = None,
    valid: Tensor | None = None,
    horizon_weights: Sequence[float] | Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """``1 - mean Pearson correlation`` of ``pred`` and ``target`` (both ``[N, H]``) within
    each (day, horizon) group with >= 2 valid rows; ``day [N]`` any integer labels."""
    n, n_horizons = pred.shape
    mask = _valid_mask(target, valid)
    if day is None:
        group = torch.zeros(n, dtype=torch.long, device=pred.device)
        n_groups = 1
    else:
        if day.shape != (n,):
            raise ValueError(f"day must be [N={n}], got {tuple(day.shape)}")
        labels, group = torch.unique(day, return_inverse=True)
        n_groups = labels.numel()
    valid_f = mask.to(pred.dtype)
    clean = torch.where(mask, target, torch.zeros_like(target)).to(pred.dtype)

    def group_sum(values: Tensor) -> Tensor:  # [N, H] -> [G, H]
        return values.new_zeros(n_groups, n_horizons).index_add(0, group, values)

    count = group_sum(valid_f)
    denom = count.clamp_min(1.0)
    centred_pred = (pred - (group_sum(pred * valid_f) / denom)[group]) * valid_f
    centred_target = (clean - (group_sum(clean * valid_f) / denom)[group]) * valid_f
    cov = group_sum(centred_pred * centred_target)
    var_pred = group_sum(centred_pred.square())
    var_target = group_sum(centred_target.square())
    corr = cov / (torch.sqrt(var_pred + eps) * torch.sqrt(var_target + eps))  # [G, H]
    usable = (count >= 2).to(pred.dtype)
    weights = _horizon_weights(horizon_weights, n_horizons, pred).unsqueeze(0) * usable
    total = weights.sum()
    mean_corr = (corr * weights).sum() / total.clamp_min(torch.finfo(pred.dtype).tiny)
    # No usable group: a zero that stays connected to the graph (no host sync needed).
    return torch.where(total > 0, 1.0 - mean_corr, pred.sum() * 0.0)


@dataclass
class LossConfig:
    """Weights of the loss terms. ``horizon_weights`` e.g. ``(1.0, 0.8, 0.7, 0.5)``."""

    huber_delta: float = 1.0
    horizon_weights: tuple[float, ...] | None = None
    quantile_weight: float = 1.0
    rank_weight: float = 0.0  # weight of the correlation term (0 = off)

    def __post_init__(self) -> None:
        if self.horizon_weights is not None:
            self.horizon_weights = tuple(float(w) for w in self.horizon_weights)
            if any(w < 0 for w in self.horizon_weights) or not any(self.horizon_weights):
                raise ValueError(f"horizon_weights must be >= 0, not all 0: {self.horizon_weights}")
        if not self.huber_delta > 0:
            raise ValueError(f"huber_delta must be > 0, got {self.huber_delta}")
        for name in ("quantile_weight", "rank_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class ForecastLoss(nn.Module):
    """``huber + quantile_weight * pinball + rank_weight * (1 - corr)``.

    ``forward(outputs, target [N, H], valid [N, H] | None, day [N] | None)`` with ``outputs``
    the model's dict (``point [N, H]``, ``quantiles [N, H, Q]``); returns a dict of scalars
    ``loss``, ``huber``, ``pinball`` and (when on) ``rank``.
    """

    def __init__(self, config: LossConfig, quantile_levels: Sequence[float]) -> None:
        super().__init__()
        self.config = config
        self.register_buffer(
            "quantile_levels", torch.tensor([float(q) for q in quantile_levels]), persistent=False
        )

    def forward(
        self,
        outputs: Mapping[str, Tensor],
        target: Tensor,
        valid: Tensor | None = None,
        day: Tensor | None = None,
    ) -> dict[str, Tensor]:
        cfg = self.config
        weights = cfg.horizon_weights
        terms = {
            "huber": multi_horizon_huber(outputs["point"], target, valid, weights, cfg.huber_delta),
            "pinball": pinball_loss(
                outputs["quantiles"], target, self.quantile_levels, valid, weights
            ),
        }
        loss = terms["huber"] + cfg.quantile_weight * terms["pinball"]
        if cfg.rank_weight > 0:
            terms["rank"] = correlation_loss(outputs["point"], target, day, valid, weights)
            loss = loss + cfg.rank_weight * terms["rank"]
        terms["loss"] = loss
        return terms
