"""Triton kernels of the layer norm over the last axis (CUDA, or Triton's CPU interpreter;
imported lazily by :class:`kizashi.models.bk.layers.LayerNorm`).

Rows ``x [M, D]`` (``M`` = batch x tokens), weight ``w`` and bias ``b [D]``::

    mu = mean(x),   rstd = 1 / sqrt(mean((x - mu)^2) + eps),   xhat = (x - mu) rstd
    y = xhat w + b

Backward, with ``g = dy w``::

    dx = rstd (g - mean(g) - xhat mean(g xhat))
    dw = sum_rows(dy xhat),   db = sum_rows(dy)

PyTorch's kernels for long sequences of narrow rows (``M = 65,536``, ``D = 256``) spend most of
the backward in the weight and bias reduction; here a program takes ``ROWS`` rows, writes its
``[D]`` partial sums of ``dw`` and ``db``, and PyTorch adds the ``M / ROWS`` partials. The
forward keeps ``mu`` and ``rstd`` (``[M]`` each) for the backward. Computes in float32 (float64
for float64 inputs: the interpreter tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

ROWS = 16  # rows per program


@triton.jit
def _tile(ptr, rows, M, D, BD: tl.constexpr, dtype: tl.constexpr):
    """``(tile [ROWS, BD] in dtype, offsets, mask, valid rows)`` of contiguous ``[M, D]``."""
    cols = tl.arange(0, BD)
    valid = rows < M
    offsets = rows[:, None] * D + cols[None, :]
    mask = valid[:, None] & (cols[None, :] < D)
    return tl.load(ptr + offsets, mask=mask, other=0.0).to(dtype), offsets, mask, valid


@triton.jit
def _layer_norm_forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, M, D, eps,
                               BR: tl.constexpr, BD: tl.constexpr):
    dtype = mean_ptr.dtype.element_ty
    rows = tl.program_id(0).to(tl.int64) * BR + tl.arange(0, BR)
    x, offsets, mask, valid = _tile(x_ptr, rows, M, D, BD, dtype)
    cols = tl.arange(0, BD)
    mean = tl.sum(x, 1) / D
    centered = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, 1) / D + eps)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(dtype)
    b = tl.load(b_ptr + cols, mask=cols < D, other=0.0).to(dtype)
    tl.store(y_ptr + offsets, centered * rstd[:, None] * w[None, :] + b[None, :], mask=mask)
    tl.store(mean_ptr + rows, mean, mask=valid)
    tl.store(rstd_ptr + rows, rstd, mask=valid)


@triton.jit
def _layer_norm_backward_kernel(x_ptr, w_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr, M, D,
                                BR: tl.constexpr, BD: tl.constexpr):
    dtype = mean_ptr.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BR + tl.arange(0, BR)
    x, offsets, mask, valid = _tile(x_ptr, rows, M, D, BD, dtype)
    dy, _, _, _ = _tile(dy_ptr, rows, M, D, BD, dtype)
    cols = tl.arange(0, BD)
    mean = tl.load(mean_ptr + rows, mask=valid, other=0.0)
    rstd = tl.load(rstd_ptr + rows, mask=valid, other=0.0)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(dtype)
    xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
    g = dy * w[None, :]
    dx = rstd[:, None] * (g - (tl.sum(g, 1) / D)[:, None] - xhat * (tl.sum(g * xhat, 1) / D)[:, None])
    tl.store(dx_ptr + offsets, dx, mask=mask)
    tl.store(dw_ptr + pid * D + cols, tl.sum(dy * xhat, 0), mask=cols < D)
    tl.store(db_ptr + pid * D + cols, tl.sum(dy, 0), mask=cols < D)


class LayerNormFunction(torch.autograd.Function):
    """``(x [..., D] contiguous, weight [D], bias [D], eps, out_dtype)`` -> ``y [..., D]`` in
    ``out_dtype``; computes in ``weight``'s dtype (float32 or float64); differentiable in all
    three tensors (``dx`` in ``x``'s dtype)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
        d = x.shape[-1]
        m = x.numel() // d
        y = torch.empty(x.shape, device=x.device, dtype=out_dtype)
        mean = torch.empty(m, device=x.device, dtype=weight.dtype)
        rstd = torch.empty_like(mean)
        _layer_norm_forward_kernel[(triton.cdiv(m, ROWS),)](x, weight, bias, y, mean, rstd, m, d, eps,
                                                            BR=ROWS, BD=triton.next_power_of_2(d))
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        d = x.shape[-1]
        m = x.numel() // d
        programs = triton.cdiv(m, ROWS)
        dx = torch.empty_like(x)
        dw = torch.empty(programs, d, device=x.device, dtype=weight.dtype)
        db = torch.empty_like(dw)
        _layer_norm_backward_kernel[(programs,)](x, weight, dy.contiguous(), mean, rstd, dx, dw, db, m, d,
                                                 BR=ROWS, BD=triton.next_power_of_2(d))
        return dx, dw.sum(0), db.sum(0), None, None


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float, out_dtype: torch.dtype) -> Tensor:
    """Layer norm of ``x [..., D]`` over its last axis with ``weight, bias [D]`` (Triton; CUDA
    tensors or the interpreter): ``y`` in ``out_dtype``, computed in float32 (float64 when the
    weight is float64)."""
    dtype = torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
    return LayerNormFunction.apply(x.contiguous(), weight.to(dtype), bias.to(dtype), eps, out_dtype)
