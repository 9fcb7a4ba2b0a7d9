"""Phase 2's Triton kernels compile for an H100/H200 (sm_90) on a machine without a GPU.

The interpreter tests check the kernels' arithmetic, but the interpreter runs Python on NumPy
and never meets Triton's compiler: a kernel can pass them and still fail to compile on the
GPU (a type mismatch, a constexpr misuse, a shape Triton cannot lay out). Here every variant
Phase 2 launches (the memory on bf16 and float32 projections, the SNR filter's moving
averages, the resonance with diagnostics on and off, the layer norm; forward and backward)
goes through ``triton.compile`` for
``GPUTarget("cuda", 90, 32)``: Triton's frontend, its MLIR passes, LLVM and the bundled
``ptxas``, which needs no driver. The number of registers and the local-memory spills are
read from the cubin (``cuobjdump``) and logged. A kernel meant to compute in IEEE float32
must hold no TF32 dot after Triton's passes: Triton 3.6 turned the resonance's
broadcast-and-sum products into TF32 dots on its own (4e-4 off on the H200).
"""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import tempfile

import pytest

triton = pytest.importorskip("triton", reason="the triton package is not installed (Linux only)")

log = logging.getLogger(__name__)


def _nvidia_tools() -> str | None:
    """The folder of the ``ptxas`` / ``cuobjdump`` Triton ships, or None."""
    folder = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    return folder if os.path.exists(os.path.join(folder, "ptxas")) else None


pytestmark = pytest.mark.skipif(_nvidia_tools() is None, reason="Triton's NVIDIA backend (ptxas) is not installed")


def compile_for_hopper(kernel, types: dict[str, str], constexprs: dict[str, object]):
    """``triton.compile`` of ``kernel`` for sm_90: the arguments named in ``types`` of those
    types, other pointers ``*fp32``, strides (``s*``) int64, other scalars int32."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(inspect.signature(kernel.fn).parameters)
    signature = {}
    for name in names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in types:
            signature[name] = types[name]
        elif name.endswith("_ptr"):
            signature[name] = "*fp32"
        else:
            signature[name] = "i64" if name.startswith("s") and name != "SIZE" else "i32"
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(names.index(key),): value for key, value in constexprs.items()})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32))


def resource_usage(compiled) -> str:
    """``REG:n STACK:n ...`` of the compiled kernel's cubin."""
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as handle:
        handle.write(compiled.asm["cubin"])
    try:
        result = subprocess.run([os.path.join(_nvidia_tools(), "cuobjdump"), "--dump-resource-usage", handle.name],
                                capture_output=True, text=True, check=False)
    finally:
        os.unlink(handle.name)
    return " ".join(line.strip() for line in result.stdout.splitlines() if "REG:" in line)


def _fast_weight_cases():
    from kizashi.models.bk import triton_fast_weight as tfw

    cases = [("state scan", tfw._state_scan_kernel, {}, dict(BLOCK=128, CB=16, REVERSE=False))]
    # the memory (heads of 32 read from bf16 or float32 projections, normalized, with the rate)
    # and the SNR filter's moving averages (q = k = 1, 2 x 32 features, float32, the rate)
    variants = [("*bf16", True, 32, 32, False), ("*fp32", True, 32, 32, False), ("*fp32", False, 16, 64, True)]
    for dtype, normalize, bk, bv, values_only in variants:
        flags = dict(NORMALIZE=normalize, HAS_RATE=True)
        name = f"{dtype} normalize={normalize} {bk}x{bv}"
        for backward in (False, True):
            cases.append((f"chunk states {name} backward={backward}", tfw._chunk_state_kernel,
                          {"x_ptr": dtype, "y_ptr": dtype},
                          dict(BT=64, BX=bk, BY=bv, FROM_START=backward, PRECISION="tf32", **flags)))
        cases.append((f"output {name}", tfw._chunk_output_kernel, {"q_ptr": dtype, "k_ptr": dtype, "v_ptr": dtype},
                      dict(BT=64, BK=bk, BV=bv, PRECISION="tf32", **flags)))
        pointers = {f"{p}_ptr": dtype for p in ("q", "k", "v", "dq", "dk", "dv")}
        cases.append((f"backward {name} values_only={values_only}", tfw._chunk_backward_kernel, pointers,
                      dict(BT=64, BK=bk, BV=bv, PRECISION="tf32", VALUES_ONLY=values_only, **flags)))
    return cases


def _snr_and_resonance_cases():
    from kizashi.models.bk import triton_layer_norm as tln
    from kizashi.models.bk import triton_resonance as tr
    from kizashi.models.bk import triton_snr as ts

    rows = dict(BR=64, BD=32)
    return [
        ("snr gate forward", ts._snr_gate_forward_kernel, {}, rows),
        ("snr gate backward", ts._snr_gate_backward_kernel, {}, rows),
        ("values and squares", ts._values_and_squares_kernel, {"v_ptr": "*bf16"}, rows),
        ("values and squares backward", ts._values_and_squares_backward_kernel,
         {"v_ptr": "*bf16", "dv_ptr": "*bf16"}, rows),
        ("resonance forward", tr._resonance_forward_kernel, {}, dict(BR=32, BD=32, BM=16, DIAGNOSTICS=False)),
        ("resonance forward diagnostics", tr._resonance_forward_kernel, {}, dict(BR=32, BD=32, BM=16, DIAGNOSTICS=True)),
        ("resonance backward", tr._resonance_backward_kernel, {}, dict(BR=32, BD=32, BM=16)),
        ("layer norm forward", tln._layer_norm_forward_kernel, {"eps": "fp32"}, dict(BR=16, BD=256)),
        ("layer norm forward bf16 in", tln._layer_norm_forward_kernel, {"x_ptr": "*bf16", "eps": "fp32"},
         dict(BR=16, BD=256)),
        ("layer norm backward", tln._layer_norm_backward_kernel, {}, dict(BR=16, BD=256)),
    ]


@pytest.mark.parametrize("family", ["fast weight", "snr, resonance and layer norm"])
def test_phase2_kernels_compile_for_sm90(family):
    cases = _fast_weight_cases() if family == "fast weight" else _snr_and_resonance_cases()
    failures = {}
    for name, kernel, types, constexprs in cases:
        try:
            compiled = compile_for_hopper(kernel, types, constexprs)
        except Exception as err:  # noqa: BLE001 - every failing variant is reported at once
            failures[name] = f"{type(err).__name__}: {str(err)[:800]}"
            continue
        assert compiled.asm["cubin"], name
        if constexprs.get("PRECISION", "ieee") == "ieee":
            tf32 = [line.strip() for line in compiled.asm["ttgir"].splitlines() if "inputPrecision = tf32" in line]
            if tf32:
                failures[name] = f"a TF32 dot in a kernel that computes in IEEE float32: {tf32[0][:300]}"
        log.info("%-60s %s", name, resource_usage(compiled))
    assert not failures, failures
