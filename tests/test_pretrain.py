"""`kizashi pretrain` end to end on a tiny synthetic market: the output directory (reports,
stats, metrics per epoch, encoder that reloads to the same outputs), a pretrained-LM run
(tiny BERT from a temp dir) frozen for one epoch then unfrozen, and config errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import PretrainConfig, config_from_dict
from kizashi.errors import ConfigError
from kizashi.training.pretrain import load_pretrained, run_pretraining

TINY = {
    "data": {"synthetic": {"symbols": ["A", "B"], "timeframe": "m15", "n_days": 30, "seed": 1}},
    "timeframes": ["m15", "h1", "h4"],
    "windows": {"seq_len": 16, "anchor_stride": 8, "val_anchor_stride": 8, "stats_windows": 100},
    "model": {"name": "stage1", "preset": "small", "overrides": {"d_model": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.0}},
    "trainer": {"max_epochs": 2, "batch_size": 16, "accelerator": "cpu", "logger": "none"},
}


def test_pretrain_writes_a_complete_output_directory(tmp_path, torch_single_thread):
    config = config_from_dict(PretrainConfig, TINY)
    result = run_pretraining(config, tmp_path / "run")
    out = result.out_dir
    for name in ("bars_report.json", "stats.json", "metrics.csv", "encoder.pt", "pretrain.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        for key in ("train_loss", "val_reconstruction", "val_masked_corr", "val_consistency"):
            assert float(row[key]) == float(row[key]), key  # finite, not NaN: this epoch's values
        assert float(row["val_consistency"]) > 0  # the term is on the reconstruction's scale
    summary = json.loads((out / "pretrain.json").read_text())
    assert summary["timeframes"] == ["m15", "h1", "h4"] and summary["parameters"] > 0
    assert json.loads((out / "stats.json").read_text())["timeframes"].keys() == {"m15", "h1", "h4"}
    model, payload = load_pretrained(out / "encoder.pt")
    assert payload["timeframes"] == ["m15", "h1", "h4"]
    x = {tf: torch.randn(2, 16, 6) for tf in payload["timeframes"]}
    model.eval()
    with torch.no_grad():
        again, _ = load_pretrained(out / "encoder.pt")
        again.eval()
        assert all(torch.equal(model(x)[tf], again(x)[tf]) for tf in x)


def test_pretrain_with_a_pretrained_lm_frozen_then_unfrozen(tmp_path, tiny_bert_dir, torch_single_thread):
    raw = {**TINY, "transfer_learning": {"use_pretrained_lm": True, "lm_name_or_path": tiny_bert_dir,
                                         "freeze_lm_epochs": 1, "patch_len": 4, "lm_learning_rate_factor": 0.1}}
    result = run_pretraining(config_from_dict(PretrainConfig, raw), tmp_path / "run")
    assert [row["lm_frozen_fraction"] for row in result.metrics] == [1.0, 0.0]
    assert result.summary["encoder"] == "stage1:lm"


def test_cli_pretrain_and_config_errors(tmp_path, torch_single_thread):
    import yaml

    path = tmp_path / "stage1.yaml"
    path.write_text(yaml.safe_dump({**TINY, "trainer": {**TINY["trainer"], "max_epochs": 1}}))
    done = CliRunner().invoke(app, ["pretrain", "--config", str(path), "--out", str(tmp_path / "cli"), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output.strip().splitlines()[-1])["metrics"][0]["epoch"] == 1
    with pytest.raises(ConfigError, match="finest must be the data's base timeframe"):
        run_pretraining(config_from_dict(PretrainConfig, {**TINY, "timeframes": ["h1", "h4"]}), tmp_path / "bad")
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict(PretrainConfig, {**TINY, "transfer_learning": {"freeze_epochs": 3}})


def test_finetune_from_the_pretrained_encoder_and_from_scratch(tmp_path, torch_single_thread):
    from kizashi.training.finetune import run_finetune

    config = config_from_dict(PretrainConfig, TINY)
    run_pretraining(config, tmp_path / "pre")
    pretrained_model, _ = load_pretrained(tmp_path / "pre" / "encoder.pt")
    results = {}
    for name, encoder in (("pretrained", tmp_path / "pre" / "encoder.pt"), ("scratch", None)):
        results[name] = run_finetune(config, encoder, tmp_path / name, epochs=2)
        rows = results[name].metrics
        assert [r["epoch"] for r in rows] == [1, 2]
        assert all(r["val_mse"] == r["val_mse"] and -1 <= r["val_ic"] <= 1 for r in rows)
        assert (tmp_path / name / "finetune_metrics.csv").is_file()
    assert results["pretrained"].pretrained and not results["scratch"].pretrained
    # a linear probe leaves the pretrained encoder exactly as saved
    from kizashi.models.stage1 import Stage1Forecaster

    probe = Stage1Forecaster(pretrained_model, freeze_encoder=True)
    assert not any(p.requires_grad for p in probe.backbone.parameters())
    assert all(p.requires_grad for p in probe.head.parameters())
    done = CliRunner().invoke(app, ["finetune", "--encoder", str(tmp_path / "pre" / "encoder.pt"), "--epochs", "1",
                                    "--out", str(tmp_path / "cli")] + _config_args(tmp_path))
    assert done.exit_code == 0, done.output
    assert "pretrained encoder" in done.output


def _config_args(tmp_path) -> list[str]:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return ["--config", str(path)]


def test_pretrain_and_finetune_with_async_windows(tmp_path, torch_single_thread):
    """windows.mode async: per-timeframe lengths and strides from the YAML keys, separate
    fusion, no consistency term; the encoder fine-tunes with its own lengths."""
    from kizashi.training.finetune import run_finetune

    raw = {**TINY,
           "windows": {"mode": "async", "seq_len": 16, "seq_lens": {"h1": 8, "h4": 8}, "strides": {"m15": 8, "h1": 4},
                       "anchor_stride": 2, "val_anchor_stride": 4, "stats_windows": 100},
           "model": {**TINY["model"], "overrides": {**TINY["model"]["overrides"], "fusion": "separate"}},
           "trainer": {**TINY["trainer"], "max_epochs": 1}}
    config = config_from_dict(PretrainConfig, raw)
    result = run_pretraining(config, tmp_path / "run")
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["window_mode"] == "async" and stats["seq_lens"] == {"m15": 16, "h1": 8, "h4": 8}
    assert stats["strides"] == {"m15": 8, "h1": 4, "h4": 2}
    row = result.metrics[0]
    assert row["val_consistency"] == 0.0 and row["val_reconstruction"] > 0 and row["train_loss"] == row["train_loss"]
    model, _ = load_pretrained(tmp_path / "run" / "encoder.pt")
    assert model.config.lengths == {"m15": 16, "h1": 8, "h4": 8}
    tuned = run_finetune(config, tmp_path / "run" / "encoder.pt", tmp_path / "ft", epochs=1)
    assert tuned.pretrained and tuned.metrics[0]["val_mse"] > 0

    with pytest.raises(ConfigError, match="fusion: separate"):
        run_pretraining(config_from_dict(PretrainConfig, {**raw, "model": TINY["model"]}), tmp_path / "bad")
    with pytest.raises(ConfigError, match="mode: async"):
        config_from_dict(PretrainConfig, {**TINY, "windows": {**TINY["windows"], "seq_lens": {"h1": 8}}})
    with pytest.raises(ConfigError, match="synchronized needs mode: aligned"):
        config_from_dict(PretrainConfig, {**raw, "windows": {**raw["windows"], "mask": {"synchronized": True}}})


def test_lm_weights_random_builds_the_same_architecture_untrained(tiny_bert_dir):
    from transformers import BertModel

    from kizashi.training.pretrain import build_stage1_model

    lm = {"use_pretrained_lm": True, "lm_name_or_path": tiny_bert_dir, "patch_len": 4}
    models = {weights: build_stage1_model(config_from_dict(PretrainConfig, {
        **TINY, "transfer_learning": {**lm, "lm_weights": weights}}), ["m15", "h1", "h4"])
        for weights in ("pretrained", "random")}
    saved = BertModel.from_pretrained(tiny_bert_dir).state_dict()
    key = "encoder.layer.0.attention.self.query.weight"
    lm_state = {w: m.encoder.lm.state_dict() for w, m in models.items()}
    assert torch.equal(lm_state["pretrained"][key], saved[key])
    assert not torch.equal(lm_state["random"][key], saved[key])
    assert models["pretrained"].parameter_breakdown() == models["random"].parameter_breakdown()


def test_pretrain_with_the_bk_encoder(tmp_path, torch_single_thread):
    """`model.overrides.encoder: bk`: the BK-Core stack as the shared encoder, end to end."""
    raw = {**TINY, "model": {**TINY["model"], "overrides": {**TINY["model"]["overrides"], "encoder": "bk"}},
           "trainer": {**TINY["trainer"], "max_epochs": 1}}
    result = run_pretraining(config_from_dict(PretrainConfig, raw), tmp_path / "bk")
    row = result.metrics[0]
    assert all(row[k] == row[k] and row[k] > 0 for k in ("train_loss", "val_reconstruction", "val_consistency"))
    model, _ = load_pretrained(tmp_path / "bk" / "encoder.pt")
    assert type(model.encoder).__name__ == "BKSequenceEncoder"
