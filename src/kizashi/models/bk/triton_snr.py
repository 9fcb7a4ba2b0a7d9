"""Triton kernels of the SNR memory filter's gate (CUDA, or Triton's CPU interpreter; imported
lazily by :class:`kizashi.models.bk.phase2.SNRMemoryFilter`).

One row per (batch, head, step): the moving averages of the written values ``mu [d]`` and of
their squares ``m2 [d]``, the memory's decay and learning rate (scalars), and::

    signal = mean_j(mu_j^2)
    noise  = mean_j(max(m2_j - mu_j^2, 0)) + eps
    snr    = signal / noise,            keep = snr / (snr + threshold)
    decay' = decay (1 + (gamma_boost - 1) (1 - keep))
    eta'   = eta (1 + (eta_boost - 1) keep)

The PyTorch code of the same formulas runs about a dozen elementwise and reduction kernels
over ``[B, H, N, d]`` forward and twice that backward, half of them on the strided halves of
the moments; here it is one pass over the moments each way. Backward (``k = keep``,
``u = [m2_j - mu_j^2 >= 0]``)::

    dkeep   = -(gamma_boost - 1) decay ddecay' + (eta_boost - 1) eta deta'
    dsnr    = dkeep threshold / (snr + threshold)^2
    dsignal = dsnr / noise,   dnoise = -dsnr snr / noise
    dmu_j   = (2 mu_j / d) (dsignal - u_j dnoise),   dm2_j = u_j dnoise / d
    ddecay  = ddecay' (1 + (gamma_boost - 1)(1 - k)),   deta = deta' (1 + (eta_boost - 1) k)

The moving averages' input ``[v, v^2]`` is written by one kernel too (:func:`values_and_squares`,
from the heads of the value projection read in place, any float dtype), and its backward is
one kernel, ``dv = dx_v + 2 v dx_sq``.

The kernels compute in float32 (float64 when the moments are float64: the interpreter tests);
the four constants travel as a small tensor of that dtype, so a float64 run is exact.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kizashi.models.bk.triton_common import feature_block, kernel_constants

ROWS = 64  # rows per program


@triton.jit
def _gate(mu, m2, decay, eta, params_ptr, D):
    """``(decay', eta', snr, keep, noise, positive)`` of a ``[ROWS, BD]`` tile of rows."""
    threshold = tl.load(params_ptr)
    gamma_gain = tl.load(params_ptr + 1)  # gamma_boost - 1
    eta_gain = tl.load(params_ptr + 2)  # eta_boost - 1
    eps = tl.load(params_ptr + 3)
    spread = m2 - mu * mu
    positive = spread >= 0.0  # the gradient mask of clamp_min(0) in the PyTorch code
    signal = tl.sum(mu * mu, 1) / D
    noise = tl.sum(tl.where(positive, spread, 0.0), 1) / D + eps
    snr = signal / noise
    keep = snr / (snr + threshold)
    return (decay * (1.0 + gamma_gain * (1.0 - keep)), eta * (1.0 + eta_gain * keep), snr, keep, noise,
            positive)


@triton.jit
def _row_tiles(rows, valid, H, N, D, s_b, s_h, s_n, BD: tl.constexpr):
    """Offsets and mask of the ``mu`` half of a ``[ROWS, BD]`` tile of ``moments [B, H, N,
    2 D]`` (strides ``s_b, s_h, s_n``, unit stride along the feature axis)."""
    b = rows // (H * N)
    h = (rows // N) % H
    t = rows % N
    cols = tl.arange(0, BD)
    offsets = b * s_b + h * s_h + t * s_n
    return offsets[:, None] + cols[None, :], valid[:, None] & (cols[None, :] < D)


@triton.jit
def _gate_inputs(moments_ptr, decay_ptr, eta_ptr, R, H, N, D, s_b, s_h, s_n, BR: tl.constexpr,
                 BD: tl.constexpr):
    """``(rows, valid, mask, mu, m2, decay, eta)`` of the program's ``BR`` rows."""
    rows = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    valid = rows < R
    offsets, mask = _row_tiles(rows, valid, H, N, D, s_b, s_h, s_n, BD)
    mu = tl.load(moments_ptr + offsets, mask=mask, other=0.0)
    m2 = tl.load(moments_ptr + offsets + D, mask=mask, other=0.0)
    decay = tl.load(decay_ptr + rows, mask=valid, other=0.0)
    eta = tl.load(eta_ptr + rows, mask=valid, other=0.0)
    return rows, valid, mask, mu, m2, decay, eta


@triton.jit
def _snr_gate_forward_kernel(moments_ptr, decay_ptr, eta_ptr, params_ptr, decay_out_ptr, eta_out_ptr,
                             snr_ptr, R, H, N, D, s_b, s_h, s_n, BR: tl.constexpr, BD: tl.constexpr):
    rows, valid, _, mu, m2, decay, eta = _gate_inputs(moments_ptr, decay_ptr, eta_ptr, R, H, N, D,
                                                      s_b, s_h, s_n, BR, BD)
    decay_out, eta_out, snr, _, _, _ = _gate(mu, m2, decay, eta, params_ptr, D)
    tl.store(decay_out_ptr + rows, decay_out, mask=valid)
    tl.store(eta_out_ptr + rows, eta_out, mask=valid)
    tl.store(snr_ptr + rows, snr, mask=valid)


@triton.jit
def _snr_gate_backward_kernel(moments_ptr, decay_ptr, eta_ptr, params_ptr, ddecay_out_ptr, deta_out_ptr,
                              dmoments_ptr, ddecay_ptr, deta_ptr, R, H, N, D, s_b, s_h, s_n,
                              BR: tl.constexpr, BD: tl.constexpr):
    rows, valid, mask, mu, m2, decay, eta = _gate_inputs(moments_ptr, decay_ptr, eta_ptr, R, H, N, D,
                                                         s_b, s_h, s_n, BR, BD)
    ddecay_out = tl.load(ddecay_out_ptr + rows, mask=valid, other=0.0)
    deta_out = tl.load(deta_out_ptr + rows, mask=valid, other=0.0)
    _, _, snr, keep, noise, positive = _gate(mu, m2, decay, eta, params_ptr, D)
    threshold = tl.load(params_ptr)
    gamma_gain = tl.load(params_ptr + 1)
    eta_gain = tl.load(params_ptr + 2)
    dkeep = eta_gain * eta * deta_out - gamma_gain * decay * ddecay_out
    dsnr = dkeep * threshold / ((snr + threshold) * (snr + threshold))
    dsignal = dsnr / noise
    dnoise = -dsnr * snr / noise
    dmu = (2.0 * mu / D) * (dsignal[:, None] - tl.where(positive, dnoise[:, None], 0.0))
    dm2 = tl.where(positive, dnoise[:, None], 0.0) / D
    dense_rows = rows[:, None] * (2 * D) + tl.arange(0, BD)[None, :]
    tl.store(dmoments_ptr + dense_rows, dmu, mask=mask)
    tl.store(dmoments_ptr + dense_rows + D, dm2, mask=mask)
    tl.store(ddecay_ptr + rows, ddecay_out * (1.0 + gamma_gain * (1.0 - keep)), mask=valid)
    tl.store(deta_ptr + rows, deta_out * (1.0 + eta_gain * keep), mask=valid)


@triton.jit
def _values_and_squares_kernel(v_ptr, x_ptr, R, H, N, D, s_b, s_h, s_n, BR: tl.constexpr, BD: tl.constexpr):
    """Rows of ``x [B, H, N, 2 D]`` (contiguous) <- ``[v, v^2]`` of the rows of the view ``v``."""
    rows = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    valid = rows < R
    offsets, mask = _row_tiles(rows, valid, H, N, D, s_b, s_h, s_n, BD)
    v = tl.load(v_ptr + offsets, mask=mask, other=0.0).to(x_ptr.dtype.element_ty)
    dense = rows[:, None] * (2 * D) + tl.arange(0, BD)[None, :]
    tl.store(x_ptr + dense, v, mask=mask)
    tl.store(x_ptr + dense + D, v * v, mask=mask)


@triton.jit
def _values_and_squares_backward_kernel(v_ptr, dx_ptr, dv_ptr, R, H, N, D, s_b, s_h, s_n, sd_b, sd_h, sd_n,
                                        sv_b, sv_h, sv_n, BR: tl.constexpr, BD: tl.constexpr):
    """``dv = dx[..., :D] + 2 v dx[..., D:]``, written in ``dv``'s layout (strides ``sv_*``)."""
    rows = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    valid = rows < R
    offsets, mask = _row_tiles(rows, valid, H, N, D, s_b, s_h, s_n, BD)
    grad_offsets, _ = _row_tiles(rows, valid, H, N, D, sd_b, sd_h, sd_n, BD)
    out_offsets, _ = _row_tiles(rows, valid, H, N, D, sv_b, sv_h, sv_n, BD)
    v = tl.load(v_ptr + offsets, mask=mask, other=0.0).to(dx_ptr.dtype.element_ty)
    dvalue = tl.load(dx_ptr + grad_offsets, mask=mask, other=0.0)
    dsquare = tl.load(dx_ptr + grad_offsets + D, mask=mask, other=0.0)
    tl.store(dv_ptr + out_offsets, dvalue + 2.0 * v * dsquare, mask=mask)


class ValuesAndSquares(torch.autograd.Function):
    """``v [B, H, N, d]`` (any view with a unit feature stride, any float dtype) -> ``x [B, H,
    N, 2 d]`` contiguous in ``dtype``: ``[v, v^2]``; the gradient comes back in ``v``'s dtype
    and layout."""

    @staticmethod
    def forward(ctx, v: Tensor, dtype: torch.dtype) -> Tensor:
        batch, heads, n, d = v.shape
        rows = batch * heads * n
        x = torch.empty(batch, heads, n, 2 * d, device=v.device, dtype=dtype)
        _values_and_squares_kernel[(triton.cdiv(rows, ROWS),)](v, x, rows, heads, n, d, *v.stride()[:3],
                                                               BR=ROWS, BD=feature_block(d))
        ctx.save_for_backward(v)
        return x

    @staticmethod
    def backward(ctx, dx: Tensor):
        (v,) = ctx.saved_tensors
        batch, heads, n, d = v.shape
        rows = batch * heads * n
        dx = dx if dx.stride(-1) == 1 else dx.contiguous()
        dv = torch.empty_like(v)
        _values_and_squares_backward_kernel[(triton.cdiv(rows, ROWS),)](
            v, dx, dv, rows, heads, n, d, *v.stride()[:3], *dx.stride()[:3], *dv.stride()[:3],
            BR=ROWS, BD=feature_block(d))
        return dv, None


def values_and_squares(v: Tensor) -> Tensor:
    """``v [B, H, N, d]`` -> ``[v, v^2]`` as ``[B, H, N, 2 d]`` in float32 (float64 for float64
    ``v``), read in place from any view with a unit feature stride (Triton; CUDA tensors or the
    interpreter)."""
    if v.stride(-1) != 1:
        v = v.contiguous()
    return ValuesAndSquares.apply(v, torch.promote_types(v.dtype, torch.float32))



class SNRGate(torch.autograd.Function):
    """``(moments [B, H, N, 2 d], decay [B, H, N], eta [B, H, N], params [4])`` -> ``(decay',
    eta', snr)`` each ``[B, H, N]`` (formulas in the module docstring). ``moments`` may be any
    view with a unit stride along its last axis; ``decay``, ``eta`` contiguous; one floating
    dtype; ``params = (threshold, gamma_boost - 1, eta_boost - 1, eps)``. Differentiable in
    ``moments``, ``decay`` and ``eta``; ``snr`` carries no gradient."""

    @staticmethod
    def forward(ctx, moments: Tensor, decay: Tensor, eta: Tensor, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, heads, n, width = moments.shape
        d = width // 2
        rows = batch * heads * n
        decay_out, eta_out, snr = (torch.empty_like(decay) for _ in range(3))
        s_b, s_h, s_n, _ = moments.stride()
        _snr_gate_forward_kernel[(triton.cdiv(rows, ROWS),)](
            moments, decay, eta, params, decay_out, eta_out, snr, rows, heads, n, d, s_b, s_h, s_n,
            BR=ROWS, BD=feature_block(d))
        ctx.save_for_backward(moments, decay, eta, params)
        ctx.mark_non_differentiable(snr)
        return decay_out, eta_out, snr

    @staticmethod
    def backward(ctx, ddecay_out: Tensor | None, deta_out: Tensor | None, _dsnr: Tensor | None):
        moments, decay, eta, params = ctx.saved_tensors
        batch, heads, n, width = moments.shape
        d = width // 2
        rows = batch * heads * n
        ddecay_out = torch.zeros_like(decay) if ddecay_out is None else ddecay_out.to(decay.dtype).contiguous()
        deta_out = torch.zeros_like(eta) if deta_out is None else deta_out.to(eta.dtype).contiguous()
        dmoments = torch.empty((batch, heads, n, width), device=moments.device, dtype=moments.dtype)
        ddecay, deta = torch.empty_like(decay), torch.empty_like(eta)
        s_b, s_h, s_n, _ = moments.stride()
        _snr_gate_backward_kernel[(triton.cdiv(rows, ROWS),)](
            moments, decay, eta, params, ddecay_out, deta_out, dmoments, ddecay, deta, rows, heads, n, d,
            s_b, s_h, s_n, BR=ROWS, BD=feature_block(d))
        return dmoments, ddecay, deta, None


def snr_gate(moments: Tensor, decay: Tensor, eta: Tensor, *, threshold: float, gamma_boost: float,
             eta_boost: float, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``moments [B, H, N, 2 d]`` (the moving averages of the values, then of their squares),
    ``decay, eta [B, H, N]`` -> ``(decay', eta', snr)`` each ``[B, H, N]`` (Triton; CUDA
    tensors or the interpreter). Computes in float64 when an input is float64, else float32;
    returns that dtype."""
    dtype = torch.float64 if torch.float64 in (moments.dtype, decay.dtype, eta.dtype) else torch.float32
    moments = moments.to(dtype)
    if moments.stride(-1) != 1:
        moments = moments.contiguous()
    params = kernel_constants((threshold, gamma_boost - 1.0, eta_boost - 1.0, eps), dtype, moments.device)
    return SNRGate.apply(moments, decay.to(dtype).contiguous(), eta.to(dtype).contiguous(), params)
