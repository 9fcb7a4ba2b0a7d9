"""FreqDropout: random frequency-band masking of a window during training.

For every window and feature (``x [N, L, F]``), with probability ``p`` one band of
``band_width`` consecutive rFFT bins (bins ``1 .. L//2``; the mean, bin 0, is kept unless
``keep_mean=False``) starting at a uniformly drawn bin is set to zero, and the window is
transformed back with the inverse rFFT. No rescaling (it is an augmentation, not
activation dropout). Identity in eval mode and when ``p == 0``. Unobserved steps
(``mask`` False) are zero before and after. The FFT runs in float32 (rFFT has no bf16
kernel) and the result is cast back to the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FreqDropout(nn.Module):
    """``x [N, L, F]``, ``mask [N, L]`` (optional) -> ``[N, L, F]``."""

    def __init__(self, p: float = 0.0, band_width: int = 1, keep_mean: bool = True) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"FreqDropout p must be in [0, 1], got {p}")
        if band_width < 1:
            raise ValueError(f"FreqDropout band_width must be >= 1, got {band_width}")
        self.p, self.band_width, self.keep_mean = float(p), int(band_width), bool(keep_mean)

    def extra_repr(self) -> str:
        return f"p={self.p}, band_width={self.band_width}, keep_mean={self.keep_mean}"

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        n, length, n_features = x.shape
        values = x.float()
        if mask is not None:
            values = values * mask.unsqueeze(-1).to(values.dtype)
        spectrum = torch.fft.rfft(values, dim=1)  # [N, K, F], K = L // 2 + 1
        n_bins = spectrum.shape[1]
        first = 1 if self.keep_mean else 0
        span = max(n_bins - first, 1)
        width = min(self.band_width, span)
        start = first + torch.randint(0, span - width + 1, (n, 1, n_features), device=x.device)
        bins = torch.arange(n_bins, device=x.device).view(1, n_bins, 1)
        in_band = (bins >= start) & (bins < start + width)  # [N, K, F]
        dropped = torch.rand(n, 1, n_features, device=x.device) < self.p
        keep = ~(in_band & dropped)
        filtered = torch.fft.irfft(spectrum * keep, n=length, dim=1)
        if mask is not None:
            filtered = filtered * mask.unsqueeze(-1).to(filtered.dtype)
        return filtered.to(x.dtype)
