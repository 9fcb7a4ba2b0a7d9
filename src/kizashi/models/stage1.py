"""Stage-1: masked reconstruction of multi-timeframe bars with ONE shared encoder.

Per timeframe ``tf`` (``B`` windows, ``T`` bars (``T_tf`` with per-timeframe ``seq_lens``),
``C = 6`` input channels: OHLCV and a derived one such as log range; ``D = d_model``)::

    x_tf [B, T, C], masked_tf [B, T] bool (True = hidden from the model)
      -> x * ~masked -> stem_tf: depthwise Conv1d(C, k) + pointwise Conv1d(C -> D)
         + timeframe embedding e_tf; masked steps replaced by the shared mask token  [B, T, D]
      -> shared encoder (the SAME module for every timeframe)                        [B, T, D]
           "transformer": learned positions + nn.TransformerEncoder
           "lm":          kizashi.models.lm_adapter.LMEncoderAdapter (patchify -> pretrained
                          LM blocks -> unpatchify)
         fusion "joint" (default): the timeframes' token sequences are concatenated into
         one [B, N_tf * T, D] sequence, so a fine bar attends to the coarse bars of the same
         time (an unmasked coarse bar tells the high, low and close of a masked fine span:
         information linear interpolation does not have); "separate": each timeframe's
         [B, T_tf, D] alone (no cross-timeframe input)
      -> shared bottleneck: strided Conv1d (T -> T / s) + transposed Conv1d back (T / s -> T)
         with a residual                                                              [B, T, D]
      -> decoder_tf: LayerNorm + Linear(D -> 4)  -> reconstructed OHLC                [B, T, 4]

Window lengths. ``seq_lens`` gives a timeframe its own ``T_tf`` (the dataset's "async"
windows, each timeframe sampled on its own). Joint fusion concatenates windows that end at
the same instant (its time-distance bias measures time from the common end), so it needs one
length for every timeframe and aligned windows: unequal lengths are a configuration error
and need ``fusion="separate"``, and :class:`~kizashi.training.stage1_module.Stage1Module`
refuses joint fusion on async batches (no ``groups``). The learned positions are sized by
the longest window and counted back from a window's last bar (a ``T_tf``-bar window takes
the last ``T_tf`` rows), so the parameter count depends on ``max(T_tf)`` only.

Parameter count with N timeframes = encoder + bottleneck + mask token + N x (stem + decoder)
(``parameter_breakdown``; test). The timeframes share everything except their stems,
embeddings and decoders: one encoder per timeframe cannot happen here, because the
module owns exactly one ``encoder``.

Losses (:func:`masked_reconstruction_loss`, :func:`cross_timeframe_consistency`):

* reconstruction: Huber (or MSE) between the reconstruction and the target OHLC on the
  masked positions only, averaged over those positions of every timeframe;
* consistency: the fine timeframe's reconstruction aggregated to the coarse one (groups of
  ``k = coarse / fine`` consecutive bars: open = first, high = max, low = min, close =
  last) against the coarse reconstruction of the same span. With aligned windows (both end
  at the same instant, on a coarse bar close), the last ``T_fine / k`` coarse bars cover the
  fine window. Both sides are compared in price units: each timeframe's normalization
  ``(value - shift) / scale`` is undone first (first/max/min/last commute with a positive
  affine map, so the comparison does not depend on the timeframes' statistics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kizashi.data.timeframes import timeframe_minutes
from kizashi.models.pretrained import PretrainedMixin, config_to_dict
from kizashi.models.registry import model_config, register_model

N_INPUT_CHANNELS = 6  # open, high, low, close, volume, derived (e.g. log range)
N_OUTPUT_CHANNELS = 4  # open, high, low, close


@dataclass
class Stage1Config:
    """Configuration of :class:`Stage1Model` (validated on construction)."""

    timeframes: tuple[str, ...] = ("m30", "h1", "h4", "d1")
    seq_len: int = 64  # T, bars per window and timeframe
    seq_lens: dict[str, int] | None = None  # per-timeframe T_tf (missing: seq_len); unequal -> fusion "separate"
    in_channels: int = N_INPUT_CHANNELS
    out_channels: int = N_OUTPUT_CHANNELS
    d_model: int = 64
    stem_kernel: int = 5
    dropout: float = 0.1
    encoder: Literal["transformer", "lm", "bk"] = "transformer"
    fusion: Literal["joint", "separate"] = "joint"
    time_bias: float = 0.5  # transformer: attention logit bias -time_bias * |dt| in bars (0 = off)
    # plain Transformer encoder
    n_layers: int = 2
    n_heads: int = 4
    ff_mult: int = 4
    # pretrained language-model encoder
    lm_name_or_path: str | None = None
    lm_layers: int | None = None  # first K blocks; None = all
    lm_pretrained: bool = True  # False: the LM's architecture with random initialization (a control)
    patch_len: int = 16
    # bottleneck
    bottleneck_stride: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.timeframes, list | tuple):
            self.timeframes = tuple(str(t) for t in self.timeframes)
        if self.seq_lens is not None and isinstance(self.seq_lens, Mapping):
            self.seq_lens = {str(tf): value for tf, value in self.seq_lens.items()}
        self.validate()

    @property
    def lengths(self) -> dict[str, int]:
        """``{tf: T_tf}`` for every timeframe (``seq_lens`` where given, else ``seq_len``)."""
        given = self.seq_lens or {}
        return {tf: given.get(tf, self.seq_len) for tf in self.timeframes}

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value is invalid."""
        for name in ("seq_len", "in_channels", "out_channels", "d_model", "stem_kernel", "n_layers",
                     "n_heads", "ff_mult", "patch_len", "bottleneck_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.timeframes or len(set(self.timeframes)) != len(self.timeframes):
            raise ValueError(f"timeframes must be distinct and non-empty, got {self.timeframes!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.fusion not in ("joint", "separate"):
            raise ValueError(f"fusion must be 'joint' or 'separate', got {self.fusion!r}")
        if self.encoder not in ("transformer", "lm", "bk"):
            raise ValueError(f"encoder must be 'transformer', 'lm' or 'bk', got {self.encoder!r}")
        if self.encoder == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.encoder == "lm" and not self.lm_name_or_path:
            raise ValueError("encoder 'lm' needs lm_name_or_path (a local directory, a hub id or "
                             "'bundled:all-minilm-l6-v2')")
        if self.seq_lens is not None:
            if not isinstance(self.seq_lens, Mapping):
                raise ValueError(f"seq_lens must map timeframes to lengths, got {self.seq_lens!r}")
            unknown = sorted(set(self.seq_lens) - set(self.timeframes))
            if unknown:
                raise ValueError(f"seq_lens: timeframes {unknown} are not among timeframes={list(self.timeframes)}")
            for tf, value in self.seq_lens.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"seq_lens[{tf!r}] must be a positive int, got {value!r}")
        lengths = self.lengths
        for tf, length in lengths.items():
            name = f"seq_lens[{tf!r}]" if tf in (self.seq_lens or {}) else "seq_len"
            if self.encoder == "lm" and length % self.patch_len:
                raise ValueError(f"{name}={length} must be a multiple of patch_len={self.patch_len}")
            if length % self.bottleneck_stride:
                raise ValueError(f"{name}={length} must be a multiple of bottleneck_stride={self.bottleneck_stride}")
        if self.fusion == "joint" and len(set(lengths.values())) > 1:
            raise ValueError(f"fusion 'joint' needs one window length for every timeframe (windows ending at the "
                             f"same instant), got seq_lens {lengths}; per-timeframe lengths need fusion='separate'")
        if self.stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be odd (same-length convolution), got {self.stem_kernel}")


PRESETS: dict[str, dict[str, object]] = {
    "small": dict(d_model=64, n_layers=2, n_heads=4),
    "base": dict(d_model=128, n_layers=4, n_heads=8),
}


class TimeframeStem(nn.Module):
    """``x [B, T, C]`` -> ``[B, T, D]``: depthwise then pointwise 1-D convolution, plus the
    timeframe's embedding."""

    def __init__(self, in_channels: int, d_model: int, kernel: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(in_channels, in_channels, kernel, padding=kernel // 2, groups=in_channels)
        self.pointwise = nn.Conv1d(in_channels, d_model, 1)
        self.embedding = nn.Parameter(torch.zeros(d_model))
        nn.init.normal_(self.embedding, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pointwise(F.gelu(self.depthwise(x.transpose(1, 2))))
        return h.transpose(1, 2) + self.embedding


class BiasedAttentionBlock(nn.Module):
    """Pre-norm Transformer block, ``[B, L, D]`` -> ``[B, L, D]``, whose self-attention takes
    an additive logit bias ``[L, L]`` (``F.scaled_dot_product_attention``; the same
    computation in training and evaluation, unlike ``nn.TransformerEncoderLayer``'s
    inference fast path, which gave different outputs with a float mask under no_grad)."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, bias: Tensor | None = None) -> Tensor:
        batch, length, width = h.shape
        q, k, v = self.qkv(self.norm1(h)).reshape(batch, length, 3, self.n_heads, width // self.n_heads).permute(2, 0, 3, 1, 4)
        mask = None if bias is None else bias.to(q.dtype)  # under autocast q may be bf16
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        h = h + self.drop(self.out(attended.transpose(1, 2).reshape(batch, length, width)))
        return h + self.drop(self.ff(self.norm2(h)))


class TransformerSequenceEncoder(nn.Module):
    """``[B, sum_k T_k, D]`` -> same: learned positions + pre-norm Transformer encoder."""

    def __init__(self, config: Stage1Config) -> None:
        super().__init__()
        d = config.d_model
        # position within a timeframe's window counted back from its last bar, the same for every
        # timeframe (the stems add the timeframe's own embedding), so the encoder's size does not
        # depend on N_tf; sized by the longest window, a T_k-bar window takes the last T_k rows
        self.seq_len = max(config.lengths.values())
        self.positions = nn.Parameter(torch.zeros(self.seq_len, d))
        nn.init.normal_(self.positions, std=0.02)
        self.layers = nn.ModuleList(
            BiasedAttentionBlock(d, config.n_heads, config.ff_mult, config.dropout) for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(d)

    def forward(self, h: Tensor, bias: Tensor | None = None, lengths: list[int] | None = None) -> Tensor:
        """``h [B, L, D]``: k >= 1 timeframe windows of ``lengths`` ``[T_1, ..., T_k]`` tokens
        concatenated (``L = sum T_i``, each ``T_i <=`` the longest configured window; None:
        windows of the longest length); ``bias [L, L]`` an additive attention-logit bias (see
        :func:`time_distance_bias`)."""
        if lengths is None:
            blocks = h.shape[1] // self.seq_len
            if blocks * self.seq_len != h.shape[1]:
                raise ValueError(f"sequence of {h.shape[1]} tokens is not a whole number of {self.seq_len}-bar windows")
            lengths = [self.seq_len] * blocks
        if sum(lengths) != h.shape[1] or not all(1 <= n <= self.seq_len for n in lengths):
            raise ValueError(f"sequence of {h.shape[1]} tokens does not hold windows of {lengths} bars "
                             f"(each at most {self.seq_len})")
        h = h + torch.cat([self.positions[self.seq_len - n:] for n in lengths])
        for layer in self.layers:
            h = layer(h, bias)
        return self.norm(h)


def time_distance_bias(durations: list[float], seq_len: int, slope: float) -> Tensor:
    """``[k*T, k*T]`` attention bias ``-slope * |t_i - t_j| / max(d_i, d_j)`` for k aligned
    windows of ``seq_len`` bars with bar durations ``durations`` (any unit): ``t`` is a bar's
    centre relative to the common window end, so a token attends most to the bars of any
    timeframe that are near it in time (ALiBi-like, in units of the coarser bar)."""
    centres, widths = [], []
    for duration in durations:
        steps = torch.arange(seq_len, dtype=torch.float64)
        centres.append(-(seq_len - 1 - steps) * duration - duration / 2)
        widths.append(torch.full((seq_len,), float(duration), dtype=torch.float64))
    t, d = torch.cat(centres), torch.cat(widths)
    scale = torch.maximum(d.unsqueeze(0), d.unsqueeze(1))
    return (-slope * (t.unsqueeze(0) - t.unsqueeze(1)).abs() / scale).float()


class Bottleneck(nn.Module):
    """``[B, T, D]`` -> ``[B, T, D]`` through a strided compression to ``T / s`` steps."""

    def __init__(self, d_model: int, stride: int) -> None:
        super().__init__()
        self.down = nn.Conv1d(d_model, d_model, stride, stride=stride)
        self.up = nn.ConvTranspose1d(d_model, d_model, stride, stride=stride)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, h: Tensor) -> Tensor:
        compressed = F.gelu(self.down(h.transpose(1, 2)))  # [B, D, T / s]
        return self.norm(h + self.up(compressed).transpose(1, 2))


@register_model("stage1", config_cls=Stage1Config, presets=PRESETS)
class Stage1Model(PretrainedMixin, nn.Module):
    """Masked multi-timeframe reconstruction (module docstring).

    ``forward(inputs, masked)``: ``inputs`` maps every configured timeframe to ``[B, T_tf, C]``,
    ``masked`` (optional) to ``[B, T_tf]`` bool. Returns ``{tf: [B, T_tf, 4]}`` reconstructed
    OHLC. ``encode(inputs, masked)`` returns the encoder's output ``{tf: [B, T_tf, D]}``.
    """

    def __init__(self, config: Stage1Config) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d = config.d_model
        self.stems = nn.ModuleDict({tf: TimeframeStem(config.in_channels, d, config.stem_kernel)
                                    for tf in config.timeframes})
        self.mask_token = nn.Parameter(torch.zeros(d))
        nn.init.normal_(self.mask_token, std=0.02)
        if config.encoder == "lm":
            from kizashi.models.lm_adapter import LMEncoderAdapter

            self.encoder: nn.Module = LMEncoderAdapter(
                d, config.lm_name_or_path, patch_len=config.patch_len, lm_layers=config.lm_layers,
                pretrained=config.lm_pretrained,
            )
        elif config.encoder == "bk":
            from kizashi.models.bk.encoder import BKSequenceEncoder

            self.encoder = BKSequenceEncoder(d, config.n_layers, config.n_heads, config.dropout)
        else:
            self.encoder = TransformerSequenceEncoder(config)
        self.bottleneck = Bottleneck(d, config.bottleneck_stride)
        self.lengths = config.lengths
        if config.encoder == "transformer" and config.time_bias > 0:
            # joint: one common length (validated); single: the longest window, a T_tf-bar window
            # uses the top-left [T_tf, T_tf] block (the bias depends on |i - j| only)
            from_minutes = [float(timeframe_minutes(tf)) for tf in config.timeframes]
            joint = time_distance_bias(from_minutes, self.lengths[config.timeframes[0]], config.time_bias)
            single = time_distance_bias([1.0], max(self.lengths.values()), config.time_bias)
            self.register_buffer("joint_bias", joint, persistent=False)
            self.register_buffer("single_bias", single, persistent=False)
        else:
            self.joint_bias = self.single_bias = None
        self.decoders = nn.ModuleDict({
            tf: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, config.out_channels)) for tf in config.timeframes
        })

    def _embed(self, tf: str, x: Tensor, masked: Tensor | None) -> Tensor:
        cfg = self.config
        if tf not in self.stems:
            raise ValueError(f"unknown timeframe {tf!r}; the model has {list(cfg.timeframes)}")
        length = self.lengths[tf]
        if x.dim() != 3 or x.shape[1] != length or x.shape[2] != cfg.in_channels:
            raise ValueError(f"{tf}: x must be [B, seq_len={length}, {cfg.in_channels}], got {tuple(x.shape)}")
        if masked is not None:
            if masked.shape != x.shape[:2]:
                raise ValueError(f"{tf}: masked must be {tuple(x.shape[:2])}, got {tuple(masked.shape)}")
            x = x.masked_fill(masked.unsqueeze(-1), 0.0)
        h = self.stems[tf](x)
        if masked is not None:
            h = torch.where(masked.unsqueeze(-1), self.mask_token.to(h.dtype), h)
        return h

    def _run_encoder(self, h: Tensor, lengths: list[int], bias: Tensor | None) -> Tensor:
        """The shared encoder on ``h [B, sum(lengths), D]`` (windows of ``lengths`` bars)."""
        if isinstance(self.encoder, TransformerSequenceEncoder):
            return self.encoder(h, None if bias is None else bias.to(h.dtype), lengths)
        return self.encoder(h)  # LM adapter (patchifies; lengths are multiples of patch_len) or BK stack

    def encode(self, inputs: Mapping[str, Tensor], masked: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The shared encoder's (and bottleneck's) output per timeframe: ``{tf: [B, T_tf, D]}``
        (what a fine-tuning head reads)."""
        timeframes = self.config.timeframes
        missing = [tf for tf in timeframes if tf not in inputs]
        if missing:
            raise ValueError(f"inputs lack timeframes {missing}; got {sorted(inputs)}")
        masked = masked or {}
        embedded = [self._embed(tf, inputs[tf], masked.get(tf)) for tf in timeframes]
        lengths = [self.lengths[tf] for tf in timeframes]
        if self.config.fusion == "joint":
            encoded = self._run_encoder(torch.cat(embedded, dim=1), lengths, self.joint_bias).split(lengths, dim=1)
        else:
            encoded = [self._run_encoder(h, [n], None if self.single_bias is None else self.single_bias[:n, :n])
                       for h, n in zip(embedded, lengths)]
        return {tf: self.bottleneck(h) for tf, h in zip(timeframes, encoded)}

    def forward(self, inputs: Mapping[str, Tensor], masked: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        encoded = self.encode(inputs, masked)
        return {tf: self.decoders[tf](h) for tf, h in encoded.items()}

    @classmethod
    def build_pretrained(cls, kind: str, config: Mapping[str, Any], extra: Mapping[str, Any]) -> Stage1Model:
        """The model of a pretrained folder's config, freshly initialized. With the ``lm``
        encoder the LM is built from its config only (``lm_pretrained=False``): its weights
        come from the folder; the returned model's ``config`` is the saved one."""
        saved = model_config(kind, config=dict(config))
        if saved.encoder != "lm" or not saved.lm_pretrained:
            return cls(saved)
        model = cls(model_config(kind, config=dict(config), lm_pretrained=False))
        model.config = saved
        return model

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameter counts: ``encoder`` (incl. bottleneck and mask token) and, per
        timeframe, ``stem:<tf>`` and ``decoder:<tf>``."""
        count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        out = {"encoder": count(self.encoder) + count(self.bottleneck) + self.mask_token.numel()}
        for tf in self.config.timeframes:
            out[f"stem:{tf}"] = count(self.stems[tf])
            out[f"decoder:{tf}"] = count(self.decoders[tf])
        return out


class Stage1Forecaster(PretrainedMixin, nn.Module):
    """A Stage-1 model (pretrained or not) with a small head forecasting a window's label
    (the dataset's ``forward_return``, a return over a horizon after the window's anchor).
    ``forward(inputs)`` (``{tf: [B, T_tf, C]}``) -> ``[B]``.

    The head reads ``[B, D]``, the coarsest timeframe's last encoded bar, with joint fusion
    (that bar attended to every timeframe), and ``[B, N_tf * D]``, every timeframe's last
    encoded bar concatenated finest first, with separate fusion (the timeframes never meet
    in the encoder, so the coarsest alone would leave the other stems without a gradient).

    ``freeze_encoder=True`` trains the head only (a linear probe of the representation).

    ``save_pretrained`` / ``from_pretrained`` (:mod:`kizashi.models.pretrained`): the folder
    records ``"stage1_forecaster"``, the backbone's :class:`Stage1Config` and
    ``freeze_encoder``."""

    pretrained_kind = "stage1_forecaster"

    def __init__(self, backbone: Stage1Model, freeze_encoder: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.freeze_encoder = freeze_encoder
        order = sorted(backbone.config.timeframes, key=timeframe_minutes)
        self.coarsest = order[-1]
        self.readout = tuple(order) if backbone.config.fusion == "separate" else (self.coarsest,)
        d = backbone.config.d_model
        width = d * len(self.readout)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d), nn.GELU(), nn.Linear(d, 1))
        # not used by the forecast: the reconstruction decoders and the mask token
        for p in [*backbone.decoders.parameters(), backbone.mask_token]:
            p.requires_grad_(False)
        if freeze_encoder:
            for p in backbone.parameters():
                p.requires_grad_(False)

    def pretrained_config(self) -> dict[str, Any]:
        return config_to_dict(self.backbone.config)

    def pretrained_extra(self) -> dict[str, Any]:
        return {"backbone": "stage1", "freeze_encoder": self.freeze_encoder}

    @classmethod
    def build_pretrained(cls, kind: str, config: Mapping[str, Any], extra: Mapping[str, Any]) -> Stage1Forecaster:
        backbone = Stage1Model.build_pretrained(str(extra.get("backbone", "stage1")), config, {})
        return cls(backbone, freeze_encoder=bool(extra.get("freeze_encoder", False)))

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        encoded = self.backbone.encode(inputs)
        features = torch.cat([encoded[tf][:, -1] for tf in self.readout], dim=-1)  # [B, len(readout) * D]
        return self.head(features).squeeze(-1)


# --------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------


def masked_reconstruction_loss(
    reconstruction: Mapping[str, Tensor],
    target: Mapping[str, Tensor],
    masked: Mapping[str, Tensor],
    kind: Literal["huber", "mse"] = "huber",
    delta: float = 1.0,
) -> Tensor:
    """Mean loss over the masked positions of every timeframe (``[B, T, 4]`` each; ``masked``
    ``[B, T]``). Unmasked positions do not count; 0 (with a gradient path) when nothing is
    masked."""
    errors, count = [], 0
    for tf, recon in reconstruction.items():
        where = masked[tf]
        if kind == "huber":
            loss = F.huber_loss(recon, target[tf], reduction="none", delta=delta)
        elif kind == "mse":
            loss = (recon - target[tf]).square()
        else:
            raise ValueError(f"kind must be 'huber' or 'mse', got {kind!r}")
        errors.append((loss * where.unsqueeze(-1).to(loss.dtype)).sum())
        count += int(where.sum()) * recon.shape[-1]
    total = torch.stack(errors).sum()
    return total / count if count else total * 0.0


def aggregate_ohlc(bars: Tensor, k: int) -> Tensor:
    """``[B, T, 4]`` OHLC -> ``[B, T / k, 4]``: consecutive groups of ``k`` bars as one bar
    (open = first, high = max, low = min, close = last). ``T`` must be a multiple of ``k``."""
    batch, steps, channels = bars.shape
    if channels != 4 or steps % k:
        raise ValueError(f"aggregate_ohlc: need [B, T, 4] with T % {k} == 0, got {tuple(bars.shape)}")
    groups = bars.reshape(batch, steps // k, k, 4)
    return torch.stack(
        [groups[..., 0, 0], groups[..., 1].amax(dim=-1), groups[..., 2].amin(dim=-1), groups[..., -1, 3]], dim=-1
    )


def cross_timeframe_consistency(
    fine: Tensor,
    coarse: Tensor,
    ratio: int,
    *,
    fine_affine: tuple[Tensor | float, Tensor | float] = (0.0, 1.0),
    coarse_affine: tuple[Tensor | float, Tensor | float] = (0.0, 1.0),
    kind: Literal["huber", "mse"] = "huber",
    delta: float = 1.0,
) -> Tensor:
    """Consistency between a fine reconstruction ``[B, T_f, 4]`` aggregated by ``ratio`` and
    the coarse reconstruction ``[B, T_c, 4]`` of the same span (the last ``T_f / ratio``
    coarse bars: aligned windows end at the same instant). ``*_affine = (shift, scale)``
    undoes each timeframe's normalization (``value = normalized * scale + shift``; scalars or
    ``[B, 1, 1]``-broadcastable tensors, ``scale > 0``) before the comparison."""
    span = fine.shape[1] // ratio
    if span < 1 or span > coarse.shape[1]:
        raise ValueError(f"fine window of {fine.shape[1]} bars / ratio {ratio} does not fit {coarse.shape[1]} coarse bars")
    fine_prices = fine * fine_affine[1] + fine_affine[0]
    coarse_prices = coarse[:, -span:] * coarse_affine[1] + coarse_affine[0]
    aggregated = aggregate_ohlc(fine_prices[:, -span * ratio :], ratio)
    if kind == "huber":
        return F.huber_loss(aggregated, coarse_prices, delta=delta)
    return (aggregated - coarse_prices).square().mean()


def grouped_consistency(
    fine: Tensor,
    coarse: Tensor,
    groups: Tensor,
    complete: Tensor,
    *,
    fine_scale: Tensor | float = 1.0,
    coarse_scale: Tensor | float = 1.0,
    kind: Literal["huber", "mse"] = "huber",
    delta: float = 1.0,
) -> Tensor:
    """The cross-timeframe consistency for windows whose bars are matched by time.

    ``fine [B, T_f, 4]``, ``coarse [B, T_c, 4]`` reconstructions (log price / scale);
    ``groups [B, T_f]`` int64: the coarse bar (index in the coarse window) containing each
    fine bar, -1 for none; ``complete [B, T_c]`` bool: the coarse bars to compare (all their
    fine bars inside the fine window, not partial). The fine bars of each group are
    aggregated (open = first, high = max, low = min, close = last) after undoing the scales,
    and compared with the coarse bar. 0 (with a gradient path) when no bar is complete."""
    batch, steps, _ = fine.shape
    slots = coarse.shape[1]
    f, c = fine * fine_scale, coarse * coarse_scale
    flat = torch.where(groups >= 0, groups, slots) + torch.arange(batch, device=fine.device).unsqueeze(1) * (slots + 1)
    flat = flat.reshape(-1)
    size = batch * (slots + 1)

    def reduce(values: Tensor, how: str, fill: float) -> Tensor:
        base = torch.full((size,), fill, dtype=values.dtype, device=values.device)
        return base.scatter_reduce(0, flat, values.reshape(-1), how, include_self=True).reshape(batch, slots + 1)[:, :slots]

    positions = torch.arange(steps, device=fine.device, dtype=fine.dtype).expand(batch, steps)
    first = reduce(positions, "amin", float(steps)).clamp(max=steps - 1).long()
    last = reduce(positions, "amax", -1.0).clamp(min=0).long()
    aggregated = torch.stack([
        f[..., 0].gather(1, first),
        reduce(f[..., 1], "amax", -math.inf),
        reduce(f[..., 2], "amin", math.inf),
        f[..., 3].gather(1, last),
    ], dim=-1)
    use = complete.unsqueeze(-1).expand_as(c)
    if not bool(use.any()):
        return (f.sum() + c.sum()) * 0.0
    a, b = aggregated[use], c[use]
    return F.huber_loss(a, b, delta=delta) if kind == "huber" else (a - b).square().mean()
