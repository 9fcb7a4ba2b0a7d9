"""The Triton kernels of Phase 2's memory resonance (:mod:`kizashi.models.bk.triton_resonance`)
against the PyTorch code of :class:`kizashi.models.bk.phase2.MemoryResonance`: the amplified
readout, the diagnostics, and the gradients of the readout and the gains.

Interpreter tests in float64, a GPU test in float32 against float64 (how each kind runs:
tests/models/kernel_checks.py).
"""

from __future__ import annotations

import pytest
import torch

from kizashi.models.bk.phase2 import MemoryResonance
from tests.models.kernel_checks import F64, interpreter_only, max_rel_err


def resonance(heads, d, m, dtype=F64, device="cpu", seed=0) -> MemoryResonance:
    """Gains spread around their initial 0.5 (a zero gain would hide its gradient), a low
    threshold so that modes switch on and off across the rows."""
    module = MemoryResonance(heads, d, m, threshold=0.1, temperature=0.05, use_zeta=True)
    with torch.no_grad():
        module.gain.normal_(0.5, 0.3, generator=torch.Generator().manual_seed(seed))
    return module.to(device=device, dtype=dtype)


def results(module, o, backend, diagnostics=True, weight_seed=1):
    """``[amplified, energy, gain, do, dgain]`` of ``sum(amplified * w)``."""
    module.backend = backend
    module.zero_grad()
    leaf = o.detach().clone().requires_grad_(True)
    out, energy, gain = module(leaf, diagnostics)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(weight_seed), dtype=F64).to(out)
    (out * w).sum().backward()
    return [out.detach(), energy, gain, leaf.grad, module.gain.grad.clone()]


@interpreter_only
@pytest.mark.parametrize("batch,n,heads,d,m", [(1, 1, 1, 4, 1), (2, 45, 3, 6, 5), (1, 70, 2, 16, 8)])
def test_resonance_matches_torch_in_the_interpreter(batch, n, heads, d, m):
    """A single row; widths and mode counts not powers of two; several programs per head (70
    steps, 32 per program) with a partial last one; a zero readout row (energy 0 / eps)."""
    module = resonance(heads, d, m, seed=n)
    o = torch.randn(batch, n, heads, d, generator=torch.Generator().manual_seed(d), dtype=F64)
    if n > 1:
        o[0, 1, 0] = 0.0
    got = results(module, o, "triton")
    want = results(module, o, "torch")
    names = ["amplified", "energy", "gain", "do", "dgain"]
    errors = {name: max_rel_err(a, b) for name, a, b in zip(names, got, want)}
    assert max(errors.values()) < 1e-12, errors
    assert got[4].abs().sum() > 0
    plain = results(module, o, "triton", diagnostics=False)
    assert plain[1] is None and plain[2] is None
    assert all(torch.equal(a, b) for a, b in zip([plain[0], *plain[3:]], [got[0], *got[3:]]))


@interpreter_only
def test_resonance_gradcheck_in_the_interpreter():
    from kizashi.models.bk.triton_resonance import Resonance

    module = resonance(2, 5, 3, seed=2)
    o = torch.randn(1, 6, 2, 5, generator=torch.Generator().manual_seed(3), dtype=F64, requires_grad=True)
    gain = module.gain.detach().clone().requires_grad_(True)
    params = torch.tensor([0.1, 0.05, 1e-8], dtype=F64)

    def amplify(o, gain):
        return Resonance.apply(o, module.modes, gain, params, False)[0]

    assert torch.autograd.gradcheck(amplify, (o, gain), atol=1e-8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("n", [63, 65536])
def test_resonance_on_the_gpu_against_float64(n):
    """Phase 2 small's shape (8 heads of 32, 8 modes), float32 on CUDA against float64."""
    module = resonance(8, 32, 8, dtype=torch.float32, device="cuda", seed=n)
    o = torch.randn(1, n, 8, 32, generator=torch.Generator().manual_seed(n)).cuda()
    got = results(module, o, "triton")
    want = results(module.double(), o.double(), "torch")
    names = ["amplified", "energy", "gain", "do", "dgain"]
    errors = {name: max_rel_err(a, b) for name, a, b in zip(names, got, want)}
    assert max(errors.values()) < 1e-4, errors
