"""save_pretrained / from_pretrained (kizashi.models.pretrained): every registered model (and
the Stage-1 forecaster) comes back from its folder with the same config, the same state dict
and the same outputs; tied weights stay tied and are stored once; missing files and folders
of another model are clear errors naming the file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from kizashi.models import (
    ATFTGATFAN,
    BKPhase1LM,
    BKPhase2LM,
    PretrainedLoadError,
    PretrainedMixin,
    Stage1Forecaster,
    Stage1Model,
    TransformerLM,
    create_model,
    list_models,
    load_pretrained_model,
    read_pretrained_config,
)
from kizashi.models.pretrained import CONFIG_NAME, WEIGHTS_NAME
from kizashi.models.registry import model_entry
from conftest import save_tiny_lm  # tests/ is on sys.path (rootdir conftest)

VOCAB = 11
STAGE1 = {"timeframes": ("m30", "h1"), "seq_len": 8, "d_model": 16, "n_layers": 1, "n_heads": 2, "patch_len": 4,
          "dropout": 0.0}
BK = {"vocab_size": VOCAB, "d_model": 16, "n_layers": 1, "num_heads": 2, "dropout": 0.0}


@pytest.fixture(autouse=True, scope="module")
def _single_thread(torch_single_thread):
    """Tiny tensors: one torch thread."""


def atft_case():
    torch.manual_seed(0)
    model = create_model("atft_gat_fan", n_features=5, window=6, hidden=8, horizons=(1, 5), attn_heads=2,
                         gat_heads=2, gat_layers=1, use_fan=True, fan_top_k=2, use_san=True, san_slice_len=3,
                         dropout=0.0)
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(7, 6, 5, generator=g), "mask": torch.ones(7, 6, dtype=torch.bool),
             "edge_index": torch.randint(0, 7, (2, 12), generator=g), "edge_attr": torch.randn(12, 3, generator=g)}
    return model, batch


def stage1_inputs(timeframes=("m30", "h1"), seq_len=8):
    g = torch.Generator().manual_seed(2)
    return {tf: torch.randn(2, seq_len, 6, generator=g) for tf in timeframes}


def stage1_case(**overrides):
    torch.manual_seed(0)
    return create_model("stage1", **{**STAGE1, **overrides}), stage1_inputs()


def ids():
    return torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))


CASES = {
    "atft_gat_fan": atft_case,
    "stage1": lambda: stage1_case(),
    "stage1:bk_encoder": lambda: stage1_case(encoder="bk", fusion="separate"),
    "bk_phase1": lambda: (create_model("bk_phase1", **BK, tie_embeddings=True), ids()),
    "bk_phase2": lambda: (create_model("bk_phase2", **BK, head_dim=8, resonance_modes=4, chunk_size=4), ids()),
    "transformer_lm": lambda: (create_model("transformer_lm", vocab_size=VOCAB, d_model=16, n_layers=1, n_heads=2,
                                            dropout=0.0, tie_embeddings=True), ids()),
    "stage1_forecaster": lambda: (Stage1Forecaster(stage1_case()[0], freeze_encoder=True), stage1_inputs()),
}


def run(model, inputs):
    with torch.no_grad():
        return model(inputs)


def assert_same_outputs(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    else:
        assert torch.equal(a, b)


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def test_every_registered_model_is_covered_and_savable():
    assert {name.split(":")[0] for name in CASES} >= set(list_models())
    for name in list_models():
        assert issubclass(model_entry(name).model_cls, PretrainedMixin), name


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_gives_the_same_model(case, tmp_path):
    model, inputs = CASES[case]()
    model.eval()
    folder = model.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    saved = json.loads((folder / CONFIG_NAME).read_text())
    assert saved["model"] == case.split(":")[0] and saved["class"] == type(model).__name__
    assert saved["kizashi_version"] and saved["format"] == "kizashi-pretrained"

    loaded = type(model).from_pretrained(folder)
    assert type(loaded) is type(model) and not loaded.training
    config = loaded.backbone.config if case == "stage1_forecaster" else loaded.config
    assert config == (model.backbone.config if case == "stage1_forecaster" else model.config)
    assert_same_state(model, loaded)
    assert_same_outputs(run(model, inputs), run(loaded, inputs))
    # the module-level loader finds the class by itself
    anyway = load_pretrained_model(folder)
    assert type(anyway) is type(model)
    assert_same_outputs(run(model, inputs), run(anyway, inputs))


def test_forecaster_keeps_freeze_encoder_and_frozen_parts(tmp_path):
    model, _ = CASES["stage1_forecaster"]()
    loaded = Stage1Forecaster.from_pretrained(model.save_pretrained(tmp_path / "f"))
    assert loaded.freeze_encoder
    assert [n for n, p in loaded.named_parameters() if p.requires_grad] == \
        [n for n, p in model.named_parameters() if p.requires_grad]


@pytest.mark.parametrize("case", ["bk_phase1", "transformer_lm"])
def test_tied_weights_are_stored_once_and_stay_tied(case, tmp_path):
    model, _ = CASES[case]()
    folder = model.save_pretrained(tmp_path / "tied")
    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as handle:
        stored = set(handle.keys())
        aliases = json.loads(handle.metadata()["aliases"])
    head = "lm_head.weight" if case == "bk_phase1" else "head.weight"
    assert aliases == {head: "embed.weight"} and head not in stored
    loaded = type(model).from_pretrained(folder)
    assert loaded.get_parameter(head) is loaded.embed.weight
    # still tied after loading: a step on the shared tensor moves both names
    with torch.no_grad():
        loaded.embed.weight.add_(1.0)
    assert torch.equal(loaded.get_parameter(head), loaded.embed.weight)


def test_stage1_with_a_pretrained_lm_encoder(tmp_path):
    """The LM encoder is rebuilt from its config only; the weights come from the folder, and
    the saved config (lm_pretrained=True) is the loaded model's."""
    lm = save_tiny_lm(tmp_path / "bert", "bert", width=16, heads=2, vocab=32)
    model, inputs = stage1_case(encoder="lm", lm_name_or_path=lm, lm_layers=1)
    model.eval()
    loaded = Stage1Model.from_pretrained(model.save_pretrained(tmp_path / "s1"))
    assert loaded.config == model.config and loaded.config.lm_pretrained
    assert_same_state(model, loaded)
    assert_same_outputs(run(model, inputs), run(loaded, inputs))


def test_save_replaces_an_existing_folder_and_keeps_metadata(tmp_path):
    model, _ = CASES["bk_phase1"]()
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "stale.txt").write_text("old")
    model.save_pretrained(folder, metadata={"seq_len": 32, "note": ("a", "b")})
    assert not (folder / "stale.txt").exists()
    assert read_pretrained_config(folder)["metadata"] == {"seq_len": 32, "note": ["a", "b"]}


def test_missing_files_and_wrong_folders_are_clear_errors(tmp_path):
    model, _ = CASES["bk_phase1"]()
    folder = model.save_pretrained(tmp_path / "p1")
    with pytest.raises(PretrainedLoadError, match="no such pretrained model directory"):
        BKPhase1LM.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(PretrainedLoadError, match="holds a 'bk_phase1' model \\(BKPhase1LM\\), not a BKPhase2LM"):
        BKPhase2LM.from_pretrained(folder)
    with pytest.raises(PretrainedLoadError, match="not a TransformerLM"):
        TransformerLM.from_pretrained(folder)
    assert type(BKPhase1LM.__mro__[1].from_pretrained(folder)) is BKPhase1LM  # the shared base class accepts it

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / CONFIG_NAME).write_text((folder / CONFIG_NAME).read_text())
    with pytest.raises(PretrainedLoadError, match=f"{WEIGHTS_NAME}: missing"):
        load_pretrained_model(no_weights)

    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / WEIGHTS_NAME).write_bytes((folder / WEIGHTS_NAME).read_bytes())
    with pytest.raises(PretrainedLoadError, match=f"{CONFIG_NAME}: missing"):
        BKPhase1LM.from_pretrained(no_config)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / CONFIG_NAME).write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(PretrainedLoadError, match="not a kizashi pretrained config"):
        load_pretrained_model(foreign)

    unknown = json.loads((folder / CONFIG_NAME).read_text())
    unknown["model"] = "no_such_model"
    (no_weights / CONFIG_NAME).write_text(json.dumps(unknown))
    with pytest.raises(PretrainedLoadError, match="unknown model 'no_such_model'"):
        load_pretrained_model(no_weights)

    # a config that does not match the weights: the shapes are named
    resized = json.loads((folder / CONFIG_NAME).read_text())
    resized["config"]["d_model"] = 8
    (folder / CONFIG_NAME).write_text(json.dumps(resized))
    with pytest.raises(PretrainedLoadError, match=r"p1.model.safetensors: the weights do not fit BKPhase1LM: shape mismatch blocks.0.bk.coupling.weight \(2, 16\) vs \(2, 8\)"):
        BKPhase1LM.from_pretrained(folder)


def test_weights_of_another_model_are_refused_strictly(tmp_path):
    a, _ = CASES["atft_gat_fan"]()
    folder = a.save_pretrained(tmp_path / "a")
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["config"]["use_san"] = False  # the folder's weights have SAN parameters this model lacks
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(PretrainedLoadError, match="unexpected \\['san"):
        ATFTGATFAN.from_pretrained(folder)
