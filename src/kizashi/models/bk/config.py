"""Configs and presets of the BK-Core language models (:mod:`.phase1`, :mod:`.phase2`).

Both are dataclasses (the registry's requirement), validated on construction with errors
that name the field; ``to_dict`` / ``from_dict`` round-trip them (``from_dict`` refuses
unknown keys); :meth:`Phase2Config.from_phase1` carries a Phase-1 architecture over. Models
are built from them by the registry, ``kizashi.models.create_model("bk_phase1" |
"bk_phase2", preset=..., config=..., **overrides)``, with the presets below.

Phase 2's components are config switches; a switch that needs another one is a validation
error when the other is off (not a silent no-op):

==========================  ========================================  ===================
switch                      component                                 needs
==========================  ========================================  ===================
``non_hermitian``           potential ``a = v - i Gamma``             ``base_decay > 0``
                                                                      or ``adaptive_decay``
``adaptive_decay``          ``Gamma`` also from the hidden state      ``non_hermitian``
``hebbian_enabled``         dissipative Hebbian fast-weight memory
``snr_enabled``             SNR memory filter                         ``hebbian_enabled``
``resonance_enabled``       memory resonance                          ``hebbian_enabled``
``use_zeta_init``           zeta-zero spectral shifts, position
                            embedding and resonance modes
``zeta_embedding_trainable``  the zeta position frequencies learn     ``use_zeta_init``
==========================  ========================================  ===================

The models have no position table and no maximum length: the training context length is a
setting of the trainer (``seq_len`` of ``kizashi lm train``), not of the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self


def _check_positive_int(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_bool(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")


def _check_common(config: Any) -> None:
    """Fields shared by :class:`Phase1Config` and :class:`Phase2Config`."""
    _check_positive_int(config, "vocab_size", "d_model", "n_layers", "num_heads")
    if config.ffn_dim is not None:
        _check_positive_int(config, "ffn_dim")
    _check_bool(config, "causal", "tie_embeddings", "use_triton_bk")
    dropout = config.dropout
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout!r}")
    _check_positive(config, "spectral_shift_imag", "spectral_shift_imag_min", "init_std")
    if not config.spectral_shift_imag > config.spectral_shift_imag_min:
        raise ValueError(
            f"spectral_shift_imag={config.spectral_shift_imag} must exceed spectral_shift_imag_min="
            f"{config.spectral_shift_imag_min} (Im z starts at spectral_shift_imag and never drops "
            f"below the minimum, which bounds |G_ii| <= 1 / spectral_shift_imag_min)")


class _BKConfig:
    """The methods both configs share: validation on construction, the feed-forward width
    and the dict round trip (a plain base class: the fields live in the dataclasses)."""

    d_model: int
    ffn_dim: int | None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def ffn_width(self) -> int:
        return self.ffn_dim or 4 * self.d_model

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value is invalid."""
        _check_common(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """The config of ``values`` (a mapping of field names); unknown keys are an error."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{cls.__name__}.from_dict needs a mapping, got {type(values).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {valid}")
        return cls(**values)


@dataclass
class Phase1Config(_BKConfig):
    """Phase 1: token embedding -> ``n_layers`` x (BK mixer + feed-forward) -> logits."""

    vocab_size: int = 50257
    d_model: int = 512
    n_layers: int = 6
    num_heads: int = 8  # BK heads: each its own tridiagonal over the sequence
    ffn_dim: int | None = None  # None: 4 * d_model
    dropout: float = 0.1
    causal: bool = True  # False: two-sided bk_core (an encoder, not a language model)
    spectral_shift_imag: float = 0.5  # initial Im z of every head
    spectral_shift_imag_min: float = 0.05  # Im z > this, so |G_ii| < 1 / this
    tie_embeddings: bool = False
    use_triton_bk: bool = True  # resolvent and layer norms: "auto" (Triton on CUDA where available) vs "torch"
    init_std: float = 0.02


@dataclass
class Phase2Config(_BKConfig):
    """Phase 2: Phase 1 plus the switches in the module docstring and their constants."""

    # BK-Core backend of the resolvent and the layer norms
    use_triton_bk: bool = True
    # fast-weight memory, SNR filter and resonance: "auto" (Triton on CUDA where available) vs "torch"
    use_triton_memory: bool = True
    # non-Hermitian potential a = v - i Gamma
    non_hermitian: bool = True
    base_decay: float = 0.01  # Gamma's floor; also the memory's decay without non_hermitian
    adaptive_decay: bool = True  # Gamma += softplus(Linear(h))
    # dissipative Hebbian fast-weight memory
    hebbian_enabled: bool = True
    hebbian_eta: float = 0.1  # learning rate eta of the outer-product update
    hebbian_dt: float = 1.0  # time step: M_t = exp(-Gamma dt) M_{t-1} + eta dt v k^T
    num_heads: int = 8  # BK heads and memory heads
    head_dim: int = 64  # memory width per head
    # SNR memory filter
    snr_enabled: bool = True
    snr_threshold: float = 2.0
    snr_gamma_boost: float = 2.0  # decay x this for low-SNR updates
    snr_eta_boost: float = 1.5  # learning rate x this for high-SNR updates
    snr_ema_decay: float = 0.9  # moving-average decay of the value statistics
    # memory resonance
    resonance_enabled: bool = True
    resonance_energy_threshold: float = 0.1  # share of a readout's energy in one mode
    resonance_modes: int = 8
    resonance_temperature: float = 0.025  # width of the soft threshold
    # zeta initialization
    use_zeta_init: bool = True
    zeta_embedding_trainable: bool = False
    # architecture
    vocab_size: int = 50257
    d_model: int = 512
    n_layers: int = 6
    ffn_dim: int | None = None  # None: 4 * d_model
    dropout: float = 0.1
    causal: bool = True
    spectral_shift_imag: float = 0.5
    spectral_shift_imag_min: float = 0.05
    tie_embeddings: bool = False
    chunk_size: int = 64  # chunk length of the memory and moving-average scans
    init_std: float = 0.02

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value is invalid or two switches
        contradict each other."""
        super().validate()
        _check_positive_int(self, "head_dim", "resonance_modes", "chunk_size")
        _check_bool(self, "non_hermitian", "adaptive_decay", "hebbian_enabled", "snr_enabled",
                    "resonance_enabled", "use_zeta_init", "zeta_embedding_trainable", "use_triton_memory")
        decay = self.base_decay
        if isinstance(decay, bool) or not isinstance(decay, int | float) or decay < 0:
            raise ValueError(f"base_decay must be a non-negative number, got {self.base_decay!r}")
        _check_positive(self, "hebbian_eta", "hebbian_dt", "snr_threshold", "resonance_temperature")
        for name in ("snr_gamma_boost", "snr_eta_boost"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
                raise ValueError(f"{name} must be >= 1 (a boost; 1 = off), got {value!r}")
        for name in ("snr_ema_decay", "resonance_energy_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value!r}")
        if self.resonance_modes > self.head_dim:
            raise ValueError(f"resonance_modes={self.resonance_modes} must be <= head_dim={self.head_dim}")
        # switches that need another switch
        if self.adaptive_decay and not self.non_hermitian:
            raise ValueError("adaptive_decay=True needs non_hermitian=True (the adaptive decay is the "
                             "imaginary part of the potential); set adaptive_decay=False too")
        for name in ("snr_enabled", "resonance_enabled"):
            if getattr(self, name) and not self.hebbian_enabled:
                raise ValueError(f"{name}=True needs hebbian_enabled=True (it acts on the Hebbian "
                                 f"memory); set {name}=False too")
        if self.zeta_embedding_trainable and not self.use_zeta_init:
            raise ValueError("zeta_embedding_trainable=True needs use_zeta_init=True (there is no zeta "
                             "position embedding without it)")
        if self.base_decay == 0 and not (self.non_hermitian and self.adaptive_decay):
            if self.non_hermitian:
                raise ValueError("non_hermitian=True with base_decay=0 and adaptive_decay=False gives "
                                 "Gamma = 0 (a Hermitian potential): set base_decay > 0 or adaptive_decay")
            if self.hebbian_enabled:
                raise ValueError("hebbian_enabled=True without non_hermitian needs base_decay > 0 "
                                 "(the memory's decay rate; 0 would never forget)")

    @classmethod
    def from_phase1(cls, phase1_config: Phase1Config, **overrides: Any) -> Phase2Config:
        """A Phase-2 config with the Phase-1 architecture (every Phase-1 field, so every
        Phase-1 tensor has a same-shaped Phase-2 counterpart), memory heads of width
        ``d_model / num_heads`` where that divides, then ``overrides``."""
        if not isinstance(phase1_config, Phase1Config):
            raise ValueError(f"from_phase1 needs a Phase1Config, got {type(phase1_config).__name__}")
        shared = ({f.name for f in dataclasses.fields(Phase1Config)}
                  & {f.name for f in dataclasses.fields(cls)})
        values: dict[str, Any] = {name: getattr(phase1_config, name) for name in shared}
        if phase1_config.d_model % phase1_config.num_heads == 0:
            head_dim = phase1_config.d_model // phase1_config.num_heads
            values["head_dim"] = head_dim
            values["resonance_modes"] = min(cls.resonance_modes, head_dim)
        values.update(overrides)
        return cls.from_dict(values)


PHASE1_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(d_model=256, n_layers=4),
    "base": dict(d_model=512, n_layers=6),
    "large": dict(d_model=1024, n_layers=12),
}

PHASE2_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(d_model=256, n_layers=4, head_dim=32),
    "base": dict(d_model=512, n_layers=6, head_dim=64),
    "large": dict(d_model=1024, n_layers=12, head_dim=128),
}

