"""ATFT-GAT-FAN: the gradient-flow audit in every switch combination, the fixed module
graph (GAT on/off, days without edges), the registry, config validation, losses and
optimizer parameter groups."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from kizashi.models import (
    ATFTGATFAN,
    ATFTGATFANConfig,
    create_model,
    list_models,
    model_config,
    model_presets,
)
from kizashi.models.losses import (
    ForecastLoss,
    LossConfig,
    correlation_loss,
    multi_horizon_huber,
    pinball_loss,
)
from kizashi.models.optim import check_optimizer_coverage, param_groups

N_STOCKS, N_EDGES, WINDOW, N_FEATURES, HIDDEN = 30, 90, 8, 12, 16
TINY = dict(
    n_features=N_FEATURES,
    window=WINDOW,
    hidden=HIDDEN,
    horizons=(1, 5),
    quantiles=(0.1, 0.5, 0.9),
    attn_heads=2,
    gat_heads=2,
    gat_layers=2,
    fan_top_k=2,
    san_slice_len=3,
    freq_dropout_band=1,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread(torch_single_thread):
    """Tiny tensors: one torch thread is faster than several and deterministic."""


def tiny_config(**overrides) -> ATFTGATFANConfig:
    return ATFTGATFANConfig(**{**TINY, **overrides})


def make_batch(n_edges: int = N_EDGES, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(N_STOCKS, WINDOW, generator=g) > 0.1
    mask[:, -1] = True
    mask[0, :5] = False  # a newly listed stock
    target = torch.randn(N_STOCKS, 2, generator=g)
    target[3, 1] = float("nan")  # horizon not yet realized
    valid = torch.isfinite(target)
    valid[4, 0] = False
    return {
        "x": torch.randn(N_STOCKS, WINDOW, N_FEATURES, generator=g) * mask.unsqueeze(-1),
        "mask": mask,
        "edge_index": torch.randint(0, N_STOCKS, (2, n_edges), generator=g),
        "edge_attr": torch.randn(n_edges, 3, generator=g),
        "target": target,
        "valid": valid,
        "day": torch.arange(N_STOCKS) // 15,  # two days in one batch
    }


def audit_one_step(model: ATFTGATFAN, batch: dict, loss_config: LossConfig) -> list[str]:
    """One forward + loss + backward + AdamW step; returns the problems found, by name."""
    model.train()
    optimizer = torch.optim.AdamW(
        param_groups(model, weight_decay=0.01, lr=1e-3, lr_factors={"heads": 2.0})
    )
    problems: list[str] = []
    try:
        check_optimizer_coverage(model, optimizer)
    except ValueError as error:
        problems.append(str(error))
    loss_fn = ForecastLoss(loss_config, model.config.quantiles)
    terms = loss_fn(model(batch), batch["target"], batch["valid"], batch["day"])
    if not torch.isfinite(terms["loss"]):
        problems.append(f"non-finite loss {terms}")
    terms["loss"].backward()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    non_finite = [n for n, p in model.named_parameters()
                  if p.grad is not None and not torch.isfinite(p.grad).all()]
    zero = [n for n, p in model.named_parameters()
            if p.grad is not None and torch.count_nonzero(p.grad) == 0]
    optimizer.step()
    unchanged = [n for n, p in model.named_parameters()
                 if p.requires_grad and torch.equal(p.detach(), before[n])]
    for label, names in (("no grad", no_grad), ("non-finite grad", non_finite),
                         ("all-zero grad", zero), ("unchanged after step", unchanged)):
        if names:
            problems.append(f"{label}: {names}")
    return problems


SWITCHES = list(itertools.product(
    [True, False],  # gat
    [False, True],  # use_fan
    [False, True],  # use_san
    [0.0, 0.2],  # freq_dropout
    [False, True],  # small_init_heads + layerscale
    [False, True],  # rank/correlation loss term
))
# gat_latest_features (default on) switched off, with GAT on, in a few combinations
SWITCHES_PLAIN_GAT_NODES = [(True, False, False, 0.0, False, False), (True, True, True, 0.2, True, True)]


@pytest.mark.parametrize(
    "gat, fan, san, freq_dropout, small_init, rank", SWITCHES,
    ids=["gat{}-fan{}-san{}-fd{}-init{}-rank{}".format(*(int(bool(v)) for v in s))
         for s in SWITCHES],
)
def test_gradient_flow_audit(gat, fan, san, freq_dropout, small_init, rank):
    torch.manual_seed(0)
    config = tiny_config(gat=gat, use_fan=fan, use_san=san, freq_dropout=freq_dropout,
                         small_init_heads=small_init, layerscale=small_init,
                         layerscale_init=1e-4)
    loss_config = LossConfig(horizon_weights=(1.0, 0.8), rank_weight=0.5 if rank else 0.0)
    problems = audit_one_step(ATFTGATFAN(config), make_batch(), loss_config)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("gat, fan, san, freq_dropout, small_init, rank", SWITCHES_PLAIN_GAT_NODES)
def test_gradient_flow_audit_gat_over_the_summary_only(gat, fan, san, freq_dropout, small_init, rank):
    torch.manual_seed(0)
    config = tiny_config(gat=gat, use_fan=fan, use_san=san, freq_dropout=freq_dropout,
                         small_init_heads=small_init, layerscale=small_init,
                         layerscale_init=1e-4, gat_latest_features=False)
    loss_config = LossConfig(horizon_weights=(1.0, 0.8), rank_weight=0.5 if rank else 0.0)
    problems = audit_one_step(ATFTGATFAN(config), make_batch(), loss_config)
    assert not problems, "\n".join(problems)


def test_gradient_flow_audit_per_feature_vsn_and_deep_stack():
    torch.manual_seed(0)
    config = tiny_config(vsn_per_feature=True, lstm_layers=2, gat_tau=0.5, use_fan=True,
                         use_san=True, monotone_quantiles=False, head_hidden=8)
    problems = audit_one_step(ATFTGATFAN(config), make_batch(), LossConfig(rank_weight=1.0))
    assert not problems, "\n".join(problems)


def test_audit_names_a_parameter_that_does_not_train():
    model = ATFTGATFAN(tiny_config())
    model.stray = torch.nn.Linear(2, 2)  # never used in forward
    problems = "\n".join(audit_one_step(model, make_batch(), LossConfig()))
    assert "no grad: ['stray.weight', 'stray.bias']" in problems
    assert "unchanged after step: ['stray.weight', 'stray.bias']" in problems


# --- fixed module graph -------------------------------------------------------------------


def graph_signature(model: torch.nn.Module) -> tuple:
    return (
        len(list(model.modules())),
        tuple(model.state_dict().keys()),
        tuple((n, tuple(p.shape)) for n, p in model.named_parameters()),
    )


@pytest.mark.parametrize("gat", [True, False])
def test_no_module_is_created_in_forward(gat):
    model = ATFTGATFAN(tiny_config(gat=gat, use_fan=True, use_san=True, freq_dropout=0.2))
    signature = graph_signature(model)
    for n_edges in (N_EDGES, 0):
        for training in (True, False):
            model.train(training)
            out = model(make_batch(n_edges=n_edges))
            assert out["point"].shape == (N_STOCKS, 2)
            assert out["quantiles"].shape == (N_STOCKS, 2, 3)
            assert out["variable_weights"].shape == (N_STOCKS, WINDOW, N_FEATURES)
            assert all(torch.isfinite(v).all() for v in out.values())
            assert graph_signature(model) == signature


def test_gat_on_and_off_differ_only_by_the_gat_key():
    on_config, off_config = tiny_config(gat=True), tiny_config(gat=False)
    differing = [f.name for f in dataclasses.fields(ATFTGATFANConfig)
                 if getattr(on_config, f.name) != getattr(off_config, f.name)]
    assert differing == ["gat"]
    on, off = ATFTGATFAN(on_config), ATFTGATFAN(off_config)
    on_shapes = {k: v.shape for k, v in on.state_dict().items() if not k.startswith("gat.")}
    off_shapes = {k: v.shape for k, v in off.state_dict().items()}
    assert on_shapes == off_shapes
    assert any(k.startswith("gat.") for k in on.state_dict())
    assert not any(k.startswith("gat.") for k in off.state_dict())


def test_a_day_without_edges_is_the_gat_off_model():
    """Zero padding: GAT on with E = 0 gives exactly what GAT off gives with the same
    shared weights, and GAT on with edges gives something else."""
    torch.manual_seed(0)
    on = ATFTGATFAN(tiny_config(gat=True)).eval()
    off = ATFTGATFAN(tiny_config(gat=False)).eval()
    off.load_state_dict({k: v for k, v in on.state_dict().items() if not k.startswith("gat.")})
    empty = make_batch(n_edges=0)
    with torch.no_grad():
        torch.testing.assert_close(on(empty)["point"], off(empty)["point"], rtol=0, atol=0)
        with_edges = make_batch()
        assert not torch.allclose(on(with_edges)["point"], off(with_edges)["point"])
        # GAT off ignores any graph in the batch
        torch.testing.assert_close(off(with_edges)["point"], off(empty)["point"], rtol=0, atol=0)


def test_batch_errors_are_clear():
    model = ATFTGATFAN(tiny_config())
    batch = make_batch()
    with pytest.raises(ValueError, match="n_features=12"):
        model({**batch, "x": batch["x"][..., :5]})
    with pytest.raises(ValueError, match="mask"):
        model({**batch, "mask": batch["mask"][:, :3]})
    with pytest.raises(ValueError, match="edge_index"):
        model({"x": batch["x"], "mask": batch["mask"]})
    with pytest.raises(ValueError, match="edge_attr"):
        model({**batch, "edge_attr": batch["edge_attr"][:, :2]})
    ATFTGATFAN(tiny_config(gat=False))({"x": batch["x"]})  # no mask, no graph: fine


# --- registry and config ------------------------------------------------------------------


def test_registry_builds_from_name_preset_config_and_overrides():
    assert "atft_gat_fan" in list_models()
    presets = model_presets("atft_gat_fan")
    assert set(presets) == {"small", "base"}
    presets["small"]["hidden"] = -1  # a copy: the registry is not changed
    assert model_presets("atft_gat_fan")["small"]["hidden"] == 64

    by_name = create_model("atft_gat_fan", **TINY)
    assert isinstance(by_name, ATFTGATFAN) and by_name.config == tiny_config()
    small = model_config("atft_gat_fan", "small", n_features=7)
    assert small.hidden == 64 and small.n_features == 7
    base = model_config("atft_gat_fan", "base", n_features=7, gat=False)
    assert base.hidden == 128 and base.gat is False
    from_instance = create_model("atft_gat_fan", config=tiny_config(), gat_tau=0.5)
    assert from_instance.config == tiny_config(gat_tau=0.5)
    from_dict = create_model("atft_gat_fan", config={**TINY, "horizons": [1, 5]})
    assert from_dict.config == tiny_config()


@pytest.mark.parametrize(
    "preset, gat, expected", [("small", True, 341_328), ("small", False, 298_128),
                              ("base", True, 1_207_504), ("base", False, 1_054_416)],
)
def test_preset_parameter_counts_match_the_documented_table(preset, gat, expected):
    model = create_model("atft_gat_fan", preset, n_features=400, gat=gat)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_registry_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"registered models: \['atft_gat_fan'"):
        create_model("atft_gta_fan", n_features=4)
    with pytest.raises(ValueError, match=r"presets: \['base', 'small'\]"):
        create_model("atft_gat_fan", "large", n_features=4)
    with pytest.raises(ValueError, match=r"unknown override key\(s\) \['hiden'\].*'hidden'"):
        create_model("atft_gat_fan", n_features=4, hiden=32)
    with pytest.raises(ValueError, match="unknown config key"):
        create_model("atft_gat_fan", config={"n_features": 4, "gat_temperature": 2.0})
    with pytest.raises(ValueError, match="either preset or config"):
        create_model("atft_gat_fan", "small", config=tiny_config())
    with pytest.raises(ValueError, match="n_features is required"):
        create_model("atft_gat_fan", "small")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden=0), "hidden must be a positive int"),
        (dict(hidden=18, attn_heads=4), "divisible by attn_heads"),
        (dict(gat_heads=3), "divisible by gat_heads"),
        (dict(horizons=()), "horizons"),
        (dict(horizons=(1, 1)), "distinct"),
        (dict(quantiles=(0.9, 0.1)), "ascending"),
        (dict(quantiles=(0.0, 0.5)), r"\(0, 1\)"),
        (dict(dropout=1.0), "dropout"),
        (dict(freq_dropout=-0.1), "freq_dropout"),
        (dict(use_fan=True, fan_top_k=6), "fan_top_k"),
        (dict(use_san=True, san_slice_len=9), "san_slice_len"),
        (dict(freq_dropout=0.1, freq_dropout_band=5), "freq_dropout_band"),
        (dict(gat_tau=0.0), "gat_tau"),
        (dict(layerscale_init=0.0), "layerscale_init"),
        (dict(lstm_layers=True), "lstm_layers"),
    ],
)
def test_bad_config_raises(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_sizes_of_switched_off_parts_are_not_checked():
    """A one-day window is valid when FAN, SAN and FreqDropout are off (their sizes do not
    apply), and the model runs on it."""
    config = tiny_config(window=1, fan_top_k=6, san_slice_len=9, freq_dropout_band=5)
    batch = make_batch()
    batch = {**batch, "x": batch["x"][:, -1:], "mask": batch["mask"][:, -1:]}
    assert ATFTGATFAN(config)(batch)["point"].shape == (N_STOCKS, 2)


# --- losses -------------------------------------------------------------------------------


def test_huber_respects_mask_nan_targets_and_horizon_weights():
    pred = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [3.0, 0.5]])
    valid = torch.tensor([[True, True], [False, True]])
    loss = multi_horizon_huber(pred, target, valid, horizon_weights=(1.0, 0.5), delta=1.0)
    # horizon 0: only 1.0 -> 0.5; horizon 1: only 0.5 -> 0.125; (0.5 + 0.5 * 0.125) / 1.5
    torch.testing.assert_close(loss, torch.tensor((0.5 + 0.0625) / 1.5))
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    none_valid = multi_horizon_huber(pred, target, torch.zeros_like(valid))
    assert none_valid.item() == 0.0 and none_valid.requires_grad


def test_pinball_loss_values():
    quantiles = torch.tensor([[[0.0, 1.0]]])
    target = torch.tensor([[2.0]])
    # level 0.1 under-predicts by 2 -> 0.2; level 0.9 under-predicts by 1 -> 0.9
    loss = pinball_loss(quantiles, target, (0.1, 0.9))
    torch.testing.assert_close(loss, torch.tensor((0.2 + 0.9) / 2))


def test_correlation_loss_per_day_group():
    target = torch.randn(20, 2)
    day = torch.tensor([5] * 10 + [9] * 10)
    perfect = correlation_loss(2.0 * target + 1.0, target, day)
    torch.testing.assert_close(perfect, torch.tensor(0.0), atol=1e-5, rtol=0)
    flipped = target.clone()
    flipped[10:] *= -1  # second day anti-correlated -> mean correlation 0
    torch.testing.assert_close(correlation_loss(flipped, target, day), torch.tensor(1.0),
                               atol=1e-5, rtol=0)
    valid = torch.zeros(20, 2, dtype=torch.bool)
    valid[0] = True  # no group with two valid rows
    pred = torch.randn(20, 2, requires_grad=True)
    empty = correlation_loss(pred, target, day, valid)
    assert empty.item() == 0.0
    empty.backward()
    assert torch.isfinite(pred.grad).all()


def test_loss_config_validation():
    with pytest.raises(ValueError, match="horizon_weights"):
        LossConfig(horizon_weights=(0.0, 0.0))
    with pytest.raises(ValueError, match="huber_delta"):
        LossConfig(huber_delta=0.0)
    loss = ForecastLoss(LossConfig(horizon_weights=(1.0, 0.8, 0.7)), (0.1, 0.5, 0.9))
    outputs = {"point": torch.zeros(4, 2), "quantiles": torch.zeros(4, 2, 3)}
    with pytest.raises(ValueError, match="horizon_weights"):
        loss(outputs, torch.zeros(4, 2))


# --- parameter groups ---------------------------------------------------------------------


def test_param_groups_decay_and_lr_factors():
    model = ATFTGATFAN(tiny_config(layerscale=True))
    groups = param_groups(model, weight_decay=0.05, lr=1e-3,
                          lr_factors={"gat": 0.5, "heads": 2.0, "heads.heads.0": 3.0})
    by_name = {name: g for g in groups for name in g["param_names"]}
    assert len(by_name) == sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for name in ("temporal.lstm_gate.norm.weight", "temporal.lstm.bias_ih_l0",
                 "vsn.feature_bias", "heads.heads.1.layer_scale.gamma", "gat.convs.0.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    for name in ("temporal.lstm.weight_ih_l0", "vsn.feature_weight", "gat.convs.0.att"):
        assert by_name[name]["weight_decay"] == 0.05, name
    assert by_name["gat.convs.1.lin_l.weight"]["lr"] == pytest.approx(5e-4)
    assert by_name["heads.heads.1.point.weight"]["lr"] == pytest.approx(2e-3)
    assert by_name["heads.heads.0.point.weight"]["lr"] == pytest.approx(3e-3)
    assert by_name["fuse.fc_in.weight"]["lr"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="match no trainable parameter.*'temporal'"):
        param_groups(model, 0.05, 1e-3, lr_factors={"temporl": 0.5})
    model.vsn.requires_grad_(False)
    frozen = param_groups(model, 0.05, 1e-3)
    assert not any(n.startswith("vsn.") for g in frozen for n in g["param_names"])
