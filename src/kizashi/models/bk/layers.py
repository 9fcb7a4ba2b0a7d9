"""Building blocks shared by the BK-Core language models (Phase 1 and Phase 2).

Causality of the resolvent
--------------------------
``bk_core`` returns the diagonal of ``G = (T - zI)^-1`` for a tridiagonal ``T`` over the
*whole* sequence, and ``G_ii`` depends on every entry of ``T``: position ``i`` sees the
tokens after it. A language model must not, so the causal layers use
:func:`bk_core_causal` instead: at position ``i`` the last diagonal element of the resolvent
of the leading principal submatrix ``T[:i+1, :i+1]``, i.e.

    g_i = ((T[:i+1, :i+1] - zI)^-1)_{ii} = theta_i / theta_{i+1} = 1 / r_i,
    r_0 = a_0 - z,   r_i = (a_i - z) - b_{i-1} c_{i-1} / r_{i-1},

with ``theta_k`` the determinant of the leading ``k x k`` block of ``T - zI``. ``g_i``
depends on ``a_0..a_i, b_0..b_{i-1}, c_0..c_{i-1}`` only, so if those come from tokens
``<= i`` the feature is exactly causal; it equals ``bk_core`` applied to the prefix
``[0, i]`` (tested). It is the forward ("theta") half of the two-sided recursion of
``bk_core`` and is bounded the same way: for real ``b_k c_k >= 0`` and
``Im(a_k) <= 0 < Im z``, ``Im r_i <= -Im z`` so ``|g_i| <= 1 / Im z``.

The recursion ``r_i = M_i(r_{i-1})`` is a Moebius map with matrix
``M_i = [[a_i - z, -b_{i-1} c_{i-1}], [1, 0]]``, so ``g`` follows from prefix products of
2x2 matrices, computed here as a chunked scan: a loop of ``C`` steps over all chunks at once
(local prefix products), then a loop of ``N / C`` steps carrying a 2-vector between
chunks (``C ~ sqrt(N)``: ``2 sqrt(N)`` small vectorized steps, O(N) memory). Every product
is rescaled by the (detached) sum of its entries' magnitudes; the ratio ``g`` does not
depend on that scale, so the rescaling changes neither the values nor the gradients, and
long sequences cannot overflow. On CUDA the same recursion runs in the Triton kernel's
causal mode (:mod:`kizashi.models.bk.triton_core`) with an O(N) analytic backward; in
complex64 it is closer to a complex128 result than this scan (about 3e-7 against up to
7e-3 for ``grad_z`` at N = 100k, whose sum over N cancels).

The Hebbian fast-weight memory and the SNR filter's moving averages are the same kind of
causal linear recurrence with a per-step scalar decay; :func:`chunked_fast_weight` computes
them in chunks (within a chunk a masked ``[C, C]`` decay matrix, across chunks a carried
state): O(N C d) time, O(N C + N d^2 / C) memory, never an ``N x N`` matrix.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kizashi.models.bk.config import Phase1Config, Phase2Config
from kizashi.models.bk.core import bk_core, bk_core_causal_triton, complex_dtype, resolve_backend

Backend = Literal["auto", "torch", "triton"]


# --------------------------------------------------------------------------------------
# causal resolvent diagonal
# --------------------------------------------------------------------------------------


def bk_core_causal(
    a: Tensor,
    b: Tensor,
    c: Tensor,
    z: complex | Tensor,
    backend: Backend = "auto",
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """Causal resolvent diagonal: ``g[..., i] = ((T[:i+1, :i+1] - zI)^-1)[i, i]``.

    Same interface as ``bk_core``: ``a [..., N]`` main diagonal, ``b [..., N-1]`` super- and
    ``c [..., N-1]`` sub-diagonal (real or complex), ``z`` a complex scalar, a tensor
    broadcastable to ``[...]`` or one of shape ``[..., 1]``; returns ``[..., N]`` in
    :func:`~kizashi.models.bk.core.complex_dtype` of the inputs (complex64 for float32 or
    half precision, complex128 for float64), differentiable w.r.t. ``a, b, c, z``.

    ``backend``: ``"torch"`` runs the PyTorch chunked scan below (any device), ``"triton"``
    the Triton kernel (``bk_core``'s forward half, with an O(N) analytic backward; CUDA
    tensors), ``"auto"`` Triton for CUDA tensors when it imports, else torch.
    ``chunk_size`` (torch back end; default ``ceil(sqrt(N))``, at least 8) only trades loop
    length for tensor width.
    """
    n = a.shape[-1]
    if n < 1:
        raise ValueError(f"a must have at least one position, got shape {tuple(a.shape)}")
    if b.shape[-1] != n - 1 or c.shape[-1] != n - 1:
        raise ValueError(f"b and c must have N-1={n - 1} entries on the last axis, got "
                         f"b {tuple(b.shape)}, c {tuple(c.shape)} for a {tuple(a.shape)}")
    if resolve_backend(backend, a) == "triton":
        return bk_core_causal_triton(a, b, c, z)
    dtype = complex_dtype(a.dtype, b.dtype, c.dtype, *([z.dtype] if isinstance(z, Tensor) else []))
    if isinstance(z, Tensor):
        z_t = z.to(device=a.device, dtype=dtype)
    else:  # a Python number: straight to the working precision (not via complex64)
        z_t = torch.tensor(complex(z), dtype=dtype, device=a.device)
    if z_t.dim() >= a.dim() and z_t.shape[-1] == 1:  # bk_core also accepts z [..., 1]
        z_t = z_t.squeeze(-1)
    alpha = a.to(dtype) - z_t.unsqueeze(-1)  # [..., N]
    coupling = F.pad((b.to(dtype) * c.to(dtype)), (1, 0))  # p_{i-1} at position i, p_{-1} = 0
    alpha, coupling = torch.broadcast_tensors(alpha, coupling)
    chunk = chunk_size or max(8, math.ceil(math.sqrt(n)))
    return _causal_resolvent_scan(alpha, coupling, chunk)


def _causal_resolvent_scan(alpha: Tensor, coupling: Tensor, chunk: int) -> Tensor:
    """``alpha, coupling [..., N]`` complex -> ``g [..., N]`` (see the module docstring)."""
    n = alpha.shape[-1]
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    if pad:  # trailing identity-like steps: they only affect positions that are cut off
        alpha = F.pad(alpha, (0, pad), value=1.0)
        coupling = F.pad(coupling, (0, pad))
    # unbind (not indexing in a loop): the backward of one unbind is one stack, while each
    # indexing step's backward would fill a full-size zero tensor (O(N) per step)
    alphas = alpha.unflatten(-1, (n_chunks, chunk)).unbind(-1)  # C x [..., K]
    couplings = coupling.unflatten(-1, (n_chunks, chunk)).unbind(-1)
    # local prefix products P_j = M_j ... M_0 within each chunk, entries (p00, p01, p10, p11)
    p00, p01 = alphas[0], -couplings[0]
    p10, p11 = torch.ones_like(p00), torch.zeros_like(p00)
    local = [(p00, p01, p10, p11)]
    for a_j, c_j in zip(alphas[1:], couplings[1:]):
        p00, p01, p10, p11 = a_j * p00 - c_j * p10, a_j * p01 - c_j * p11, p00, p01
        scale = (p00.abs() + p01.abs() + p10.abs() + p11.abs()).detach()
        p00, p01, p10, p11 = p00 / scale, p01 / scale, p10 / scale, p11 / scale
        local.append((p00, p01, p10, p11))
    # carry u = (theta_{k+1}, theta_k) up to scale between chunks, starting from (1, 0)
    ends = [entry.unbind(-1) for entry in local[-1]]  # 4 x K x [...]: each chunk's product
    u0 = torch.ones_like(ends[0][0])
    u1 = torch.zeros_like(u0)
    starts0, starts1 = [u0], [u1]
    for index in range(n_chunks - 1):
        e00, e01, e10, e11 = (entry[index] for entry in ends)
        u0, u1 = e00 * u0 + e01 * u1, e10 * u0 + e11 * u1
        scale = (u0.abs() + u1.abs()).detach()
        u0, u1 = u0 / scale, u1 / scale
        starts0.append(u0)
        starts1.append(u1)
    start0 = torch.stack(starts0, dim=-1).unsqueeze(-1)  # [..., K, 1]
    start1 = torch.stack(starts1, dim=-1).unsqueeze(-1)
    p00, p01, p10, p11 = (torch.stack(entries, dim=-1) for entries in zip(*local))  # [..., K, C]
    top = p00 * start0 + p01 * start1  # theta_{i+1} (up to scale)
    bottom = p10 * start0 + p11 * start1  # theta_i
    return (bottom / top).flatten(-2)[..., :n]


# --------------------------------------------------------------------------------------
# chunked causal linear recurrences
# --------------------------------------------------------------------------------------


def chunked_fast_weight(
    q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, rate: Tensor, chunk_size: int = 64,
    backend: Backend = "torch", normalize: bool = False,
) -> tuple[Tensor, Tensor]:
    """Causal fast-weight memory with a per-step scalar decay, in chunks.

    ``M_t = exp(log_decay_t) M_{t-1} + rate_t v_t k_t^T`` (``M_{-1} = 0``), ``o_t = M_t q_t``;
    with ``normalize`` the rows of ``q`` and ``k`` are unit vectors first (``F.normalize``).

    Shapes: ``q, k [B, H, N, dk]``, ``v [B, H, N, dv]``, ``log_decay, rate [B, H, N]``
    (``log_decay <= 0``). Returns ``o [B, H, N, dv]`` and the final state ``M [B, H, dv, dk]``,
    in float32 at least (float64 inputs stay float64). ``o_t`` depends on steps ``<= t`` only.
    Within a chunk the decay between steps ``s <= t`` is ``exp(L_t - L_s)`` of the cumulative
    log decay (masked above the diagonal before the ``exp``, so nothing overflows); chunks are
    linked by the carried state.

    ``backend``: ``"torch"`` the PyTorch code below (a Python loop over the ``N / chunk_size``
    chunks), ``"triton"`` the kernels of :mod:`kizashi.models.bk.triton_fast_weight` (CUDA
    tensors; chunks of their own fixed length, ``chunk_size`` unused; they read ``q, k, v`` in
    place, any view with a unit stride along the features, and normalize and scale inside),
    ``"auto"`` Triton for CUDA tensors when it imports, else torch.
    """
    if resolve_backend(backend, q, "chunked_fast_weight") == "triton":
        from kizashi.models.bk.triton_fast_weight import fast_weight_scan

        return fast_weight_scan(q, k, v, log_decay, rate, normalize)
    dtype = torch.promote_types(torch.promote_types(q.dtype, v.dtype), torch.float32)
    q, k, v, log_decay, rate = (t.to(dtype) for t in (q, k, v, log_decay, rate))
    if normalize:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    batch, heads, n, dk = k.shape
    dv = v.shape[-1]
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n
    if pad:  # zero rate and zero log-decay: the state passes through unchanged
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        log_decay, rate = F.pad(log_decay, (0, pad)), F.pad(rate, (0, pad))
    shape = (batch, heads, n_chunks, chunk_size)
    q, k, v = q.reshape(*shape, dk), k.reshape(*shape, dk), v.reshape(*shape, dv)
    cumulative = torch.cumsum(log_decay.reshape(shape), dim=-1)  # L [B, H, K, C]
    rate = rate.reshape(shape)
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    difference = cumulative[..., :, None] - cumulative[..., None, :]  # L_t - L_s [.., C, C]
    weights = torch.exp(difference.masked_fill(~causal, float("-inf"))) * rate[..., None, :]
    intra = ((q @ k.transpose(-1, -2)) * weights) @ v  # [B, H, K, C, dv]
    to_end = torch.exp(cumulative[..., -1:] - cumulative) * rate  # [B, H, K, C]
    chunk_states = (v * to_end[..., None]).transpose(-1, -2) @ k  # [B, H, K, dv, dk]
    chunk_decay = torch.exp(cumulative[..., -1])  # [B, H, K]
    state = q.new_zeros(batch, heads, dv, dk)
    before = []
    for decay, chunk_state in zip(chunk_decay.unbind(-1), chunk_states.unbind(2)):
        before.append(state)
        state = decay[..., None, None] * state + chunk_state
    previous = torch.stack(before, dim=2)  # state entering each chunk [B, H, K, dv, dk]
    inter = torch.exp(cumulative)[..., None] * (q @ previous.transpose(-1, -2))
    out = (intra + inter).reshape(batch, heads, n_chunks * chunk_size, dv)[:, :, :n]
    return out, state


def decayed_average(x: Tensor, decay: float, chunk_size: int = 64, backend: Backend = "torch") -> Tensor:
    """Causal exponential moving average ``y_t = decay * y_{t-1} + (1 - decay) * x_t``
    (``y_{-1} = 0``) over axis 2 of ``x [B, H, N, F]`` -> ``[B, H, N, F]``: the fast-weight
    recurrence with ``q = k = 1`` (``backend`` as in :func:`chunked_fast_weight`)."""
    batch, heads, n, _ = x.shape
    ones = x.new_ones(1, 1, 1, 1).expand(batch, heads, n, 1)
    log_decay = x.new_full((batch, heads, n), math.log(decay))
    rate = x.new_full((batch, heads, n), 1.0 - decay)
    out, _ = chunked_fast_weight(ones, ones, x, log_decay, rate, chunk_size, backend)
    return out


# --------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------


def inverse_softplus(value: float) -> float:
    """``y`` with ``softplus(y) = value`` (``value > 0``)."""
    return value + math.log(-math.expm1(-value))


def kernel_backend(config: Phase1Config | Phase2Config) -> Backend:
    """The backend of a BK block's resolvent and layer norms: ``"auto"`` (Triton for CUDA
    tensors) when the config's ``use_triton_bk``, else ``"torch"``."""
    return "auto" if config.use_triton_bk else "torch"


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis (same parameters, state dict and values) whose
    forward and backward run on the Triton kernels of :mod:`~.triton_layer_norm` for CUDA
    tensors (``backend="auto"``): PyTorch's backward of narrow rows over long sequences spends
    most of its time in the weight and bias reduction. Under CUDA autocast the output is
    float32, as ``F.layer_norm``'s is there."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5, backend: Backend = "auto") -> None:
        super().__init__(normalized_shape, eps=eps)
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        if resolve_backend(self.backend, x, "LayerNorm") != "triton":
            return super().forward(x)
        from kizashi.models.bk.triton_layer_norm import layer_norm

        autocast = torch.is_autocast_enabled(x.device.type)
        out_dtype = torch.promote_types(x.dtype, torch.float32) if autocast else x.dtype
        return layer_norm(x, self.weight, self.bias, self.eps, out_dtype)


class FeedForward(nn.Module):
    """``[B, N, D]`` -> ``[B, N, D]``: ``Linear(D, F) -> GELU -> Dropout -> Linear(F, D)``."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, ffn_dim)
        self.down = nn.Linear(ffn_dim, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.drop(F.gelu(self.up(x))))


class BKMixer(nn.Module):
    """The BK-Core token mixer: ``x [B, N, D]`` (normalized) -> ``[B, N, D]``.

    Per head ``h`` (``H`` heads, each its own tridiagonal over the sequence)::

        v        = potential(x)                  real part of the diagonal       [B, H, N]
        Gamma    = base_decay + softplus(decay(x))   (non-Hermitian; adaptive)   [B, H, N]
        a        = v - i Gamma                                                   [B, H, N]
        kappa    = softplus(coupling(x))[..., 1:]    bond (i-1, i) from token i  [B, H, N-1]
        z_h      = shift_real_h + i (imag_min + softplus(shift_imag_raw_h))      [H]
        g        = bk_core_causal(a, kappa, kappa, z)   (bk_core if not causal)  [B, H, N]
        features = [Re g, Im g] * Im z  (|g| <= 1 / Im z, so features are O(1)) [B, N, 2H]
        out      = mix(features) * silu(gate(x))                                 [B, N, D]

    ``b = c = kappa >= 0`` keeps ``b c`` real and non-negative, which with ``Im a <= 0 < Im z``
    bounds every ``|g_i|`` by ``1 / Im z`` (see the module docstring). With
    ``non_hermitian=False`` there is no ``Gamma`` (``a = v``, ``T`` real symmetric); with
    ``adaptive_decay=False`` ``Gamma = base_decay`` everywhere. ``forward`` also returns
    ``Gamma [B, H, N]`` (zeros when Hermitian) and ``g``.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        causal: bool,
        spectral_shift_real: Tensor,
        spectral_shift_imag: float,
        spectral_shift_imag_min: float,
        non_hermitian: bool = False,
        adaptive_decay: bool = False,
        base_decay: float = 0.0,
        backend: Backend = "auto",
        dropout: float = 0.0,
        init_std: float = 0.02,
        out_std: float = 0.02,
    ) -> None:
        super().__init__()
        if spectral_shift_imag <= spectral_shift_imag_min:
            raise ValueError(f"spectral_shift_imag={spectral_shift_imag} must exceed "
                             f"spectral_shift_imag_min={spectral_shift_imag_min}")
        self.num_heads, self.causal, self.backend = num_heads, causal, backend
        self.non_hermitian, self.base_decay = non_hermitian, float(base_decay)
        self.imag_min = float(spectral_shift_imag_min)
        self.potential = nn.Linear(d_model, num_heads)
        self.coupling = nn.Linear(d_model, num_heads)
        self.decay = nn.Linear(d_model, num_heads) if (non_hermitian and adaptive_decay) else None
        self.shift_real = nn.Parameter(spectral_shift_real.detach().to(torch.float32).clone())
        self.shift_imag_raw = nn.Parameter(
            torch.full((num_heads,), inverse_softplus(spectral_shift_imag - spectral_shift_imag_min)))
        self.gate = nn.Linear(d_model, d_model)
        self.mix = nn.Linear(2 * num_heads, d_model)
        self.drop = nn.Dropout(dropout)
        for linear in (self.potential, self.coupling, self.gate):
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)
        nn.init.normal_(self.mix.weight, std=out_std)
        nn.init.zeros_(self.mix.bias)
        if self.decay is not None:  # initial Gamma ~ 2 * base_decay (base + adaptive part)
            nn.init.normal_(self.decay.weight, std=init_std)
            nn.init.constant_(self.decay.bias, inverse_softplus(max(base_decay, 1e-3)))

    def spectral_shift(self) -> Tensor:
        """``z [H]`` complex64, ``Im z > imag_min``."""
        return torch.complex(self.shift_real, self.imag_min + F.softplus(self.shift_imag_raw))

    def decay_rate(self, x: Tensor) -> Tensor:
        """``Gamma [B, H, N] >= 0`` from ``x [B, N, D]`` (zeros when Hermitian)."""
        batch, n, _ = x.shape
        if not self.non_hermitian:
            return x.new_zeros(batch, self.num_heads, n, dtype=torch.float32)
        rate = x.new_full((batch, self.num_heads, n), self.base_decay, dtype=torch.float32)
        if self.decay is not None:
            rate = rate + F.softplus(self.decay(x).float()).transpose(1, 2)
        return rate

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x [B, N, D]`` -> ``(out [B, N, D], Gamma [B, H, N], g [B, H, N] complex)``."""
        potential = self.potential(x).float().transpose(1, 2)  # [B, H, N]
        gamma = self.decay_rate(x)
        a = torch.complex(potential, -gamma)
        bond = F.softplus(self.coupling(x).float()).transpose(1, 2)[..., 1:]  # [B, H, N-1]
        z = self.spectral_shift()
        resolvent = bk_core_causal if self.causal else bk_core
        g = resolvent(a, bond, bond, z, backend=self.backend)  # [B, H, N]
        scaled = g * z.imag[:, None]
        features = torch.cat([scaled.real, scaled.imag], dim=1).transpose(1, 2)  # [B, N, 2H]
        out = self.mix(features.to(x.dtype)) * F.silu(self.gate(x))
        return self.drop(out), gamma, g
