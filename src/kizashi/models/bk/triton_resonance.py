"""Triton kernels of Phase 2's memory resonance (CUDA, or Triton's CPU interpreter; imported
lazily by :class:`kizashi.models.bk.phase2.MemoryResonance`).

One row per (batch, step, head): the memory's readout ``o [d]``, the ``M`` orthonormal modes
``U [M, d]`` and the head's gains ``g [M]``::

    c = U o,   s = |o|^2 + eps,   e = c^2 / s            (e: the share of energy per mode)
    a = sigmoid((e - threshold) / temperature),   beta = g * a
    out = o + U^T (beta * c)

Backward, with ``p = U dout``::

    dbeta = p c,   dg += dbeta a (summed over the rows of the head)
    de = dbeta g a (1 - a) / temperature
    dc = p beta + 2 de c / s,   ds = -sum_m de_m e_m / s
    do = dout + U^T dc + 2 ds o

The PyTorch code of the same formulas is two small matmuls and about a dozen elementwise
kernels forward, twice that backward; here it is one pass over the rows each way. A program
takes ``ROWS`` steps of one head (grid ``[B N / ROWS, H]``), so the gains' gradient is one
``[M]`` partial sum per program, added up by PyTorch. Computes in float32 (float64 when the
readout is float64: the interpreter tests); the three constants travel as a tensor of that
dtype. The four products with the modes are ``tl.dot`` with IEEE float32 inputs, said
explicitly: Triton rewrites a broadcast product summed over its middle axis into a dot of
its default precision, which is TF32 on Hopper in Triton 3.6 (errors of 4e-4 against
float64 where IEEE float32 gives 1e-7).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kizashi.models.bk.triton_common import feature_block, kernel_constants

ROWS = 32  # steps of one head per program (at least 16: the rows go through tl.dot)


@triton.jit
def _modes_and_rows(o_ptr, modes_ptr, gain_ptr, pid, h, BN, H, D, M, BR: tl.constexpr, BD: tl.constexpr,
                    BM: tl.constexpr):
    """``(steps [BR], valid [BR], offsets [BR, BD], mask, o [BR, BD], U [BM, BD], gain [BM])``
    of the program's rows (zero beyond ``D`` and ``M``)."""
    steps = pid * BR + tl.arange(0, BR)
    valid = steps < BN
    cols = tl.arange(0, BD)
    offsets = ((steps * H + h) * D)[:, None] + cols[None, :]
    mask = valid[:, None] & (cols[None, :] < D)
    dtype = gain_ptr.dtype.element_ty
    o = tl.load(o_ptr + offsets, mask=mask, other=0.0).to(dtype)
    index = tl.arange(0, BM)
    modes = tl.load(modes_ptr + index[:, None] * D + cols[None, :],
                    mask=(index[:, None] < M) & (cols[None, :] < D), other=0.0).to(dtype)
    gain = tl.load(gain_ptr + h * M + index, mask=index < M, other=0.0)
    return steps, valid, offsets, mask, o, modes, gain


@triton.jit
def _resonance(o, modes, gain, params_ptr):
    """``(c [BR, BM], s [BR], e, a, beta)`` of a tile of rows."""
    threshold = tl.load(params_ptr)
    temperature = tl.load(params_ptr + 1)
    eps = tl.load(params_ptr + 2)
    c = tl.dot(o, tl.trans(modes), input_precision="ieee")  # U o [BR, BM]
    s = tl.sum(o * o, 1) + eps
    e = c * c / s[:, None]
    a = 1.0 / (1.0 + tl.exp((threshold - e) / temperature))
    return c, s, e, a, gain[None, :] * a


@triton.jit
def _resonance_forward_kernel(o_ptr, modes_ptr, gain_ptr, params_ptr, out_ptr, energy_ptr, mean_gain_ptr,
                              BN, H, D, M, BR: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr,
                              DIAGNOSTICS: tl.constexpr):
    h = tl.program_id(1)
    steps, valid, offsets, mask, o, modes, gain = _modes_and_rows(
        o_ptr, modes_ptr, gain_ptr, tl.program_id(0).to(tl.int64), h, BN, H, D, M, BR, BD, BM)
    c, _, e, _, beta = _resonance(o, modes, gain, params_ptr)
    out = o + tl.dot(beta * c, modes, input_precision="ieee")
    tl.store(out_ptr + offsets, out, mask=mask)
    if DIAGNOSTICS:
        index = tl.arange(0, BM)
        rows = steps * H + h
        tl.store(energy_ptr + rows[:, None] * M + index[None, :], e,
                 mask=valid[:, None] & (index[None, :] < M))
        tl.store(mean_gain_ptr + rows, 1.0 + tl.sum(beta, 1) / M, mask=valid)


@triton.jit
def _resonance_backward_kernel(o_ptr, modes_ptr, gain_ptr, params_ptr, dout_ptr, do_ptr, dgain_ptr,
                               BN, H, D, M, BR: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    _, _, offsets, mask, o, modes, gain = _modes_and_rows(o_ptr, modes_ptr, gain_ptr, pid, h, BN, H, D, M,
                                                          BR, BD, BM)
    c, s, e, a, beta = _resonance(o, modes, gain, params_ptr)
    temperature = tl.load(params_ptr + 1)
    dout = tl.load(dout_ptr + offsets, mask=mask, other=0.0).to(o.dtype)
    p = tl.dot(dout, tl.trans(modes), input_precision="ieee")  # U dout [BR, BM]
    dbeta = p * c
    de = dbeta * gain[None, :] * a * (1.0 - a) / temperature
    dc = p * beta + 2.0 * de * c / s[:, None]
    ds = -tl.sum(de * e, 1) / s
    do = dout + tl.dot(dc, modes, input_precision="ieee") + 2.0 * ds[:, None] * o
    tl.store(do_ptr + offsets, do, mask=mask)
    index = tl.arange(0, BM)
    tl.store(dgain_ptr + (pid * H + h) * M + index, tl.sum(dbeta * a, 0), mask=index < M)



class Resonance(torch.autograd.Function):
    """``(o [B, N, H, d] contiguous, modes [M, d], gain [H, M], params [3], diagnostics)`` ->
    ``(amplified [B, N, H, d], energy [B, N, H, M], mean gain [B, N, H])`` (formulas in the
    module docstring; energy and mean gain are empty unless ``diagnostics``). ``params =
    (threshold, temperature, eps)``. Differentiable in ``o`` and ``gain``."""

    @staticmethod
    def forward(ctx, o: Tensor, modes: Tensor, gain: Tensor, params: Tensor,
                diagnostics: bool) -> tuple[Tensor, Tensor, Tensor]:
        batch, n, heads, d = o.shape
        m = modes.shape[0]
        out = torch.empty_like(o, dtype=gain.dtype)
        shape = (batch, n, heads) if diagnostics else (0,)
        energy = o.new_empty((*shape, m) if diagnostics else (0,), dtype=gain.dtype)
        mean_gain = o.new_empty(shape, dtype=gain.dtype)
        grid = (triton.cdiv(batch * n, ROWS), heads)
        _resonance_forward_kernel[grid](o, modes, gain, params, out, energy, mean_gain, batch * n, heads, d, m,
                                        BR=ROWS, BD=feature_block(d), BM=feature_block(m),
                                        DIAGNOSTICS=diagnostics)
        ctx.save_for_backward(o, modes, gain, params)
        ctx.mark_non_differentiable(energy, mean_gain)
        return out, energy, mean_gain

    @staticmethod
    def backward(ctx, dout: Tensor | None, _denergy: Tensor | None, _dmean_gain: Tensor | None):
        o, modes, gain, params = ctx.saved_tensors
        batch, n, heads, d = o.shape
        m = modes.shape[0]
        dout = torch.zeros_like(o) if dout is None else dout.contiguous()
        grid = (triton.cdiv(batch * n, ROWS), heads)
        do = torch.empty_like(o)
        partial = torch.empty(grid[0], heads, m, device=o.device, dtype=gain.dtype)
        _resonance_backward_kernel[grid](o, modes, gain, params, dout, do, partial, batch * n, heads, d, m,
                                         BR=ROWS, BD=feature_block(d), BM=feature_block(m))
        return do, None, partial.sum(0), None, None


def resonate(o: Tensor, modes: Tensor, gain: Tensor, *, threshold: float, temperature: float, eps: float,
             diagnostics: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``o [B, N, H, d]``, ``modes [M, d]``, ``gain [H, M]`` -> ``(amplified [B, N, H, d],
    energy [B, N, H, M], mean gain [B, N, H])``, the last two ``None`` unless ``diagnostics``
    (Triton; CUDA tensors or the interpreter). Computes in float64 when ``o`` or ``gain`` is
    float64, else float32; returns that dtype."""
    dtype = torch.float64 if torch.float64 in (o.dtype, gain.dtype) else torch.float32
    params = kernel_constants((threshold, temperature, eps), dtype, o.device)
    out, energy, mean_gain = Resonance.apply(o.contiguous(), modes.to(dtype).contiguous(), gain.to(dtype),
                                             params, diagnostics)
    return out, (energy if diagnostics else None), (mean_gain if diagnostics else None)
