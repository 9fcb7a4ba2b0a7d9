"""The Triton kernels of the fast-weight memory (:mod:`kizashi.models.bk.triton_fast_weight`)
against the PyTorch chunked code and a step-by-step loop: values, gradients of every input
(and of the final state), strong and zero decays, the SNR moving averages and a Phase-2 model.

Interpreter tests in float64, GPU tests in float32 and bf16 against a float64 reference (how
each kind runs: tests/models/kernel_checks.py).
"""

from __future__ import annotations

import pytest
import torch

from kizashi.models.bk.config import Phase2Config
from kizashi.models.bk.layers import chunked_fast_weight, decayed_average
from kizashi.models.bk.phase2 import BKPhase2LM
from tests.models.kernel_checks import F64, interpreter_only, max_rel_err


def random_inputs(shape, dk, dv, dtype=F64, device="cpu", seed=0, decay_scale=3.0):
    """``q, k [B, H, N, dk]``, ``v [B, H, N, dv]``, ``log_decay <= 0`` and ``rate > 0``
    ``[B, H, N]``."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*shape, dk, generator=g, dtype=F64)
    k = torch.randn(*shape, dk, generator=g, dtype=F64)
    v = torch.randn(*shape, dv, generator=g, dtype=F64)
    log_decay = -decay_scale * torch.rand(*shape, generator=g, dtype=F64)
    rate = 0.1 + torch.rand(*shape, generator=g, dtype=F64)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v, log_decay, rate))


def outputs_and_gradients(inputs, backend, chunk_size=16, weight_seed=1):
    """``[o, M, dq, dk, dv, dlog_decay, drate]`` of ``sum(o * w) + sum(M * w')``."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out, state = chunked_fast_weight(*leaves, chunk_size=chunk_size, backend=backend)
    g = torch.Generator().manual_seed(weight_seed)
    w_out = torch.randn(out.shape, generator=g, dtype=F64).to(out)
    w_state = torch.randn(state.shape, generator=g, dtype=F64).to(state)
    ((out * w_out).sum() + (state * w_state).sum()).backward()
    return [out.detach(), state.detach()] + [t.grad for t in leaves]


# --------------------------------------------------------------------------------------
# Triton interpreter (CPU, float64)
# --------------------------------------------------------------------------------------


@interpreter_only
@pytest.mark.parametrize("shape,dk,dv,chunk", [
    ((2, 3, 1), 1, 1, 64),      # one step
    ((1, 2, 50), 37, 32, 64),   # one partial chunk, dk not a power of two
    ((2, 1, 100), 5, 7, 16),    # several chunks, a partial last one
    ((1, 2, 100), 1, 20, 16),   # dk = 1: the shape of the SNR filter's moving averages
    ((1, 1, 16), 32, 32, 16),   # exactly one chunk
])
def test_kernels_match_torch_in_the_interpreter(monkeypatch, shape, dk, dv, chunk):
    from kizashi.models.bk import triton_fast_weight

    monkeypatch.setattr(triton_fast_weight, "CHUNK", chunk)
    monkeypatch.setattr(triton_fast_weight, "SCAN_CHUNKS", 4)  # several scan steps, a partial last one
    inputs = random_inputs(shape, dk, dv, seed=dk + dv)
    got = outputs_and_gradients(inputs, "triton")
    want = outputs_and_gradients(inputs, "torch")
    names = ["o", "state", "dq", "dk", "dv", "dlog_decay", "drate"]
    errors = {name: max_rel_err(a, b) for name, a, b in zip(names, got, want)}
    assert max(errors.values()) < 1e-12, errors


@interpreter_only
@pytest.mark.parametrize("normalize", [False, True])
def test_gradcheck_in_the_interpreter(monkeypatch, normalize):
    """``torch.autograd.gradcheck`` of the kernels' autograd function itself (float64,
    chunks of 16 over N = 20, so two chunks and a scan step), final state and the rate
    included; with ``normalize`` the kernels unit-normalize ``q`` and ``k`` themselves."""
    from kizashi.models.bk import triton_fast_weight

    monkeypatch.setattr(triton_fast_weight, "CHUNK", 16)
    monkeypatch.setattr(triton_fast_weight, "SCAN_CHUNKS", 2)
    q, k, v, log_decay, rate = random_inputs((1, 1, 20), 2, 2, seed=5)
    leaves = [t.contiguous().requires_grad_(True) for t in (q, k, v, log_decay, rate)]

    def scan(*tensors):
        return triton_fast_weight.FastWeightScan.apply(*tensors, normalize, "ieee")

    assert torch.autograd.gradcheck(scan, leaves, atol=1e-8)


@interpreter_only
def test_values_only_backward_in_the_interpreter(monkeypatch):
    """When only ``v`` needs a gradient (the SNR filter's moving averages: ``q = k = 1`` and
    constant decays) the backward kernel computes ``dv`` alone: equal to the PyTorch code's, for
    ``chunked_fast_weight`` with constant q, k, decay and rate and for ``decayed_average``."""
    from kizashi.models.bk import triton_fast_weight

    monkeypatch.setattr(triton_fast_weight, "CHUNK", 16)
    q, k, v, log_decay, rate = random_inputs((2, 3, 45), 4, 6, seed=12)
    weight = torch.randn(2, 3, 45, 6, generator=torch.Generator().manual_seed(13), dtype=F64)
    found = {}
    for backend in ("triton", "torch"):
        leaf = v.clone().requires_grad_(True)
        out, state = chunked_fast_weight(q, k, leaf, log_decay, rate, chunk_size=16, backend=backend)
        ((out * weight).sum() + state.square().sum()).backward()
        x = v.clone().requires_grad_(True)
        (decayed_average(x, 0.9, chunk_size=16, backend=backend) * weight).sum().backward()
        found[backend] = [out.detach(), leaf.grad, x.grad]
    assert max(max_rel_err(a, b) for a, b in zip(found["triton"], found["torch"])) < 1e-12


@interpreter_only
def test_kernels_read_the_heads_of_a_projection_in_place_in_the_interpreter(monkeypatch):
    """``q, k, v`` as the heads of ``[B, N, H d]`` projections (strided views, no copy) with
    the normalization inside the kernels: the values and gradients of the PyTorch code on the
    same views, and ``o`` laid out as ``[B, N, H, dv]`` (a free reshape to ``[B, N, H dv]``)."""
    from kizashi.models.bk import triton_fast_weight

    monkeypatch.setattr(triton_fast_weight, "CHUNK", 16)
    batch, n, heads, d = 2, 37, 3, 5
    g = torch.Generator().manual_seed(11)
    projected = [torch.randn(batch, n, heads * d, generator=g, dtype=F64) for _ in range(3)]
    log_decay = -2.0 * torch.rand(batch, heads, n, generator=g, dtype=F64)
    rate = 0.1 + torch.rand(batch, heads, n, generator=g, dtype=F64)
    weight = torch.randn(batch, heads, n, d, generator=g, dtype=F64)
    results = {}
    for backend in ("triton", "torch"):
        leaves = [t.clone().requires_grad_(True) for t in (*projected, log_decay, rate)]
        q, k, v = (t.view(batch, n, heads, d).transpose(1, 2) for t in leaves[:3])
        out, state = chunked_fast_weight(q, k, v, *leaves[3:], chunk_size=8, backend=backend, normalize=True)
        ((out * weight).sum() + state.square().sum()).backward()
        results[backend] = [out.detach(), state.detach()] + [t.grad for t in leaves]
        if backend == "triton":
            assert out.transpose(1, 2).is_contiguous()
    errors = [max_rel_err(a, b) for a, b in zip(results["triton"], results["torch"])]
    assert max(errors) < 1e-12, errors


def test_dot_precision_follows_pytorchs_float32_matmul_setting():
    """TF32 dots only for float32 on CUDA where PyTorch would use TF32 itself (the float32
    matmul precision "high" / "medium", or autocast); float64 and CPU tensors stay IEEE."""
    pytest.importorskip("triton")
    from kizashi.models.bk.triton_fast_weight import dot_precision

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert dot_precision(torch.float32, cuda) == "ieee"
        torch.set_float32_matmul_precision("high")
        assert dot_precision(torch.float32, cuda) == "tf32"
        assert dot_precision(torch.float64, cuda) == "ieee"
        assert dot_precision(torch.float32, cpu) == "ieee"
    finally:
        torch.set_float32_matmul_precision(previous)


@interpreter_only
@pytest.mark.parametrize("decay_scale", [0.0, 200.0])
def test_no_decay_and_strong_decay_in_the_interpreter(monkeypatch, decay_scale):
    """``log_decay = 0`` (a plain running sum) and down to ``-200`` per step (every
    ``exp`` underflows): finite, and equal to the PyTorch code."""
    from kizashi.models.bk import triton_fast_weight

    monkeypatch.setattr(triton_fast_weight, "CHUNK", 16)
    inputs = random_inputs((1, 2, 70), 4, 6, seed=7, decay_scale=decay_scale)
    got = outputs_and_gradients(inputs, "triton")
    want = outputs_and_gradients(inputs, "torch")
    assert all(torch.isfinite(t).all() for t in got)
    assert max(max_rel_err(a, b) for a, b in zip(got, want)) < 1e-12


@interpreter_only
def test_moving_average_and_phase2_model_in_the_interpreter(monkeypatch):
    """``decayed_average`` through the kernels equals a step loop; a small Phase-2 model (SNR
    filter, memory and resonance on the kernels) gives the logits and every parameter gradient
    of the PyTorch path."""
    from kizashi.models.bk import triton_fast_weight

    monkeypatch.setattr(triton_fast_weight, "CHUNK", 16)
    x = torch.randn(2, 2, 40, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    average, running = decayed_average(x, 0.8, backend="triton"), torch.zeros(2, 2, 3, dtype=F64)
    for t in range(40):
        running = 0.8 * running + 0.2 * x[:, :, t]
        assert torch.allclose(average[:, :, t], running, atol=1e-12)

    config = Phase2Config(vocab_size=17, d_model=32, n_layers=2, num_heads=2, head_dim=16,
                          resonance_modes=4, dropout=0.0, chunk_size=8, use_triton_bk=False)
    torch.manual_seed(0)
    model = BKPhase2LM(config)  # float32: the kernels compute in float32, the tolerance says so
    ids = torch.randint(0, 17, (2, 45), generator=torch.Generator().manual_seed(3))
    results = {}
    for backend in ("triton", "torch"):
        for block in model.blocks:
            block.memory.backend = backend
            block.memory.snr.backend = backend
            block.memory.resonance.backend = backend
        model.zero_grad()
        logits = model(ids)
        logits.square().mean().backward()
        results[backend] = [logits.detach()] + [p.grad.clone() for p in model.parameters()]
    assert max(max_rel_err(a, b) for a, b in zip(results["triton"], results["torch"])) < 1e-5


@interpreter_only
def test_phase2_small_shapes_every_kernel_in_the_interpreter():
    """One block of Phase 2 small's shapes (d_model 256, 8 heads of 32, 8 resonance modes) in
    float64 with every Triton kernel on (memory, SNR filter, resonance, layer norms): the
    logits, every parameter gradient and every diagnostic equal the PyTorch path's."""
    config = Phase2Config(vocab_size=65, d_model=256, n_layers=1, head_dim=32, dropout=0.0, use_triton_bk=False)
    torch.manual_seed(0)
    model = BKPhase2LM(config).double()
    ids = torch.randint(0, 65, (1, 100), generator=torch.Generator().manual_seed(3))
    found = {}
    for backend in ("triton", "torch"):
        for block in model.blocks:
            for module in (block.memory, block.memory.snr, block.memory.resonance, block.bk_norm,
                           block.memory_norm, block.ffn_norm):
                module.backend = backend
        model.final_norm.backend = backend
        model.zero_grad()
        logits, diagnostics = model(ids, return_diagnostics=True)
        logits.square().mean().backward()
        found[backend] = ([logits.detach()] + [p.grad.clone() for p in model.parameters()]
                          + [value for layer in diagnostics for value in layer.values()])
    assert len(found["triton"]) == len(found["torch"])
    assert max(max_rel_err(a, b) for a, b in zip(found["triton"], found["torch"])) < 1e-12


# --------------------------------------------------------------------------------------
# CUDA (compiled kernels)
# --------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("n", [1, 63, 4096, 65536])
def test_kernels_on_the_gpu_against_float64(dtype, tolerance, n):
    """float32 / bf16 inputs on CUDA against the PyTorch code in float64 (same inputs,
    rounded to ``dtype`` first): outputs and every gradient, relative to their scale. The
    kernels compute in float32 either way (IEEE dots: the float32 matmul precision is
    "highest"); bf16 inputs get their gradients back in bf16."""
    assert torch.get_float32_matmul_precision() == "highest"
    inputs = random_inputs((2, 4, n), 32, 32, dtype=dtype, device="cuda", seed=n)
    got = outputs_and_gradients(inputs, "triton", weight_seed=n)
    want = outputs_and_gradients([t.double() for t in inputs], "torch", chunk_size=64, weight_seed=n)
    names = ["o", "state", "dq", "dk", "dv", "dlog_decay", "drate"]
    errors = {name: max_rel_err(a, b) for name, a, b in zip(names, got, want)}
    assert max(errors.values()) < tolerance, errors
    assert got[0].dtype == torch.float32


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("n", [63, 65536])
def test_tf32_dots_on_the_gpu_against_float64(n):
    """float32 inputs with ``torch.set_float32_matmul_precision("high")`` (TF32 dots in
    every kernel) against float64: TF32 keeps 10 mantissa bits (relative rounding 5e-4 per
    operand), so outputs and gradients are checked to 5e-3 of their scale."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        inputs = random_inputs((2, 4, n), 32, 32, dtype=torch.float32, device="cuda", seed=n)
        got = outputs_and_gradients(inputs, "triton", weight_seed=n)
    finally:
        torch.set_float32_matmul_precision(previous)
    want = outputs_and_gradients([t.double() for t in inputs], "torch", chunk_size=64, weight_seed=n)
    names = ["o", "state", "dq", "dk", "dv", "dlog_decay", "drate"]
    errors = {name: max_rel_err(a, b) for name, a, b in zip(names, got, want)}
    assert max(errors.values()) < 5e-3, errors


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("n", [63, 65536])
def test_bf16_projection_heads_with_normalization_on_the_gpu(n):
    """The memory's call: ``q, k, v`` the heads of bf16 ``[B, N, H d]`` projections read in
    place, normalized inside the kernels, against the PyTorch code in float64 on the same
    (bf16-rounded) values; gradients come back in bf16, in the projections' layout."""
    batch, heads, d = 1, 8, 32
    g = torch.Generator().manual_seed(n)
    projected = [torch.randn(batch, n, heads * d, generator=g).to("cuda", torch.bfloat16) for _ in range(3)]
    log_decay = (-torch.rand(batch, heads, n, generator=g)).cuda()
    rate = (0.1 + torch.rand(batch, heads, n, generator=g)).cuda()
    weight = torch.randn(batch, heads, n, d, generator=g, dtype=F64).cuda()
    results = {}
    for backend, dtype in (("triton", None), ("torch", F64)):
        leaves = [(t if dtype is None else t.to(dtype)).clone().requires_grad_(True)
                  for t in (*projected, log_decay, rate)]
        q, k, v = (t.view(batch, n, heads, d).transpose(1, 2) for t in leaves[:3])
        out, state = chunked_fast_weight(q, k, v, *leaves[3:], chunk_size=64, backend=backend, normalize=True)
        ((out * weight.to(out.dtype)).sum() + state.square().sum()).backward()
        results[backend] = [out.detach(), state.detach()] + [t.grad for t in leaves]
    assert all(grad.dtype == torch.bfloat16 for grad in results["triton"][2:5])
    names = ["o", "state", "dq", "dk", "dv", "dlog_decay", "drate"]
    errors = {name: max_rel_err(a, b) for name, a, b in zip(names, results["triton"], results["torch"])}
    assert max(errors.values()) < 1e-2, errors


@pytest.mark.gpu
@needs_cuda
def test_phase2_small_on_the_gpu_kernels_match_torch():
    """Phase 2 small (the preset), 2 x 2048 tokens under bf16 autocast: the loss and the
    gradients with the memory on the kernels equal those of the PyTorch memory."""
    config = Phase2Config(vocab_size=65, d_model=256, n_layers=4, head_dim=32, dropout=0.0)
    torch.manual_seed(0)
    model = BKPhase2LM(config).cuda()
    ids = torch.randint(0, 65, (2, 2049), device="cuda")
    results = {}
    for backend in ("triton", "torch"):
        for block in model.blocks:
            block.memory.backend = backend
            block.memory.snr.backend = backend
            block.memory.resonance.backend = backend
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        results[backend] = (loss.item(), [p.grad.float().clone() for p in model.parameters()])
    assert abs(results["triton"][0] - results["torch"][0]) < 1e-4
    errors = [max_rel_err(a, b) for a, b in zip(results["triton"][1], results["torch"][1])]
    assert max(errors) < 2e-2, max(errors)
