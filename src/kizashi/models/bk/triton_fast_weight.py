"""Triton kernels of the causal fast-weight recurrence with a per-step scalar decay (CUDA, or
Triton's CPU interpreter; imported lazily by :func:`kizashi.models.bk.layers.chunked_fast_weight`).

Per sequence (``bh`` = batch x head), keys and queries ``[N, dk]``, values ``[N, dv]``, log
decays ``g [N]`` (``<= 0``)::

    S_t = exp(g_t) S_{t-1} + k_t v_t^T      (S_{-1} = 0, S_t [dk, dv])
    o_t = S_t^T q_t                          (o [N, dv])

(the layout of :func:`~kizashi.models.bk.layers.chunked_fast_weight` is ``M = S^T``). The
kernels read ``q, k`` as they come (the raw heads of the memory's projections) and form the
``q, k`` above themselves: optionally unit rows (``q / max(|q|, eps)``, as ``F.normalize``),
and ``k`` times the step's learning rate ``rate_t``. The sequence is cut into chunks of
``BT`` steps; ``G`` is the cumulative log decay *within* a chunk (inclusive), ``G_end`` its
last value, ``S_c`` the state entering chunk ``c``. Then, for ``t`` in chunk ``c``::

    o_t     = exp(G_t) S_c^T q_t + sum_{s <= t in c} exp(G_t - G_s) (q_t . k_s) v_s
    S_{c+1} = exp(G_end) S_c + L_c,   L_c = sum_{s in c} exp(G_end - G_s) k_s v_s^T

Every exponent is ``<= 0`` (the causal mask is applied before the ``exp``): nothing
overflows, whatever the decay. Forward, three kernels:

1. ``_chunk_state_kernel`` (grid ``[chunks, bh]``): ``L_c`` and ``a_c = exp(G_end)`` of
   every chunk, in parallel, into slot ``c + 1`` of a ``[bh, NC + 1, dk, dv]`` buffer;
2. ``_state_scan_kernel`` (grid ``[bh, state blocks]``): ``S_{c+1} = a_c S_c + L_c``,
   elementwise over the ``dk x dv`` entries, in place (slot ``c`` ends as ``S_c``, slot
   ``NC`` as the final state). It takes ``SCAN_CHUNKS`` chunks per step: one load, an
   associative scan of the affine maps ``S -> a S + L`` in registers, one store, so the
   sequential loop has ``NC / SCAN_CHUNKS`` steps;
3. ``_chunk_output_kernel`` (grid ``[chunks, bh]``): ``o`` of every chunk, in parallel.

Backward, with ``dS_c`` the gradient of the loss w.r.t. the state *leaving* chunk ``c``:
``dS_{c-1} = exp(G_end) dS_c + sum_{t in c} exp(G_t) q_t do_t^T`` is the same pair of
kernels 1 and 2 run backwards (queries for keys, ``do`` for values, weights ``exp(G_t)``,
slot ``NC`` the gradient of the final state),
then ``_chunk_backward_kernel`` (grid ``[chunks, bh]``) gives, with the masked decay
matrix ``D_ts = exp(G_t - G_s)`` (``s <= t``), ``A = (q k^T) * D`` and
``dA = (do v^T) * D``::

    dq = dA k + exp(G) * (do S_c^T)
    dk = dA^T q + exp(G_end - G) * (v dS_c^T)
    dv = A^T do + exp(G_end - G) * (k dS_c)
    dG_t = q_t . dq_t - k_t . dk_t   (+ exp(G_end) <S_c, dS_c> + sum_s k_s . (exp(G_end - G_s) dS_c v_s)
                                      at the chunk's last step)
    dg  = reverse cumulative sum of dG within the chunk,

then through the rate and the normalization (``k = rate * k_hat``, ``x_hat = x / c`` with
``c = max(|x|, eps)``)::

    drate_t = k_hat_t . dk_t,    dk_hat = rate dk
    dx = (dx_hat - [|x| >= eps] x_hat (x_hat . dx_hat)) / c

Work: O(N BT (dk + dv)) in the chunk kernels, O(N dk dv / BT) in the scans; memory: the chunk
states ``[bh, N / BT, dk, dv]`` are kept for the backward with the raw inputs (no
normalized or widened copy). ``q, k, v`` are any ``[B, H, N, d]`` views with a unit stride
along the features (the heads of a ``[B, N, H d]`` projection are read in place), of any
floating dtype; ``o`` is written as ``[B, N, H, dv]``, the gradients in each input's own dtype
and layout. The kernels compute in float32 (float64 when an input is float64, the precision of the
interpreter tests). The dot products of float32 inputs follow what PyTorch does with a
float32 matmul in the same context (:func:`dot_precision`): TF32 tensor cores under CUDA
autocast or with ``torch.set_float32_matmul_precision("high" | "medium")``, IEEE float32
otherwise; float64 is always IEEE.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kizashi.models.bk.triton_common import feature_block

CHUNK = 64  # steps per chunk (BT); a power of two >= 16; the results do not depend on it
SCAN_BLOCK = 128  # state entries per program of the scan kernel
SCAN_CHUNKS = 16  # chunks per step of the scan kernel (one load, a scan in registers, one store)
CHUNK_WARPS = 4  # warps per program of the chunk-state and output kernels
BACKWARD_WARPS = 4  # warps per program of the backward chunk kernel
NORM_EPS: tl.constexpr = tl.constexpr(1e-12)  # F.normalize's eps




@triton.jit
def _chunk_cumsum(g_ptr, bh, c, N, BT: tl.constexpr):
    """``(G [BT], G_end, rows [BT], valid [BT])`` of chunk ``c``; padded steps have g = 0."""
    rows = c * BT + tl.arange(0, BT)
    valid = rows < N
    g = tl.load(g_ptr + bh * N + rows, mask=valid, other=0.0)
    return tl.cumsum(g, 0), tl.sum(g, 0), rows, valid


@triton.jit
def _base(bh, H, s_b, s_h):
    """Offset of sequence ``bh = b H + h`` in a ``[B, H, N, D]`` view of strides ``s_b, s_h``."""
    return (bh // H) * s_b + (bh % H) * s_h


@triton.jit
def _load_rows(ptr, base, rows, valid, s_n, D, BD: tl.constexpr, dtype: tl.constexpr):
    """``[BT, BD]`` tile of the rows ``rows`` of one sequence (offset ``base``, row stride
    ``s_n``, unit stride along ``D``), converted to the compute ``dtype``."""
    cols = tl.arange(0, BD)
    mask = valid[:, None] & (cols[None, :] < D)
    tile = tl.load(ptr + base + rows.to(tl.int64)[:, None] * s_n + cols[None, :], mask=mask, other=0.0)
    return tile.to(dtype)


@triton.jit
def _store_rows(ptr, value, base, rows, valid, s_n, D, BD: tl.constexpr):
    cols = tl.arange(0, BD)
    mask = valid[:, None] & (cols[None, :] < D)
    tl.store(ptr + base + rows.to(tl.int64)[:, None] * s_n + cols[None, :], value, mask=mask)


@triton.jit
def _unit_rows(x, NORMALIZE: tl.constexpr):
    """``(y, scale, defined)``: ``y = x / scale`` with ``scale = max(|x_t|, eps)`` per row
    (``F.normalize``) and ``defined = |x_t| >= eps`` when ``NORMALIZE``; else ``y = x``."""
    scale = tl.sum(x * 0.0, 1) + 1.0
    defined = scale > 0.0
    if NORMALIZE:
        norm = tl.sqrt(tl.sum(x * x, 1))
        scale = tl.maximum(norm, NORM_EPS)
        defined = norm >= NORM_EPS
        x = x / scale[:, None]
    return x, scale, defined


@triton.jit
def _unit_rows_backward(y, scale, defined, dy, NORMALIZE: tl.constexpr):
    """Gradient w.r.t. ``x`` of ``y = x / max(|x|, eps)`` given ``dy`` (row-wise):
    ``(dy - y (y . dy)) / |x|`` where ``|x| >= eps``, ``dy / eps`` below."""
    if NORMALIZE:
        along = tl.where(defined, tl.sum(y * dy, 1), 0.0)
        dy = (dy - along[:, None] * y) / scale[:, None]
    return dy


@triton.jit
def _load_state(ptr, bh, slot, NC, DK, DV, BK: tl.constexpr, BV: tl.constexpr):
    """``[BK, BV]`` tile of state ``slot`` of sequence ``bh`` in ``[bh, NC + 1, DK, DV]``."""
    ik = tl.arange(0, BK)
    iv = tl.arange(0, BV)
    offsets = ((bh * (NC + 1) + slot) * DK + ik[:, None]) * DV + iv[None, :]
    return tl.load(ptr + offsets, mask=(ik[:, None] < DK) & (iv[None, :] < DV), other=0.0)


@triton.jit
def _chunk_state_kernel(x_ptr, y_ptr, g_ptr, rate_ptr, state_ptr, decay_ptr, N, NC, H, DX, DY,
                        sx_b, sx_h, sx_n, sy_b, sy_h, sy_n,
                        BT: tl.constexpr, BX: tl.constexpr, BY: tl.constexpr, FROM_START: tl.constexpr,
                        NORMALIZE: tl.constexpr, HAS_RATE: tl.constexpr, PRECISION: tl.constexpr):
    """Slot ``c + 1`` (forward) or ``c`` (``FROM_START``, backward) of ``state [bh, NC + 1,
    DX, DY]`` <- ``(x * w)^T y`` over chunk ``c``, and ``decay[bh, c] = exp(G_end)``; weights
    ``w = exp(G_end - G)`` (forward) or ``exp(G)`` (backward). ``x`` is unit-normalized per row
    (``NORMALIZE``) and scaled by ``rate`` (``HAS_RATE``) first."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    dtype = g_ptr.dtype.element_ty
    G, G_end, rows, valid = _chunk_cumsum(g_ptr, bh, c, N, BT)
    if FROM_START:
        weight = tl.exp(G)
        slot = c
    else:
        weight = tl.exp(G_end - G)
        slot = c + 1
    if HAS_RATE:
        weight = weight * tl.load(rate_ptr + bh * N + rows, mask=valid, other=0.0)
    x, _, _ = _unit_rows(_load_rows(x_ptr, _base(bh, H, sx_b, sx_h), rows, valid, sx_n, DX, BX, dtype),
                         NORMALIZE)
    x = x * weight[:, None]
    y = _load_rows(y_ptr, _base(bh, H, sy_b, sy_h), rows, valid, sy_n, DY, BY, dtype)
    state = tl.dot(tl.trans(x), y, input_precision=PRECISION)  # [BX, BY]
    ix = tl.arange(0, BX)
    iy = tl.arange(0, BY)
    offsets = ((bh * (NC + 1) + slot) * DX + ix[:, None]) * DY + iy[None, :]
    tl.store(state_ptr + offsets, state, mask=(ix[:, None] < DX) & (iy[None, :] < DY))
    tl.store(decay_ptr + bh * NC + c, tl.exp(G_end))


@triton.jit
def _linear_combine(a1, x1, a2, x2):
    """Composition of ``S -> a1 S + x1`` then ``S -> a2 S + x2``."""
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _state_scan_kernel(state_ptr, decay_ptr, NC, SIZE, BLOCK: tl.constexpr, CB: tl.constexpr,
                       REVERSE: tl.constexpr):
    """In place over ``state [bh, NC + 1, SIZE]``: forward, slot ``c + 1`` <- ``decay[c] *
    slot c + slot c + 1`` for ``c = 0 .. NC-1``; ``REVERSE``, slot ``c`` <- ``decay[c] * slot
    c + 1 + slot c`` for ``c = NC-1 .. 0``. ``CB`` chunks at a time: one load of their local
    states, an associative scan of the affine maps in registers, one store."""
    bh = tl.program_id(0).to(tl.int64)
    offsets = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < SIZE
    base = state_ptr + bh * (NC + 1) * SIZE
    if REVERSE:
        carried = tl.load(base + NC * SIZE + offsets, mask=mask, other=0.0)
    else:
        carried = tl.load(base + offsets, mask=mask, other=0.0)
    last = (tl.arange(0, CB) == CB - 1)[:, None]
    for tile in range(tl.cdiv(NC, CB)):
        order = tile * CB + tl.arange(0, CB)  # position in the scan
        live = order < NC
        if REVERSE:
            chunk = NC - 1 - order
            slot = chunk
        else:
            chunk = order
            slot = chunk + 1
        decay = tl.load(decay_ptr + bh * NC + chunk, mask=live, other=1.0)
        pointers = base + slot[:, None] * SIZE + offsets[None, :]
        tile_mask = live[:, None] & mask[None, :]
        local = tl.load(pointers, mask=tile_mask, other=0.0)  # [CB, BLOCK]
        decays = decay[:, None] + tl.zeros_like(local)
        factor, shift = tl.associative_scan((decays, local), 0, _linear_combine)
        states = factor * carried[None, :] + shift
        tl.store(pointers, states, mask=tile_mask)
        carried = tl.sum(tl.where(last, states, 0.0), 0)


@triton.jit
def _decay_matrix(G, BT: tl.constexpr):
    """``D [BT, BT]``: ``exp(G_t - G_s)`` for ``s <= t``, else 0 (masked before the exp)."""
    index = tl.arange(0, BT)
    causal = index[:, None] >= index[None, :]
    return tl.exp(tl.where(causal, G[:, None] - G[None, :], float("-inf")))


@triton.jit
def _chunk_output_kernel(q_ptr, k_ptr, v_ptr, g_ptr, rate_ptr, state_ptr, o_ptr, N, NC, H, DK, DV,
                         sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_n,
                         BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, NORMALIZE: tl.constexpr,
                         HAS_RATE: tl.constexpr, PRECISION: tl.constexpr):
    """``o`` of chunk ``c``: the intra-chunk part plus the entering state's readout."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    dtype = g_ptr.dtype.element_ty
    G, _, rows, valid = _chunk_cumsum(g_ptr, bh, c, N, BT)
    q, _, _ = _unit_rows(_load_rows(q_ptr, _base(bh, H, sq_b, sq_h), rows, valid, sq_n, DK, BK, dtype),
                         NORMALIZE)
    k, _, _ = _unit_rows(_load_rows(k_ptr, _base(bh, H, sk_b, sk_h), rows, valid, sk_n, DK, BK, dtype),
                         NORMALIZE)
    if HAS_RATE:
        k = k * tl.load(rate_ptr + bh * N + rows, mask=valid, other=0.0)[:, None]
    v = _load_rows(v_ptr, _base(bh, H, sv_b, sv_h), rows, valid, sv_n, DV, BV, dtype)
    entering = _load_state(state_ptr, bh, c, NC, DK, DV, BK, BV)  # S_c [BK, BV]
    scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * _decay_matrix(G, BT)
    out = tl.dot(scores, v, input_precision=PRECISION)
    out += tl.exp(G)[:, None] * tl.dot(q, entering, input_precision=PRECISION)
    _store_rows(o_ptr, out, _base(bh, H, so_b, so_h), rows, valid, so_n, DV, BV)


@triton.jit
def _chunk_backward_kernel(q_ptr, k_ptr, v_ptr, g_ptr, rate_ptr, state_ptr, dstate_ptr, do_ptr,
                           dq_ptr, dk_ptr, dv_ptr, dg_ptr, drate_ptr, N, NC, H, DK, DV,
                           sq_b, sq_h, sq_n, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, sdo_b, sdo_h, sdo_n,
                           sdq_b, sdq_h, sdq_n, sdk_b, sdk_h, sdk_n, sdv_b, sdv_h, sdv_n,
                           BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, NORMALIZE: tl.constexpr,
                           HAS_RATE: tl.constexpr, VALUES_ONLY: tl.constexpr, PRECISION: tl.constexpr):
    """``dq, dk, dv, dg`` (and ``drate``) of chunk ``c`` from its inputs, the state entering it
    and the gradient w.r.t. the state leaving it (formulas in the module docstring), then
    through the rate and the normalization to the raw inputs. ``VALUES_ONLY``: ``dv`` alone
    (nothing else needs a gradient, as in the SNR filter's moving averages): three of the
    eight dots, and neither ``v`` nor the entering state is read."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    dtype = g_ptr.dtype.element_ty
    G, G_end, rows, valid = _chunk_cumsum(g_ptr, bh, c, N, BT)
    q, q_scale, q_defined = _unit_rows(
        _load_rows(q_ptr, _base(bh, H, sq_b, sq_h), rows, valid, sq_n, DK, BK, dtype), NORMALIZE)
    k_unit, k_scale, k_defined = _unit_rows(
        _load_rows(k_ptr, _base(bh, H, sk_b, sk_h), rows, valid, sk_n, DK, BK, dtype), NORMALIZE)
    if HAS_RATE:
        rate = tl.load(rate_ptr + bh * N + rows, mask=valid, other=0.0)
        k = k_unit * rate[:, None]
    else:
        k = k_unit
    do = _load_rows(do_ptr, _base(bh, H, sdo_b, sdo_h), rows, valid, sdo_n, DV, BV, dtype)
    dleaving = _load_state(dstate_ptr, bh, c + 1, NC, DK, DV, BK, BV)  # dS_c [BK, BV]
    decay = _decay_matrix(G, BT)
    scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * decay  # A [BT, BT]
    to_end = tl.exp(G_end - G)
    dv = tl.dot(tl.trans(scores), do, input_precision=PRECISION)
    dv += to_end[:, None] * tl.dot(k, dleaving, input_precision=PRECISION)
    _store_rows(dv_ptr, dv, _base(bh, H, sdv_b, sdv_h), rows, valid, sdv_n, DV, BV)
    if not VALUES_ONLY:
        v = _load_rows(v_ptr, _base(bh, H, sv_b, sv_h), rows, valid, sv_n, DV, BV, dtype)
        entering = _load_state(state_ptr, bh, c, NC, DK, DV, BK, BV)  # S_c [BK, BV]
        dscores = tl.dot(do, tl.trans(v), input_precision=PRECISION) * decay  # dA [BT, BT]
        dq = tl.dot(dscores, k, input_precision=PRECISION)
        dq += tl.exp(G)[:, None] * tl.dot(do, tl.trans(entering), input_precision=PRECISION)
        dk_state = to_end[:, None] * tl.dot(v, tl.trans(dleaving), input_precision=PRECISION)
        dk = tl.dot(tl.trans(dscores), q, input_precision=PRECISION) + dk_state
        dG = tl.sum(q * dq, 1) - tl.sum(k * dk, 1)
        end_term = (tl.exp(G_end) * tl.sum(tl.sum(entering * dleaving, 1), 0)
                    + tl.sum(tl.sum(k * dk_state, 1), 0))
        last = tl.arange(0, BT) == BT - 1
        dG += tl.where(last, end_term, 0.0)
        dg = tl.cumsum(dG, 0, reverse=True)
        if HAS_RATE:
            tl.store(drate_ptr + bh * N + rows, tl.sum(k_unit * dk, 1), mask=valid)
            dk = dk * rate[:, None]
        dq = _unit_rows_backward(q, q_scale, q_defined, dq, NORMALIZE)
        dk = _unit_rows_backward(k_unit, k_scale, k_defined, dk, NORMALIZE)
        _store_rows(dq_ptr, dq, _base(bh, H, sdq_b, sdq_h), rows, valid, sdq_n, DK, BK)
        _store_rows(dk_ptr, dk, _base(bh, H, sdk_b, sdk_h), rows, valid, sdk_n, DK, BK)
        tl.store(dg_ptr + bh * N + rows, dg, mask=valid)


def dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """``input_precision`` of the kernels' ``tl.dot`` for inputs computed in ``dtype``:
    ``"tf32"`` for float32 on CUDA under autocast or with float32 matmul precision "high" /
    "medium" (where PyTorch itself would not compute a float32 matmul in full precision),
    else ``"ieee"``."""
    if dtype != torch.float32 or device.type != "cuda":
        return "ieee"
    if torch.is_autocast_enabled("cuda") or torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"



def _strides(t: Tensor) -> tuple[int, int, int]:
    """``(s_b, s_h, s_n)`` of a ``[B, H, N, D]`` view."""
    return t.stride(0), t.stride(1), t.stride(2)


def _chunk_states(x: Tensor, y: Tensor, g: Tensor, rate: Tensor | None, boundary: Tensor, *, backward: bool,
                  normalize: bool, precision: str) -> Tensor:
    """Kernels 1 + 2 over ``x [B, H, N, DX]``, ``y [B, H, N, DY]``: ``[B H, NC + 1, DX, DY]``.
    Forward: slot ``c`` is the state entering chunk ``c`` (slot 0 = ``boundary``, slot ``NC``
    the final state). ``backward``: slot ``c`` is the gradient w.r.t. the state entering chunk
    ``c`` (slot ``NC`` = ``boundary``, the gradient of the final state)."""
    batch, heads, n, dx = x.shape
    dy = y.shape[-1]
    bh = batch * heads
    nc = triton.cdiv(n, CHUNK)
    states = torch.empty(bh, nc + 1, dx, dy, device=x.device, dtype=g.dtype)
    states[:, nc if backward else 0] = boundary
    decays = torch.empty(bh, nc, device=x.device, dtype=g.dtype)
    _chunk_state_kernel[(nc, bh)](x, y, g, g if rate is None else rate, states, decays, n, nc, heads, dx, dy,
                                  *_strides(x), *_strides(y), BT=CHUNK, BX=feature_block(dx), BY=feature_block(dy),
                                  FROM_START=backward, NORMALIZE=normalize, HAS_RATE=rate is not None,
                                  PRECISION=precision, num_warps=CHUNK_WARPS)
    size = dx * dy
    block = min(SCAN_BLOCK, max(16, triton.next_power_of_2(size)))
    _state_scan_kernel[(bh, triton.cdiv(size, block))](states, decays, nc, size, BLOCK=block,
                                                       CB=SCAN_CHUNKS, REVERSE=backward)
    return states


def _rows_view(t: Tensor) -> Tensor:
    """``t`` itself when its feature axis has unit stride (or one entry), else a contiguous copy."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


class FastWeightScan(torch.autograd.Function):
    """``(q [B, H, N, dk], k [B, H, N, dk], v [B, H, N, dv], g [B, H, N], rate [B, H, N] or
    None, normalize, precision)`` -> ``(o [B, H, N, dv], S_N [B H, dk, dv])``.

    ``q, k, v`` may be any views with a unit stride along the feature axis, of any floating
    dtype (read as they are, computed in ``g``'s dtype); ``g`` and ``rate`` contiguous, float32
    or float64. With ``normalize`` the rows of ``q`` and ``k`` are unit-normalized in the
    kernels (``F.normalize``); ``rate`` scales the keys (the learning rate of each step). ``o``
    is a ``[B, H, N, dv]`` view of a ``[B, N, H, dv]`` tensor (heads next to each other, as a
    projection back to ``[B, N, H dv]`` reads them). Gradients come back in the dtype and
    layout of each input; ``precision`` is the dots' ``"ieee"`` or ``"tf32"``."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, g: Tensor, rate: Tensor | None, normalize: bool,
                precision: str) -> tuple[Tensor, Tensor]:
        batch, heads, n, dk = q.shape
        dv = v.shape[-1]
        states = _chunk_states(k, v, g, rate, q.new_zeros(batch * heads, dk, dv, dtype=g.dtype), backward=False,
                               normalize=normalize, precision=precision)
        out = torch.empty(batch, n, heads, dv, device=v.device, dtype=g.dtype).transpose(1, 2)
        nc = states.shape[1] - 1
        _chunk_output_kernel[(nc, batch * heads)](
            q, k, v, g, g if rate is None else rate, states, out, n, nc, heads, dk, dv,
            *_strides(q), *_strides(k), *_strides(v), *_strides(out), BT=CHUNK, BK=feature_block(dk),
            BV=feature_block(dv),
            NORMALIZE=normalize, HAS_RATE=rate is not None, PRECISION=precision, num_warps=CHUNK_WARPS)
        ctx.save_for_backward(q, k, v, g, rate, states)
        ctx.normalize, ctx.precision = normalize, precision
        return out, states[:, nc].clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor | None, grad_final: Tensor | None):
        q, k, v, g, rate, states = ctx.saved_tensors
        batch, heads, n, dk = q.shape
        dv = v.shape[-1]
        grad_out = torch.zeros_like(v) if grad_out is None else _rows_view(grad_out)
        initial = (q.new_zeros(batch * heads, dk, dv, dtype=g.dtype) if grad_final is None
                   else grad_final.to(g.dtype).contiguous())
        dstates = _chunk_states(q, grad_out, g, None, initial, backward=True, normalize=ctx.normalize,
                                precision=ctx.precision)
        values_only = not any(ctx.needs_input_grad[i] for i in (0, 1, 3, 4))  # q, k, g, rate
        dv_ = torch.empty_like(v)
        if values_only:  # the kernel writes dv alone; the other pointers are never written
            dq = dk_ = dg = drate = None
        else:
            dq, dk_, dg = torch.empty_like(q), torch.empty_like(k), torch.empty_like(g)
            drate = None if rate is None else torch.empty_like(rate)
        nc = states.shape[1] - 1
        gq, gk, gg = (dv_, dv_, g) if values_only else (dq, dk_, dg)  # placeholders when unused
        _chunk_backward_kernel[(nc, batch * heads)](
            q, k, v, g, g if rate is None else rate, states, dstates, grad_out, gq, gk, dv_, gg,
            gg if drate is None else drate, n, nc, heads, dk, dv,
            *_strides(q), *_strides(k), *_strides(v), *_strides(grad_out), *_strides(q if values_only else dq),
            *_strides(k if values_only else dk_), *_strides(dv_), BT=CHUNK, BK=feature_block(dk),
            BV=feature_block(dv),
            NORMALIZE=ctx.normalize, HAS_RATE=rate is not None, VALUES_ONLY=values_only, PRECISION=ctx.precision,
            num_warps=BACKWARD_WARPS)
        return dq, dk_, dv_, dg, drate, None, None


def fast_weight_scan(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, rate: Tensor | None = None,
                     normalize: bool = False) -> tuple[Tensor, Tensor]:
    """``q, k [B, H, N, dk]``, ``v [B, H, N, dv]``, ``log_decay`` and ``rate [B, H, N]`` ->
    ``o [B, H, N, dv]`` and the final state ``M [B, H, dv, dk]`` of ``M_t = exp(log_decay_t)
    M_{t-1} + rate_t v_t k_t^T``, ``o_t = M_t q_t`` (``rate`` None: 1), with ``q, k``
    unit-normalized per row first when ``normalize`` (Triton; CUDA tensors or the interpreter).

    ``q, k, v`` are read in place (any view with a unit stride along the feature axis, e.g. the
    heads of a ``[B, N, H d]`` projection, in any floating dtype: no copy); computes in float64
    when an input is float64, else float32 (dots as :func:`dot_precision` says) and returns
    that dtype, ``o`` as a view of a ``[B, N, H, dv]`` tensor."""
    dtype = torch.float64 if torch.float64 in (q.dtype, k.dtype, v.dtype, log_decay.dtype) else torch.float32
    q, k, v = (_rows_view(t) for t in (q, k, v))
    g = log_decay.to(dtype).contiguous()
    rate = None if rate is None else rate.to(dtype).contiguous()
    out, final = FastWeightScan.apply(q, k, v, g, rate, normalize, dot_precision(dtype, q.device))
    batch, heads = q.shape[:2]
    return out, final.reshape(batch, heads, *final.shape[1:]).transpose(-1, -2)
