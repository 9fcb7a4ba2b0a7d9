"""Frequency adaptive normalization (FAN) and slice adaptive normalization (SAN) of a
feature window, each returning the normalized window and a "restore" term for the
representation.

Both take ``x [N, L, F]`` and ``mask [N, L]`` (True = observed) and return
``(normalized [N, L, F], restore [N, L, D])``. The model feeds ``normalized`` to its
encoder and adds ``restore`` to the per-step embedding ``[N, L, D]``: the removed,
non-stationary part of the window reaches the representation only through this small,
separate path (in the spirit of the papers, where a separate MLP predicts the removed part
of the future and adds it back to the output; here the "output" is a representation, not a
series, so the removed part is projected into it instead).

**FAN** (after Ye et al. 2024, "Frequency Adaptive Normalization for Non-stationary Time
Series Forecasting"). Per window and feature: ``S = rFFT_t(x)`` (``K = L // 2 + 1`` bins,
bin 0 = the mean, which is a candidate like any other bin); the ``top_k`` bins by amplitude
``|S|`` are the non-stationary component ``x_ns = irFFT(S * 1[top_k])``; the encoder sees
the residual ``x - x_ns``. Restore: ``Linear(F -> D)(x_ns)`` per time step, i.e. a learned
projection of the removed low-rank spectral signal (it carries the removed amplitudes and
phases at every step). The top-k selection is made on detached amplitudes (it is a
discrete choice); gradients flow through the linear rFFT / irFFT maps, so there is no
``angle``/``abs`` gradient that could be NaN at zero. A pure sinusoid at an integer
frequency (or a constant) is removed exactly by ``top_k >= 1``.

**SAN** (after Liu et al. 2023, "Adaptive Normalization for Non-stationary Time Series
Forecasting: A Temporal Slice Perspective"). The window is split into slices of
``slice_len`` steps, aligned to the window's END (the first slice is left-padded with
unobserved steps when ``L`` is not a multiple). Each slice and feature is normalized by its
masked mean and ``sqrt(var + eps)``. Restore: the slice statistics ``[mean, log std]``
(``[N, S, 2F]``) go through ``Linear(2F -> D) -> ELU -> Linear(D -> D)`` and each step
gets its slice's vector.

Numerics: unobserved steps are zero in and out; an all-zero, constant or fully masked
window gives a zero normalized window and finite statistics (counts are clamped to 1,
``eps`` inside the square root and the log). The FFT runs in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _time_mask(x: Tensor, mask: Tensor | None) -> Tensor:
    """``[N, L, 1]`` float mask (all ones when ``mask`` is None)."""
    if mask is None:
        return torch.ones(x.shape[0], x.shape[1], 1, dtype=x.dtype, device=x.device)
    return mask.unsqueeze(-1).to(x.dtype)


def dominant_frequency_split(
    x: Tensor, top_k: int, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Split ``x [N, L, F]`` along time into ``(residual, removed)``, both ``[N, L, F]``,
    where ``removed`` is the inverse rFFT of the ``top_k`` largest-amplitude bins of each
    window and feature. ``residual + removed == x * mask``."""
    length = x.shape[1]
    n_bins = length // 2 + 1
    if not 1 <= top_k <= n_bins:
        raise ValueError(f"top_k={top_k} must be in [1, {n_bins}] for a window of {length} steps")
    values = x.float()
    weight = _time_mask(values, mask)
    values = values * weight
    spectrum = torch.fft.rfft(values, dim=1)  # [N, K, F]
    top = spectrum.detach().abs().topk(top_k, dim=1).indices  # [N, k, F]
    selected = torch.zeros(spectrum.shape, dtype=torch.bool, device=x.device)
    selected.scatter_(1, top, True)
    removed = torch.fft.irfft(spectrum * selected, n=length, dim=1) * weight
    residual = values - removed
    return residual.to(x.dtype), removed.to(x.dtype)


class FrequencyAdaptiveNormalization(nn.Module):
    """FAN. ``x [N, L, F]``, ``mask [N, L]`` -> ``(residual [N, L, F], restore [N, L, D])``."""

    def __init__(self, n_features: int, d_model: int, top_k: int = 3) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"FAN top_k must be >= 1, got {top_k}")
        self.top_k = int(top_k)
        self.restore = nn.Linear(n_features, d_model)

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}"

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        residual, removed = dominant_frequency_split(x, self.top_k, mask)
        return residual, self.restore(removed) * _time_mask(x, mask)


def slice_statistics(
    x: Tensor, slice_len: int, mask: Tensor | None = None, eps: float = 1e-5
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-slice masked statistics of ``x [N, L, F]``.

    Returns ``normalized [N, L, F]``, ``mean [N, S, F]`` and ``log_std [N, S, F]`` with
    ``S = ceil(L / slice_len)`` slices aligned to the end of the window.
    """
    n, length, n_features = x.shape
    n_slices = -(-length // slice_len)
    pad = n_slices * slice_len - length
    weight = _time_mask(x, mask)
    values = x * weight
    if pad:
        values = F.pad(values, (0, 0, pad, 0))
        weight = F.pad(weight, (0, 0, pad, 0))
    values = values.view(n, n_slices, slice_len, n_features)
    weight = weight.view(n, n_slices, slice_len, 1)
    count = weight.sum(dim=2, keepdim=True).clamp_min(1.0)  # [N, S, 1, 1]
    mean = values.sum(dim=2, keepdim=True) / count
    centred = (values - mean) * weight
    var = centred.pow(2).sum(dim=2, keepdim=True) / count
    normalized = centred / torch.sqrt(var + eps)
    normalized = normalized.reshape(n, n_slices * slice_len, n_features)[:, pad:]
    log_std = 0.5 * torch.log(var + eps)
    return normalized, mean.squeeze(2), log_std.squeeze(2)


class SliceAdaptiveNormalization(nn.Module):
    """SAN. ``x [N, L, F]``, ``mask [N, L]`` -> ``(normalized [N, L, F], restore [N, L, D])``."""

    def __init__(
        self, n_features: int, d_model: int, slice_len: int = 5, eps: float = 1e-5
    ) -> None:
        super().__init__()
        if slice_len < 1:
            raise ValueError(f"SAN slice_len must be >= 1, got {slice_len}")
        self.slice_len, self.eps = int(slice_len), float(eps)
        self.restore = nn.Sequential(
            nn.Linear(2 * n_features, d_model), nn.ELU(), nn.Linear(d_model, d_model)
        )

    def extra_repr(self) -> str:
        return f"slice_len={self.slice_len}, eps={self.eps}"

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        length = x.shape[1]
        normalized, mean, log_std = slice_statistics(x, self.slice_len, mask, self.eps)
        per_slice = self.restore(torch.cat([mean, log_std], dim=-1))  # [N, S, D]
        per_step = per_slice.repeat_interleave(self.slice_len, dim=1)[:, -length:]
        return normalized, per_step * _time_mask(x, mask)
