"""BK-Core Phase 1 / Phase 2 language models: the causal resolvent scan against references,
the chunked memory against a loop, zeta zeros, configs and presets (parameter counts), the
gradient-flow audit in every Phase-2 switch combination, Phase 1 -> Phase 2 conversion,
causality (perturbing the future), diagnostics and a 4096-token run with memory linear in N.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from kizashi.models.bk.config import PHASE1_PRESETS, PHASE2_PRESETS, Phase1Config, Phase2Config
from kizashi.models.bk.core import bk_core
from kizashi.models.bk.layers import bk_core_causal, chunked_fast_weight, decayed_average
from kizashi.models.bk.phase1 import BKPhase1LM
from kizashi.models.bk.phase2 import PHASE2_DIAGNOSTIC_KEYS, BKPhase2LM, convert_phase1_to_phase2
from kizashi.models.bk.zeta import (
    ZETA_ZEROS_IMAG,
    hardy_z,
    zeta_frequencies,
    zeta_mode_basis,
    zeta_spectral_shifts,
    zeta_zeros,
)
from kizashi.models.optim import check_optimizer_coverage, param_groups
from kizashi.models.registry import create_model, list_models, model_config, model_presets
from kizashi.training.callbacks import gradient_problems

TEXT = (
    "kizashi is a lab for deep learning on market time series: from raw price bars to "
    "walk-forward-validated return signals. A feature at date t uses only data known at "
    "the close of t. Every layer is built in __init__ with fixed dimensions, and one "
    "optimizer step on a real batch gives every trainable parameter a finite, non-zero "
    "gradient. Recursions are scaled so that long sequences do not overflow."
).encode()
VOCAB = 256  # bytes

TINY_PHASE1 = dict(vocab_size=VOCAB, d_model=32, n_layers=2, num_heads=2, dropout=0.0)
TINY_PHASE2 = dict(TINY_PHASE1, chunk_size=8, head_dim=16, resonance_modes=4)

# parameter counts of the presets (vocab 50,257, untied embeddings); `kizashi models list`
# prints the same numbers.
PRESET_PARAMETERS = {
    ("bk_phase1", "small"): 28_135_552,
    ("bk_phase1", "base"): 65_752_256,
    ("bk_phase1", "large"): 216_703_360,
    ("bk_phase2", "small"): 29_195_680,
    ("bk_phase2", "base"): 72_077_936,
    ("bk_phase2", "large"): 267_171_040,
}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These tensors are tiny: intra-op threads only add contention (10-50x slower on a
    busy 2-core machine), so this module runs single-threaded and restores the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def text_batch(batch: int = 2, length: int = 33, offset: int = 7) -> torch.Tensor:
    """``[batch, length]`` byte ids: windows of TEXT (a real batch of next-token data)."""
    ids = torch.tensor(list(TEXT), dtype=torch.long)
    return torch.stack([ids[offset + 29 * i : offset + 29 * i + length] for i in range(batch)])


# --------------------------------------------------------------------------------------
# causal resolvent diagonal
# --------------------------------------------------------------------------------------


def sequential_causal_resolvent(a, b, c, z):
    """The plain recursion ``r_i = (a_i - z) - b_{i-1} c_{i-1} / r_{i-1}``, ``g = 1 / r``."""
    alpha = a - torch.as_tensor(z, dtype=a.dtype).unsqueeze(-1)
    r = alpha[..., 0]
    out = [1 / r]
    for i in range(1, a.shape[-1]):
        r = alpha[..., i] - b[..., i - 1] * c[..., i - 1] / r
        out.append(1 / r)
    return torch.stack(out, dim=-1)


def tridiagonal(a, b, c):
    return torch.diag_embed(a) + torch.diag_embed(b.to(a.dtype), 1) + torch.diag_embed(c.to(a.dtype), -1)


def random_tridiagonal(shape, n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.complex(torch.randn(*shape, n, generator=g, dtype=dtype),
                      -0.2 * torch.rand(*shape, n, generator=g, dtype=dtype))
    b = torch.rand(*shape, n - 1, generator=g, dtype=dtype) + 0.2
    return a, b, b.clone()


@pytest.mark.parametrize("n, chunk", [(1, None), (2, None), (7, 3), (37, 5), (300, None), (4096, None)])
def test_causal_resolvent_matches_the_sequential_recursion(n, chunk):
    a, b, c = random_tridiagonal((3, 2), n)
    z = torch.complex(torch.randn(2, dtype=torch.float64), torch.full((2,), 0.3, dtype=torch.float64))
    expected = sequential_causal_resolvent(a, b, c, z)
    assert torch.allclose(bk_core_causal(a, b, c, z, chunk_size=chunk), expected, rtol=1e-12, atol=0)
    got32 = bk_core_causal(a.to(torch.complex64), b.float(), c.float(), z.to(torch.complex64), chunk_size=chunk)
    assert got32.dtype == torch.complex64
    assert ((got32 - expected).abs() / expected.abs()).max() < 2e-6  # float32, stated tolerance
    assert (expected.abs() <= 1 / 0.3 + 1e-12).all()  # |g| <= 1 / Im z


def test_causal_resolvent_is_the_last_diagonal_entry_of_each_leading_block():
    n = 9
    g = torch.Generator().manual_seed(1)
    real = torch.randn(3 * n - 2, generator=g, dtype=torch.float64)
    a = torch.complex(real[:n], -torch.rand(n, generator=g, dtype=torch.float64))
    b, c = real[n : 2 * n - 1], real[2 * n - 1 :]
    z = 0.3 + 0.5j
    got = bk_core_causal(a, b, c, z, chunk_size=4)
    dense = tridiagonal(a, b, c) - z * torch.eye(n, dtype=torch.complex128)
    expected = torch.stack([torch.linalg.inv(dense[: i + 1, : i + 1])[i, i] for i in range(n)])
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    # and it is bk_core (the two-sided diagonal) of the prefix [0, i], at i
    prefix = torch.stack([bk_core(a[: i + 1], b[:i], c[:i], z)[-1] for i in range(n)])
    assert torch.allclose(got, prefix, rtol=1e-8, atol=1e-10)


def test_causal_resolvent_gradcheck_float64():
    a, b, c = random_tridiagonal((2,), 7, seed=2)
    z = torch.tensor(0.1 + 0.4j, dtype=torch.complex128)
    inputs = tuple(x.clone().requires_grad_() for x in (a, b, c, z))
    assert torch.autograd.gradcheck(lambda *x: bk_core_causal(*x, chunk_size=3), inputs)


def test_causal_resolvent_rejects_bad_shapes_and_backend():
    a, b, c = random_tridiagonal((2,), 5)
    with pytest.raises(ValueError, match="N-1=4"):
        bk_core_causal(a, b[..., :3], c, 0.5j)
    with pytest.raises(ValueError, match="CUDA"):
        bk_core_causal(a, b, c, 0.5j, backend="triton")  # CPU tensors


# --------------------------------------------------------------------------------------
# chunked memory
# --------------------------------------------------------------------------------------


def test_chunked_fast_weight_matches_the_step_loop():
    g = torch.Generator().manual_seed(3)
    B, H, N, dk, dv = 2, 3, 29, 4, 5
    q, k = torch.randn(2, B, H, N, dk, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, N, dv, generator=g, dtype=torch.float64)
    log_decay = -torch.rand(B, H, N, generator=g, dtype=torch.float64)
    rate = torch.rand(B, H, N, generator=g, dtype=torch.float64)
    out, state = chunked_fast_weight(q, k, v, log_decay, rate, chunk_size=8)
    memory = torch.zeros(B, H, dv, dk, dtype=torch.float64)
    expected = []
    for t in range(N):
        update = v[..., t, :, None] * k[..., t, None, :]
        memory = log_decay[..., t, None, None].exp() * memory + rate[..., t, None, None] * update
        expected.append(memory @ q[..., t, :, None])
    assert torch.allclose(out, torch.cat(expected, dim=-1).transpose(-1, -2), atol=1e-12)
    assert torch.allclose(state, memory, atol=1e-12)
    x = torch.randn(B, H, N, 3, generator=g, dtype=torch.float64)
    average, running = decayed_average(x, 0.8, chunk_size=8), torch.zeros(B, H, 3, dtype=torch.float64)
    for t in range(N):
        running = 0.8 * running + 0.2 * x[:, :, t]
        assert torch.allclose(average[:, :, t], running, atol=1e-12)


# --------------------------------------------------------------------------------------
# zeta zeros
# --------------------------------------------------------------------------------------

MPMATH_ZEROS = {101: 237.7698204809252, 150: 318.8531042563166, 200: 396.3818542225922,
                300: 541.8474371212013, 500: 811.1843588465063, 512: 826.9058109540808}


def test_zeta_zeros_table_and_computation():
    assert ZETA_ZEROS_IMAG[0] == pytest.approx(14.134725141734693, abs=1e-12)
    assert ZETA_ZEROS_IMAG[1] == pytest.approx(21.022039638771555, abs=1e-12)
    table = torch.tensor(ZETA_ZEROS_IMAG, dtype=torch.float64)
    assert len(table) >= 100 and (table.diff() > 0).all()
    assert hardy_z(table).abs().max() < 1e-9  # Z vanishes at every tabulated zero
    assert (hardy_z(table - 1e-3) * hardy_z(table + 1e-3) < 0).all()
    zeros = zeta_zeros(512)  # first 100 from the table, the rest computed
    for index, value in MPMATH_ZEROS.items():
        assert zeros[index - 1].item() == pytest.approx(value, abs=1e-8)
    from kizashi.models.bk.zeta import _computed_zeros

    assert torch.allclose(_computed_zeros(512)[:100], table, atol=1e-9)  # computation == table


def test_zeta_initialization_uses_the_zeros():
    frequencies = zeta_frequencies(4)
    gammas = torch.tensor(ZETA_ZEROS_IMAG[:4], dtype=torch.float64)
    assert torch.allclose(frequencies, 14.134725141734693 / gammas)
    shifts = zeta_spectral_shifts(3)
    g1, g2, g3 = ZETA_ZEROS_IMAG[:3]
    assert torch.allclose(shifts, torch.tensor([-1.0, 2 * (g2 - g1) / (g3 - g1) - 1, 1.0], dtype=torch.float64))
    basis = zeta_mode_basis(4, 16)
    assert torch.allclose(basis @ basis.T, torch.eye(4, dtype=torch.float64), atol=1e-12)
    model = BKPhase2LM(Phase2Config(**TINY_PHASE2, zeta_embedding_trainable=True))
    heads = TINY_PHASE2["num_heads"]
    for layer, block in enumerate(model.blocks):
        expected = zeta_spectral_shifts(heads, offset=layer * heads).float()
        assert torch.equal(block.bk.shift_real.detach(), expected)
    assert torch.allclose(model.position.frequencies.detach(), zeta_frequencies(16).float())
    assert model.position.frequencies.requires_grad
    plain = BKPhase2LM(Phase2Config(**TINY_PHASE2, use_zeta_init=False))
    assert plain.position is None
    assert torch.equal(plain.blocks[0].bk.shift_real.detach(), torch.tensor([-1.0, 1.0]))


# --------------------------------------------------------------------------------------
# configs and presets
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (dict(d_model=0), "d_model must be a positive int"),
    (dict(num_heads=2.5), "num_heads must be a positive int"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    (dict(base_decay=-0.1), "base_decay must be a non-negative"),
    (dict(hebbian_eta=0.0), "hebbian_eta must be a positive"),
    (dict(snr_eta_boost=0.5), "snr_eta_boost must be >= 1"),
    (dict(snr_ema_decay=1.0), r"snr_ema_decay must be in \(0, 1\)"),
    (dict(resonance_energy_threshold=0.0), r"resonance_energy_threshold must be in \(0, 1\)"),
    (dict(resonance_modes=65), "resonance_modes=65 must be <= head_dim=64"),
    (dict(chunk_size=0), "chunk_size must be a positive int"),
    (dict(spectral_shift_imag=0.01), "spectral_shift_imag=0.01 must exceed"),
    (dict(use_zeta_init="yes"), "use_zeta_init must be true or false"),
    (dict(non_hermitian=False), "adaptive_decay=True needs non_hermitian=True"),
    (dict(hebbian_enabled=False), "snr_enabled=True needs hebbian_enabled=True"),
    (dict(hebbian_enabled=False, snr_enabled=False), "resonance_enabled=True needs hebbian_enabled"),
    (dict(use_zeta_init=False, zeta_embedding_trainable=True), "zeta_embedding_trainable=True needs"),
    (dict(adaptive_decay=False, base_decay=0.0), "gives Gamma = 0"),
    (dict(non_hermitian=False, adaptive_decay=False, base_decay=0.0), "would never forget"),
])
def test_phase2_config_errors_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        Phase2Config(**overrides)


def test_config_round_trips_and_from_phase1():
    phase1 = Phase1Config(**TINY_PHASE1, tie_embeddings=True)
    assert Phase1Config.from_dict(phase1.to_dict()) == phase1
    config = Phase2Config.from_phase1(phase1, snr_threshold=3.0)
    assert config.snr_threshold == 3.0
    phase1_fields = [f.name for f in dataclasses.fields(Phase1Config)]
    assert set(phase1_fields) <= {f.name for f in dataclasses.fields(Phase2Config)}
    for name in phase1_fields:  # the whole Phase-1 architecture carries over
        assert getattr(config, name) == getattr(phase1, name), name
    assert config.head_dim == 16 and config.resonance_modes == 8
    assert Phase2Config.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown Phase2Config key\(s\) \['hebian_eta'\]"):
        Phase2Config.from_dict({"hebian_eta": 0.1})
    with pytest.raises(ValueError, match="unknown preset 'huge' for model 'bk_phase2'"):
        model_config("bk_phase2", preset="huge")
    assert model_config("bk_phase2", preset="base") == Phase2Config(d_model=512, n_layers=6, head_dim=64)


def test_presets_build_with_their_stated_parameter_counts():
    assert {"bk_phase1", "bk_phase2"} <= set(list_models())
    assert set(model_presets("bk_phase2")) == set(PHASE2_PRESETS) == {"small", "base", "large"}
    assert set(model_presets("bk_phase1")) == set(PHASE1_PRESETS)
    for (name, preset), expected in PRESET_PARAMETERS.items():
        if preset == "small":  # built for real
            model = create_model(name, preset=preset)
        else:  # the same module graph without allocating 1 GB
            with torch.device("meta"):
                model = create_model(name, preset=preset)
        assert sum(p.numel() for p in model.parameters()) == expected, (name, preset)
    model = create_model("bk_phase2", preset="small", vocab_size=1000, n_layers=2)
    assert isinstance(model, BKPhase2LM)
    assert model.config.d_model == 256 and model.config.n_layers == 2 and model.config.vocab_size == 1000
    model = create_model("bk_phase1", config=dict(TINY_PHASE1))
    assert isinstance(model, BKPhase1LM) and model.config == Phase1Config(**TINY_PHASE1)
    with pytest.raises(ValueError, match="either preset or config"):
        create_model("bk_phase2", config=Phase2Config(), preset="small")


# --------------------------------------------------------------------------------------
# gradient-flow audit
# --------------------------------------------------------------------------------------


def audit_one_step(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, list[str]]:
    """One next-token loss + backward + AdamW step; the problems found, by parameter name."""
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=0.01, lr=1e-3))
    problems: dict[str, list[str]] = {}
    try:
        check_optimizer_coverage(model, optimizer)
    except ValueError as error:
        problems["optimizer"] = [str(error)]
    logits = model(ids[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    if not torch.isfinite(loss):
        problems["loss"] = [f"non-finite loss {loss.item()}"]
    loss.backward()
    problems.update(gradient_problems(model.named_parameters()))
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer.step()
    unchanged = [name for name, p in model.named_parameters()
                 if p.requires_grad and torch.equal(p.detach(), before[name])]
    if unchanged:
        problems["unchanged after step"] = unchanged
    return problems


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("tie", [False, True])
def test_phase1_gradient_flow_audit(causal, tie):
    torch.manual_seed(0)
    model = BKPhase1LM(Phase1Config(**TINY_PHASE1, causal=causal, tie_embeddings=tie))
    assert audit_one_step(model, text_batch()) == {}


SWITCH_NAMES = ("non_hermitian", "adaptive_decay", "hebbian_enabled", "snr_enabled", "resonance_enabled",
                "use_zeta_init", "zeta_embedding_trainable")
SWITCHES = list(itertools.product([False, True], repeat=len(SWITCH_NAMES)))


def consistent(switches: dict[str, bool]) -> bool:
    return not ((switches["adaptive_decay"] and not switches["non_hermitian"])
                or ((switches["snr_enabled"] or switches["resonance_enabled"])
                    and not switches["hebbian_enabled"])
                or (switches["zeta_embedding_trainable"] and not switches["use_zeta_init"]))


@pytest.mark.parametrize("values", SWITCHES, ids=["".join(str(int(v)) for v in s) for s in SWITCHES])
def test_phase2_gradient_flow_audit_every_switch_combination(values):
    """All 2^7 combinations: the 45 consistent ones pass the audit, the others are refused."""
    switches = dict(zip(SWITCH_NAMES, values))
    if not consistent(switches):
        with pytest.raises(ValueError, match="needs"):
            Phase2Config(**TINY_PHASE2, **switches)
        return
    torch.manual_seed(0)
    model = BKPhase2LM(Phase2Config(**TINY_PHASE2, **switches))
    assert audit_one_step(model, text_batch()) == {}


def test_phase2_gradient_flow_audit_bidirectional_and_tied():
    torch.manual_seed(0)
    model = BKPhase2LM(Phase2Config(**TINY_PHASE2, causal=False, tie_embeddings=True,
                                    zeta_embedding_trainable=True))
    assert audit_one_step(model, text_batch()) == {}


# --------------------------------------------------------------------------------------
# Phase 1 -> Phase 2
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("freeze", [False, True])
def test_convert_phase1_to_phase2(freeze):
    torch.manual_seed(0)
    phase1 = BKPhase1LM(Phase1Config(**TINY_PHASE1))
    phase2, report = convert_phase1_to_phase2(phase1, freeze_phase1_weights=freeze)
    source, target = phase1.state_dict(), phase2.state_dict()
    assert set(report.copied) == set(source) and not report.skipped  # the whole Phase-1 model
    for name in report.copied:
        assert torch.equal(target[name], source[name]), name
    assert set(report.new) == set(target) - set(source)
    new_parameters = {n for n, _ in phase2.named_parameters()} - set(source)
    assert new_parameters == {n for n, _ in phase2.named_parameters() if ".bk.decay." in n or ".memory" in n}
    for name, parameter in phase2.named_parameters():  # new layers initialized, finite
        assert torch.isfinite(parameter).all(), name
        if name in new_parameters and parameter.ndim == 2:
            assert parameter.detach().abs().sum() > 0, name
    for name, parameter in phase2.named_parameters():
        assert parameter.requires_grad == (not freeze or name in new_parameters), name
    copied_parameters = set(report.copied) & {n for n, _ in phase2.named_parameters()}
    assert set(report.frozen) == (copied_parameters if freeze else set())
    assert audit_one_step(phase2, text_batch()) == {}  # frozen or not, everything trainable learns


def test_convert_reports_skipped_tensors():
    phase1 = BKPhase1LM(Phase1Config(**TINY_PHASE1))
    config = Phase2Config(**dict(TINY_PHASE2, vocab_size=300))
    phase2, report = convert_phase1_to_phase2(phase1, config)
    assert set(report.skipped) == {"embed.weight", "lm_head.weight"}
    assert "shape (256, 32) vs Phase-2 (300, 32)" in report.skipped["embed.weight"]
    assert "embed.weight" in report.new
    with pytest.raises(ValueError, match="needs copy_compatible_weights=True"):
        convert_phase1_to_phase2(phase1, copy_compatible_weights=False, freeze_phase1_weights=True)


# --------------------------------------------------------------------------------------
# causality, diagnostics, long sequences
# --------------------------------------------------------------------------------------


def future_changes_past(model: torch.nn.Module, t: int) -> tuple[float, float]:
    """Largest change of the logits at positions ``<= t`` and after ``t`` when every token
    after ``t`` is replaced."""
    model.eval()
    ids = text_batch(length=45)
    perturbed = ids.clone()
    perturbed[:, t + 1 :] = (ids[:, t + 1 :] * 7 + 3) % VOCAB
    with torch.no_grad():
        base, other = model(ids), model(perturbed)
    change = (base - other).abs()
    return change[:, : t + 1].max().item(), change[:, t + 1 :].max().item()


@pytest.mark.parametrize("phase", [1, 2])
@pytest.mark.parametrize("t", [0, 13, 20])
def test_future_tokens_do_not_change_past_logits(phase, t):
    torch.manual_seed(0)
    model = (BKPhase1LM(Phase1Config(**TINY_PHASE1)) if phase == 1
             else BKPhase2LM(Phase2Config(**TINY_PHASE2, zeta_embedding_trainable=True)))
    past, future = future_changes_past(model, t)
    assert past == 0.0
    assert future > 1e-4  # the test would see a leak: the future does reach later positions


def test_bidirectional_model_does_see_the_future():
    torch.manual_seed(0)
    past, _ = future_changes_past(BKPhase2LM(Phase2Config(**TINY_PHASE2, causal=False)), 13)
    assert past > 1e-4  # causal=False is an encoder, not a language model


@pytest.mark.parametrize("switches", [
    dict(),  # everything on (the defaults)
    dict(snr_enabled=False, resonance_enabled=False),
    dict(hebbian_enabled=False, snr_enabled=False, resonance_enabled=False),
    dict(non_hermitian=False, adaptive_decay=False, resonance_enabled=False),
])
def test_diagnostics_keys_and_shapes(switches):
    config = Phase2Config(**TINY_PHASE2, **switches)
    model = BKPhase2LM(config)
    ids = text_batch(batch=3, length=21)
    logits, diagnostics = model(ids, return_diagnostics=True)
    B, N, H, M = 3, 21, config.num_heads, config.resonance_modes
    assert logits.shape == (B, N, VOCAB) and len(diagnostics) == config.n_layers
    expected = {key for key, switch in PHASE2_DIAGNOSTIC_KEYS.items()
                if switch is None or getattr(config, switch)}
    shapes = {"memory_norm": (B, H), "resonance_energy": (B, H, N, M)}
    for layer in diagnostics:
        assert set(layer) == expected
        for key, value in layer.items():
            assert value.shape == shapes.get(key, (B, H, N)), key
            assert torch.isfinite(value).all() and not value.requires_grad, key
        if "decay_rate" in layer:
            assert (layer["decay_rate"] >= config.base_decay).all()
        if "memory_decay" in layer:  # the SNR filter only boosts the decay
            assert (layer["memory_decay"] >= (layer.get("decay_rate", config.base_decay))).all()
            assert (layer["memory_eta"] >= config.hebbian_eta - 1e-7).all()
        if "resonance_energy" in layer:
            assert (layer["resonance_energy"].sum(-1) <= 1 + 1e-5).all()
    with torch.no_grad():
        assert torch.equal(model.eval()(ids), model(ids, return_diagnostics=True)[0])


@pytest.mark.parametrize("model_cls,config", [(BKPhase1LM, Phase1Config(**TINY_PHASE1)),
                                              (BKPhase2LM, Phase2Config(**TINY_PHASE2))])
def test_blocks_skip_diagnostics_unless_asked(model_cls, config):
    """Training calls ``model(ids)``: every block then returns an empty diagnostics dict (no
    norms computed), with the same hidden states as when they are asked for."""
    torch.manual_seed(0)
    model = model_cls(config).eval()
    h = model.embed_tokens(text_batch(batch=2, length=13))
    with torch.no_grad():
        for block in model.blocks:
            plain, none = block(h, return_diagnostics=False)
            asked, some = block(h, return_diagnostics=True)
            assert none == {} and some and torch.equal(plain, asked)
            h = plain


def test_phase2_runs_in_float64_and_its_memory_passes_gradcheck():
    """A float64 Phase-2 model stays float64 end to end (the memory widens bf16 projections to
    float32 but never narrows float64), and the whole Hebbian memory block (SNR filter,
    fast weights, resonance) passes ``gradcheck`` in float64 w.r.t. its input and decay."""
    from kizashi.models.bk.phase2 import HebbianMemory

    config = Phase2Config(**{**TINY_PHASE2, "n_layers": 1})
    torch.manual_seed(0)
    model = BKPhase2LM(config).double()
    assert model(text_batch(batch=2, length=11)).dtype == torch.float64
    memory = HebbianMemory(config).double()
    for parameter in memory.parameters():  # non-zero resonance gains and output weights
        parameter.data.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(1, 10, config.d_model, dtype=torch.float64, generator=generator, requires_grad=True)
    decay = (0.05 + torch.rand(1, config.num_heads, 10, dtype=torch.float64, generator=generator)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, decay: memory(x, decay, False)[0], (x, decay), atol=1e-7)


def test_memory_hands_its_projections_to_the_scan_as_views(monkeypatch):
    """The memory passes the heads of its q / k / v projections to the fast-weight scan as
    ``[B, H, N, d]`` views of the ``[B, N, H d]`` projections (no copy, bf16 stays bf16: the
    kernels read them in place) and asks the scan to normalize ``q`` and ``k``; on the PyTorch
    path its output equals normalizing the contiguous float32 heads by hand."""
    from kizashi.models.bk import phase2

    config = Phase2Config(**{**TINY_PHASE2, "n_layers": 1, "snr_enabled": False, "resonance_enabled": False})
    memory = phase2.HebbianMemory(config)
    projected = torch.randn(2, 7, config.num_heads * config.head_dim).to(torch.bfloat16)
    heads = memory._heads(projected)
    assert heads.dtype == torch.bfloat16 and heads.data_ptr() == projected.data_ptr()
    assert torch.equal(heads, projected.view(2, 7, config.num_heads, config.head_dim).transpose(1, 2))
    seen = []
    real = phase2.chunked_fast_weight

    def spy(q, k, v, *args, normalize=False):
        seen.append(([t._base is not None for t in (q, k, v)], normalize))
        return real(q, k, v, *args, normalize=normalize)

    monkeypatch.setattr(phase2, "chunked_fast_weight", spy)
    x, decay = torch.randn(2, 7, config.d_model), torch.rand(2, config.num_heads, 7) + 0.05
    out, _ = memory(x, decay)
    assert seen == [([True, True, True], True)]

    monkeypatch.setattr(phase2, "chunked_fast_weight", real)
    q, k, v = (memory._heads(part).contiguous() for part in memory.qkv(x).chunk(3, dim=-1))
    readout, _ = real(torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1), v,
                      -decay * memory.dt, torch.full_like(decay, memory.eta * memory.dt), memory.chunk_size)
    by_hand = memory.out(readout.transpose(1, 2).reshape(2, 7, -1))
    assert torch.allclose(out, by_hand, atol=1e-6)


def test_memory_loads_a_state_dict_with_separate_query_key_value():
    """A Phase-2 state dict saved when the memory had ``query``, ``key`` and ``value``
    projections loads into the one ``qkv`` projection, with the same outputs."""
    config = Phase2Config(**{**TINY_PHASE2, "n_layers": 1})
    torch.manual_seed(0)
    model = BKPhase2LM(config)
    old_style = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("memory.qkv.weight"):
            prefix = name[: -len("qkv.weight")]
            for part, rows in zip(("query", "key", "value"), tensor.chunk(3, dim=0)):
                old_style[f"{prefix}{part}.weight"] = rows.clone()
        else:
            old_style[name] = tensor
    assert any(name.endswith("memory.query.weight") for name in old_style)
    torch.manual_seed(1)
    loaded = BKPhase2LM(config)
    loaded.load_state_dict(old_style)  # strict: nothing missing, nothing unexpected
    ids = text_batch(batch=2, length=9)
    model.eval(), loaded.eval()
    assert torch.equal(model(ids), loaded(ids))


def saved_tensor_bytes(model: torch.nn.Module, n: int) -> int:
    """Bytes autograd saves for backward in one forward + backward on ``n`` tokens (batch 1)."""
    ids = torch.randint(0, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(0))
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = model(ids)
    logits.float().logsumexp(-1).mean().backward()
    return total


def test_long_sequence_4096_with_memory_linear_in_length():
    torch.manual_seed(0)
    model = BKPhase2LM(Phase2Config(vocab_size=64, d_model=32, n_layers=1, num_heads=2, head_dim=16,
                                    resonance_modes=4, dropout=0.0))
    saved_short = saved_tensor_bytes(model, 2048)
    saved_long = saved_tensor_bytes(model, 4096)
    ratio = saved_long / saved_short
    assert 1.8 < ratio < 2.2, ratio  # linear in N (an N x N matrix would give ~4)
    assert saved_long < 64 * 4096 * 4 * 200  # ~ a few hundred floats per token and channel
    ids = torch.randint(0, 64, (1, 4096))
    with torch.no_grad():
        logits, diagnostics = model(ids, return_diagnostics=True)
    assert torch.isfinite(logits).all() and torch.isfinite(diagnostics[0]["memory_norm"]).all()
    assert math.isfinite(float(diagnostics[0]["resolvent_abs"].max()))
