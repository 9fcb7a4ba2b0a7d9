"""Graph attention across the stocks of one day: a stack of PyG ``GATv2Conv`` layers with
edge attributes, several heads, pre-norm residual connections and an attention
temperature.

Temperature. GATv2 scores an edge ``j -> i`` per head as
``e_ij = a^T LeakyReLU(W_r x_i + W_l x_j + W_e e_ij)`` and normalizes with a softmax over
the in-edges of ``i``. :class:`TemperedGATv2Conv` divides the score by ``tau`` before that
softmax, ``alpha_ij = softmax_j(e_ij / tau)``: it overrides ``GATv2Conv.edge_update``
(same code, one division). Because ``e_ij`` is linear in ``a``, this equals using
``a / tau`` in place of ``a`` — the same function, but the parameter ``a`` keeps its scale
and its gradients are multiplied by ``1 / tau``. ``tau < 1`` sharpens the attention,
``tau > 1`` flattens it, ``tau = 1`` is plain GATv2.

Block (per layer, pre-norm)::

    h <- h + Dropout(ELU(GATv2(LayerNorm(h), edge_index, edge_attr))) * has_in_edge

with ``heads * (D / heads) = D`` concatenated output channels. The node states ``h`` may
carry more than the caller's ``x``: with ``d_node_extra`` the block owns a projection and
:meth:`GraphAttentionBlock.embed_nodes` gives ``x + Linear(extra)``, to pass to ``forward``. No self-loops are added (the
residual already carries the node's own state), and the update of a node without in-edges
is masked to zero: for such a node (and for every node of a day with ``E = 0``) the output
is exactly the input, and ``block(x) - x`` — the graph's contribution — is exactly zero.
The GAT parameters still take part in the autograd graph on such days (with zero
gradients), which keeps DDP from seeing "unused parameters".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv
from torch_geometric.utils import softmax


class TemperedGATv2Conv(GATv2Conv):
    """``GATv2Conv`` with attention logits divided by ``tau`` before the softmax."""

    def __init__(self, *args, tau: float = 1.0, **kwargs) -> None:
        if not tau > 0:
            raise ValueError(f"attention temperature tau must be > 0, got {tau}")
        super().__init__(*args, **kwargs)
        self.tau = float(tau)

    def edge_update(  # same as GATv2Conv.edge_update, plus "/ self.tau"
        self,
        x_j: Tensor,
        x_i: Tensor,
        edge_attr: Tensor | None,
        index: Tensor,
        ptr: Tensor | None,
        dim_size: int | None,
    ) -> Tensor:
        x = x_i + x_j
        if edge_attr is not None:
            if edge_attr.dim() == 1:
                edge_attr = edge_attr.view(-1, 1)
            assert self.lin_edge is not None
            edge_attr = self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
            x = x + edge_attr
        x = F.leaky_relu(x, self.negative_slope)
        alpha = (x * self.att).sum(dim=-1) / self.tau
        alpha = softmax(alpha, index, ptr, dim_size)
        return F.dropout(alpha, p=self.dropout, training=self.training)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"heads={self.heads}, tau={self.tau})"
        )


class GraphAttentionBlock(nn.Module):
    """Stacked tempered GATv2 layers. ``x [N, D]``, ``edge_index [2, E]`` (``src, dst``),
    ``edge_attr [E, A]`` -> ``[N, D]`` (and, with ``return_attention=True``, one
    ``[E, heads]`` attention tensor per layer)."""

    def __init__(
        self,
        d_model: int,
        *,
        edge_dim: int,
        n_layers: int = 2,
        n_heads: int = 4,
        tau: float = 1.0,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        d_node_extra: int | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by gat heads={n_heads}")
        self.edge_dim = edge_dim
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.convs = nn.ModuleList(
            TemperedGATv2Conv(
                d_model,
                d_model // n_heads,
                heads=n_heads,
                concat=True,
                dropout=attention_dropout,
                edge_dim=edge_dim,
                add_self_loops=False,
                tau=tau,
            )
            for _ in range(n_layers)
        )
        self.dropout = nn.Dropout(dropout)
        # Optional node inputs beyond x (e.g. a stock's latest raw features), see embed_nodes.
        self.node_extra = nn.Linear(d_node_extra, d_model) if d_node_extra is not None else None

    def embed_nodes(self, x: Tensor, extra: Tensor) -> Tensor:
        """Node states for :meth:`forward`: ``x [N, D] + Linear(extra [N, d_node_extra])``."""
        if self.node_extra is None:
            raise ValueError("this GraphAttentionBlock was built without d_node_extra")
        return x + self.node_extra(extra)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got {tuple(edge_index.shape)}")
        if edge_attr.shape != (edge_index.shape[1], self.edge_dim):
            raise ValueError(
                f"edge_attr must be [E={edge_index.shape[1]}, {self.edge_dim}], "
                f"got {tuple(edge_attr.shape)}"
            )
        has_in_edge = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        has_in_edge[edge_index[1]] = True
        update_mask = has_in_edge.to(x.dtype).unsqueeze(-1)  # [N, 1]
        edge_attr = edge_attr.to(x.dtype)
        attentions: list[Tensor] = []
        h = x
        for norm, conv in zip(self.norms, self.convs):
            if return_attention:
                message, (_, alpha) = conv(
                    norm(h), edge_index, edge_attr, return_attention_weights=True
                )
                attentions.append(alpha)
            else:
                message = conv(norm(h), edge_index, edge_attr)
            h = h + self.dropout(F.elu(message)) * update_mask
        return (h, attentions) if return_attention else h
