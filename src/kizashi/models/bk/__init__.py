"""BK-Core sequence models: ``core`` (the O(N) resolvent diagonal, PyTorch reference and
Triton kernel behind :func:`bk_core`), ``phase1``/``phase2`` models and their ``config``.

Importing this package imports torch only; Triton is imported on first use of the Triton
backend on a CUDA device.
"""

from kizashi.models.bk.core import bk_core, bk_core_dense, triton_available

__all__ = ["bk_core", "bk_core_dense", "triton_available"]
