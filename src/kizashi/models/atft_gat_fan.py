"""ATFT-GAT-FAN: a multi-horizon return model over one day of stocks.

Per stock (``N`` stocks of a day, windows of ``L`` days, ``F`` features, ``D = hidden``)::

    x [N, L, F] * mask
      -> FreqDropout (train only, if freq_dropout > 0)
      -> FAN (if use_fan) -> SAN (if use_san)       residual x, restore terms [N, L, D]
      -> VariableSelectionNetwork (per-feature linear embedding = the input projection,
         softmax feature weights [N, L, F]) + restore terms     -> [N, L, D]
      -> TemporalBlock: LSTM + temporal self-attention         -> summary s [N, D]

Across the stocks of the day::

    v = s + Linear(x[:, -1] * mask[:, -1])   (gat_latest_features; else v = s)   [N, D]
    g = GraphAttentionBlock(v, edge_index, edge_attr) - v      [N, D]  (the graph's part)

Why the latest day's features go into the graph nodes: what a stock learns from its peers
is mostly what they did *today* (their latest returns against the market and sector), and
the temporal summary ``s`` is trained for the stock's own forecast, so it need not keep
that. On the synthetic market's correlated-peer signal (240 stocks, 1,000 days, GAT on vs
off, same seed), GAT over ``s`` alone left the forecasts uncorrelated with the peer
component (Spearman ~0.0 across epochs), while ``v`` above gave 0.3-0.4 within two epochs
(``tests/models/test_gat_acceptance.py`` holds the out-of-sample comparison).

``g`` is exactly zero for a stock without in-edges and for every stock of a day with
``E = 0``; with ``gat=False`` no GAT module exists and ``g`` is zeros of the same width, so
the rest of the module graph (fusion, heads) is identical with GAT on or off. Then::

    GatedResidualNetwork([s, g] [N, 2D] -> D) -> HorizonHeads -> point [N, H], quantiles [N, H, Q]

Every switch defaults to the plain model except ``gat`` (graph attention is part of the
model; ``gat=False`` is the ablation). ``gat_tau=1`` is plain GATv2.

Parameter counts (computed with ``create_model("atft_gat_fan", preset, n_features=F)``;
the other fields at their defaults; FAN adds ``F*D + D``, SAN ``2F*D + D^2 + 2D``,
gat_latest_features ``F*D + D`` of the GAT's)::

    preset  hidden  lstm  attn_heads  gat layers x heads    F   gat on     gat off    +FAN+SAN
    small       64     1           4               2 x 4  100   224,928    200,928    248,416
    small       64     1           4               2 x 4  400   341,328    298,128    422,416
    base       128     2           8               3 x 8  100   975,904    861,216  1,031,072
    base       128     2           8               3 x 8  400 1,207,504  1,054,416  1,377,872
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kizashi.layers.fan import FrequencyAdaptiveNormalization, SliceAdaptiveNormalization
from kizashi.layers.freq_dropout import FreqDropout
from kizashi.layers.gat import GraphAttentionBlock
from kizashi.layers.grn import GatedResidualNetwork, VariableSelectionNetwork
from kizashi.layers.heads import HorizonHeads
from kizashi.layers.tft import TemporalBlock
from kizashi.models.pretrained import PretrainedMixin
from kizashi.models.registry import register_model

@dataclass
class ATFTGATFANConfig:
    """Configuration of :class:`ATFTGATFAN` (validated on construction)."""

    n_features: int | None = None  # F, required: number of input feature columns
    horizons: tuple[int, ...] = (1, 5, 10, 20)  # forecast horizons in days (H = len)
    window: int = 20  # L, days per input window
    hidden: int = 64  # D
    lstm_layers: int = 1
    attn_heads: int = 4  # temporal self-attention heads (D % attn_heads == 0)
    dropout: float = 0.1
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)  # ascending levels (Q = len)
    monotone_quantiles: bool = True  # quantile outputs sorted by construction
    vsn_per_feature: bool = False  # one GRN per feature (small F only); else shared/efficient
    # Non-stationarity handling (off = plain).
    use_fan: bool = False
    fan_top_k: int = 3  # dominant rFFT bins removed per window and feature
    use_san: bool = False
    san_slice_len: int = 5
    freq_dropout: float = 0.0  # probability of masking one band per window and feature
    freq_dropout_band: int = 2  # band width in rFFT bins
    # Graph attention across the day's stocks.
    gat: bool = True
    gat_layers: int = 2
    gat_heads: int = 4  # D % gat_heads == 0
    gat_tau: float = 1.0  # attention temperature (1 = plain GATv2)
    gat_attention_dropout: float = 0.0
    edge_dim: int = 3  # edge_attr width (correlation, |correlation|, same_sector)
    gat_latest_features: bool = True  # GAT nodes = summary + Linear(latest day's features)
    # Heads.
    head_hidden: int | None = None  # hidden width of each head's MLP (None = hidden)
    small_init_heads: bool = False  # trunc-normal std 0.01 output layers, zero bias
    layerscale: bool = False  # LayerScale on the heads' residual branch
    layerscale_init: float = 1e-2

    def __post_init__(self) -> None:
        if isinstance(self.horizons, list | tuple):
            self.horizons = tuple(self.horizons)
        if isinstance(self.quantiles, list | tuple):
            self.quantiles = tuple(float(q) for q in self.quantiles)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value is invalid."""

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

        if self.n_features is None:
            raise ValueError("n_features is required (the number of input feature columns)")
        for name in (
            "n_features", "window", "hidden", "lstm_layers", "attn_heads", "fan_top_k",
            "san_slice_len", "freq_dropout_band", "gat_layers", "gat_heads", "edge_dim",
        ):
            positive_int(name)
        if self.head_hidden is not None:
            positive_int("head_hidden")
        if not isinstance(self.horizons, tuple) or not self.horizons:
            raise ValueError(f"horizons must be a non-empty sequence, got {self.horizons!r}")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.horizons):
            raise ValueError(f"horizons must be positive ints, got {self.horizons!r}")
        if len(set(self.horizons)) != len(self.horizons):
            raise ValueError(f"horizons must be distinct, got {self.horizons!r}")
        if not isinstance(self.quantiles, tuple) or not self.quantiles:
            raise ValueError(f"quantiles must be a non-empty sequence, got {self.quantiles!r}")
        if any(not 0.0 < q < 1.0 for q in self.quantiles):
            raise ValueError(f"quantiles must lie in (0, 1), got {self.quantiles!r}")
        if any(b <= a for a, b in zip(self.quantiles, self.quantiles[1:])):
            raise ValueError(f"quantiles must be strictly ascending, got {self.quantiles!r}")
        for name in ("dropout", "freq_dropout", "gat_attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if self.hidden % self.attn_heads:
            raise ValueError(
                f"hidden={self.hidden} must be divisible by attn_heads={self.attn_heads}"
            )
        if self.hidden % self.gat_heads:
            raise ValueError(
                f"hidden={self.hidden} must be divisible by gat_heads={self.gat_heads}"
            )
        n_bins = self.window // 2 + 1
        if self.use_fan and self.fan_top_k > n_bins:
            raise ValueError(
                f"fan_top_k={self.fan_top_k} exceeds the {n_bins} rFFT bins of window={self.window}"
            )
        if self.freq_dropout > 0 and self.freq_dropout_band > max(n_bins - 1, 1):
            raise ValueError(
                f"freq_dropout_band={self.freq_dropout_band} exceeds the {n_bins - 1} non-mean "
                f"rFFT bins of window={self.window}"
            )
        if self.use_san and self.san_slice_len > self.window:
            raise ValueError(f"san_slice_len={self.san_slice_len} exceeds window={self.window}")
        if not self.gat_tau > 0:
            raise ValueError(f"gat_tau must be > 0, got {self.gat_tau!r}")
        if not self.layerscale_init > 0:
            raise ValueError(f"layerscale_init must be > 0, got {self.layerscale_init!r}")


PRESETS: dict[str, dict[str, object]] = {
    "small": dict(hidden=64, lstm_layers=1, attn_heads=4, gat_layers=2, gat_heads=4),
    "base": dict(hidden=128, lstm_layers=2, attn_heads=8, gat_layers=3, gat_heads=8),
}


@register_model("atft_gat_fan", config_cls=ATFTGATFANConfig, presets=PRESETS)
class ATFTGATFAN(PretrainedMixin, nn.Module):
    """Multi-horizon point + quantile forecasts for the stocks of one day.

    ``forward(batch)`` with ``batch``:
      ``x`` [N, L, F] float, ``mask`` [N, L] bool (True = observed day; optional, default
      all observed), ``edge_index`` [2, E] int64 (src, dst node indices within the batch),
      ``edge_attr`` [E, edge_dim] float (both required when ``gat`` is on; E may be 0).
    Returns ``point`` [N, H], ``quantiles`` [N, H, Q], ``variable_weights`` [N, L, F].
    """

    def __init__(self, config: ATFTGATFANConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d = config.hidden
        self.freq_dropout = (
            FreqDropout(config.freq_dropout, config.freq_dropout_band)
            if config.freq_dropout > 0
            else None
        )
        self.fan = (
            FrequencyAdaptiveNormalization(config.n_features, d, config.fan_top_k)
            if config.use_fan
            else None
        )
        self.san = (
            SliceAdaptiveNormalization(config.n_features, d, config.san_slice_len)
            if config.use_san
            else None
        )
        self.vsn = VariableSelectionNetwork(
            config.n_features, d, dropout=config.dropout, per_feature=config.vsn_per_feature
        )
        self.temporal = TemporalBlock(
            d, lstm_layers=config.lstm_layers, n_heads=config.attn_heads, dropout=config.dropout
        )
        self.gat = (
            GraphAttentionBlock(
                d,
                edge_dim=config.edge_dim,
                n_layers=config.gat_layers,
                n_heads=config.gat_heads,
                tau=config.gat_tau,
                dropout=config.dropout,
                attention_dropout=config.gat_attention_dropout,
                d_node_extra=config.n_features if config.gat_latest_features else None,
            )
            if config.gat
            else None
        )
        self.fuse = GatedResidualNetwork(2 * d, d, d, dropout=config.dropout)
        self.heads = HorizonHeads(
            d,
            len(config.horizons),
            config.quantiles,
            d_hidden=config.head_hidden,
            dropout=config.dropout,
            small_init=config.small_init_heads,
            layerscale=config.layerscale,
            layerscale_init=config.layerscale_init,
            monotone_quantiles=config.monotone_quantiles,
        )

    def _check_batch(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        cfg = self.config
        if "x" not in batch:
            raise ValueError(f"batch needs 'x' [N, L, F]; got keys {sorted(batch)}")
        x = batch["x"]
        if x.dim() != 3 or x.shape[1] != cfg.window or x.shape[2] != cfg.n_features:
            raise ValueError(
                f"x must be [N, window={cfg.window}, n_features={cfg.n_features}], "
                f"got {tuple(x.shape)}"
            )
        mask = batch.get("mask")
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        elif mask.shape != x.shape[:2]:
            raise ValueError(f"mask must be [N, L] = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        if self.gat is not None and ("edge_index" not in batch or "edge_attr" not in batch):
            raise ValueError(
                "gat is on: batch needs 'edge_index' [2, E] and 'edge_attr' [E, edge_dim] "
                "(E may be 0)"
            )
        return x, mask.bool()

    def encode(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-stock temporal encoding. ``x [N, L, F]``, ``mask [N, L]`` ->
        ``(summary [N, D], variable_weights [N, L, F])``."""
        step_mask = mask.unsqueeze(-1).to(x.dtype)
        x = x * step_mask
        if self.freq_dropout is not None:
            x = self.freq_dropout(x, mask)
        restore = None
        for normalizer in (self.fan, self.san):
            if normalizer is not None:
                x, term = normalizer(x, mask)
                restore = term if restore is None else restore + term
        embedded, variable_weights = self.vsn(x)
        if restore is not None:
            embedded = embedded + restore
        summary, _ = self.temporal(embedded * step_mask, mask)
        return summary, variable_weights

    def graph_context(self, summary: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        """What the day's graph adds to each stock: ``[N, D]``, zeros without GAT or edges."""
        if self.gat is None:
            return torch.zeros_like(summary)
        nodes = summary
        if self.gat.node_extra is not None:
            x, mask = batch["x"], batch.get("mask")
            latest = x[:, -1] if mask is None else x[:, -1] * mask[:, -1:].to(x.dtype)
            nodes = self.gat.embed_nodes(summary, latest)
        return self.gat(nodes, batch["edge_index"], batch["edge_attr"]) - nodes

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        x, mask = self._check_batch(batch)
        summary, variable_weights = self.encode(x, mask)
        graph = self.graph_context(summary, batch)
        fused = self.fuse(torch.cat([summary, graph], dim=-1))
        point, quantiles = self.heads(fused)
        return {"point": point, "quantiles": quantiles, "variable_weights": variable_weights}
