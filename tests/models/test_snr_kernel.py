"""The Triton kernels of the SNR filter's gate (:mod:`kizashi.models.bk.triton_snr`) against
the PyTorch code of :meth:`kizashi.models.bk.phase2.SNRMemoryFilter.gate`: values and the
gradients of the moments, the decay and the learning rate.

Interpreter tests in float64, a GPU test in float32 against float64 (how each kind runs:
tests/models/kernel_checks.py).
"""

from __future__ import annotations

import pytest
import torch

from kizashi.models.bk.phase2 import SNRMemoryFilter
from tests.models.kernel_checks import F64, interpreter_only, max_rel_err


def gate_inputs(batch, heads, n, d, dtype=F64, device="cpu", seed=0):
    """``moments [B, H, N, 2 d]`` as a strided view (the kernels read any unit-stride view),
    ``decay, eta [B, H, N]``. The second moments are the squares' average of a spread around
    the first (``m2 >= mu^2``) except on planted rows: one with ``m2 < mu^2`` (the clamp), one
    all zero (``mu = m2 = 0``: the noise is eps alone)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(batch, n, heads, d, generator=g, dtype=F64)
    m2 = mu * mu + torch.rand(batch, n, heads, d, generator=g, dtype=F64) * 2.0
    m2[:, 0, 0] = 0.5 * mu[:, 0, 0] ** 2  # negative spread
    mu[:, -1, -1], m2[:, -1, -1] = 0.0, 0.0  # a silent row
    moments = torch.cat([mu, m2], dim=-1).transpose(1, 2)  # [B, H, N, 2 d], not contiguous
    decay = 0.05 + torch.rand(batch, heads, n, generator=g, dtype=F64)
    eta = 0.1 + torch.rand(batch, heads, n, generator=g, dtype=F64)
    return tuple(t.to(device=device, dtype=dtype) for t in (moments, decay, eta))


def gate_results(snr_filter, inputs, backend, weight_seed=1):
    """``[decay', eta', snr, dmoments, ddecay, deta]`` of ``sum(decay' w) + sum(eta' w')``."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    snr_filter.backend = backend
    decay, eta, snr = snr_filter.gate(*leaves)
    g = torch.Generator().manual_seed(weight_seed)
    w_decay = torch.randn(decay.shape, generator=g, dtype=F64).to(decay)
    w_eta = torch.randn(eta.shape, generator=g, dtype=F64).to(eta)
    ((decay * w_decay).sum() + (eta * w_eta).sum()).backward()
    return [decay.detach(), eta.detach(), snr.detach()] + [t.grad for t in leaves]


def snr_filter() -> SNRMemoryFilter:
    return SNRMemoryFilter(threshold=2.1, gamma_boost=2.0, eta_boost=1.5, ema_decay=0.9, chunk_size=16)


@interpreter_only
@pytest.mark.parametrize("shape", [(1, 1, 2, 3), (2, 3, 70, 5), (1, 2, 130, 32)])
def test_snr_gate_matches_torch_in_the_interpreter(shape):
    """Partial row tiles (70 and 130 rows per head are not multiples of 64), a feature width
    below the tile's 16 and one of 32; the clamp and the silent row included."""
    inputs = gate_inputs(*shape, seed=shape[2])
    got = gate_results(snr_filter(), inputs, "triton")
    want = gate_results(snr_filter(), inputs, "torch")
    names = ["decay", "eta", "snr", "dmoments", "ddecay", "deta"]
    errors = {name: max_rel_err(a, b) for name, a, b in zip(names, got, want)}
    assert max(errors.values()) < 1e-12, errors
    assert got[3].abs().sum() > 0 and got[4].abs().sum() > 0


@interpreter_only
def test_snr_gate_gradcheck_in_the_interpreter():
    from kizashi.models.bk.triton_snr import SNRGate

    moments, decay, eta = gate_inputs(1, 2, 9, 3, seed=4)
    moments = moments[:, :, 1:-1]  # no planted row: gradcheck needs a differentiable point
    decay, eta = decay[:, :, 1:-1].contiguous(), eta[:, :, 1:-1].contiguous()
    params = torch.tensor([2.1, 1.0, 0.5, 1e-6], dtype=F64)
    leaves = [t.detach().clone().requires_grad_(True) for t in (moments, decay, eta)]

    def gate(m, a, b):
        return SNRGate.apply(m, a, b, params)[:2]

    assert torch.autograd.gradcheck(gate, leaves, atol=1e-8)


@interpreter_only
def test_snr_filter_on_projection_heads_matches_torch_in_the_interpreter():
    """The whole filter (``[v, v^2]``, moving averages, gate) on the heads of a ``[B, N, H d]``
    projection read in place: values and the gradients of the projection, decay and rate."""
    batch, n, heads, d = 2, 40, 3, 5
    g = torch.Generator().manual_seed(8)
    projected = torch.randn(batch, n, heads * d, generator=g, dtype=F64)
    decay = 0.05 + torch.rand(batch, heads, n, generator=g, dtype=F64)
    eta = 0.1 + torch.rand(batch, heads, n, generator=g, dtype=F64)
    found = {}
    for backend in ("triton", "torch"):
        module = snr_filter()
        module.backend = backend
        leaves = [t.clone().requires_grad_(True) for t in (projected, decay, eta)]
        v = leaves[0].view(batch, n, heads, d).transpose(1, 2)
        new_decay, new_eta, snr = module(v, *leaves[1:])
        w = torch.randn(2, batch, heads, n, generator=torch.Generator().manual_seed(1), dtype=F64)
        ((new_decay * w[0]).sum() + (new_eta * w[1]).sum()).backward()
        found[backend] = [new_decay.detach(), new_eta.detach(), snr.detach()] + [t.grad for t in leaves]
    errors = [max_rel_err(a, b) for a, b in zip(found["triton"], found["torch"])]
    assert max(errors) < 1e-12, errors


@interpreter_only
def test_values_and_squares_in_the_interpreter():
    """``[v, v^2]`` from a strided view, its gradient in the view's layout, and a bf16 view
    squared in float32 (not in bf16)."""
    from kizashi.models.bk.triton_snr import values_and_squares

    g = torch.Generator().manual_seed(9)
    base = torch.randn(2, 11, 3 * 6, generator=g, dtype=F64, requires_grad=True)
    v = base.view(2, 11, 3, 6).transpose(1, 2)
    both = values_and_squares(v)
    assert both.is_contiguous() and torch.equal(both, torch.cat([v, v * v], -1))
    w = torch.randn(both.shape, generator=g, dtype=F64)
    (both * w).sum().backward()
    assert torch.allclose(base.grad.view(2, 11, 3, 6).transpose(1, 2), w[..., :6] + 2 * v * w[..., 6:], atol=1e-14)
    half = torch.randn(1, 3, 5, 4, generator=g).to(torch.bfloat16)
    squared = values_and_squares(half)
    assert squared.dtype == torch.float32 and torch.equal(squared[..., 4:], half.float() ** 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("n", [63, 65536])
def test_snr_gate_on_the_gpu_against_float64(n):
    """float32 on CUDA against the PyTorch code in float64 (inputs rounded to float32 first)."""
    inputs = gate_inputs(2, 8, n, 32, dtype=torch.float32, device="cuda", seed=n)
    got = gate_results(snr_filter(), inputs, "triton")
    want = gate_results(snr_filter(), [t.double() for t in inputs], "torch")
    names = ["decay", "eta", "snr", "dmoments", "ddecay", "deta"]
    errors = {name: max_rel_err(a, b) for name, a, b in zip(names, got, want)}
    assert max(errors.values()) < 1e-4, errors
