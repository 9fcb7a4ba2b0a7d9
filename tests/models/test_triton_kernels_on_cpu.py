"""The Triton kernels' interpreter tests, run by ``make test`` on the CPU.

Triton reads ``TRITON_INTERPRET`` when a kernel module is imported, so the ``interpreter``
tests (BK-Core's resolvent kernels, the fast-weight memory kernels, the SNR gate, the resonance, the layer norm) run in a pytest
subprocess started with ``TRITON_INTERPRET=1``: float64 values and gradients against the
PyTorch code, on any machine where the ``triton`` package installs (Linux x86-64 / aarch64).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNEL_TESTS = [
    "tests/models/test_bk_core.py",
    "tests/models/test_fast_weight_kernel.py",
    "tests/models/test_snr_kernel.py",
    "tests/models/test_resonance_kernel.py",
    "tests/models/test_layer_norm_kernel.py",
]
EXPECTED_AT_LEAST = 29  # 2 resolvent + 13 fast-weight + 6 SNR + 4 resonance + 4 layer-norm interpreter tests


def test_triton_kernels_pass_in_the_interpreter():
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("already running under the interpreter")
    pytest.importorskip("triton", reason="the triton package is not installed (Linux only)")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not gpu",
               "-k", "interpreter", *KERNEL_TESTS]
    result = subprocess.run(command, check=False, cwd=ROOT, env={**os.environ, "TRITON_INTERPRET": "1"},
                            capture_output=True, text=True, timeout=900)
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= EXPECTED_AT_LEAST, report
    assert " skipped" not in result.stdout.splitlines()[-1], report
