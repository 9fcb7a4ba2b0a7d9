"""Reusable layers (kizashi.layers): shapes, FAN/SAN numerics, FreqDropout modes, the GAT
block's empty-graph path and temperature, and head initialization."""

from __future__ import annotations

import math

import pytest
import torch

from kizashi.layers import (
    FreqDropout,
    FrequencyAdaptiveNormalization,
    GatedResidualNetwork,
    GraphAttentionBlock,
    HorizonHeads,
    SliceAdaptiveNormalization,
    TemperedGATv2Conv,
    TemporalBlock,
    VariableSelectionNetwork,
)
from kizashi.layers.fan import dominant_frequency_split, slice_statistics
from kizashi.layers.heads import LayerScale, monotone_quantiles

N, L, F, D = 6, 16, 5, 8


@pytest.fixture(autouse=True, scope="module")
def _single_thread(torch_single_thread):
    """Tiny tensors: one torch thread is faster than several and deterministic."""


def random_graph(n_nodes: int, n_edges: int, edge_dim: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n_nodes, (2, n_edges), generator=g)
    return edge_index, torch.randn(n_edges, edge_dim, generator=g)


# --- GRN / VSN / temporal block -----------------------------------------------------------


def test_grn_shapes_and_context():
    grn = GatedResidualNetwork(F, D, 3, d_context=4)
    out = grn(torch.randn(N, L, F), torch.randn(N, L, 4))
    assert out.shape == (N, L, 3)
    with pytest.raises(ValueError, match="context"):
        grn(torch.randn(N, L, F))
    with pytest.raises(ValueError, match="without d_context"):
        GatedResidualNetwork(F, D)(torch.randn(N, F), torch.randn(N, 4))


@pytest.mark.parametrize("per_feature", [False, True])
def test_vsn_shapes_and_weights(per_feature):
    vsn = VariableSelectionNetwork(F, D, per_feature=per_feature)
    out, weights = vsn(torch.randn(N, L, F))
    assert out.shape == (N, L, D) and weights.shape == (N, L, F)
    torch.testing.assert_close(weights.sum(-1), torch.ones(N, L))


def test_vsn_efficient_mode_equals_weighted_embedding_sum():
    torch.manual_seed(0)
    vsn = VariableSelectionNetwork(F, D).eval()
    x = torch.randn(N, L, F)
    _, weights = vsn(x)
    embedded = x.unsqueeze(-1) * vsn.feature_weight + vsn.feature_bias  # [N, L, F, D]
    expected = vsn.shared_grn((weights.unsqueeze(-1) * embedded).sum(-2))
    torch.testing.assert_close(vsn(x)[0], expected)


def test_temporal_block_shapes_and_fully_masked_window():
    block = TemporalBlock(D, lstm_layers=2, n_heads=2, dropout=0.1)
    mask = torch.ones(N, L, dtype=torch.bool)
    mask[0] = False  # no observed day at all
    mask[1, :10] = False  # newly listed
    summary, sequence = block(torch.randn(N, L, D), mask)
    assert summary.shape == (N, D) and sequence.shape == (N, L, D)
    assert torch.isfinite(sequence).all()
    assert torch.equal(summary[0], torch.zeros(D))
    torch.testing.assert_close(summary, sequence[:, -1])


def test_temporal_block_summary_ignores_masked_steps():
    """Perturbing the LSTM states of unobserved steps must not move the summary: attention
    never reads them and the last step's own path does not touch them."""
    torch.manual_seed(0)
    block = TemporalBlock(D, n_heads=2).eval()
    x = torch.randn(2, L, D)
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[:, 3:7] = False
    reference, _ = block(x, mask)

    def perturb(module, inputs, output):
        encoded, state = output
        encoded = encoded.clone()
        encoded[:, 3:7] += 100.0 * torch.randn_like(encoded[:, 3:7])
        return encoded, state

    handle = block.lstm.register_forward_hook(perturb)
    try:
        perturbed, _ = block(x, mask)
        unmasked, _ = block(x, None)
    finally:
        handle.remove()
    torch.testing.assert_close(perturbed, reference)
    assert not torch.allclose(unmasked, reference)


# --- FAN / SAN ----------------------------------------------------------------------------


def sinusoid_window(length: int, frequency: int, amplitude: float = 2.0, phase: float = 0.3):
    t = torch.arange(length, dtype=torch.float32)
    return amplitude * torch.sin(2 * math.pi * frequency * t / length + phase)


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_fan_removes_a_pure_sinusoid(top_k):
    x = torch.stack([sinusoid_window(L, f) for f in (1, 2, 3, 5, 7)], dim=-1)  # [L, 5]
    x = x.unsqueeze(0).repeat(N, 1, 1)
    residual, removed = dominant_frequency_split(x, top_k)
    assert residual.abs().max() < 1e-5
    torch.testing.assert_close(removed, x, atol=1e-5, rtol=0)


def test_fan_keeps_what_is_not_dominant():
    big = sinusoid_window(L, 2, amplitude=5.0)
    small = sinusoid_window(L, 6, amplitude=0.5)
    x = (big + small).view(1, L, 1)
    residual, removed = dominant_frequency_split(x, 1)
    torch.testing.assert_close(residual.view(L), small, atol=1e-5, rtol=0)
    torch.testing.assert_close(removed.view(L), big, atol=1e-5, rtol=0)


def test_fan_is_finite_on_zero_and_masked_windows_with_gradients():
    fan = FrequencyAdaptiveNormalization(F, D, top_k=3)
    x = torch.zeros(N, L, F, requires_grad=True)
    mask = torch.ones(N, L, dtype=torch.bool)
    mask[0] = False
    mask[1, ::2] = False
    residual, restore = fan(x, mask)
    assert residual.shape == (N, L, F) and restore.shape == (N, L, D)
    assert torch.equal(residual, torch.zeros_like(residual))
    (residual.sum() + restore.square().sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in fan.parameters())
    assert torch.equal(restore[0], torch.zeros(L, D))  # unobserved steps carry nothing


def test_fan_residual_plus_removed_is_the_masked_input():
    x = torch.randn(N, L, F)
    mask = torch.rand(N, L) > 0.3
    residual, removed = dominant_frequency_split(x, 2, mask)
    torch.testing.assert_close(residual + removed, x * mask.unsqueeze(-1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="top_k"):
        dominant_frequency_split(x, L // 2 + 2)


def test_san_normalizes_each_slice():
    torch.manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(N, 20, F)
    normalized, mean, log_std = slice_statistics(x, 5)
    assert mean.shape == (N, 4, F) and log_std.shape == (N, 4, F)
    per_slice = normalized.view(N, 4, 5, F)
    torch.testing.assert_close(per_slice.mean(2), torch.zeros(N, 4, F), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        per_slice.var(2, unbiased=False), torch.ones(N, 4, F), atol=1e-3, rtol=0
    )


def test_san_is_finite_on_constant_zero_and_masked_windows():
    san = SliceAdaptiveNormalization(F, D, slice_len=3)  # 16 steps: first slice padded
    x = torch.full((N, L, F), 7.0)
    x[1] = 0.0
    x.requires_grad_(True)
    mask = torch.ones(N, L, dtype=torch.bool)
    mask[2] = False
    mask[3, -3:] = False  # last slice unobserved
    normalized, restore = san(x, mask)
    assert normalized.shape == (N, L, F) and restore.shape == (N, L, D)
    assert torch.isfinite(normalized).all() and torch.isfinite(restore).all()
    assert normalized.abs().max() < 1e-3
    (normalized.sum() + restore.square().sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in san.parameters())


# --- FreqDropout --------------------------------------------------------------------------


def test_freq_dropout_identity_in_eval_and_at_zero_rate():
    x = torch.randn(N, L, F)
    assert FreqDropout(0.5, 2).eval()(x) is x
    assert FreqDropout(0.0, 2).train()(x) is x


def test_freq_dropout_changes_input_in_train_and_keeps_mean():
    torch.manual_seed(0)
    x = torch.randn(N, L, F)
    out = FreqDropout(1.0, band_width=2).train()(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, x)
    torch.testing.assert_close(out.mean(1), x.mean(1), atol=1e-5, rtol=0)
    # with one band of width 2 gone, the signal keeps the rest of its energy
    assert 0 < out.square().sum() < x.square().sum()


def test_freq_dropout_keeps_unobserved_steps_zero():
    torch.manual_seed(0)
    mask = torch.rand(N, L) > 0.3
    x = torch.randn(N, L, F) * mask.unsqueeze(-1)
    out = FreqDropout(1.0, band_width=1).train()(x, mask)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))


# --- graph attention ----------------------------------------------------------------------


def test_gat_block_shapes_and_attention_per_layer():
    block = GraphAttentionBlock(D, edge_dim=3, n_layers=2, n_heads=4)
    edge_index, edge_attr = random_graph(N, 15)
    out, attentions = block(torch.randn(N, D), edge_index, edge_attr, return_attention=True)
    assert out.shape == (N, D)
    assert [a.shape for a in attentions] == [(15, 4), (15, 4)]


def test_gat_block_without_edges_is_the_residual_path():
    torch.manual_seed(0)
    block = GraphAttentionBlock(D, edge_dim=3, n_layers=3, n_heads=2, dropout=0.2)
    x = torch.randn(N, D, requires_grad=True)
    out = block(x, torch.empty(2, 0, dtype=torch.long), torch.empty(0, 3))
    assert torch.equal(out, x)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in block.parameters() if p.grad is not None)


def test_gat_block_leaves_nodes_without_in_edges_unchanged():
    block = GraphAttentionBlock(D, edge_dim=3, n_layers=2, n_heads=2).eval()
    x = torch.randn(N, D)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 1]])  # only nodes 1 and 2 receive
    out = block(x, edge_index, torch.randn(3, 3))
    untouched = [0, 3, 4, 5]
    assert torch.equal(out[untouched], x[untouched])
    assert not torch.allclose(out[[1, 2]], x[[1, 2]])


def attention_entropy(alpha: torch.Tensor, dst: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Mean over nodes and heads of the entropy of each node's in-edge attention."""
    terms = -(alpha * alpha.clamp_min(1e-30).log())  # [E, heads]
    per_node = torch.zeros(n_nodes, alpha.shape[1]).index_add(0, dst, terms)
    return per_node.mean()


def test_tau_divides_the_attention_logits():
    torch.manual_seed(0)
    n_nodes = 12
    edge_index, edge_attr = random_graph(n_nodes, 60, seed=1)
    x = torch.randn(n_nodes, D)
    convs = {}
    for tau in (1.0, 0.5, 2.0):
        conv = TemperedGATv2Conv(D, 4, heads=2, edge_dim=3, add_self_loops=False, tau=tau)
        if convs:
            conv.load_state_dict(convs[1.0].state_dict())
        convs[tau] = conv
    alphas = {tau: conv(x, edge_index, edge_attr, return_attention_weights=True)[1][1]
              for tau, conv in convs.items()}
    dst = edge_index[1]
    for tau in (0.5, 2.0):
        # softmax(e / tau) = alpha_1 ** (1 / tau), renormalized per destination node
        powered = alphas[1.0] ** (1.0 / tau)
        norm = torch.zeros(n_nodes, 2).index_add(0, dst, powered)[dst]
        torch.testing.assert_close(alphas[tau], powered / norm, atol=1e-5, rtol=1e-4)
    entropy = {tau: attention_entropy(a, dst, n_nodes) for tau, a in alphas.items()}
    assert entropy[0.5] < entropy[1.0] < entropy[2.0]


def test_smaller_tau_sharpens_the_block_attention():
    torch.manual_seed(0)
    edge_index, edge_attr = random_graph(N, 25, seed=2)
    x = torch.randn(N, D)
    sharp = GraphAttentionBlock(D, edge_dim=3, n_layers=1, n_heads=2, tau=0.25)
    plain = GraphAttentionBlock(D, edge_dim=3, n_layers=1, n_heads=2, tau=1.0)
    plain.load_state_dict(sharp.state_dict())
    _, (alpha_sharp,) = sharp(x, edge_index, edge_attr, return_attention=True)
    _, (alpha_plain,) = plain(x, edge_index, edge_attr, return_attention=True)
    dst = edge_index[1]
    assert attention_entropy(alpha_sharp, dst, N) < attention_entropy(alpha_plain, dst, N)
    with pytest.raises(ValueError, match="tau"):
        GraphAttentionBlock(D, edge_dim=3, tau=0.0)


# --- heads --------------------------------------------------------------------------------


def test_heads_shapes_and_monotone_quantiles():
    heads = HorizonHeads(D, 4, (0.1, 0.25, 0.5, 0.75, 0.9))
    point, quantiles = heads(10.0 * torch.randn(50, D))
    assert point.shape == (50, 4) and quantiles.shape == (50, 4, 5)
    assert (quantiles.diff(dim=-1) >= 0).all()
    raw = torch.tensor([[3.0, -1.0, 0.0, -5.0]])
    out = monotone_quantiles(raw, median_index=1)
    assert out[0, 1] == -1.0 and (out.diff(dim=-1) > 0).all()
    with pytest.raises(ValueError, match="ascending"):
        HorizonHeads(D, 2, (0.9, 0.1))


def test_heads_small_init_and_layerscale():
    torch.manual_seed(0)
    heads = HorizonHeads(256, 3, (0.1, 0.5, 0.9), small_init=True, layerscale=True,
                         layerscale_init=1e-4)
    weights = torch.cat([
        torch.cat([h.point.weight.flatten(), h.quantiles.weight.flatten()]) for h in heads.heads
    ])
    # truncated at +-2 std: the sample std is ~0.88 * 0.01
    assert 0.007 < weights.std().item() < 0.0105
    assert weights.abs().max().item() <= 0.02 + 1e-7
    for head in heads.heads:
        assert torch.equal(head.point.bias, torch.zeros(1))
        assert torch.equal(head.quantiles.bias, torch.zeros(3))
        assert isinstance(head.layer_scale, LayerScale)
        assert torch.equal(head.layer_scale.gamma, torch.full((256,), 1e-4))
    plain = HorizonHeads(256, 3, (0.1, 0.5, 0.9))
    assert plain.heads[0].point.weight.std() > 0.02
    assert isinstance(plain.heads[0].layer_scale, torch.nn.Identity)
