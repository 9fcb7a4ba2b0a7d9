"""The Triton layer norm of the BK models (:class:`kizashi.models.bk.layers.LayerNorm` on
:mod:`kizashi.models.bk.triton_layer_norm`) against ``nn.LayerNorm``: values and the gradients
of the input, weight and bias.

Interpreter tests in float64, a GPU test on a long sequence of narrow rows (how each kind
runs: tests/models/kernel_checks.py).
"""

from __future__ import annotations

import pytest
import torch

from kizashi.models.bk.layers import LayerNorm
from tests.models.kernel_checks import F64, interpreter_only, max_rel_err


def norm(width, dtype=F64, device="cpu", seed=0) -> LayerNorm:
    module = LayerNorm(width)
    with torch.no_grad():  # not the initial ones and zeros: their gradients would hide errors
        g = torch.Generator().manual_seed(seed)
        module.weight.copy_(1.0 + 0.3 * torch.randn(width, generator=g))
        module.bias.copy_(0.2 * torch.randn(width, generator=g))
    return module.to(device=device, dtype=dtype)


def results(module, x, backend, weight_seed=1):
    """``[y, dx, dweight, dbias]`` of ``sum(y * w)``; ``backend="torch"`` is ``nn.LayerNorm``."""
    module.backend = backend
    module.zero_grad()
    leaf = x.detach().clone().requires_grad_(True)
    y = module(leaf)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(weight_seed), dtype=F64).to(y)
    (y * w).sum().backward()
    return [y.detach(), leaf.grad, module.weight.grad.clone(), module.bias.grad.clone()]


@interpreter_only
@pytest.mark.parametrize("shape", [(1, 1, 4), (2, 37, 10), (3, 16, 32)])
def test_layer_norm_matches_torch_in_the_interpreter(shape):
    """One row; a width that is not a power of two and a partial last program; a constant row
    (variance 0: eps alone)."""
    module = norm(shape[-1], seed=shape[1])
    x = 3.0 * torch.randn(*shape, generator=torch.Generator().manual_seed(shape[-1]), dtype=F64) + 1.0
    x[0, 0] = 0.5
    got = results(module, x, "triton")
    want = results(module, x, "torch")
    errors = {name: max_rel_err(a, b) for name, a, b in zip(["y", "dx", "dweight", "dbias"], got, want)}
    assert max(errors.values()) < 1e-12, errors


@interpreter_only
def test_layer_norm_gradcheck_in_the_interpreter():
    from kizashi.models.bk.triton_layer_norm import LayerNormFunction

    module = norm(6, seed=4)
    x = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(5), dtype=F64, requires_grad=True)
    weight, bias = (p.detach().clone().requires_grad_(True) for p in (module.weight, module.bias))
    assert torch.autograd.gradcheck(lambda x, w, b: LayerNormFunction.apply(x, w, b, 1e-5, F64),
                                    (x, weight, bias), atol=1e-8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_layer_norm_on_the_gpu_against_float64():
    """Phase 2 small's rows at 64k tokens (65,536 x 256) in float32 against float64, and under
    bf16 autocast a float32 output, as ``nn.LayerNorm``'s."""
    module = norm(256, dtype=torch.float32, device="cuda", seed=7)
    x = torch.randn(1, 65536, 256, generator=torch.Generator().manual_seed(7)).cuda()
    got = results(module, x, "triton")
    want = results(norm(256, seed=7).cuda(), x.double(), "torch")
    errors = {name: max_rel_err(a, b) for name, a, b in zip(["y", "dx", "dweight", "dbias"], got, want)}
    assert max(errors.values()) < 1e-4, errors
    with torch.autocast("cuda", dtype=torch.bfloat16):
        module.backend = "triton"
        fused = module(x.bfloat16())
        module.backend = "torch"
        reference = module(x.bfloat16())
    assert fused.dtype == reference.dtype == torch.float32
    assert (fused - reference).abs().max().item() < 1e-4
