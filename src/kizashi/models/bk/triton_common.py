"""Host-side helpers shared by the Triton kernels of the BK models (:mod:`.triton_fast_weight`,
:mod:`.triton_snr`, :mod:`.triton_resonance`)."""

from __future__ import annotations

from functools import lru_cache

import torch
import triton
from torch import Tensor


def feature_block(width: int, minimum: int = 16) -> int:
    """Tile width of a feature axis: a power of two, at least ``minimum`` (16 where the tile
    goes through ``tl.dot``)."""
    return max(minimum, triton.next_power_of_2(width))


@lru_cache(maxsize=64)
def kernel_constants(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``values`` as a tensor of the kernels' compute ``dtype`` on ``device``, made once per
    setting (no host-to-device copy per step; a float64 run gets exact constants, which a
    Python float argument, passed to Triton as float32, would not)."""
    return torch.tensor(values, dtype=dtype, device=device)
