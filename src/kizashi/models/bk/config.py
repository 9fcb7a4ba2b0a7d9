"""Configs and presets of the BK-Core language models (:mod:`.phase1`, :mod:`.phase2`).

Both are dataclasses (the registry's requirement), validated on construction with errors
that name the field; ``to_dict`` / ``from_dict`` round-trip them (``from_dict`` refuses
unknown keys); :meth:`Phase2Config.from_phase1` carries a Phase-1 config over.

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

Fields kept from the seed's Phase-2 factory that the model does not read:
``triton_block_size`` (for a Triton causal kernel; the PyTorch scans use ``chunk_size``),
``target_vram_gb`` and ``target_speedup_triton`` (targets for benchmarks to report
against). ``n_seq`` is the training context length (data loaders, benchmarks); the models
have no position table and run on any length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")


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
    _check_positive_int(config, "vocab_size", "d_model", "n_layers", "n_seq", "num_heads", "chunk_size")
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


def _from_dict(cls: type[ConfigT], values: Mapping[str, Any]) -> ConfigT:
    if not isinstance(values, Mapping):
        raise ValueError(f"{cls.__name__}.from_dict needs a mapping, got {type(values).__name__}")
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {valid}")
    return cls(**values)


@dataclass
class Phase1Config:
    """Phase 1: token embedding -> ``n_layers`` x (BK mixer + feed-forward) -> logits."""

    vocab_size: int = 50257
    d_model: int = 512
    n_layers: int = 6
    n_seq: int = 1024  # training context length; the model runs on any length
    num_heads: int = 8  # BK heads: each its own tridiagonal over the sequence
    ffn_dim: int | None = None  # None: 4 * d_model
    dropout: float = 0.1
    causal: bool = True  # False: two-sided bk_core (an encoder, not a language model)
    spectral_shift_imag: float = 0.5  # initial Im z of every head
    spectral_shift_imag_min: float = 0.05  # Im z > this, so |G_ii| < 1 / this
    tie_embeddings: bool = False
    use_triton_bk: bool = True  # backend "auto" (Triton on CUDA where available) vs "torch"
    chunk_size: int = 64  # chunk length of the PyTorch scans (memory, moving averages)
    init_std: float = 0.02

    def __post_init__(self) -> None:
        self.validate()

    @property
    def ffn_width(self) -> int:
        return self.ffn_dim or 4 * self.d_model

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value is invalid."""
        _check_common(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Phase1Config:
        return _from_dict(cls, values)


@dataclass
class Phase2Config:
    """Phase 2: Phase 1 plus the switches in the module docstring (every field of the seed's
    Phase-2 factory, plus the switches and the constants the seed left implicit)."""

    # Phase-1 compatibility: the config this one was derived from (from_phase1), if any
    phase1_config: Phase1Config | None = None
    # BK-Core backend
    use_triton_bk: bool = True
    triton_block_size: int = 256  # for a Triton causal kernel (unused by the PyTorch scans)
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
    n_seq: int = 1024  # training context length; the model runs on any length
    ffn_dim: int | None = None  # None: 4 * d_model
    dropout: float = 0.1
    causal: bool = True
    spectral_shift_imag: float = 0.5
    spectral_shift_imag_min: float = 0.05
    tie_embeddings: bool = False
    chunk_size: int = 64
    init_std: float = 0.02
    # performance targets (recorded for benchmarks; the model does not read them)
    target_vram_gb: float = 8.0
    target_speedup_triton: float = 3.0

    def __post_init__(self) -> None:
        if isinstance(self.phase1_config, Mapping):
            self.phase1_config = Phase1Config.from_dict(self.phase1_config)
        self.validate()

    @property
    def ffn_width(self) -> int:
        return self.ffn_dim or 4 * self.d_model

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value is invalid or two switches
        contradict each other."""
        _check_common(self)
        _check_positive_int(self, "head_dim", "resonance_modes", "triton_block_size")
        _check_bool(self, "non_hermitian", "adaptive_decay", "hebbian_enabled", "snr_enabled",
                    "resonance_enabled", "use_zeta_init", "zeta_embedding_trainable")
        if self.triton_block_size & (self.triton_block_size - 1):
            raise ValueError(f"triton_block_size must be a power of two, got {self.triton_block_size}")
        if self.phase1_config is not None and not isinstance(self.phase1_config, Phase1Config):
            raise ValueError(f"phase1_config must be a Phase1Config, a dict of its fields or None, "
                             f"got {type(self.phase1_config).__name__}")
        decay = self.base_decay
        if isinstance(decay, bool) or not isinstance(decay, int | float) or decay < 0:
            raise ValueError(f"base_decay must be a non-negative number, got {self.base_decay!r}")
        _check_positive(self, "hebbian_eta", "hebbian_dt", "snr_threshold", "resonance_temperature",
                        "target_vram_gb", "target_speedup_triton")
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

    def to_dict(self) -> dict[str, Any]:
        """Plain values (``phase1_config`` as a dict or None)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Phase2Config:
        return _from_dict(cls, values)

    @classmethod
    def from_phase1(cls, phase1_config: Phase1Config, **overrides: Any) -> Phase2Config:
        """A Phase-2 config with the Phase-1 architecture (so every Phase-1 tensor has a
        same-shaped Phase-2 counterpart), ``phase1_config`` recorded, memory heads of width
        ``d_model / num_heads`` where that divides, then ``overrides``."""
        if not isinstance(phase1_config, Phase1Config):
            raise ValueError(f"from_phase1 needs a Phase1Config, got {type(phase1_config).__name__}")
        shared = ({f.name for f in dataclasses.fields(Phase1Config)}
                  & {f.name for f in dataclasses.fields(cls)})
        values: dict[str, Any] = {name: getattr(phase1_config, name) for name in shared}
        values["phase1_config"] = phase1_config
        if phase1_config.d_model % phase1_config.num_heads == 0:
            head_dim = phase1_config.d_model // phase1_config.num_heads
            values["head_dim"] = head_dim
            values["resonance_modes"] = min(cls.resonance_modes, head_dim)
        values.update(overrides)
        return _from_dict(cls, values)


PHASE1_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(d_model=256, n_layers=4, n_seq=512),
    "base": dict(d_model=512, n_layers=6, n_seq=1024),
    "large": dict(d_model=1024, n_layers=12, n_seq=2048),
}

PHASE2_PRESETS: dict[str, dict[str, Any]] = {  # the seed's sizes and VRAM targets
    "small": dict(d_model=256, n_layers=4, n_seq=512, head_dim=32, target_vram_gb=4.0),
    "base": dict(d_model=512, n_layers=6, n_seq=1024, head_dim=64, target_vram_gb=8.0),
    "large": dict(d_model=1024, n_layers=12, n_seq=2048, head_dim=128, target_vram_gb=16.0),
}


def get_phase2_preset(name: str) -> Phase2Config:
    """The validated :class:`Phase2Config` of preset ``name``."""
    if name not in PHASE2_PRESETS:
        raise ValueError(f"unknown Phase-2 preset {name!r}; presets: {sorted(PHASE2_PRESETS)}")
    return Phase2Config(**PHASE2_PRESETS[name])


def get_phase1_preset(name: str) -> Phase1Config:
    """The validated :class:`Phase1Config` of preset ``name``."""
    if name not in PHASE1_PRESETS:
        raise ValueError(f"unknown Phase-1 preset {name!r}; presets: {sorted(PHASE1_PRESETS)}")
    return Phase1Config(**PHASE1_PRESETS[name])
