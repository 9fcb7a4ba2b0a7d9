"""What the Triton kernel tests share: the interpreter switch and the error measure.

The ``interpreter`` tests need ``TRITON_INTERPRET=1`` before Triton is imported, so ``make
test`` runs them in a subprocess (tests/models/test_triton_kernels_on_cpu.py); the ``gpu``
tests run the compiled kernels on the accelerator machine (``pytest -m gpu``).
"""

from __future__ import annotations

import os

import pytest
import torch

INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
interpreter_only = pytest.mark.skipif(not INTERPRETER, reason="Triton interpreter (TRITON_INTERPRET=1)")
F64 = torch.float64


def max_rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest absolute difference over the largest magnitude of the reference (a reference
    smaller than 1, e.g. a zero gradient, is compared on the scale of 1)."""
    scale = max(want.abs().max().item(), 1.0) if want.numel() else 1.0
    return (got.to(want.dtype) - want).abs().max().item() / scale if want.numel() else 0.0
