"""BK-Core (PyTorch reference, CPU): agreement with a dense inverse, gradcheck, broadcasting
and errors, and stability at N = 1,000,000 where the naive determinant recursion overflows.

Accuracy stated here: complex128 matches ``torch.linalg`` to 1e-11 relative (random
non-normal matrices, Im z >= 0.3); complex64 matches complex128 to 2e-5 relative on
Hermitian inputs with Im z = 0.5 (also at N = 10^6).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from kizashi.models.bk import core
from kizashi.models.bk.core import bk_core, bk_core_dense

C128, C64 = torch.complex128, torch.complex64


def random_tridiagonal(batch, n, dtype=C128, seed=0, hermitian=False):
    gen = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == C128 else torch.float32
    if hermitian:
        a = torch.randn(*batch, n, generator=gen, dtype=real).to(dtype)
        b = torch.randn(*batch, n - 1, generator=gen, dtype=dtype)
        c = b.conj()
    else:
        a = torch.randn(*batch, n, generator=gen, dtype=dtype)
        b = torch.randn(*batch, n - 1, generator=gen, dtype=dtype) * 0.7
        c = torch.randn(*batch, n - 1, generator=gen, dtype=dtype) * 0.7
    z_imag = 0.3 + torch.rand(*batch, generator=gen, dtype=real)
    z = (torch.randn(*batch, generator=gen, dtype=real) + 1j * z_imag).to(dtype)
    return a, b, c, z


def dense_diag(a, b, c, z):
    t = torch.diag_embed(a - z[..., None])
    if a.shape[-1] > 1:
        t = t + torch.diag_embed(b, offset=1) + torch.diag_embed(c, offset=-1)
    return bk_core_dense_reference(t)


def bk_core_dense_reference(t):
    """``diag(inv(t))`` one matrix at a time (torch 2.13's batched complex inverse on CPU is
    wrong after the thread count changes; see ``core.bk_core_dense``)."""
    flat = t.reshape(-1, *t.shape[-2:])
    return torch.stack([torch.linalg.inv(m).diagonal() for m in flat]).reshape(*t.shape[:-1])


def rel_err(x, ref):
    return ((x - ref).abs().max() / ref.abs().max()).item()


def toeplitz_bulk(w: complex) -> complex:
    """Bulk diagonal of (T - z)^-1 for constant diagonal a (w = a - z) and b = c = 1: the
    pivot r solves r = w - 1/r (attracting root, |r| > 1) and G = 1/(2r - w), which is
    1/sqrt(w^2 - 4) on that branch."""
    root = (w * w - 4) ** 0.5
    r = max((w + root) / 2, (w - root) / 2, key=abs)
    return 1 / (2 * r - w)


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 200, 512])
def test_matches_dense_inverse(n):
    a, b, c, z = random_tridiagonal((3, 2), n, seed=n)
    g = bk_core(a, b, c, z)
    assert g.shape == (3, 2, n) and g.dtype == C128
    assert rel_err(g, dense_diag(a, b, c, z)) < 1e-11
    assert rel_err(bk_core_dense(a, b, c, z), dense_diag(a, b, c, z)) < 1e-12


def test_z_forms_and_broadcasting():
    a, b, c, _ = random_tridiagonal((4, 3), 40, seed=1)
    z_scalar = 0.2 + 0.7j
    want = dense_diag(a, b, c, torch.full((4, 3), z_scalar, dtype=C128))
    assert rel_err(bk_core(a, b, c, z_scalar), want) < 1e-11
    z_batch = torch.tensor([0.1 + 0.5j, -0.3 + 1.0j, 0.4 + 0.3j], dtype=C128)  # [H]
    want = dense_diag(a, b, c, z_batch.expand(4, 3))
    assert rel_err(bk_core(a, b, c, z_batch), want) < 1e-11
    assert rel_err(bk_core(a, b, c, z_batch.expand(4, 3)[..., None]), want) < 1e-11
    # shared off-diagonals broadcast over the batch
    g = bk_core(a, b[0], c[0], z_scalar)
    want = dense_diag(a, b[0].expand(4, 3, 39), c[0].expand(4, 3, 39), torch.full((4, 3), z_scalar, dtype=C128))
    assert rel_err(g, want) < 1e-11


def test_real_inputs_promote():
    a, b, _, _ = random_tridiagonal((2,), 30, seed=2, hermitian=True)
    g32 = bk_core(a.real.float(), b.real.float(), b.real.float(), 0.5j)
    g64 = bk_core(a.real, b.real, b.real, 0.5j)
    assert g32.dtype == C64 and g64.dtype == C128
    assert rel_err(g32.to(C128), g64) < 2e-6


def test_one_complex_dtype_rule_for_both_resolvents():
    """``bk_core`` and ``bk_core_causal`` compute in ``core.complex_dtype`` of their inputs:
    half precision in complex64 (what the Triton kernel runs), float64 in complex128."""
    from kizashi.models.bk.layers import bk_core_causal

    gen = torch.Generator().manual_seed(12)
    a, b = torch.randn(2, 6, generator=gen), torch.rand(2, 5, generator=gen) + 0.2
    for real, expected in ((torch.float16, C64), (torch.bfloat16, C64), (torch.float32, C64), (torch.float64, C128)):
        assert core.complex_dtype(real) == expected
        assert bk_core(a.to(real), b.to(real), b.to(real), 0.5j).dtype == expected
        assert bk_core_causal(a.to(real), b.to(real), b.to(real), 0.5j).dtype == expected
    assert core.complex_dtype(torch.float32, torch.complex128) == C128
    assert core.complex_dtype(torch.bfloat16, torch.complex64) == C64


def test_bad_input_errors():
    a, b, c, z = random_tridiagonal((2,), 10)
    with pytest.raises(ValueError, match=r"\[\.\.\., N-1\]"):
        bk_core(a, b[..., :-1], c, z)
    with pytest.raises(ValueError, match="broadcast"):
        bk_core(a, b, c, torch.zeros(5, dtype=C128))
    with pytest.raises(ValueError, match="backend"):
        bk_core(a, b, c, z, backend="cuda")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(ValueError, match="CUDA"):
            bk_core(a, b, c, z, backend="triton")


def test_auto_backend_on_cpu_never_imports_triton():
    import sys

    a, b, c, z = random_tridiagonal((2,), 10)
    bk_core(a, b, c, z, backend="auto")
    assert "kizashi.models.bk.triton_core" not in sys.modules or torch.cuda.is_available()


def test_gradcheck_complex128():
    a, b, c, z = random_tridiagonal((2,), 9, seed=3)
    leaves = [t.clone().requires_grad_(True) for t in (a, b, c, z)]
    assert torch.autograd.gradcheck(lambda *x: bk_core(*x), leaves)


def test_gradcheck_multi_chunk_and_broadcast_z():
    """N = 40 runs several chunks in both scans; a scalar-per-row z broadcast over heads."""
    a, b, c, _ = random_tridiagonal((2, 2), 40, seed=4)
    z = torch.tensor([[0.2 + 0.6j], [-0.1 + 0.9j]], dtype=C128)  # [B, 1] over [B, H]
    leaves = [t.clone().requires_grad_(True) for t in (a, b, c, z)]
    assert torch.autograd.gradcheck(lambda *x: bk_core(*x), leaves)


def test_gradients_match_dense_autograd():
    a, b, c, z = random_tridiagonal((3,), 100, seed=5)
    weight = torch.randn(3, 100, dtype=C128)
    grads = []
    for fn in (bk_core, dense_diag):
        leaves = [t.clone().requires_grad_(True) for t in (a, b, c, z)]
        (fn(*leaves) * weight).real.sum().backward()
        grads.append([t.grad for t in leaves])
    for got, want in zip(*grads):
        assert rel_err(got, want) < 1e-10


def test_gradients_flow_to_real_off_diagonals():
    """Real off-diagonal parameters (as the models' couplings are) get finite, non-zero
    gradients of their own dtype."""
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(2, 50, generator=gen, dtype=torch.float64, requires_grad=True)
    h_super = torch.randn(49, generator=gen, dtype=torch.float64, requires_grad=True)
    h_sub = torch.randn(49, generator=gen, dtype=torch.float64, requires_grad=True)
    g = bk_core(a, h_super, h_sub, 0.1 + 0.5j)
    g.abs().sum().backward()
    for t in (a, h_super, h_sub):
        assert t.grad is not None and t.grad.dtype == torch.float64
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_naive_theta_recursion_overflows_but_bk_core_does_not():
    n = 1_000_000
    a0, z = 0.3, complex(0.2, 0.5)
    a = torch.full((2, n), a0, dtype=torch.float64)
    b = torch.ones((2, n - 1), dtype=torch.float64)
    # naive determinant recursion theta_i = (a - z) theta_{i-1} - theta_{i-2}: |theta| grows
    # like |r|^i with |r| > 1 and leaves float64's range after a few thousand steps
    w = a0 - z
    theta_prev, theta = 1.0 + 0j, w
    overflow_at = None
    for i in range(1, n):
        theta_prev, theta = theta, w * theta - theta_prev
        if not (math.isfinite(theta.real) and math.isfinite(theta.imag)):
            overflow_at = i
            break
    assert overflow_at is not None and overflow_at < 20_000

    g = bk_core(a, b, b, z)
    assert torch.isfinite(g).all()
    bulk = toeplitz_bulk(w)
    mid = g[:, n // 2 - 50 : n // 2 + 50]
    assert ((mid - bulk).abs() / abs(bulk)).max().item() < 1e-12
    # boundaries: the first rows match the dense solve of a short leading block (the
    # resolvent decays exponentially away from the diagonal)
    head = dense_diag(a[:1, :200].to(C128), b[:1, :199].to(C128), b[:1, :199].to(C128), torch.tensor([z], dtype=C128))
    assert rel_err(g[:1, :50], head[:, :50]) < 1e-12

    g32 = bk_core(a.float(), b.float(), b.float(), z)
    assert g32.dtype == C64 and torch.isfinite(g32).all()
    assert rel_err(g32.to(C128), g) < 2e-5


def test_one_million_random_matches_two_ended_float64():
    """Random Hermitian rows: the chunked reference against a plain sequential float64
    two-ended ratio computation (numpy-free Python loop would be slow, so the sequential
    version runs on a 4,000-element window whose ends are far from the window)."""
    n = 1_000_000
    a, b, c, z = random_tridiagonal((1,), n, C128, seed=8, hermitian=True)
    g = bk_core(a, b, c, z)
    assert torch.isfinite(g).all()
    # inside a window far from both ends, boundary effects have decayed to machine precision
    lo, hi = n // 2 - 2000, n // 2 + 2000
    window = dense_diag(a[:, lo:hi], b[:, lo : hi - 1], c[:, lo : hi - 1], z)
    assert rel_err(g[:, lo + 1000 : hi - 1000], window[:, 1000:-1000]) < 1e-10
    g32 = bk_core(a.to(C64), b.to(C64), c.to(C64), z.to(C64))
    assert rel_err(g32.to(C128), g) < 2e-5


def test_chunked_scans_match_sequential():
    gen = torch.Generator().manual_seed(9)
    d = torch.randn(3, 1000, dtype=C128, generator=gen) + 0.5j
    beta = torch.randn(3, 1000, dtype=C128, generator=gen) * 0.5
    rho = torch.zeros(3, dtype=C128)
    want = []
    for i in range(1000):
        rho = 1 / (d[:, i] - (beta[:, i] if i else 0) * rho)
        want.append(rho)
    assert rel_err(core._mobius_scan(d, beta), torch.stack(want, -1)) < 1e-12
    p = torch.zeros(3, dtype=C128)
    want = []
    for i in range(1000):
        p = d[:, i] + (0.5 * beta[:, i] if i else 0) * p
        want.append(p)
    assert rel_err(core._affine_scan(0.5 * beta, d), torch.stack(want, -1)) < 1e-12


@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="Triton interpreter (TRITON_INTERPRET=1)"
)
@pytest.mark.parametrize("variant", ["two_sided", "causal"])
def test_triton_kernels_in_interpreter(monkeypatch, variant):
    """Developer check of the Triton code paths on CPU (``bk_core``, and the causal kernel
    behind ``bk_core_causal``) against the PyTorch ones: values and the gradients of a, b,
    c, z, with small blocks so that the block-aggregate and multi-step carry kernels run."""
    from kizashi.models.bk.layers import bk_core_causal

    function = bk_core if variant == "two_sided" else bk_core_causal
    triton_core = pytest.importorskip("kizashi.models.bk.triton_core")
    monkeypatch.setattr(triton_core, "FUSED_MAX", 128)
    monkeypatch.setattr(triton_core, "CHUNK", 128)
    monkeypatch.setattr(triton_core, "CARRY_BLOCK", 4)
    for n in (1, 5, 100, 700):
        a, b, c, z = random_tridiagonal((2,), n, seed=n)
        weight = torch.randn(2, n, dtype=C128)
        grads = {}
        for backend in ("triton", "torch"):
            leaves = [t.clone().requires_grad_(True) for t in (a, b, c, z)]
            g = function(*leaves, backend=backend)
            (g * weight).real.sum().backward()
            grads[backend] = [g.detach()] + [t.grad for t in leaves]
        for got, want in zip(grads["triton"], grads["torch"]):
            if want.numel():
                assert rel_err(got, want) < 1e-10


def test_dense_reference_survives_a_thread_count_change():
    """torch 2.13's batched complex LU on CPU went wrong after set_num_threads changed (see
    core.bk_core_dense); the reference solves one matrix at a time and stays equal to NumPy."""
    import numpy as np

    a, b, c, z = random_tridiagonal((3, 2), 256, seed=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_num_threads(max(2, threads))
    try:
        got = bk_core_dense(a, b, c, z)
    finally:
        torch.set_num_threads(threads)
    t = torch.diag_embed(a - z[..., None]) + torch.diag_embed(b, offset=1) + torch.diag_embed(c, offset=-1)
    expected = np.diagonal(np.linalg.inv(t.numpy()), axis1=-2, axis2=-1)
    assert np.abs(got.numpy() - expected).max() / np.abs(expected).max() < 1e-10
