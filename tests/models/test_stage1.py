"""Stage-1 model: one shared encoder (parameter count), the gradient-flow audit for every
encoder choice (plain Transformer, tiny T5 and tiny BERT saved to a temp dir and loaded
through the same path as a pretrained model, the bundled all-MiniLM-L6-v2), the losses
(masked positions only; the cross-timeframe consistency exact on a hand-built example) and
the language-model loading errors."""

from __future__ import annotations

import pytest
import torch

from kizashi.errors import ConfigError
from kizashi.models import create_model
from kizashi.models.lm_adapter import BUNDLED_MINILM, LMEncoderAdapter, resolve_lm_path
from kizashi.models.stage1 import (
    Stage1Config,
    Stage1Model,
    aggregate_ohlc,
    cross_timeframe_consistency,
    grouped_consistency,
    masked_reconstruction_loss,
)
from kizashi.training.callbacks import gradient_problems
from conftest import save_tiny_lm  # tests/ is on sys.path (rootdir conftest)

TIMEFRAMES = ("m30", "h1", "h4")
SEQ = 16
TINY = dict(timeframes=TIMEFRAMES, seq_len=SEQ, d_model=16, n_layers=1, n_heads=2, patch_len=4, dropout=0.0)


@pytest.fixture(scope="module")
def tiny_lms(tmp_path_factory):
    """Tiny randomly initialized T5 and BERT encoders, saved like downloaded models."""
    root = tmp_path_factory.mktemp("tiny_lms")
    return {family: save_tiny_lm(root / family, family, width=24, heads=4, vocab=64) for family in ("t5", "bert")}


def make_inputs(batch: int = 3, seed: int = 0, ratio_masked: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    inputs = {tf: torch.randn(batch, SEQ, 6, generator=g) for tf in TIMEFRAMES}
    masked = {tf: torch.rand(batch, SEQ, generator=g) < ratio_masked for tf in TIMEFRAMES}
    return inputs, masked


def audit(model: Stage1Model) -> dict[str, list[str]]:
    inputs, masked = make_inputs()
    out = model(inputs, masked)
    targets = {tf: inputs[tf][..., :4] for tf in TIMEFRAMES}
    loss = masked_reconstruction_loss(out, targets, masked)
    loss = loss + cross_timeframe_consistency(out["m30"], out["h1"], 2)
    loss.backward()
    return gradient_problems(model.named_parameters())


def test_gradient_flow_transformer_encoder():
    torch.manual_seed(0)
    assert audit(Stage1Model(Stage1Config(**TINY))) == {}


@pytest.mark.parametrize("family", ["t5", "bert"])
@pytest.mark.parametrize("lm_layers", [None, 1])
def test_gradient_flow_pretrained_lm_encoder(tiny_lms, family, lm_layers):
    torch.manual_seed(0)
    model = Stage1Model(Stage1Config(**TINY, encoder="lm", lm_name_or_path=tiny_lms[family], lm_layers=lm_layers))
    assert model.encoder.family == family
    n_blocks = len(model.encoder.lm.encoder.block if family == "t5" else model.encoder.lm.encoder.layer)
    assert n_blocks == (lm_layers or 2)
    assert audit(model) == {}


@pytest.mark.parametrize("fusion", ["joint", "separate"])
def test_gradient_flow_bk_encoder(fusion):
    """The BK-Core stack (two-sided resolvent) as the shared encoder."""
    torch.manual_seed(0)
    model = Stage1Model(Stage1Config(**{**TINY, "encoder": "bk", "fusion": fusion}))
    assert type(model.encoder).__name__ == "BKSequenceEncoder"
    assert audit(model) == {}


def test_bk_encoder_reads_both_sides():
    """Unlike the causal BK language models, the encoder's output at a bar depends on later bars."""
    from kizashi.models.bk.encoder import BKSequenceEncoder

    torch.manual_seed(0)
    encoder = BKSequenceEncoder(16, 2, 2, 0.0).eval()
    with torch.no_grad():  # trained-size weights (the init writes ~1e-2 into the residual stream)
        for block in encoder.blocks:
            for linear in (block.bk.potential, block.bk.coupling, block.bk.gate, block.bk.mix):
                linear.weight.normal_(0.0, 0.5)
    h = torch.randn(2, 12, 16)
    later = h.clone()
    later[:, 8:] = torch.randn(2, 4, 16)  # (a constant shift would vanish in the LayerNorm)
    with torch.no_grad():
        change = (encoder(h)[:, :8] - encoder(later)[:, :8]).abs().max()
    assert change > 1e-2, change


def test_gradient_flow_bundled_minilm():
    torch.manual_seed(0)
    model = Stage1Model(Stage1Config(**TINY, encoder="lm", lm_name_or_path=BUNDLED_MINILM, lm_layers=1))
    assert model.encoder.lm_width == 384 and model.encoder.family == "bert"
    assert audit(model) == {}


def test_pretrained_weights_are_loaded(tiny_lms):
    from transformers import BertModel

    reference = BertModel.from_pretrained(tiny_lms["bert"], add_pooling_layer=False)
    adapter = LMEncoderAdapter(16, tiny_lms["bert"], patch_len=4)
    for name, tensor in reference.state_dict().items():
        if "word_embeddings" in name:
            continue  # replaced by the frozen placeholder
        assert torch.equal(adapter.lm.state_dict()[name], tensor), name
    placeholders = [p for n, p in adapter.lm.named_parameters() if "word_embeddings" in n]
    assert [tuple(p.shape) for p in placeholders] == [(1, 24)] and not placeholders[0].requires_grad
    assert all(p.requires_grad for p in adapter.lm_parameters())


def test_one_shared_encoder_whatever_the_number_of_timeframes(tiny_lms):
    for kwargs in ({}, {"encoder": "lm", "lm_name_or_path": tiny_lms["t5"]}, {"encoder": "bk"}):
        sizes = {}
        for timeframes in (("m30",), ("m30", "h1"), ("m30", "h1", "h4", "d1")):
            model = Stage1Model(Stage1Config(**{**TINY, "timeframes": timeframes, **kwargs}))
            breakdown = model.parameter_breakdown()
            total = sum(p.numel() for p in model.parameters())
            assert total == sum(breakdown.values())
            per_tf = breakdown[f"stem:{timeframes[0]}"] + breakdown[f"decoder:{timeframes[0]}"]
            assert total == breakdown["encoder"] + len(timeframes) * per_tf
            sizes[len(timeframes)] = (breakdown["encoder"], per_tf)
        assert len({encoder for encoder, _ in sizes.values()}) == 1  # the encoder does not grow


def test_masked_reconstruction_counts_masked_positions_only():
    target = {"m30": torch.zeros(1, 4, 4)}
    recon = {"m30": torch.tensor([[[1.0] * 4, [2.0] * 4, [3.0] * 4, [100.0] * 4]])}
    masked = {"m30": torch.tensor([[True, True, False, False]])}
    assert masked_reconstruction_loss(recon, target, masked, kind="mse").item() == pytest.approx((1 + 4) / 2)
    nothing = {"m30": torch.zeros(1, 4, dtype=torch.bool)}
    assert masked_reconstruction_loss(recon, target, nothing).item() == 0.0


def test_consistency_loss_exact_on_a_hand_built_example():
    # fine: 4 bars -> 2 coarse bars of 2 (open, high, low, close)
    fine = torch.tensor([[[10.0, 12.0, 9.0, 11.0], [11.0, 15.0, 10.0, 14.0],
                          [14.0, 14.5, 12.0, 13.0], [13.0, 13.5, 11.0, 12.5]]])
    expected = torch.tensor([[[10.0, 15.0, 9.0, 14.0], [14.0, 14.5, 11.0, 12.5]]])
    torch.testing.assert_close(aggregate_ohlc(fine, 2), expected, rtol=0, atol=0)
    # the coarse reconstruction equals the aggregate on its last two bars: loss exactly 0
    coarse = torch.cat([torch.full((1, 1, 4), 99.0), expected], dim=1)
    assert cross_timeframe_consistency(fine, coarse, 2, kind="mse").item() == 0.0
    # off by +1 on the close of the last coarse bar: MSE = 1 / (2 bars x 4 channels)
    coarse_off = coarse.clone()
    coarse_off[0, -1, 3] += 1.0
    assert cross_timeframe_consistency(fine, coarse_off, 2, kind="mse").item() == pytest.approx(1 / 8)
    # normalized inputs: undoing (shift, scale) per timeframe gives the same comparison
    normalized_fine, normalized_coarse = (fine - 10.0) / 2.0, (coarse_off - 5.0) / 4.0
    loss = cross_timeframe_consistency(normalized_fine, normalized_coarse, 2, kind="mse",
                                       fine_affine=(10.0, 2.0), coarse_affine=(5.0, 4.0))
    assert loss.item() == pytest.approx(1 / 8)


def test_registry_and_config_errors():
    model = create_model("stage1", "small", timeframes=["m30", "h1"], seq_len=32)
    assert isinstance(model, Stage1Model) and model.config.d_model == 64
    for overrides, message in (
        (dict(encoder="lm"), "lm_name_or_path"),
        (dict(encoder="lm", lm_name_or_path="x", patch_len=5), "patch_len"),
        (dict(timeframes=("m30", "m30")), "distinct"),
        (dict(stem_kernel=4), "odd"),
        (dict(n_heads=3), "divisible"),
    ):
        with pytest.raises(ValueError, match=message):
            Stage1Config(**{**TINY, **overrides})


def test_lm_loading_errors(tmp_path, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(ConfigError, match="no config.json"):
        resolve_lm_path(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"not in the local Hugging Face cache.*local directory"):
        LMEncoderAdapter(16, "someone/no-such-model-xyz", patch_len=4)


def test_grouped_consistency_equals_the_aligned_form_and_skips_incomplete_bars():
    g = torch.Generator().manual_seed(0)
    fine, coarse = torch.randn(2, 8, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    # aligned: the 8 fine bars are the last 4 coarse bars (ratio 2)
    groups = torch.tensor([[1, 1, 2, 2, 3, 3, 4, 4]] * 2)
    complete = torch.tensor([[False, True, True, True, True]] * 2)
    expected = cross_timeframe_consistency(fine, coarse, 2, kind="mse",
                                           fine_affine=(0.0, 3.0), coarse_affine=(0.0, 5.0))
    got = grouped_consistency(fine, coarse, groups, complete, fine_scale=3.0, coarse_scale=5.0, kind="mse")
    torch.testing.assert_close(got, expected)
    # a fine bar without a coarse bar (-1) and an incomplete coarse bar do not count
    groups2 = torch.tensor([[1, 1, 2, 2, 3, 3, -1, -1]] * 2)
    complete2 = torch.tensor([[False, True, True, True, False]] * 2)
    fine2 = fine.clone()
    fine2[:, 6:] += 100.0  # bars outside every compared group
    partial = grouped_consistency(fine2, coarse, groups2, complete2, kind="mse")
    reference = cross_timeframe_consistency(fine[:, :6], coarse[:, :4], 2, kind="mse")
    torch.testing.assert_close(partial, reference)
    fine.requires_grad_(True)
    grouped_consistency(fine, coarse, groups, complete).backward()
    assert torch.isfinite(fine.grad).all() and fine.grad.abs().sum() > 0
    nothing = grouped_consistency(fine, coarse, groups, torch.zeros_like(complete))
    assert nothing.item() == 0.0


@pytest.mark.parametrize("fusion", ["joint", "separate"])
@pytest.mark.parametrize("freeze_encoder", [False, True])
def test_gradient_flow_forecaster(freeze_encoder, fusion):
    from kizashi.models.stage1 import Stage1Forecaster

    torch.manual_seed(0)
    forecaster = Stage1Forecaster(Stage1Model(Stage1Config(**TINY, fusion=fusion)), freeze_encoder=freeze_encoder)
    inputs, _ = make_inputs()
    forecaster(inputs).square().mean().backward()
    assert gradient_problems(forecaster.named_parameters()) == {}
    trainable = {n for n, p in forecaster.named_parameters() if p.requires_grad}
    assert all(n.startswith("head.") for n in trainable) == freeze_encoder
    assert not any(n.startswith(("backbone.decoders.", "backbone.mask_token")) for n in trainable)
