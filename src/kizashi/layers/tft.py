"""Temporal block of a Temporal Fusion Transformer: LSTM encoder, then multi-head
self-attention over the L time steps, each followed by a gated residual + LayerNorm, then a
position-wise GRN.

    x [N, L, D] -> LSTM -> GateAddNorm(., x) = h          [N, L, D]
    h -> MultiheadAttention(h, h, h, key_padding_mask=~mask) -> GateAddNorm(., h) = a
    a -> GatedResidualNetwork -> sequence [N, L, D];  summary = sequence[:, -1]  [N, D]

All L steps of a window are known at the window's last day, so attention is not causal:
the summary (the last step) may look at every observed step of its window.

Missing days: the caller zeroes the inputs of unobserved steps; attention never attends to
them (key padding mask). A window with no observed step at all keeps its keys unmasked
(an all-masked softmax row would be NaN) and its sequence and summary are set to zero.
"""

from __future__ import annotations

from torch import Tensor, nn

from kizashi.layers.grn import GateAddNorm, GatedResidualNetwork


class TemporalBlock(nn.Module):
    """LSTM + temporal self-attention. ``x [N, L, D]``, ``mask [N, L]`` (True = observed) ->
    ``(summary [N, D], sequence [N, L, D])``."""

    def __init__(
        self, d_model: int, *, lstm_layers: int = 1, n_heads: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.lstm = nn.LSTM(
            d_model,
            d_model,
            num_layers=lstm_layers,
            batch_first=True,
            dropout=dropout if lstm_layers > 1 else 0.0,
        )
        self.lstm_gate = GateAddNorm(d_model, dropout)
        self.attention = nn.MultiheadAttention(
            d_model, n_heads, dropout=dropout, batch_first=True
        )
        self.attention_gate = GateAddNorm(d_model, dropout)
        self.feed_forward = GatedResidualNetwork(d_model, d_model, dropout=dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        encoded, _ = self.lstm(x)
        hidden = self.lstm_gate(encoded, x)
        if mask is None:
            key_padding = None
            any_observed = None
        else:
            any_observed = mask.any(dim=1)  # [N]
            # True = ignore; a fully missing window attends to everything (no NaN row).
            key_padding = ~mask & any_observed.unsqueeze(1)
        attended, _ = self.attention(
            hidden, hidden, hidden, key_padding_mask=key_padding, need_weights=False
        )
        sequence = self.feed_forward(self.attention_gate(attended, hidden))
        if any_observed is not None:
            sequence = sequence * any_observed.to(sequence.dtype).view(-1, 1, 1)
        return sequence[:, -1], sequence
