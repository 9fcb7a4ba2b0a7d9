"""BK-Core: the diagonal of the resolvent of a batch of complex tridiagonal matrices in O(N).

    g = bk_core(a, b, c, z)            # g [..., N] = diag((T - zI)^-1)

``T`` is tridiagonal with main diagonal ``a [..., N]``, super-diagonal ``b [..., N-1]``
(``T[i, i+1] = b_i``) and sub-diagonal ``c [..., N-1]`` (``T[i+1, i] = c_i``); ``z`` is a
complex shift: a Python number, or a tensor broadcastable to the batch shape ``[...]``, or
one of shape ``[..., 1]`` (a trailing size-1 dimension when ``z`` has as many dimensions as
``a``). Batch dimensions of ``a``, ``b``, ``c`` and ``z`` broadcast. The inputs are
computed in the complex dtype of :func:`complex_dtype` (complex128 if any of them is
float64 or complex128, else complex64); the result is complex. Time and memory are
O(batch * N).

Recursions in ratio form
------------------------
Write ``d_i = a_i - z`` and ``beta_i = b_i c_i``. The leading minors ``theta`` and trailing
minors ``phi`` of ``T - zI`` obey ``theta_i = d_i theta_{i-1} - beta_{i-1} theta_{i-2}`` and
``phi_i = d_i phi_{i+1} - beta_i phi_{i+2}``, and ``G_ii = theta_{i-1} phi_{i+1} / theta_N``.
Both grow or decay like ``|d|^N`` and overflow float64 long before N = 10^6 (the test suite
shows a naive theta recursion overflowing). Only their ratios are needed, so BK-Core runs
the inverse-pivot (Moebius) recursions

    rho_i   = theta_{i-1} / theta_i   = 1 / (d_i - beta_{i-1} rho_{i-1}),   rho_{-1} = 0
    sigma_i = phi_{i+1}   / phi_i     = 1 / (d_i - beta_i sigma_{i+1}),     sigma_N  = 0
    G_ii    = 1 / (d_i - beta_{i-1} rho_{i-1} - beta_i sigma_{i+1})

(``1/rho_i`` and ``1/sigma_i`` are the pivots of Gaussian elimination from the top and from
the bottom, and ``G_ii = 1 / (r_i + s_i - d_i)`` with ``r = 1/rho``, ``s = 1/sigma``). Every
quantity is a ratio of neighbouring minors, bounded whenever the pivots stay away from 0;
nothing grows with N. For a Hermitian ``T`` (real ``a``, ``c = conj(b)``) and ``Im z > 0``
every pivot has ``Im <= -Im z``, so ``|rho|, |sigma| <= 1/Im z`` and ``|G_ii| <= 1/Im z``; a
dissipative potential (``Im a_i <= 0``) only strengthens that. Pivots can vanish only for
(nearly) singular leading or trailing blocks, e.g. real ``z`` on the spectrum.

Parallel form. ``rho_i = M_i(rho_{i-1})`` is a Moebius map, i.e. the projective action of the
2x2 matrix ``[[0, 1], [-beta_{i-1}, d_i]]`` on ``(theta_{i-2}, theta_{i-1})``; compositions are
matrix products, which are associative. Products are rescaled after every step by the
magnitude of their largest entry: the ratio does not depend on that scale, so nothing
overflows or underflows whatever N is.

* PyTorch reference (``backend="torch"``, any device): a chunked scan, vectorized over
  the batch and over chunks of length ``L ~ sqrt(N)``: (1) every chunk's 2x2 map, ``L``
  steps over all chunks at once; (2) the values entering each chunk, a log-depth
  (Hillis-Steele) prefix product over the ``N/L`` chunk maps; (3) the scalar recursion
  re-run inside every chunk from its entering value, ``L`` steps over all chunks at once.
  About ``2 sqrt(N)`` small vectorized steps.
* Triton kernel (``backend="triton"``, CUDA; :mod:`kizashi.models.bk.triton_core`): each
  GPU lane runs the scalar recursion over a few consecutive elements, and the lanes' 2x2
  maps are combined with ``tl.associative_scan``; rows longer than one block add a pass of
  block products and a carry scan over blocks. Triton is imported only when that backend is
  used.

Gradients (analytic, O(N))
--------------------------
``dG_ii/dT_jk = -G_ij G_ki`` and ``dG/dz = G^2``. For a real loss with upstream gradient
``w = dL/dg`` (PyTorch's convention for complex tensors) and ``u = conj(w)``, the gradients
are the band of ``G U G`` with ``U = diag(u)``::

    grad_a_j = -conj((G U G)_jj),   grad_b_j = -conj((G U G)_{j+1,j}),
    grad_c_j = -conj((G U G)_{j,j+1}),   grad_z = -sum_j grad_a_j.

For a tridiagonal ``T`` the resolvent factorizes (``G_ij G_ji = G_jj^2 prod beta rho^2`` for
``i < j``), so the band comes from two *linear* first-order recursions

    p_j = u_j + beta_{j-1} rho_{j-1}^2 p_{j-1},   q_j = u_j + beta_j sigma_{j+1}^2 q_{j+1}
    (G U G)_jj      = G_jj^2 (p_j + q_j - u_j)
    (G U G)_{j+1,j} = -c_j W_j,   (G U G)_{j,j+1} = -b_j W_j,
    W_j = G_jj^2 p_j sigma_{j+1} + G_{j+1,j+1}^2 q_{j+1} rho_j,

whose multipliers ``beta rho^2`` are the derivatives of the Moebius maps (contractions in
the stable regime, so the sums converge instead of blowing up). They run as affine scans
with the same chunking as the forward pass. The forward saves ``rho``, ``sigma`` and
``g`` (3 complex [M, N] tensors) when an input requires grad. Double backward is not
supported. ``torch.autograd.gradcheck`` passes in complex128 for ``a``, ``b``, ``c`` and ``z``.

Accuracy (tests): complex128 matches a dense ``torch.linalg`` solve to 1e-11 relative;
complex64 matches complex128 to 2e-5 relative on Hermitian inputs with ``Im z = 0.5`` (also
at N = 10^6); on random non-normal inputs single precision loses more (its error grows with
the conditioning; the Triton kernel stays within 4x of the reference's own error). The
Triton kernel matches the reference to 1e-11 in complex128.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

Backend = Literal["auto", "torch", "triton"]

__all__ = ["bk_core", "bk_core_causal_triton", "bk_core_dense", "complex_dtype", "triton_available"]


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def bk_core(
    a: Tensor,
    b: Tensor,
    c: Tensor,
    z: Tensor | complex | float,
    backend: Backend = "auto",
) -> Tensor:
    """Diagonal of ``(T - zI)^-1`` for tridiagonal ``T = tridiag(c, a, b)``.

    Args:
        a: main diagonal ``[..., N]`` (real or complex).
        b: super-diagonal ``[..., N-1]``, ``T[i, i+1] = b_i``.
        c: sub-diagonal ``[..., N-1]``, ``T[i+1, i] = c_i``.
        z: complex shift: a number, a tensor broadcastable to the batch shape ``[...]``, or
            one of shape ``[..., 1]`` (as many dimensions as ``a``).
        backend: ``"torch"`` (reference, any device), ``"triton"`` (CUDA tensors), or
            ``"auto"``: Triton for CUDA tensors when it imports, else torch.

    Returns:
        ``g [..., N]`` in :func:`complex_dtype` of the inputs (complex64 for single or half
        precision, complex128 for double), differentiable w.r.t. ``a``, ``b``, ``c`` and a
        tensor ``z``.
    """
    a, b, c, z_flat, batch_shape, n = _prepare(a, b, c, z)
    name = resolve_backend(backend, a)
    g = _BKCoreFunction.apply(a, b, c, z_flat, name)
    return g.reshape(*batch_shape, n)


def bk_core_dense(a: Tensor, b: Tensor, c: Tensor, z: Tensor | complex | float) -> Tensor:
    """Dense O(N^3) reference: ``diag(inv(T - zI))`` through ``torch.linalg.inv`` (tests,
    benchmarks; small N only). Same argument conventions as :func:`bk_core`."""
    a, b, c, z_flat, batch_shape, n = _prepare(a, b, c, z)
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    t = torch.diag_embed(a - z_flat[:, None])
    if n > 1:
        t = t + torch.diag_embed(b, offset=1) + torch.diag_embed(c, offset=-1)
    # One matrix at a time: torch 2.13's batched complex LU solves on CPU return wrong values
    # (off by orders of magnitude) once torch.set_num_threads has changed in the process;
    # per-matrix solves agree with NumPy (tests/models/test_bk_core.py checks this).
    g = torch.stack([torch.linalg.solve(m, eye).diagonal() for m in t]) if len(t) else t.diagonal(dim1=-2, dim2=-1)
    return g.reshape(*batch_shape, n)


@functools.cache
def triton_available() -> bool:
    """True when Triton imports and a CUDA device is visible (never imports it otherwise)."""
    if not torch.cuda.is_available():
        return False
    try:
        from kizashi.models.bk import triton_core  # noqa: F401
    except Exception:  # ImportError, or a broken Triton install
        return False
    return True


# --------------------------------------------------------------------------------------
# argument handling
# --------------------------------------------------------------------------------------


def complex_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The complex dtype BK-Core computes in for inputs of ``dtypes``: complex128 if any of
    them is float64 or complex128, else complex64 (float32 and complex64, and also float16,
    bfloat16, complex32 and the integer dtypes that the PyTorch path of
    :func:`kizashi.models.bk.layers.bk_core_causal` accepts).

    Half precision computes in complex64, not in a complex half type, because the Triton
    kernel (:mod:`kizashi.models.bk.triton_core`) runs on interleaved float32 or float64
    pairs only; the PyTorch reference follows the same rule, so that both back ends return
    the same dtype for the same inputs.
    """
    if any(dt in (torch.float64, torch.complex128) for dt in dtypes):
        return torch.complex128
    return torch.complex64


def _prepare(a: Tensor, b: Tensor, c: Tensor, z: Tensor | complex | float):
    """Broadcast and flatten to ``a [M, N]``, ``b, c [M, N-1]``, ``z [M]`` (complex,
    contiguous; differentiable ops only)."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor) and isinstance(c, Tensor)):
        raise TypeError("bk_core: a, b and c must be tensors")
    if a.dim() < 1:
        raise ValueError(f"bk_core: a must have shape [..., N], got {tuple(a.shape)}")
    n = a.shape[-1]
    if n < 1:
        raise ValueError("bk_core: N (a.shape[-1]) must be at least 1")
    for name, t in (("b", b), ("c", c)):
        if t.dim() < 1 or t.shape[-1] != n - 1:
            raise ValueError(
                f"bk_core: {name} must have shape [..., N-1] = [..., {n - 1}] for "
                f"a of shape {tuple(a.shape)}, got {tuple(t.shape)}"
            )
    device = a.device
    if b.device != device or c.device != device:
        raise ValueError(f"bk_core: a, b, c on different devices ({device}, {b.device}, {c.device})")

    if isinstance(z, Tensor):
        if z.device != device and z.dim() > 0:
            raise ValueError(f"bk_core: z on {z.device}, a on {device}")
        z_t = z.to(device)
        if z_t.dim() >= 1 and z_t.dim() >= a.dim() and z_t.shape[-1] == 1:
            z_t = z_t.squeeze(-1)
        dtypes = (a.dtype, b.dtype, c.dtype, z_t.dtype)
    elif isinstance(z, (int, float, complex)):
        z_t = None
        dtypes = (a.dtype, b.dtype, c.dtype)
    else:
        raise TypeError(f"bk_core: z must be a number or a tensor, got {type(z).__name__}")
    for dt in dtypes:
        if not (dt.is_floating_point or dt.is_complex):
            raise TypeError(f"bk_core: inputs must be floating or complex, got {dt}")
    cdtype = complex_dtype(*dtypes)

    try:
        batch_shape = torch.broadcast_shapes(
            a.shape[:-1], b.shape[:-1], c.shape[:-1], () if z_t is None else z_t.shape
        )
    except RuntimeError as err:
        z_shape = "scalar" if z_t is None else tuple(z_t.shape)
        raise ValueError(
            f"bk_core: batch shapes do not broadcast: a {tuple(a.shape)}, b {tuple(b.shape)}, "
            f"c {tuple(c.shape)}, z {z_shape}"
        ) from err
    m = math.prod(batch_shape)

    def flat(t: Tensor, length: int) -> Tensor:
        t = t.to(cdtype).expand(*batch_shape, length).reshape(m, length)
        return t.resolve_conj().resolve_neg().contiguous()

    a_f, b_f, c_f = flat(a, n), flat(b, n - 1), flat(c, n - 1)
    if z_t is None:
        z_f = torch.full((m,), complex(z), dtype=cdtype, device=device)
    else:
        z_f = z_t.to(cdtype).expand(batch_shape).reshape(m).resolve_conj().resolve_neg()
        z_f = z_f.contiguous()
    return a_f, b_f, c_f, z_f, batch_shape, n


def resolve_backend(backend: str, a: Tensor, caller: str = "bk_core") -> str:
    """``"torch"`` or ``"triton"`` for ``backend`` (``auto``: Triton for CUDA tensors when
    it imports); refuses an unknown name, and Triton without CUDA tensors or without Triton
    (errors name ``caller``)."""
    if backend == "torch":
        return "torch"
    if backend == "triton":
        if not a.is_cuda and not _triton_interpreter():
            raise ValueError(f"{caller}: backend='triton' needs CUDA tensors")
        if a.is_cuda and not triton_available():
            raise RuntimeError(f"{caller}: backend='triton' but Triton does not import here")
        return "triton"
    if backend == "auto":
        return "triton" if a.is_cuda and triton_available() else "torch"
    raise ValueError(f"{caller}: backend must be 'auto', 'torch' or 'triton', got {backend!r}")


def _triton_interpreter() -> bool:
    """Triton's CPU interpreter (``TRITON_INTERPRET=1``), for developing the kernel."""
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"


def _triton_module():
    from kizashi.models.bk import triton_core

    return triton_core


# --------------------------------------------------------------------------------------
# autograd
# --------------------------------------------------------------------------------------


class _BKCoreFunction(torch.autograd.Function):
    """``g = diag((T - zI)^-1)`` on flattened ``a [M, N]``, ``b, c [M, N-1]``, ``z [M]``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, c: Tensor, z: Tensor, backend: str) -> Tensor:
        save = any(ctx.needs_input_grad[:4])
        if backend == "triton":
            g, rho, sigma = _triton_module().forward(a, b, c, z, save=save)
        else:
            g, rho, sigma = torch_forward(a, b, c, z)
        ctx.backend = backend
        if save:
            ctx.save_for_backward(b, c, g, rho, sigma)
        return g

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_g: Tensor):
        b, c, g, rho, sigma = ctx.saved_tensors
        grad_g = grad_g.resolve_conj().resolve_neg().contiguous()
        if ctx.backend == "triton":
            grad_a, grad_b, grad_c = _triton_module().backward(grad_g, b, c, g, rho, sigma)
        else:
            grad_a, grad_b, grad_c = torch_backward(grad_g, b, c, g, rho, sigma)
        grad_z = -grad_a.sum(-1) if ctx.needs_input_grad[3] else None
        return grad_a, grad_b, grad_c, grad_z, None


class _BKCausalFunction(torch.autograd.Function):
    """Causal resolvent ``g_i = rho_i`` (Triton) on flattened ``a [M, N]``, ``b, c [M, N-1]``,
    ``z [M]``; see :func:`kizashi.models.bk.layers.bk_core_causal` for the definition."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, c: Tensor, z: Tensor) -> Tensor:
        g, _, _ = _triton_module().forward(a, b, c, z, causal=True)
        if any(ctx.needs_input_grad[:4]):
            ctx.save_for_backward(b, c, g)
        return g

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_g: Tensor):
        b, c, g = ctx.saved_tensors
        grad_g = grad_g.resolve_conj().resolve_neg().contiguous()
        grad_a, grad_b, grad_c = _triton_module().causal_backward(grad_g, b, c, g)
        grad_z = -grad_a.sum(-1) if ctx.needs_input_grad[3] else None
        return grad_a, grad_b, grad_c, grad_z


def bk_core_causal_triton(
    a: Tensor, b: Tensor, c: Tensor, z: Tensor | complex | float
) -> Tensor:
    """The causal resolvent diagonal through the Triton kernel (CUDA tensors, or Triton's
    interpreter); same conventions as :func:`bk_core`. Use
    :func:`kizashi.models.bk.layers.bk_core_causal`, which picks the back end."""
    a, b, c, z_flat, batch_shape, n = _prepare(a, b, c, z)
    resolve_backend("triton", a)  # CUDA tensors (or the interpreter) and an importable Triton
    g = _BKCausalFunction.apply(a, b, c, z_flat)
    return g.reshape(*batch_shape, n)


# --------------------------------------------------------------------------------------
# PyTorch reference
# --------------------------------------------------------------------------------------


def _pad_last(t: Tensor, before: int, after: int, value: float = 0.0) -> Tensor:
    parts = []
    if before:
        parts.append(torch.full((*t.shape[:-1], before), value, dtype=t.dtype, device=t.device))
    parts.append(t)
    if after:
        parts.append(torch.full((*t.shape[:-1], after), value, dtype=t.dtype, device=t.device))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else t


def _chunk_length(n: int) -> int:
    return max(1, math.isqrt(max(n, 1) - 1) + 1)  # ceil(sqrt(n))


def _to_chunks(t: Tensor, length: int, fill: float) -> Tensor:
    """``[M, N]`` -> ``[L, M, C]`` (padded with ``fill``), step ``j`` of every chunk contiguous."""
    m, n = t.shape
    chunks = -(-n // length)
    t = _pad_last(t, 0, chunks * length - n, fill)
    return t.reshape(m, chunks, length).permute(2, 0, 1).contiguous()


def _from_chunks(t: Tensor, n: int) -> Tensor:
    length, m, chunks = t.shape
    return t.permute(1, 2, 0).reshape(m, chunks * length)[:, :n]


def _max_abs(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    scale = torch.view_as_real(t).abs().amax(dim=(*dims, -1))
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _prefix_products(mats: Tensor) -> Tensor:
    """Inclusive prefix products ``P_k = A_k A_{k-1} ... A_0`` along the last dim of
    ``mats [2, 2, M, C]`` (log-depth doubling, every product rescaled)."""
    chunks = mats.shape[-1]
    shift = 1
    while shift < chunks:
        later, earlier = mats[..., shift:], mats[..., :-shift]
        prod = torch.einsum("ij...,jk...->ik...", later, earlier)
        prod = prod / _max_abs(prod, (0, 1))
        mats = torch.cat([mats[..., :shift], prod], dim=-1)
        shift *= 2
    return mats


def _mobius_scan(d: Tensor, beta: Tensor) -> Tensor:
    """``rho_i = 1 / (d_i - beta_i rho_{i-1})`` with ``rho_{-1} = 0`` along the last dim of
    ``d, beta [M, N]`` (``beta_0`` is unused). Chunked scan, see the module docstring."""
    m, n = d.shape
    length = _chunk_length(n)
    d_c = _to_chunks(d, length, 1.0)  # [L, M, C]
    beta_c = _to_chunks(beta, length, 0.0)
    chunks = d_c.shape[-1]
    rho = torch.zeros((m, chunks), dtype=d.dtype, device=d.device)
    if chunks > 1:
        # (1) each chunk's map on (num, den) with rho = num / den: (p, q) -> (q, d q - beta p)
        one = torch.ones((m, chunks), dtype=d.dtype, device=d.device)
        zero = torch.zeros_like(one)
        k00, k01, k10, k11 = one, zero, zero, one
        for j in range(length):
            n0 = d_c[j] * k10 - beta_c[j] * k00
            n1 = d_c[j] * k11 - beta_c[j] * k01
            k = torch.stack([k10, k11, n0, n1])
            k = k / _max_abs(k, (0,))
            k00, k01, k10, k11 = k.unbind(0)
        mats = torch.stack([torch.stack([k00, k01]), torch.stack([k10, k11])])  # [2, 2, M, C]
        # (2) value entering chunk k: prefix product of chunks < k applied to (0, 1)
        prefix = _prefix_products(mats[..., :-1])
        rho[:, 1:] = prefix[0, 1] / prefix[1, 1]
    # (3) the scalar recursion inside every chunk from its entering value
    out = torch.empty_like(d_c)
    for j in range(length):
        rho = torch.reciprocal(d_c[j] - beta_c[j] * rho)
        out[j] = rho
    return _from_chunks(out, n)


def _affine_scan(kappa: Tensor, u: Tensor) -> Tensor:
    """``p_i = u_i + kappa_i p_{i-1}`` with ``p_{-1} = 0`` along the last dim of ``[M, N]``
    (``kappa_0`` is unused). Chunked: local scans, a doubling scan over chunk carries, and
    one vectorized fix-up."""
    m, n = u.shape
    length = _chunk_length(n)
    k_c = _to_chunks(kappa, length, 0.0)
    u_c = _to_chunks(u, length, 0.0)
    chunks = u_c.shape[-1]
    local = torch.empty_like(u_c)
    gain = torch.empty_like(u_c)
    acc = torch.zeros((m, chunks), dtype=u.dtype, device=u.device)
    acc_gain = torch.ones_like(acc)
    for j in range(length):
        acc = u_c[j] + k_c[j] * acc
        acc_gain = k_c[j] * acc_gain
        local[j], gain[j] = acc, acc_gain
    if chunks == 1:
        return _from_chunks(local, n)
    # carry entering chunk k = composite of chunks < k applied to 0: inclusive affine
    # prefix (K, V) over chunks, combine(earlier, later) = (K2 K1, K2 V1 + V2)
    big_k, big_v = gain[-1], local[-1]
    shift = 1
    while shift < chunks:
        new_k = big_k.clone()
        new_v = big_v.clone()
        new_k[:, shift:] = big_k[:, shift:] * big_k[:, :-shift]
        new_v[:, shift:] = big_k[:, shift:] * big_v[:, :-shift] + big_v[:, shift:]
        big_k, big_v = new_k, new_v
        shift *= 2
    carry = torch.zeros_like(big_v)
    carry[:, 1:] = big_v[:, :-1]
    return _from_chunks(local + gain * carry, n)


def _shift_right(t: Tensor) -> Tensor:
    """``out_i = t_{i-1}``, ``out_0 = 0``."""
    return _pad_last(t[:, :-1], 1, 0)


def _shift_left(t: Tensor) -> Tensor:
    """``out_i = t_{i+1}``, ``out_{N-1} = 0``."""
    return _pad_last(t[:, 1:], 0, 1)


def _flip_scan(scan: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> Tensor:
    return scan(x.flip(-1), y.flip(-1)).flip(-1)


def torch_forward(a: Tensor, b: Tensor, c: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Reference forward on flattened complex inputs: returns ``(g, rho, sigma)``, each
    ``[M, N]`` (see the module docstring for ``rho`` and ``sigma``)."""
    d = a - z[:, None]
    beta = b * c
    beta_prev = _pad_last(beta, 1, 0)  # beta_{i-1} at i
    beta_next = _pad_last(beta, 0, 1)  # beta_i at i
    rho = _mobius_scan(d, beta_prev)
    sigma = _flip_scan(_mobius_scan, d, beta_next)
    g = torch.reciprocal(d - beta_prev * _shift_right(rho) - beta_next * _shift_left(sigma))
    return g, rho, sigma


def torch_backward(
    grad_g: Tensor, b: Tensor, c: Tensor, g: Tensor, rho: Tensor, sigma: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Reference O(N) backward: ``(grad_a [M, N], grad_b [M, N-1], grad_c [M, N-1])``."""
    u = grad_g.conj()
    beta = b * c
    beta_prev = _pad_last(beta, 1, 0)
    beta_next = _pad_last(beta, 0, 1)
    kappa = beta_prev * _shift_right(rho).square()  # beta_{j-1} rho_{j-1}^2
    lam = beta_next * _shift_left(sigma).square()  # beta_j sigma_{j+1}^2
    p = _affine_scan(kappa, u)
    q = _flip_scan(_affine_scan, lam, u)
    g2 = g.square()
    grad_a = -(g2 * (p + q - u)).conj()
    w = g2[:, :-1] * p[:, :-1] * sigma[:, 1:] + g2[:, 1:] * q[:, 1:] * rho[:, :-1]
    return grad_a, (c * w).conj(), (b * w).conj()
