"""Triton kernels of BK-Core (CUDA only; imported lazily by :mod:`kizashi.models.bk.core`).

Same maths as the PyTorch reference (see :mod:`kizashi.models.bk.core`), laid out for a GPU.

Forward (``_forward_block_kernel``). A program owns a block of ``LANES * SUB`` elements of
one row; lane ``r`` owns the ``SUB`` consecutive elements ``[r SUB, (r+1) SUB)``. The maps
act on ``(p, q)`` with ``rho = p / q`` (resp. ``sigma``):
``A_j = [[0, 1], [-beta_{j-1}, d_j]]`` (forward), ``B_j = [[0, 1], [-beta_j, d_j]]``
(backward).

1. every lane composes its ``SUB`` maps sequentially with sparse 2x2 updates (rescaled
   every other step, so nothing overflows);
2. ``tl.associative_scan`` over the lanes' 2x2 products (each rescaled by its largest
   entry) and a one-lane shift (``tl.gather``) give the ``rho`` / ``sigma`` entering each
   lane from the left / right;
3. every lane re-runs the scalar recursions ``rho_j = 1/(d_j - beta_{j-1} rho_{j-1})``
   (kept in the ``rho`` buffer, or in ``g``'s as scratch) and, right to left,
   ``sigma_j`` and ``g_j = 1 / (d_j - beta_{j-1} rho_{j-1} - beta_j sigma_{j+1})``.

A row with ``N <= FUSED_MAX`` is one program (``a, b, c`` read once, ``g`` written once:
32 B/element in complex64). Longer rows run three kernels: block products (MODE 1), a carry
scan over each row's blocks (``_forward_carry_kernel``), then the block kernel with the
entering vectors (MODE 2): ``a, b, c`` are read twice, 56 B/element. With a gradient, ``rho``
and ``sigma`` are written too (+16 B/element).

Backward (``_backward_block_kernel``). The two linear recursions of the analytic gradient
(``p`` forward, ``q`` backward; see :mod:`.core`) are affine scans with
``combine((k1, v1), (k2, v2)) = (k2 k1, k2 v1 + v2)`` over whole blocks, with the same
three-kernel blocking; the backward one runs on data shifted by one element so that lane
``j`` holds ``q_{j+1}`` next to its own ``p_j``.

Causal variant (``forward(..., causal=True)``, ``causal_backward``; used by
:func:`kizashi.models.bk.layers.bk_core_causal` on CUDA). The language models need only the
forward half, ``g_i = rho_i``: the block kernel with ``CAUSAL`` skips the backward maps, the
reverse lane scan and the second re-run, and writes ``rho`` as ``g``. Its gradient is one
reversed affine scan, ``nu_i = conj(w_i) + beta_i rho_{i+1}^2 nu_{i+1}``, with the same
blocking (``_causal_backward_kernel``); ``grad_a = -conj(rho^2 nu)``, and ``b``, ``c`` of
position ``i - 1`` get ``conj(c X)``, ``conj(b X)`` with ``X_i = rho_i^2 rho_{i-1} nu_i``.

Complex tensors travel as interleaved (re, im) floats; float32 (complex64) and float64
(complex128) are both supported. Every distinct block size, dtype and mode is a separate
compilation (seconds each, cached by Triton on disk).

The kernel is bound by its strided per-lane loads and the lane scans, not by memory
bandwidth. Lanes of ``SUB`` sequential elements are used rather than a fully
element-parallel scan (one ``tl.associative_scan`` of the per-element 2x2 maps over a
coalesced tile) because Triton's scan of 8-float tuples spread over the tile costs more
than the strided loads. Timings: ``benchmarks/bench_bk_core.py`` and docs/bk_core.md.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kizashi.models.bk.triton_common import kernel_constants

FUSED_MAX = 2048  # rows up to this length: one program per row
CHUNK = 2048  # block length of the three-kernel path
SUB = 8  # elements per lane, run sequentially (forward kernel)
CARRY_BLOCK = 1024  # chunks per step of the carry scan
NUM_WARPS = 8


# --------------------------------------------------------------------------------------
# complex helpers
# --------------------------------------------------------------------------------------


@triton.jit
def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def _cdiv(ar, ai, br, bi):
    # (a / b) with one reciprocal; |b| is O(1) here (normalized vectors)
    inv = 1.0 / (br * br + bi * bi)
    return (ar * br + ai * bi) * inv, (ai * br - ar * bi) * inv


@triton.jit
def _max_abs4(x0, x1, x2, x3):
    return tl.maximum(tl.maximum(tl.abs(x0), tl.abs(x1)), tl.maximum(tl.abs(x2), tl.abs(x3)))


@triton.jit
def _store4(ptr, x0, x1, x2, x3, mask):
    """An affine map ``(k, v)`` (complex) as 4 floats at ``ptr`` (lanes where ``mask``)."""
    tl.store(ptr + 0, x0, mask=mask)
    tl.store(ptr + 1, x1, mask=mask)
    tl.store(ptr + 2, x2, mask=mask)
    tl.store(ptr + 3, x3, mask=mask)


@triton.jit
def _store8(ptr, x0, x1, x2, x3, x4, x5, x6, x7, mask):
    """A 2x2 complex matrix as 8 floats at ``ptr`` (lanes where ``mask``)."""
    tl.store(ptr + 0, x0, mask=mask)
    tl.store(ptr + 1, x1, mask=mask)
    tl.store(ptr + 2, x2, mask=mask)
    tl.store(ptr + 3, x3, mask=mask)
    tl.store(ptr + 4, x4, mask=mask)
    tl.store(ptr + 5, x5, mask=mask)
    tl.store(ptr + 6, x6, mask=mask)
    tl.store(ptr + 7, x7, mask=mask)


@triton.jit
def _load8(ptr, mask):
    """A 2x2 complex matrix as 8 floats at ``ptr``; the identity where not ``mask``."""
    return (tl.load(ptr + 0, mask=mask, other=1.0), tl.load(ptr + 1, mask=mask, other=0.0),
            tl.load(ptr + 2, mask=mask, other=0.0), tl.load(ptr + 3, mask=mask, other=0.0),
            tl.load(ptr + 4, mask=mask, other=0.0), tl.load(ptr + 5, mask=mask, other=0.0),
            tl.load(ptr + 6, mask=mask, other=1.0), tl.load(ptr + 7, mask=mask, other=0.0))


@triton.jit
def _mat_combine(a00r, a00i, a01r, a01i, a10r, a10i, a11r, a11i,
                 b00r, b00i, b01r, b01i, b10r, b10i, b11r, b11i):
    """``B @ A`` (B applied after A), rescaled so that its largest entry is ~1."""
    c00r = b00r * a00r - b00i * a00i + b01r * a10r - b01i * a10i
    c00i = b00r * a00i + b00i * a00r + b01r * a10i + b01i * a10r
    c01r = b00r * a01r - b00i * a01i + b01r * a11r - b01i * a11i
    c01i = b00r * a01i + b00i * a01r + b01r * a11i + b01i * a11r
    c10r = b10r * a00r - b10i * a00i + b11r * a10r - b11i * a10i
    c10i = b10r * a00i + b10i * a00r + b11r * a10i + b11i * a10r
    c11r = b10r * a01r - b10i * a01i + b11r * a11r - b11i * a11i
    c11i = b10r * a01i + b10i * a01r + b11r * a11i + b11i * a11r
    m = tl.maximum(_max_abs4(c00r, c00i, c01r, c01i), _max_abs4(c10r, c10i, c11r, c11i))
    s = 1.0 / tl.where(m > 0, m, 1.0)
    return (c00r * s, c00i * s, c01r * s, c01i * s, c10r * s, c10i * s, c11r * s, c11i * s)


@triton.jit
def _affine_combine(k1r, k1i, v1r, v1i, k2r, k2i, v2r, v2i):
    """``p -> k2 (k1 p + v1) + v2`` (map 2 applied after map 1)."""
    kr, ki = _cmul(k2r, k2i, k1r, k1i)
    vr, vi = _cmul(k2r, k2i, v1r, v1i)
    return kr, ki, vr + v2r, vi + v2i


@triton.jit
def _mat_vec(m00r, m00i, m01r, m01i, m10r, m10i, m11r, m11i, u0r, u0i, u1r, u1i):
    x0r = m00r * u0r - m00i * u0i + m01r * u1r - m01i * u1i
    x0i = m00r * u0i + m00i * u0r + m01r * u1i + m01i * u1r
    x1r = m10r * u0r - m10i * u0i + m11r * u1r - m11i * u1i
    x1i = m10r * u0i + m10i * u0r + m11r * u1i + m11i * u1r
    m = tl.maximum(_max_abs4(x0r, x0i, x1r, x1i), 1e-30)
    s = 1.0 / m
    return x0r * s, x0i * s, x1r * s, x1i * s


# --------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------


@triton.jit
def _load_c2(ptr, idx, mask):
    """Complex load as one 8/16-byte vector per lane: ``[LANES]`` -> ``(re, im)``."""
    pair = tl.arange(0, 2)
    x = tl.load(ptr + 2 * idx[:, None] + pair[None, :], mask=mask[:, None], other=0.0)
    return tl.split(x)


@triton.jit
def _store_c2(ptr, idx, re, im, mask):
    pair = tl.arange(0, 2)
    tl.store(ptr + 2 * idx[:, None] + pair[None, :], tl.join(re, im), mask=mask[:, None])


@triton.jit
def _crecip(xr, xi):
    inv = 1.0 / (xr * xr + xi * xi)
    return xr * inv, -xi * inv


@triton.jit
def _load_d_beta(a_row, b_row, c_row, idx, N, zr, zi):
    """``d = a - z`` (1 past the end) and ``beta = b c`` (0 where b, c do not exist)."""
    valid = idx < N
    ar, ai = _load_c2(a_row, idx, valid)
    dr = tl.where(valid, ar - zr, 1.0)
    di = tl.where(valid, ai - zi, 0.0)
    inner = idx < N - 1
    br, bi = _load_c2(b_row, idx, inner)
    cr, ci = _load_c2(c_row, idx, inner)
    betar, betai = _cmul(br, bi, cr, ci)
    return dr, di, betar, betai


@triton.jit
def _normalize4(x0, x1, x2, x3, x4, x5, x6, x7):
    m = tl.maximum(_max_abs4(x0, x1, x2, x3), _max_abs4(x4, x5, x6, x7))
    s = 1.0 / tl.where(m > 0, m, 1.0)
    return x0 * s, x1 * s, x2 * s, x3 * s, x4 * s, x5 * s, x6 * s, x7 * s


@triton.jit
def _forward_block_kernel(
    a_ptr, b_ptr, c_ptr, z_ptr,
    fwd_agg_ptr, bwd_agg_ptr,  # [M, C, 8] block maps (MODE 1 writes them)
    fwd_in_ptr, bwd_in_ptr,  # [M, C + 1, 4] vectors entering each block (MODE 2 reads)
    g_ptr, rho_ptr, sigma_ptr,  # [M, N, 2] outputs (MODE 2)
    N, C,
    LANES: tl.constexpr, SUB: tl.constexpr, MODE: tl.constexpr, CARRY: tl.constexpr,
    SAVE: tl.constexpr, CAUSAL: tl.constexpr,
):
    """A block of ``LANES * SUB`` elements; lane ``r`` owns elements ``[r SUB, (r+1) SUB)``.

    Maps act on ``(p, q)`` with ``rho = p / q`` (``sigma = p / q``):
    ``A_j = [[0, 1], [-beta_{j-1}, d_j]]`` forward, ``B_j = [[0, 1], [-beta_j, d_j]]``
    backward. (1) every lane composes its ``SUB`` maps sequentially (sparse updates);
    (2) ``tl.associative_scan`` over the lanes' 2x2 maps gives the value entering every lane;
    (3) every lane re-runs the scalar recursions over its elements and writes ``g``.
    ``CAUSAL``: the forward half only; ``g`` receives ``rho`` (the causal resolvent)."""
    row = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    lane = tl.arange(0, LANES)
    base = blk * (LANES * SUB) + lane * SUB
    a_row = a_ptr + row * (2 * N)
    b_row = b_ptr + row * (2 * (N - 1))
    c_row = c_ptr + row * (2 * (N - 1))
    zr = tl.load(z_ptr + 2 * row)
    zi = tl.load(z_ptr + 2 * row + 1)
    has_in = (base >= 1) & (base < N)
    bir, bii = _load_c2(b_row, base - 1, has_in)
    cir, cii = _load_c2(c_row, base - 1, has_in)
    beta_in_r, beta_in_i = _cmul(bir, bii, cir, cii)  # beta_{base-1}

    zero = tl.zeros([LANES], dtype=a_ptr.dtype.element_ty)
    one = zero + 1.0
    # (1) lane maps: F = A_last ... A_first (left-multiplied), K = B_first ... B_last
    # (right-multiplied), both sparse updates, rescaled every other step
    f00r, f00i, f01r, f01i, f10r, f10i, f11r, f11i = one, zero, zero, zero, zero, zero, one, zero
    k00r, k00i, k01r, k01i, k10r, k10i, k11r, k11i = one, zero, zero, zero, zero, zero, one, zero
    bpr = beta_in_r
    bpi = beta_in_i
    for j in tl.static_range(SUB):
        dr, di, btr, bti = _load_d_beta(a_row, b_row, c_row, base + j, N, zr, zi)
        # F <- A_j F: row0 <- row1, row1 <- d row1 - beta_prev row0
        t0r, t0i = _cmul(dr, di, f10r, f10i)
        t1r, t1i = _cmul(bpr, bpi, f00r, f00i)
        t2r, t2i = _cmul(dr, di, f11r, f11i)
        t3r, t3i = _cmul(bpr, bpi, f01r, f01i)
        f00r, f00i, f01r, f01i = f10r, f10i, f11r, f11i
        f10r = t0r - t1r
        f10i = t0i - t1i
        f11r = t2r - t3r
        f11i = t2i - t3i
        if not CAUSAL:
            # K <- K B_j: [[-beta k01, k00 + d k01], [-beta k11, k10 + d k11]]
            u0r, u0i = _cmul(btr, bti, k01r, k01i)
            u1r, u1i = _cmul(dr, di, k01r, k01i)
            u2r, u2i = _cmul(btr, bti, k11r, k11i)
            u3r, u3i = _cmul(dr, di, k11r, k11i)
            k01r = k00r + u1r
            k01i = k00i + u1i
            k11r = k10r + u3r
            k11i = k10i + u3i
            k00r = -u0r
            k00i = -u0i
            k10r = -u2r
            k10i = -u2i
        if j % 2 == 1:
            f00r, f00i, f01r, f01i, f10r, f10i, f11r, f11i = _normalize4(
                f00r, f00i, f01r, f01i, f10r, f10i, f11r, f11i)
            if not CAUSAL:
                k00r, k00i, k01r, k01i, k10r, k10i, k11r, k11i = _normalize4(
                    k00r, k00i, k01r, k01i, k10r, k10i, k11r, k11i)
        bpr = btr
        bpi = bti

    # (2) scans over lanes
    q00r, q00i, q01r, q01i, q10r, q10i, q11r, q11i = tl.associative_scan(
        (f00r, f00i, f01r, f01i, f10r, f10i, f11r, f11i), 0, _mat_combine
    )
    if not CAUSAL:
        s00r, s00i, s01r, s01i, s10r, s10i, s11r, s11i = tl.associative_scan(
            (k00r, k00i, k01r, k01i, k10r, k10i, k11r, k11i), 0, _mat_combine, reverse=True
        )

    if MODE == 1:
        agg = row * C * 8 + blk * 8
        last = lane == LANES - 1
        first = lane == 0
        _store8(fwd_agg_ptr + agg + lane * 0,
                q00r, q00i, q01r, q01i, q10r, q10i, q11r, q11i, last)
        if not CAUSAL:
            _store8(bwd_agg_ptr + agg + lane * 0,
                    s00r, s00i, s01r, s01i, s10r, s10i, s11r, s11i, first)
    else:
        if CARRY:
            fin = fwd_in_ptr + row * (C + 1) * 4 + blk * 4
            v0r = tl.load(fin)
            v0i = tl.load(fin + 1)
            v1r = tl.load(fin + 2)
            v1i = tl.load(fin + 3)
            if not CAUSAL:
                bin_ = bwd_in_ptr + row * (C + 1) * 4 + (blk + 1) * 4
                w0r = tl.load(bin_)
                w0i = tl.load(bin_ + 1)
                w1r = tl.load(bin_ + 2)
                w1i = tl.load(bin_ + 3)
        else:  # rho_{-1} = 0, sigma_N = 0: (p, q) = (0, 1)
            v0r = tl.load(z_ptr + 2 * row) * 0.0
            v0i = v0r
            v1r = v0r + 1.0
            v1i = v0r
            w0r = v0r
            w0i = v0r
            w1r = v1r
            w1i = v0r
        x0r, x0i, x1r, x1i = _mat_vec(
            q00r, q00i, q01r, q01i, q10r, q10i, q11r, q11i, v0r, v0i, v1r, v1i
        )  # value after lane r
        prev = tl.maximum(lane - 1, 0)
        is_first = lane == 0
        e0r = tl.where(is_first, v0r, tl.gather(x0r, prev, 0))
        e0i = tl.where(is_first, v0i, tl.gather(x0i, prev, 0))
        e1r = tl.where(is_first, v1r, tl.gather(x1r, prev, 0))
        e1i = tl.where(is_first, v1i, tl.gather(x1i, prev, 0))
        rho_in_r, rho_in_i = _cdiv(e0r, e0i, e1r, e1i)  # rho entering the lane
        if not CAUSAL:
            y0r, y0i, y1r, y1i = _mat_vec(
                s00r, s00i, s01r, s01i, s10r, s10i, s11r, s11i, w0r, w0i, w1r, w1i
            )  # value at the start of lane r
            nxt = tl.minimum(lane + 1, LANES - 1)
            is_last = lane == LANES - 1
            h0r = tl.where(is_last, w0r, tl.gather(y0r, nxt, 0))
            h0i = tl.where(is_last, w0i, tl.gather(y0i, nxt, 0))
            h1r = tl.where(is_last, w1r, tl.gather(y1r, nxt, 0))
            h1i = tl.where(is_last, w1i, tl.gather(y1i, nxt, 0))
            sgr, sgi = _cdiv(h0r, h0i, h1r, h1i)  # sigma entering the lane from the right

        # (3a) forward re-run, rho kept in the rho buffer (or in g's, overwritten below;
        # causal: g is rho)
        g_row = g_ptr + row * (2 * N)
        if SAVE and not CAUSAL:
            scratch = rho_ptr + row * (2 * N)
        else:
            scratch = g_row
        rhr = rho_in_r
        rhi = rho_in_i
        bpr = beta_in_r
        bpi = beta_in_i
        for j in tl.static_range(SUB):
            idx = base + j
            dr, di, btr, bti = _load_d_beta(a_row, b_row, c_row, idx, N, zr, zi)
            tr, ti = _cmul(bpr, bpi, rhr, rhi)
            rhr, rhi = _crecip(dr - tr, di - ti)
            _store_c2(scratch, idx, rhr, rhi, idx < N)
            bpr = btr
            bpi = bti
        # (3b) backward re-run and G = 1 / (d - beta_{i-1} rho_{i-1} - beta_i sigma_{i+1})
        for jj in tl.static_range(0 if CAUSAL else SUB):
            j = SUB - 1 - jj
            idx = base + j
            valid = idx < N
            dr, di, btr, bti = _load_d_beta(a_row, b_row, c_row, idx, N, zr, zi)
            if j == 0:
                bpr = beta_in_r
                bpi = beta_in_i
                rpr = rho_in_r
                rpi = rho_in_i
            else:
                has_prev = (idx >= 1) & (idx < N)
                pbr, pbi = _load_c2(b_row, idx - 1, has_prev)
                pcr, pci = _load_c2(c_row, idx - 1, has_prev)
                bpr, bpi = _cmul(pbr, pbi, pcr, pci)
                rpr, rpi = _load_c2(scratch, idx - 1, valid)
            t0r, t0i = _cmul(btr, bti, sgr, sgi)  # beta_i sigma_{i+1}
            t1r, t1i = _cmul(bpr, bpi, rpr, rpi)  # beta_{i-1} rho_{i-1}
            gr, gi = _crecip(dr - t0r - t1r, di - t0i - t1i)
            sgr, sgi = _crecip(dr - t0r, di - t0i)
            _store_c2(g_row, idx, gr, gi, valid)
            if SAVE:
                _store_c2(sigma_ptr + row * (2 * N), idx, sgr, sgi, valid)


@triton.jit
def _forward_carry_kernel(fwd_agg_ptr, bwd_agg_ptr, fwd_in_ptr, bwd_in_ptr, C,
                          CB: tl.constexpr, STEPS: tl.constexpr, BACKWARD: tl.constexpr):
    """Vectors entering every block: ``fwd_in[k+1] = P_k fwd_in[k]`` (from ``fwd_in[0]``)
    and (``BACKWARD``) ``bwd_in[k] = S_k bwd_in[k+1]`` (from ``bwd_in[C]``), by blocks of
    ``CB`` chunks."""
    row = tl.program_id(0).to(tl.int64)
    lane = tl.arange(0, CB)
    agg_row = fwd_agg_ptr + row * C * 8
    bagg_row = bwd_agg_ptr + row * C * 8
    fin_row = fwd_in_ptr + row * (C + 1) * 4
    bin_row = bwd_in_ptr + row * (C + 1) * 4

    u0r = tl.load(fin_row)
    u0i = tl.load(fin_row + 1)
    u1r = tl.load(fin_row + 2)
    u1i = tl.load(fin_row + 3)
    for step in range(0, STEPS):
        start = step * CB
        k = start + lane
        valid = k < C
        m00r, m00i, m01r, m01i, m10r, m10i, m11r, m11i = _load8(agg_row + k * 8, valid)
        q00r, q00i, q01r, q01i, q10r, q10i, q11r, q11i = tl.associative_scan(
            (m00r, m00i, m01r, m01i, m10r, m10i, m11r, m11i), 0, _mat_combine
        )
        x0r, x0i, x1r, x1i = _mat_vec(
            q00r, q00i, q01r, q01i, q10r, q10i, q11r, q11i, u0r, u0i, u1r, u1i
        )
        out = fin_row + (k + 1) * 4
        tl.store(out, x0r, mask=valid)
        tl.store(out + 1, x0i, mask=valid)
        tl.store(out + 2, x1r, mask=valid)
        tl.store(out + 3, x1i, mask=valid)
        last = k == tl.minimum(start + CB, C) - 1
        u0r = tl.sum(tl.where(last, x0r, 0.0), 0)
        u0i = tl.sum(tl.where(last, x0i, 0.0), 0)
        u1r = tl.sum(tl.where(last, x1r, 0.0), 0)
        u1i = tl.sum(tl.where(last, x1i, 0.0), 0)

    w0r = tl.load(bin_row + C * 4)
    w0i = tl.load(bin_row + C * 4 + 1)
    w1r = tl.load(bin_row + C * 4 + 2)
    w1i = tl.load(bin_row + C * 4 + 3)
    for step in range(0, STEPS if BACKWARD else 0):
        start = (STEPS - 1 - step) * CB
        k = start + lane
        valid = k < C
        m00r, m00i, m01r, m01i, m10r, m10i, m11r, m11i = _load8(bagg_row + k * 8, valid)
        s00r, s00i, s01r, s01i, s10r, s10i, s11r, s11i = tl.associative_scan(
            (m00r, m00i, m01r, m01i, m10r, m10i, m11r, m11i), 0, _mat_combine, reverse=True
        )
        y0r, y0i, y1r, y1i = _mat_vec(
            s00r, s00i, s01r, s01i, s10r, s10i, s11r, s11i, w0r, w0i, w1r, w1i
        )
        out = bin_row + k * 4
        tl.store(out, y0r, mask=valid)
        tl.store(out + 1, y0i, mask=valid)
        tl.store(out + 2, y1r, mask=valid)
        tl.store(out + 3, y1i, mask=valid)
        first = k == start
        w0r = tl.sum(tl.where(first, y0r, 0.0), 0)
        w0i = tl.sum(tl.where(first, y0i, 0.0), 0)
        w1r = tl.sum(tl.where(first, y1r, 0.0), 0)
        w1i = tl.sum(tl.where(first, y1i, 0.0), 0)


# --------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------


@triton.jit
def _backward_block_kernel(
    gg_ptr, b_ptr, c_ptr, g_ptr, rho_ptr, sigma_ptr,
    fwd_agg_ptr, bwd_agg_ptr,  # [M, C, 4] affine block maps (MODE 1 writes)
    fwd_in_ptr, bwd_in_ptr,  # [M, C + 1, 2] values entering each block (MODE 2 reads)
    ga_ptr, gb_ptr, gc_ptr,  # outputs (MODE 2)
    N, C,
    BLOCK: tl.constexpr, MODE: tl.constexpr, CARRY: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    lane = tl.arange(0, BLOCK)
    i = blk * BLOCK + lane
    valid = i < N
    nrow = row * (2 * N)
    brow = row * (2 * (N - 1))

    # forward recursion p_i = u_i + kappa_i p_{i-1}, kappa_i = beta_{i-1} rho_{i-1}^2
    has_prev = valid & (i >= 1)
    ur, ui = _load_c2(gg_ptr + nrow, i, valid)
    ui = -ui  # u = conj(dL/dg)
    bpr, bpi = _load_c2(b_ptr + brow, i - 1, has_prev)
    cpr, cpi = _load_c2(c_ptr + brow, i - 1, has_prev)
    rpr, rpi = _load_c2(rho_ptr + nrow, i - 1, has_prev)
    tr, ti = _cmul(bpr, bpi, cpr, cpi)
    r2r, r2i = _cmul(rpr, rpi, rpr, rpi)
    kr, ki = _cmul(tr, ti, r2r, r2i)
    zero = tl.zeros_like(kr)
    one = zero + 1.0
    kr = tl.where(valid, kr, one)  # identity past the end
    pkr, pki, pvr, pvi = tl.associative_scan((kr, ki, ur, ui), 0, _affine_combine)

    # backward recursion, shifted: lane i holds (lambda_{i+1}, u_{i+1}) and yields q_{i+1};
    # lambda_j = beta_j sigma_{j+1}^2; maps past the end are 0 (q_N = 0)
    j = i + 1
    j_valid = j < N
    j_next = j < N - 1
    u1r, u1i = _load_c2(gg_ptr + nrow, j, j_valid)
    u1i = -u1i
    bn1r, bn1i = _load_c2(b_ptr + brow, j, j_next)
    cn1r, cn1i = _load_c2(c_ptr + brow, j, j_next)
    sn1r, sn1i = _load_c2(sigma_ptr + nrow, j + 1, j_next)
    tr, ti = _cmul(bn1r, bn1i, cn1r, cn1i)
    s2r, s2i = _cmul(sn1r, sn1i, sn1r, sn1i)
    lr, li = _cmul(tr, ti, s2r, s2i)
    qkr, qki, qvr, qvi = tl.associative_scan((lr, li, u1r, u1i), 0, _affine_combine, reverse=True)

    if MODE == 1:
        agg = row * C * 4 + blk * 4
        last = lane == BLOCK - 1
        first = lane == 0
        _store4(fwd_agg_ptr + agg + lane * 0, pkr, pki, pvr, pvi, last)
        _store4(bwd_agg_ptr + agg + lane * 0, qkr, qki, qvr, qvi, first)
    else:
        if CARRY:
            fin = fwd_in_ptr + row * (C + 1) * 2 + blk * 2
            bin_ = bwd_in_ptr + row * (C + 1) * 2 + (blk + 1) * 2
            er = tl.load(fin)
            ei = tl.load(fin + 1)
            fr = tl.load(bin_)
            fi = tl.load(bin_ + 1)
            t1r, t1i = _cmul(pkr, pki, er, ei)
            pr = pvr + t1r
            pi = pvi + t1i
            t2r, t2i = _cmul(qkr, qki, fr, fi)
            qnr = qvr + t2r  # q_{i+1}
            qni = qvi + t2i
        else:
            pr = pvr
            pi = pvi
            qnr = qvr
            qni = qvi
        has_next = i < N - 1
        bnr, bni = _load_c2(b_ptr + brow, i, has_next)
        cnr, cni = _load_c2(c_ptr + brow, i, has_next)
        snr, sni = _load_c2(sigma_ptr + nrow, i + 1, has_next)  # sigma_{i+1}
        tr, ti = _cmul(bnr, bni, cnr, cni)
        s2r, s2i = _cmul(snr, sni, snr, sni)
        lr, li = _cmul(tr, ti, s2r, s2i)  # lambda_i
        t3r, t3i = _cmul(lr, li, qnr, qni)
        qr = ur + t3r  # q_i
        qi = ui + t3i
        gr, gi = _load_c2(g_ptr + nrow, i, valid)
        g2r, g2i = _cmul(gr, gi, gr, gi)
        Pr, Pi = _cmul(g2r, g2i, pr + qr - ur, pi + qi - ui)
        _store_c2(ga_ptr + nrow, i, -Pr, Pi, valid)  # -conj(P)
        # W = G_i^2 p_i sigma_{i+1} + G_{i+1}^2 q_{i+1} rho_i
        gnr, gni = _load_c2(g_ptr + nrow, i + 1, has_next)
        rr, ri = _load_c2(rho_ptr + nrow, i, has_next)
        g2nr, g2ni = _cmul(gnr, gni, gnr, gni)
        fr_, fi_ = _cmul(g2r, g2i, pr, pi)
        w1r, w1i = _cmul(fr_, fi_, snr, sni)
        hr, hi = _cmul(g2nr, g2ni, qnr, qni)
        w2r, w2i = _cmul(hr, hi, rr, ri)
        wr = w1r + w2r
        wi = w1i + w2i
        xbr, xbi = _cmul(cnr, cni, wr, wi)
        _store_c2(gb_ptr + brow, i, xbr, -xbi, has_next)  # conj(c W)
        xcr, xci = _cmul(bnr, bni, wr, wi)
        _store_c2(gc_ptr + brow, i, xcr, -xci, has_next)  # conj(b W)


@triton.jit
def _backward_carry_kernel(fwd_agg_ptr, bwd_agg_ptr, fwd_in_ptr, bwd_in_ptr, C,
                           CB: tl.constexpr, STEPS: tl.constexpr, FORWARD: tl.constexpr):
    """Affine carries: (``FORWARD``) ``fwd_in[k+1] = K_k fwd_in[k] + V_k``, and
    ``bwd_in[k] = K'_k bwd_in[k+1] + V'_k``."""
    row = tl.program_id(0).to(tl.int64)
    lane = tl.arange(0, CB)
    agg_row = fwd_agg_ptr + row * C * 4
    bagg_row = bwd_agg_ptr + row * C * 4
    fin_row = fwd_in_ptr + row * (C + 1) * 2
    bin_row = bwd_in_ptr + row * (C + 1) * 2

    er = tl.load(fin_row)
    ei = tl.load(fin_row + 1)
    for step in range(0, STEPS if FORWARD else 0):
        start = step * CB
        k = start + lane
        valid = k < C
        base = agg_row + k * 4
        kr = tl.load(base + 0, mask=valid, other=1.0)
        ki = tl.load(base + 1, mask=valid, other=0.0)
        vr = tl.load(base + 2, mask=valid, other=0.0)
        vi = tl.load(base + 3, mask=valid, other=0.0)
        pkr, pki, pvr, pvi = tl.associative_scan((kr, ki, vr, vi), 0, _affine_combine)
        tr, ti = _cmul(pkr, pki, er, ei)
        xr = pvr + tr
        xi = pvi + ti
        out = fin_row + (k + 1) * 2
        tl.store(out, xr, mask=valid)
        tl.store(out + 1, xi, mask=valid)
        last = k == tl.minimum(start + CB, C) - 1
        er = tl.sum(tl.where(last, xr, 0.0), 0)
        ei = tl.sum(tl.where(last, xi, 0.0), 0)

    fr = tl.load(bin_row + C * 2)
    fi = tl.load(bin_row + C * 2 + 1)
    for step in range(0, STEPS):
        start = (STEPS - 1 - step) * CB
        k = start + lane
        valid = k < C
        base = bagg_row + k * 4
        kr = tl.load(base + 0, mask=valid, other=1.0)
        ki = tl.load(base + 1, mask=valid, other=0.0)
        vr = tl.load(base + 2, mask=valid, other=0.0)
        vi = tl.load(base + 3, mask=valid, other=0.0)
        qkr, qki, qvr, qvi = tl.associative_scan((kr, ki, vr, vi), 0, _affine_combine,
                                                 reverse=True)
        tr, ti = _cmul(qkr, qki, fr, fi)
        yr = qvr + tr
        yi = qvi + ti
        out = bin_row + k * 2
        tl.store(out, yr, mask=valid)
        tl.store(out + 1, yi, mask=valid)
        first = k == start
        fr = tl.sum(tl.where(first, yr, 0.0), 0)
        fi = tl.sum(tl.where(first, yi, 0.0), 0)


@triton.jit
def _causal_backward_kernel(
    gg_ptr, b_ptr, c_ptr, rho_ptr,
    bwd_agg_ptr,  # [M, C, 4] affine block maps (MODE 1 writes)
    bwd_in_ptr,  # [M, C + 1, 2] values entering each block from the right (MODE 2 reads)
    ga_ptr, gb_ptr, gc_ptr,  # outputs (MODE 2)
    N, C,
    BLOCK: tl.constexpr, MODE: tl.constexpr, CARRY: tl.constexpr,
):
    """Gradients of the causal resolvent ``g_i = rho_i``: the adjoint ``nu = conj(mu)``
    obeys ``nu_i = conj(w_i) + beta_i rho_{i+1}^2 nu_{i+1}`` (``w = dL/dg``; a reversed
    affine scan), then ``grad_a_i = -conj(rho_i^2 nu_i)`` and, with ``X_i = rho_i^2
    rho_{i-1} nu_i``, ``grad_b_{i-1} = conj(c_{i-1} X_i)``, ``grad_c_{i-1} = conj(b_{i-1}
    X_i)``."""
    row = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    lane = tl.arange(0, BLOCK)
    i = blk * BLOCK + lane
    valid = i < N
    nrow = row * (2 * N)
    brow = row * (2 * (N - 1))

    ur, ui = _load_c2(gg_ptr + nrow, i, valid)
    ui = -ui  # conj(w)
    has_next = i < N - 1
    bnr, bni = _load_c2(b_ptr + brow, i, has_next)
    cnr, cni = _load_c2(c_ptr + brow, i, has_next)
    rnr, rni = _load_c2(rho_ptr + nrow, i + 1, has_next)
    tr, ti = _cmul(bnr, bni, cnr, cni)
    r2r, r2i = _cmul(rnr, rni, rnr, rni)
    lr, li = _cmul(tr, ti, r2r, r2i)  # beta_i rho_{i+1}^2 (0 at the end and past it)
    kr, ki, vr, vi = tl.associative_scan((lr, li, ur, ui), 0, _affine_combine, reverse=True)

    if MODE == 1:
        agg = row * C * 4 + blk * 4
        first = lane == 0
        _store4(bwd_agg_ptr + agg + lane * 0, kr, ki, vr, vi, first)
    else:
        if CARRY:
            bin_ = bwd_in_ptr + row * (C + 1) * 2 + (blk + 1) * 2
            er = tl.load(bin_)
            ei = tl.load(bin_ + 1)
            t1r, t1i = _cmul(kr, ki, er, ei)
            nur = vr + t1r
            nui = vi + t1i
        else:
            nur = vr
            nui = vi
        rr, ri = _load_c2(rho_ptr + nrow, i, valid)
        r2r, r2i = _cmul(rr, ri, rr, ri)
        pr, pi = _cmul(r2r, r2i, nur, nui)  # rho_i^2 nu_i
        _store_c2(ga_ptr + nrow, i, -pr, pi, valid)  # -conj(rho^2 nu)
        has_prev = valid & (i >= 1)
        rpr, rpi = _load_c2(rho_ptr + nrow, i - 1, has_prev)
        xr, xi = _cmul(pr, pi, rpr, rpi)  # X_i
        bpr, bpi = _load_c2(b_ptr + brow, i - 1, has_prev)
        cpr, cpi = _load_c2(c_ptr + brow, i - 1, has_prev)
        gbr, gbi = _cmul(cpr, cpi, xr, xi)
        _store_c2(gb_ptr + brow, i - 1, gbr, -gbi, has_prev)
        gcr, gci = _cmul(bpr, bpi, xr, xi)
        _store_c2(gc_ptr + brow, i - 1, gcr, -gci, has_prev)


# --------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t.resolve_conj().resolve_neg().contiguous())


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _layout(
    n: int, fused_max: int | None, chunk: int | None, num_warps: int | None
) -> tuple[int, int, int]:
    """(block length, number of blocks, warps) for a row of length ``n``; ``None`` takes
    the module's settings (read at call time, so benchmarks can tune them)."""
    fused_max = FUSED_MAX if fused_max is None else fused_max
    chunk = CHUNK if chunk is None else chunk
    num_warps = NUM_WARPS if num_warps is None else num_warps
    if n <= fused_max:
        block = max(256, _next_pow2(n))
        return block, 1, max(1, min(num_warps, block // 128))
    return chunk, -(-n // chunk), num_warps


def forward(
    a: Tensor, b: Tensor, c: Tensor, z: Tensor, save: bool = False,
    fused_max: int | None = None, chunk: int | None = None, num_warps: int | None = None,
    sub: int | None = None, causal: bool = False,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``a [M, N]``, ``b, c [M, N-1]``, ``z [M]`` contiguous complex64/128 -> ``(g, rho,
    sigma)`` (``rho, sigma`` only when ``save``). ``causal``: ``g = rho`` only (the
    causal resolvent; it is all its backward needs), returned as ``(g, None, None)``."""
    m, n = a.shape
    save = save and not causal
    g = torch.empty_like(a)
    rho = torch.empty_like(a) if save else g
    sigma = torch.empty_like(a) if save else g
    if m == 0:
        return g, (rho if save else None), (sigma if save else None)
    block, chunks, num_warps = _layout(n, fused_max, chunk, num_warps)
    sub = min(SUB if sub is None else sub, block // 16)
    lanes = block // sub
    fwd_warps = max(1, min(num_warps, lanes // 32))
    real_dtype = _real(a).dtype
    args = (_real(a), _real(b), _real(c), _real(z))
    outs = (_real(g), _real(rho), _real(sigma))
    if chunks == 1:
        dummy = torch.empty(1, dtype=real_dtype, device=a.device)
        _forward_block_kernel[(m, 1)](
            *args, dummy, dummy, dummy, dummy, *outs, n, 1,
            LANES=lanes, SUB=sub, MODE=2, CARRY=False, SAVE=save, CAUSAL=causal,
            num_warps=fwd_warps,
        )
    else:
        fwd_agg = torch.empty((m, chunks, 8), dtype=real_dtype, device=a.device)
        bwd_agg = torch.empty_like(fwd_agg)
        fwd_in = torch.empty((m, chunks + 1, 4), dtype=real_dtype, device=a.device)
        bwd_in = torch.empty_like(fwd_in)
        start = kernel_constants((0.0, 0.0, 1.0, 0.0), real_dtype, a.device)  # no copy from the host per call
        fwd_in[:, 0] = start
        bwd_in[:, chunks] = start
        _forward_block_kernel[(m, chunks)](
            *args, fwd_agg, bwd_agg, fwd_in, bwd_in, *outs, n, chunks,
            LANES=lanes, SUB=sub, MODE=1, CARRY=True, SAVE=False, CAUSAL=causal,
            num_warps=fwd_warps,
        )
        cb = min(CARRY_BLOCK, max(16, _next_pow2(chunks)))
        _forward_carry_kernel[(m,)](fwd_agg, bwd_agg, fwd_in, bwd_in, chunks, CB=cb,
                                    STEPS=-(-chunks // cb), BACKWARD=not causal,
                                    num_warps=4)
        _forward_block_kernel[(m, chunks)](
            *args, fwd_agg, bwd_agg, fwd_in, bwd_in, *outs, n, chunks,
            LANES=lanes, SUB=sub, MODE=2, CARRY=True, SAVE=save, CAUSAL=causal,
            num_warps=fwd_warps,
        )
    return g, (rho if save else None), (sigma if save else None)


def backward(
    grad_g: Tensor, b: Tensor, c: Tensor, g: Tensor, rho: Tensor, sigma: Tensor,
    fused_max: int | None = None, chunk: int | None = None, num_warps: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Analytic O(N) gradients ``(grad_a [M, N], grad_b [M, N-1], grad_c [M, N-1])``."""
    args = (_real(grad_g), _real(b), _real(c), _real(g), _real(rho), _real(sigma))
    return _gradient_scans(_backward_block_kernel, args, b, c, g, True,
                           fused_max, chunk, num_warps)


def causal_backward(
    grad_g: Tensor, b: Tensor, c: Tensor, rho: Tensor,
    fused_max: int | None = None, chunk: int | None = None, num_warps: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of the causal resolvent ``g = rho`` (``forward(..., causal=True)``):
    ``(grad_a [M, N], grad_b [M, N-1], grad_c [M, N-1])``."""
    args = (_real(grad_g), _real(b), _real(c), _real(rho))
    return _gradient_scans(_causal_backward_kernel, args, b, c, rho, False,
                           fused_max, chunk, num_warps)


def _gradient_scans(
    kernel, args: tuple[Tensor, ...], b: Tensor, c: Tensor, like: Tensor, forward_scan: bool,
    fused_max: int | None, chunk: int | None, num_warps: int | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Launch a gradient kernel (one block per row, or block aggregates, the carry scan and
    the blocks again); ``forward_scan``: the kernel also runs the forward affine scan and
    takes both directions' aggregate/carry buffers, else only the reversed one's."""
    m, n = like.shape
    grad_a = torch.empty_like(like)
    grad_b = torch.empty_like(b)
    grad_c = torch.empty_like(c)
    if m == 0:
        return grad_a, grad_b, grad_c
    block, chunks, num_warps = _layout(n, fused_max, chunk, num_warps)
    real_dtype = _real(like).dtype
    outs = (_real(grad_a), _real(grad_b), _real(grad_c))
    if chunks == 1:
        dummy = torch.empty(1, dtype=real_dtype, device=like.device)
        buffers = (dummy,) * (4 if forward_scan else 2)
        kernel[(m, 1)](*args, *buffers, *outs, n, 1, BLOCK=block, MODE=2, CARRY=False,
                       num_warps=num_warps)
        return grad_a, grad_b, grad_c
    fwd_agg = torch.zeros((m, chunks, 4), dtype=real_dtype, device=like.device)
    bwd_agg = torch.empty_like(fwd_agg)
    fwd_in = torch.zeros((m, chunks + 1, 2), dtype=real_dtype, device=like.device)
    bwd_in = torch.zeros_like(fwd_in)
    buffers = (fwd_agg, bwd_agg, fwd_in, bwd_in) if forward_scan else (bwd_agg, bwd_in)
    kernel[(m, chunks)](*args, *buffers, *outs, n, chunks, BLOCK=block, MODE=1, CARRY=True,
                        num_warps=num_warps)
    cb = min(CARRY_BLOCK, max(16, _next_pow2(chunks)))
    _backward_carry_kernel[(m,)](fwd_agg, bwd_agg, fwd_in, bwd_in, chunks, CB=cb,
                                 STEPS=-(-chunks // cb), FORWARD=forward_scan, num_warps=4)
    kernel[(m, chunks)](*args, *buffers, *outs, n, chunks, BLOCK=block, MODE=2, CARRY=True,
                        num_warps=num_warps)
    return grad_a, grad_b, grad_c
