"""Gated residual network and variable selection network (Temporal Fusion Transformer,
Lim et al. 2021).

``GatedResidualNetwork``::

    a   = ELU(W_a x + W_c c)            # c: optional context
    b   = Dropout(W_b a)
    out = LayerNorm(skip(x) + GLU(W_g b))

``VariableSelectionNetwork`` turns ``[N, L, F]`` raw features into ``[N, L, D]`` with
softmax weights ``[N, L, F]`` over the F features. Every feature ``i`` has its own linear
embedding ``xi_i = x_i * w_i + b_i`` (``w_i, b_i`` in R^D, the input projection); the
weights come from a GRN over the raw feature vector. Two modes:

- ``per_feature=False`` (default, for ~400 features): ``sum_i v_i xi_i`` is computed as
  ``(v * x) @ W + v @ B`` without materializing ``[N, L, F, D]``, then one shared GRN
  transforms the selected embedding. Cost O(N L F D), memory O(N L (F + D)).
- ``per_feature=True`` (TFT-faithful, for small F): every feature has its own GRN over its
  embedding; the outputs are mixed by the weights. Materializes ``[N, L, F, D]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GatedLinearUnit(nn.Module):
    """``GLU(x) = (W1 x) * sigmoid(W2 x)``. ``[..., d_in] -> [..., d_out]``."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, 2 * d_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.glu(self.proj(x), dim=-1)


class GateAddNorm(nn.Module):
    """``LayerNorm(residual + GLU(Dropout(x)))``; x, residual ``[..., D]`` -> ``[..., D]``."""

    def __init__(self, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.glu = GatedLinearUnit(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.norm(residual + self.glu(self.dropout(x)))


class GatedResidualNetwork(nn.Module):
    """Gated residual network. ``x [..., d_in]`` (+ ``context [..., d_context]``) ->
    ``[..., d_out]``.

    The skip path is the identity when ``d_in == d_out``, else a linear map. A GRN built with
    ``d_context`` requires a context in ``forward`` (and one built without rejects it), so
    that no parameter silently goes unused.
    """

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        d_out: int | None = None,
        *,
        d_context: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        d_out = d_in if d_out is None else d_out
        self.d_in, self.d_out, self.d_context = d_in, d_out, d_context
        self.skip = nn.Identity() if d_in == d_out else nn.Linear(d_in, d_out)
        self.fc_in = nn.Linear(d_in, d_hidden)
        self.fc_context = (
            nn.Linear(d_context, d_hidden, bias=False) if d_context is not None else None
        )
        self.fc_hidden = nn.Linear(d_hidden, d_hidden)
        self.dropout = nn.Dropout(dropout)
        self.gate = GatedLinearUnit(d_hidden, d_out)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        hidden = self.fc_in(x)
        if self.fc_context is not None:
            if context is None:
                raise ValueError("this GatedResidualNetwork has d_context: pass a context")
            hidden = hidden + self.fc_context(context)
        elif context is not None:
            raise ValueError("this GatedResidualNetwork was built without d_context: no context")
        hidden = self.dropout(self.fc_hidden(F.elu(hidden)))
        return self.norm(self.skip(x) + self.gate(hidden))


class VariableSelectionNetwork(nn.Module):
    """Per-time-step variable selection. ``x [N, L, F]`` -> ``(out [N, L, D], weights [N, L, F])``.

    ``weights`` sum to 1 over F. See the module docstring for the two modes.
    """

    def __init__(
        self,
        n_features: int,
        d_model: int,
        *,
        dropout: float = 0.0,
        per_feature: bool = False,
    ) -> None:
        super().__init__()
        self.n_features, self.d_model, self.per_feature = n_features, d_model, per_feature
        # Input projection: one linear embedding R -> R^D per feature.
        self.feature_weight = nn.Parameter(torch.empty(n_features, d_model))
        self.feature_bias = nn.Parameter(torch.zeros(n_features, d_model))
        nn.init.normal_(self.feature_weight, std=1.0 / math.sqrt(d_model))
        self.selection = GatedResidualNetwork(
            n_features, d_model, n_features, dropout=dropout
        )
        if per_feature:
            self.feature_grns = nn.ModuleList(
                GatedResidualNetwork(d_model, d_model, dropout=dropout) for _ in range(n_features)
            )
            self.shared_grn = None
        else:
            self.feature_grns = None
            self.shared_grn = GatedResidualNetwork(d_model, d_model, dropout=dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[-1] != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {x.shape[-1]}")
        weights = torch.softmax(self.selection(x), dim=-1)  # [N, L, F]
        if self.feature_grns is None:
            # sum_i v_i (x_i w_i + b_i) without the [N, L, F, D] intermediate.
            selected = (weights * x) @ self.feature_weight + weights @ self.feature_bias
            return self.shared_grn(selected), weights
        embedded = x.unsqueeze(-1) * self.feature_weight + self.feature_bias  # [N, L, F, D]
        transformed = torch.stack(
            [grn(embedded[..., i, :]) for i, grn in enumerate(self.feature_grns)], dim=-2
        )  # [N, L, F, D]
        return (weights.unsqueeze(-1) * transformed).sum(dim=-2), weights
