"""BK-Core Phase 2: Phase 1 plus dissipation, fast-weight memory, an SNR filter, memory
resonance and zeta initialization, each a switch of :class:`~.config.Phase2Config`.

``B`` sequences, ``N`` tokens, ``D = d_model``, ``H = num_heads``, ``d = head_dim``,
``M = resonance_modes``::

    ids [B, N] -> embed (+ ZetaPositionEmbedding if use_zeta_init)              [B, N, D]
      -> n_layers x Phase2Block:
           x = x + BKMixer(LayerNorm(x))          a = v - i Gamma (non_hermitian),
                                                  Gamma [B, H, N] also returned
           x = x + HebbianMemory(LayerNorm(x), Gamma)       (hebbian_enabled)
           x = x + FeedForward(LayerNorm(x))                                     [B, N, D]
      -> LayerNorm -> lm_head                                                    [B, N, V]

Components
----------
* **Non-hermitian potential** (``non_hermitian``): the diagonal is ``a = v - i Gamma`` with
  ``Gamma = base_decay (+ softplus(Linear(h))`` with ``adaptive_decay``). A larger
  ``Gamma`` makes the continued fraction of the causal resolvent forget faster: the
  influence of token ``s`` on ``g_t`` shrinks with the dissipation between ``s`` and ``t``.
* **Dissipative Hebbian memory** (``hebbian_enabled``): per head a fast-weight matrix
  ``M_t [d, d]``, ``M_t = exp(-Gamma'_t dt) M_{t-1} + eta'_t dt v_t k_t^T`` and the readout
  ``o_t = M_t q_t`` (``q, k`` unit vectors). The decay is the potential's ``Gamma`` when
  ``non_hermitian`` (the same dissipation fades the memory), else ``base_decay``.
  Computed by :func:`~.layers.chunked_fast_weight` (chunks of ``chunk_size``; on CUDA the
  Triton kernels of :mod:`~.triton_fast_weight` unless ``use_triton_memory: false``):
  causal, O(N) time and memory, never an ``N x N`` matrix.
* **SNR memory filter** (``snr_enabled``): per head and step, causal moving averages
  (decay ``snr_ema_decay``) of the written values give a signal ``mean_c(mu^2)`` and a noise
  ``mean_c(E[v^2] - mu^2)``; ``SNR = signal / noise``. The soft gate
  ``keep = SNR / (SNR + snr_threshold)`` (= sigmoid(log SNR - log threshold)) boosts the
  learning rate of high-SNR updates, ``eta' = eta (1 + (snr_eta_boost - 1) keep)``, and the
  decay of low-SNR ones, ``Gamma' = Gamma (1 + (snr_gamma_boost - 1)(1 - keep))``.
* **Memory resonance** (``resonance_enabled``): ``M`` orthonormal modes ``u_m`` per head
  (zeta or DCT, :func:`~.zeta.zeta_mode_basis`); the share of the readout's energy in mode
  ``m``, ``e_m = (u_m . o)^2 / |o|^2``, above ``resonance_energy_threshold`` (soft, width
  ``resonance_temperature``) amplifies that mode: ``o += sum_m gain_hm s_m (u_m . o) u_m``
  with learnable ``gain [H, M]`` (init 0.5).
* **Zeta initialization** (``use_zeta_init``): the real parts of the heads' spectral shifts
  ``z`` of layer ``l`` come from zeros ``gamma_{lH+1..lH+H}`` mapped to ``[-1, 1]`` (Phase 1
  spaces them evenly); a sinusoidal position embedding with frequencies
  ``gamma_1 / gamma_k`` (learnable with ``zeta_embedding_trainable``) is added to the token
  embeddings; the resonance modes start from zeta frequencies. All computed on the CPU
  in float64 (no SVD; one small CPU QR), so building on a GPU cannot hit a CUDA solver.

Diagnostics
-----------
``forward(ids, return_diagnostics=True)`` returns ``(logits, diagnostics)``, one dict per
layer of detached tensors; a key is present exactly when its component is on
(``PHASE2_DIAGNOSTIC_KEYS`` maps each key to its switch, ``None`` = always):

=========================  ==============  ==============================================
key                        shape           meaning
=========================  ==============  ==============================================
``resolvent_abs``          ``[B, H, N]``   ``|g|``, the causal resolvent diagonal
``decay_rate``             ``[B, H, N]``   ``Gamma`` of the potential
``memory_decay``           ``[B, H, N]``   the memory's decay rate (after the SNR filter)
``memory_eta``             ``[B, H, N]``   the memory's learning rate (after the filter)
``memory_readout_norm``    ``[B, H, N]``   ``|o_t|``
``memory_norm``            ``[B, H]``      Frobenius norm of the final memory ``M_N``
``snr``                    ``[B, H, N]``   signal-to-noise ratio of the written values
``resonance_energy``       ``[B, H, N, M]`` share of the readout's energy per mode
``resonance_gain``         ``[B, H, N]``   mean amplification ``1 + gain * s`` over modes
=========================  ==============  ==============================================

Phase 1 -> Phase 2: :func:`convert_phase1_to_phase2` copies every tensor with the same name
and shape (the blocks use Phase 1's module names), initializes the rest, optionally freezes
the copied ones, and returns a :class:`ConversionReport`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kizashi.models.bk.config import PHASE2_PRESETS, Phase1Config, Phase2Config
from kizashi.models.bk.core import resolve_backend
from kizashi.models.bk.layers import (
    Backend,
    BKMixer,
    FeedForward,
    LayerNorm,
    chunked_fast_weight,
    decayed_average,
    kernel_backend,
)
from kizashi.models.bk.phase1 import (
    BKLanguageModel,
    init_feed_forward,
    linear_spectral_shifts,
    residual_std,
)
from kizashi.models.bk.zeta import zeta_frequencies, zeta_mode_basis, zeta_spectral_shifts
from kizashi.models.registry import register_model

log = logging.getLogger(__name__)

PHASE2_DIAGNOSTIC_KEYS: dict[str, str | None] = {
    "resolvent_abs": None,
    "decay_rate": "non_hermitian",
    "memory_decay": "hebbian_enabled",
    "memory_eta": "hebbian_enabled",
    "memory_readout_norm": "hebbian_enabled",
    "memory_norm": "hebbian_enabled",
    "snr": "snr_enabled",
    "resonance_energy": "resonance_enabled",
    "resonance_gain": "resonance_enabled",
}

SNR_EPS = 1e-6
RESONANCE_EPS = 1e-8


class ZetaPositionEmbedding(nn.Module):
    """``N`` -> ``[N, D]``: ``[sin(t omega_k), cos(t omega_k)]`` with ``omega_k = gamma_1 /
    gamma_k`` (``k = 1 .. D/2``), times ``amplitude``; a parameter when ``trainable``, else a
    (non-persistent) buffer. No table: any length."""

    def __init__(self, d_model: int, trainable: bool, amplitude: float) -> None:
        super().__init__()
        self.d_model, self.amplitude = d_model, amplitude
        frequencies = zeta_frequencies(d_model // 2).to(torch.float32)
        if trainable:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, length: int) -> Tensor:
        position = torch.arange(length, device=self.frequencies.device, dtype=torch.float32)
        angle = position[:, None] * self.frequencies[None, :]  # [N, D/2]
        embedding = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1) * self.amplitude
        return F.pad(embedding, (0, self.d_model - embedding.shape[-1]))


class SNRMemoryFilter(nn.Module):
    """Values ``v [B, H, N, d]``, decay and learning rates ``[B, H, N]`` -> filtered
    ``(decay, eta, snr)`` each ``[B, H, N]`` (see the module docstring). No parameters;
    causal (moving averages over steps ``<= t``). With the Triton backend ``[v, v^2]`` and
    the gate come from :mod:`~.triton_snr` (one pass each way) and the moving averages from
    the fast-weight kernels; the PyTorch code below is the reference."""

    def __init__(self, threshold: float, gamma_boost: float, eta_boost: float, ema_decay: float,
                 chunk_size: int, backend: Backend = "torch") -> None:
        super().__init__()
        self.threshold, self.gamma_boost, self.eta_boost = threshold, gamma_boost, eta_boost
        self.ema_decay, self.chunk_size, self.backend = ema_decay, chunk_size, backend

    def forward(self, v: Tensor, decay: Tensor, eta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if resolve_backend(self.backend, v, "SNRMemoryFilter") == "triton":
            from kizashi.models.bk.triton_snr import values_and_squares

            both = values_and_squares(v)
        else:
            v = v.to(torch.promote_types(v.dtype, torch.float32))  # bf16 projections: square in float32
            both = torch.cat([v, v * v], dim=-1)
        moments = decayed_average(both, self.ema_decay, self.chunk_size, self.backend)
        return self.gate(moments, decay, eta)

    def gate(self, moments: Tensor, decay: Tensor, eta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``moments [B, H, N, 2 d]`` (moving averages of ``v``, then of ``v^2``), ``decay, eta
        [B, H, N]`` -> ``(decay', eta', snr)`` each ``[B, H, N]``."""
        if resolve_backend(self.backend, moments, "SNRMemoryFilter") == "triton":
            from kizashi.models.bk.triton_snr import snr_gate

            return snr_gate(moments, decay, eta, threshold=self.threshold, gamma_boost=self.gamma_boost,
                            eta_boost=self.eta_boost, eps=SNR_EPS)
        mean, second = moments.chunk(2, dim=-1)
        signal = (mean * mean).mean(-1)
        noise = (second - mean * mean).clamp_min(0.0).mean(-1) + SNR_EPS
        snr = signal / noise
        keep = snr / (snr + self.threshold)
        decay = decay * (1 + (self.gamma_boost - 1) * (1 - keep))
        eta = eta * (1 + (self.eta_boost - 1) * keep)
        return decay, eta, snr


class MemoryResonance(nn.Module):
    """Readout rows ``o [B, N, H, d]`` -> ``(amplified [B, N, H, d], energy [B, N, H, M],
    gain [B, N, H])``: modes holding more than ``threshold`` of the energy are amplified (any
    leading axes; the last two are the heads and their features). With the Triton backend
    one pass of :mod:`~.triton_resonance` each way, energy and gain computed only when
    ``return_diagnostics`` (else ``None``); the PyTorch code below is the reference."""

    def __init__(self, num_heads: int, head_dim: int, num_modes: int, threshold: float,
                 temperature: float, use_zeta: bool, backend: Backend = "torch") -> None:
        super().__init__()
        self.threshold, self.temperature, self.backend = threshold, temperature, backend
        modes = zeta_mode_basis(num_modes, head_dim, use_zeta=use_zeta).to(torch.float32)
        self.register_buffer("modes", modes, persistent=False)  # [M, d], orthonormal rows
        self.gain = nn.Parameter(torch.full((num_heads, num_modes), 0.5))

    def forward(self, o: Tensor, return_diagnostics: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
        if resolve_backend(self.backend, o, "MemoryResonance") == "triton":
            from kizashi.models.bk.triton_resonance import resonate

            return resonate(o, self.modes, self.gain, threshold=self.threshold, temperature=self.temperature,
                            eps=RESONANCE_EPS, diagnostics=return_diagnostics)
        coefficient = o @ self.modes.T  # [B, N, H, M]
        energy = coefficient.square() / (o.square().sum(-1, keepdim=True) + RESONANCE_EPS)
        active = torch.sigmoid((energy - self.threshold) / self.temperature)
        boost = self.gain * active  # [B, N, H, M]
        amplified = o + (boost * coefficient) @ self.modes
        return amplified, energy, 1 + boost.mean(-1)


class HebbianMemory(nn.Module):
    """Dissipative Hebbian fast-weight memory: ``x [B, N, D]`` (normalized) and the decay
    rate ``[B, H, N]`` -> ``(out [B, N, D], diagnostics)``."""

    def __init__(self, config: Phase2Config) -> None:
        super().__init__()
        heads, width = config.num_heads, config.num_heads * config.head_dim
        self.num_heads, self.head_dim = heads, config.head_dim
        self.eta, self.dt, self.chunk_size = config.hebbian_eta, config.hebbian_dt, config.chunk_size
        self.backend: Backend = "auto" if config.use_triton_memory else "torch"
        self.qkv = nn.Linear(config.d_model, 3 * width, bias=False)  # rows: query, key, value
        self.out = nn.Linear(width, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        nn.init.normal_(self.qkv.weight, std=config.init_std)
        nn.init.normal_(self.out.weight, std=residual_std(config.init_std, config.n_layers))
        nn.init.zeros_(self.out.bias)
        self.register_load_state_dict_pre_hook(_merge_qkv_weights)
        self.snr = (SNRMemoryFilter(config.snr_threshold, config.snr_gamma_boost, config.snr_eta_boost,
                                    config.snr_ema_decay, config.chunk_size, self.backend)
                    if config.snr_enabled else None)
        self.resonance = (MemoryResonance(heads, config.head_dim, config.resonance_modes,
                                          config.resonance_energy_threshold, config.resonance_temperature,
                                          config.use_zeta_init, self.backend)
                          if config.resonance_enabled else None)

    def _heads(self, projected: Tensor) -> Tensor:
        """``[B, N, H * d]`` (a view of the ``[B, N, 3 H d]`` projection) -> ``[B, H, N, d]``, a
        view (no copy, the projection's dtype): the fast-weight kernels read the heads in place
        and normalize them themselves."""
        return projected.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: Tensor, decay: Tensor, return_diagnostics: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """``(out [B, N, D], diagnostics)``; the dict is empty unless ``return_diagnostics``."""
        batch, n, _ = x.shape
        q, k, v = (self._heads(part) for part in self.qkv(x).chunk(3, dim=-1))  # one projection
        eta = torch.full_like(decay, self.eta)
        diagnostics: dict[str, Tensor] = {}
        if self.snr is not None:
            decay, eta, snr = self.snr(v, decay, eta)
            diagnostics["snr"] = snr
        readout, state = chunked_fast_weight(q, k, v, -decay * self.dt, eta * self.dt, self.chunk_size,
                                             self.backend, normalize=True)
        rows = readout.transpose(1, 2)  # [B, N, H, d]: contiguous from the kernels, which write it so
        if self.resonance is not None:
            rows, energy, gain = self.resonance(rows, return_diagnostics)
            if return_diagnostics:
                diagnostics["resonance_energy"] = energy.transpose(1, 2)  # [B, H, N, M]
                diagnostics["resonance_gain"] = gain.transpose(1, 2)
        if return_diagnostics:
            diagnostics.update(memory_decay=decay, memory_eta=eta, memory_readout_norm=rows.norm(dim=-1).transpose(1, 2),
                               memory_norm=state.flatten(-2).norm(dim=-1))
        merged = rows.reshape(batch, n, self.num_heads * self.head_dim)
        return self.drop(self.out(merged.to(x.dtype))), diagnostics if return_diagnostics else {}


def _merge_qkv_weights(module: nn.Module, state_dict: dict, prefix: str, *_args) -> None:
    """Loads a state dict saved when the memory had separate ``query``, ``key`` and ``value``
    projections: their weights become the rows of ``qkv`` (same values, same outputs)."""
    names = [f"{prefix}{part}.weight" for part in ("query", "key", "value")]
    if all(name in state_dict for name in names) and f"{prefix}qkv.weight" not in state_dict:
        state_dict[f"{prefix}qkv.weight"] = torch.cat([state_dict.pop(name) for name in names], dim=0)


class Phase2Block(nn.Module):
    """``x [B, N, D]`` -> ``[B, N, D]``: BK mixer, Hebbian memory (if on), feed-forward."""

    def __init__(self, config: Phase2Config, layer_index: int) -> None:
        super().__init__()
        heads = config.num_heads
        shift_real = (zeta_spectral_shifts(heads, offset=layer_index * heads) if config.use_zeta_init
                      else linear_spectral_shifts(heads))
        out_std = residual_std(config.init_std, config.n_layers)
        self.non_hermitian, self.base_decay = config.non_hermitian, config.base_decay
        self.bk_norm = LayerNorm(config.d_model, backend=kernel_backend(config))
        self.bk = BKMixer(
            config.d_model, heads, causal=config.causal, spectral_shift_real=shift_real,
            spectral_shift_imag=config.spectral_shift_imag,
            spectral_shift_imag_min=config.spectral_shift_imag_min,
            non_hermitian=config.non_hermitian, adaptive_decay=config.adaptive_decay,
            base_decay=config.base_decay, backend=kernel_backend(config),
            dropout=config.dropout, init_std=config.init_std, out_std=out_std,
        )
        if config.hebbian_enabled:
            self.memory_norm = LayerNorm(config.d_model, backend=kernel_backend(config))
            self.memory = HebbianMemory(config)
        else:
            self.memory_norm, self.memory = None, None
        self.ffn_norm = LayerNorm(config.d_model, backend=kernel_backend(config))
        self.ffn = FeedForward(config.d_model, config.ffn_width, config.dropout)
        init_feed_forward(self.ffn, config.init_std, out_std)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, return_diagnostics: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """``(x [B, N, D], diagnostics)``; the dict is empty unless ``return_diagnostics``."""
        mixed, gamma, g = self.bk(self.bk_norm(x))
        x = x + mixed
        diagnostics: dict[str, Tensor] = {}
        if return_diagnostics:
            diagnostics["resolvent_abs"] = g.detach().abs()
            if self.non_hermitian:
                diagnostics["decay_rate"] = gamma
        if self.memory is not None:
            memory_decay = gamma if self.non_hermitian else torch.full_like(gamma, self.base_decay)
            recalled, memory_diagnostics = self.memory(self.memory_norm(x), memory_decay, return_diagnostics)
            x = x + recalled
            diagnostics.update(memory_diagnostics)
        x = x + self.drop(self.ffn(self.ffn_norm(x)))
        return x, {key: value.detach() for key, value in diagnostics.items()}


@register_model("bk_phase2", config_cls=Phase2Config, presets=PHASE2_PRESETS)
class BKPhase2LM(BKLanguageModel):
    """Phase-2 BK-Core language model: ``ids [B, N]`` -> ``logits [B, N, V]`` (diagnostics'
    keys and shapes in the module docstring); the zeta position embedding when
    ``use_zeta_init``."""

    def __init__(self, config: Phase2Config) -> None:
        super().__init__(
            config, lambda: [Phase2Block(config, index) for index in range(config.n_layers)],
            lambda: (ZetaPositionEmbedding(config.d_model, config.zeta_embedding_trainable, config.init_std)
                     if config.use_zeta_init else None),
        )


@dataclass
class ConversionReport:
    """What :func:`convert_phase1_to_phase2` did, by state-dict name."""

    copied: list[str] = field(default_factory=list)  # same name and shape: copied
    new: list[str] = field(default_factory=list)  # Phase-2 tensors left at their initialization
    skipped: dict[str, str] = field(default_factory=dict)  # Phase-1 tensors not copied: why
    frozen: list[str] = field(default_factory=list)  # parameters set to requires_grad=False

    def summary(self) -> str:
        return (f"copied {len(self.copied)} tensors, {len(self.new)} new, {len(self.skipped)} skipped, "
                f"{len(self.frozen)} frozen")


def convert_phase1_to_phase2(
    phase1_model: nn.Module,
    config: Phase2Config | None = None,
    copy_compatible_weights: bool = True,
    freeze_phase1_weights: bool = False,
    device: torch.device | str | None = None,
) -> tuple[BKPhase2LM, ConversionReport]:
    """A Phase-2 model initialized from ``phase1_model``: returns ``(model, report)``.

    ``config`` defaults to ``Phase2Config.from_phase1(phase1_model.config)``. Every tensor of
    ``phase1_model.state_dict()`` whose name and shape match a Phase-2 tensor is copied; the
    others are reported as skipped with the reason; Phase-2 tensors not copied keep their
    (zeta) initialization and are reported as new. ``freeze_phase1_weights`` sets
    ``requires_grad=False`` on the copied parameters (train only the new ones).
    """
    if config is None:
        source = getattr(phase1_model, "config", None)
        if not isinstance(source, Phase1Config):
            raise ValueError("phase1_model has no Phase1Config in .config: pass config=Phase2Config(...)")
        config = Phase2Config.from_phase1(source)
    if freeze_phase1_weights and not copy_compatible_weights:
        raise ValueError("freeze_phase1_weights=True needs copy_compatible_weights=True "
                         "(freezing randomly initialized weights would keep them random)")
    model = BKPhase2LM(config)
    report = ConversionReport()
    target = model.state_dict()
    if copy_compatible_weights:
        with torch.no_grad():
            for name, tensor in phase1_model.state_dict().items():
                if name not in target:
                    report.skipped[name] = "no Phase-2 tensor of that name"
                elif target[name].shape != tensor.shape:
                    report.skipped[name] = (f"shape {tuple(tensor.shape)} vs Phase-2 "
                                            f"{tuple(target[name].shape)}")
                else:
                    target[name].copy_(tensor)
                    report.copied.append(name)
    else:
        report.skipped = {name: "copy_compatible_weights=False" for name in phase1_model.state_dict()}
    copied = set(report.copied)
    report.new = [name for name in target if name not in copied]
    if freeze_phase1_weights:
        for name, parameter in model.named_parameters(remove_duplicate=False):
            if name in copied and parameter.requires_grad:
                parameter.requires_grad_(False)
                report.frozen.append(name)
    log.info("Phase 1 -> Phase 2: %s", report.summary())
    return (model.to(device) if device is not None else model), report
