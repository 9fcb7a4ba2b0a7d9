"""`kizashi pretrain` end to end on a tiny synthetic market: the output directory (reports,
stats, metrics per epoch, the purge between training and validation windows, encoder that
reloads to the same outputs), a pretrained-LM run (tiny BERT from a temp dir) frozen for one
epoch then unfrozen, and config errors. `kizashi finetune`: a planted, predictable forward
return is learned (validation IC and MSE against the zero forecast) from a pretrained
encoder and from scratch; finer bars are resampled up to the encoder's base timeframe and
coarser ones refused."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import PretrainConfig, config_from_dict
from kizashi.errors import ConfigError
from kizashi.training.transfer import load_pretrained
from kizashi.jobs.pretrain import run_pretraining

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
    stats = json.loads((out / "stats.json").read_text())
    assert stats["timeframes"].keys() == {"m15", "h1", "h4"}
    # the purge: one h4 label horizon + the longest window (16 h4 bars + the one in progress)
    for recorded in (summary, stats):
        assert recorded["label_horizon_minutes"] == 240 and recorded["longest_window_minutes"] == 17 * 240
        assert recorded["purge_minutes"] == 18 * 240 and recorded["label_timeframe"] == "h4"
        gap = np.datetime64(recorded["val_start"]) - np.datetime64(recorded["train_end"])
        assert gap == np.timedelta64(18 * 240, "m")
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


def test_pretrain_and_finetune_write_pretrained_folders_without_logging_interval_warnings(tmp_path,
                                                                                         torch_single_thread):
    """pretrain's model/ is encoder.pt's model (same weights, same outputs, the window
    statistics in its metadata); finetune's model/ is the forecaster (a linear probe here, so
    its encoder is exactly the pretrained one) with its label scale; with a TensorBoard
    logger and epochs of fewer than 50 batches, Lightning does not warn about the logging
    interval."""
    import math
    import warnings

    from kizashi.jobs.finetune import run_finetune
    from kizashi.models import Stage1Forecaster, Stage1Model, read_pretrained_config

    config = config_from_dict(PretrainConfig, {**TINY, "trainer": {**TINY["trainer"], "max_epochs": 1,
                                                                   "logger": "tensorboard"}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pre = run_pretraining(config, tmp_path / "pre")
        tuned = run_finetune(config, tmp_path / "pre" / "encoder.pt", tmp_path / "ft", epochs=1, freeze_encoder=True)
    assert math.ceil(pre.summary["n_train_windows"] / TINY["trainer"]["batch_size"]) < 50  # Lightning's default
    assert [str(w.message) for w in caught if "logging interval" in str(w.message)] == []

    encoder, payload = load_pretrained(tmp_path / "pre" / "encoder.pt")
    model = Stage1Model.from_pretrained(tmp_path / "pre" / "model")
    assert model.config == encoder.config
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in encoder.state_dict().items())
    metadata = read_pretrained_config(tmp_path / "pre" / "model")["metadata"]
    assert metadata["stats"] == json.loads(json.dumps(payload["stats"])) and metadata["timeframes"] == payload["timeframes"]
    x = {tf: torch.randn(2, 16, 6) for tf in payload["timeframes"]}
    encoder.eval()
    with torch.no_grad():
        assert all(torch.equal(encoder(x)[tf], model(x)[tf]) for tf in x)

    forecaster = Stage1Forecaster.from_pretrained(tmp_path / "ft" / "model")
    assert forecaster.freeze_encoder
    assert all(torch.equal(v, forecaster.backbone.state_dict()[k]) for k, v in encoder.state_dict().items())
    metadata = read_pretrained_config(tmp_path / "ft" / "model")["metadata"]
    assert metadata["label_scale"] == tuned.label_scale and metadata["best_epoch"] == tuned.best_epoch == 1
    with torch.no_grad():
        assert forecaster(x).shape == (2,)


def planted_trend_bars(directory, n_days: int = 30, seed: int = 0) -> list[str]:
    """Two symbols of m15 bars whose log returns carry a slow sinusoidal drift (period 2.5
    days, amplitude 0.0015 a bar, noise 0.002 a bar): the next h4 return is predictable from
    the last h4 bars (a planted, learnable signal), written as Parquet files."""
    rng = np.random.default_rng(seed)
    n = n_days * 96
    times = np.datetime64("2021-01-04T00:00", "us") + np.arange(n) * np.timedelta64(15, "m")
    paths = []
    for symbol in ("TREND_A", "TREND_B"):
        drift = 0.0015 * np.sin(2 * np.pi * np.arange(n) / (2.5 * 96) + rng.uniform(0, 2 * np.pi))
        close = 100 * np.exp(np.cumsum(drift + 0.002 * rng.standard_normal(n)))
        open_ = np.concatenate([[100.0], close[:-1]])
        wiggle = 0.002 * np.abs(rng.standard_normal((2, n)))
        frame = pl.DataFrame({"timestamp": times, "open": open_, "high": np.maximum(open_, close) * np.exp(wiggle[0]),
                              "low": np.minimum(open_, close) * np.exp(-wiggle[1]), "close": close,
                              "volume": rng.integers(100, 1000, n).astype(float)})
        path = directory / f"{symbol}.parquet"
        frame.write_parquet(path)
        paths.append(str(path))
    return paths


def test_finetune_learns_a_planted_forward_return_pretrained_and_from_scratch(tmp_path, torch_single_thread):
    """With a predictable label, both starts must beat the zero forecast clearly and rank the
    validation windows well; a broken label, head or training loop cannot."""
    from kizashi.jobs.finetune import run_finetune

    config = config_from_dict(PretrainConfig, {**TINY, "data": {"paths": planted_trend_bars(tmp_path)}})
    run_pretraining(config, tmp_path / "pre")
    pretrained_model, _ = load_pretrained(tmp_path / "pre" / "encoder.pt")
    results = {}
    for name, encoder in (("pretrained", tmp_path / "pre" / "encoder.pt"), ("scratch", None)):
        results[name] = run_finetune(config, encoder, tmp_path / name, epochs=2)
        rows = results[name].metrics
        assert [r["epoch"] for r in rows] == [1, 2]
        last = rows[-1]
        assert last["val_labels"] >= 50
        assert last["val_ic"] > 0.5 and last["val_rank_ic"] > 0.5, (name, last)
        assert last["val_mse"] < 0.6 * last["val_zero_mse"], (name, last)
        assert (tmp_path / name / "finetune_metrics.csv").is_file()
        predictions = pl.read_parquet(tmp_path / name / "predictions.parquet")
        assert predictions.height == last["val_labels"] + predictions["forward_return"].is_nan().sum()
        best = rows[results[name].best_epoch - 1]  # the saved predictions are the selected epoch's
        known = predictions.filter(pl.col("forward_return").is_finite())
        ic = np.corrcoef(known["prediction"], known["forward_return"])[0, 1]
        assert ic == pytest.approx(best["val_ic"], abs=1e-4)
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


def test_finetune_resamples_finer_bars_to_the_encoder_base_and_refuses_coarser(tmp_path, torch_single_thread, caplog):
    """An encoder pretrained on m30 bars reads m15 and m5 bars resampled up to m30 (logged,
    the same windows as m30 bars); bars coarser than the encoder's base are a clear error."""
    from kizashi.jobs.finetune import run_finetune

    def synthetic(timeframe):
        return {"symbols": ["A", "B"], "timeframe": timeframe, "n_days": 30, "seed": 1}

    m30 = {**TINY, "data": {"synthetic": synthetic("m30")}, "timeframes": ["m30", "h1", "h4"],
           "trainer": {**TINY["trainer"], "max_epochs": 1}}
    run_pretraining(config_from_dict(PretrainConfig, m30), tmp_path / "m30")
    encoder = tmp_path / "m30" / "encoder.pt"
    native = run_finetune(config_from_dict(PretrainConfig, m30), encoder, tmp_path / "native", epochs=1)
    for finer in ("m15", "m5"):
        config = config_from_dict(PretrainConfig, {**m30, "data": {"synthetic": synthetic(finer)}, "timeframes": None})
        with caplog.at_level(logging.INFO, logger="kizashi.jobs.pretrain"):
            tuned = run_finetune(config, encoder, tmp_path / finer, epochs=1)
        assert f"base timeframe {finer} resampled up to m30" in caplog.text
        assert tuned.summary["base_timeframe"] == "m30" and tuned.summary["timeframes"] == ["m30", "h1", "h4"]
        assert tuned.summary["n_train_windows"] == native.summary["n_train_windows"]
        assert tuned.metrics[0]["val_labels"] == native.metrics[0]["val_labels"] > 0
    yaml_path = tmp_path / "m15.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump({**m30, "data": {"synthetic": synthetic("m15")}, "timeframes": None}))
    done = CliRunner().invoke(app, ["finetune", "--encoder", str(encoder), "--epochs", "1", "--out",
                                    str(tmp_path / "cli"), "--config", str(yaml_path)])
    assert done.exit_code == 0, done.output
    coarser = config_from_dict(PretrainConfig, {**m30, "data": {"synthetic": synthetic("h1")}, "timeframes": None})
    with pytest.raises(ConfigError, match="base timeframe is h1, which cannot be resampled to the required base m30"):
        run_finetune(coarser, encoder, tmp_path / "h1", epochs=1)


def _config_args(tmp_path) -> list[str]:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return ["--config", str(path)]


def test_pretrain_and_finetune_with_async_windows(tmp_path, torch_single_thread):
    """windows.mode async: per-timeframe lengths and strides from the YAML keys, separate
    fusion, no consistency term; the encoder fine-tunes with its own lengths."""
    from kizashi.jobs.finetune import run_finetune

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
    row = tuned.metrics[0]
    assert tuned.pretrained and row["val_labels"] > 0
    # every finite label of the validation windows is scored, and the forecasts are of the labels' size
    predictions = pl.read_parquet(tmp_path / "ft" / "predictions.parquet")
    assert row["val_labels"] == predictions["forward_return"].is_finite().sum() == tuned.summary["n_val_windows"] - \
        predictions["forward_return"].is_nan().sum()
    assert 0 < row["val_mse"] < 2 * row["val_zero_mse"]

    with pytest.raises(ConfigError, match="fusion: separate"):
        run_pretraining(config_from_dict(PretrainConfig, {**raw, "model": TINY["model"]}), tmp_path / "bad")
    with pytest.raises(ConfigError, match="mode: async"):
        config_from_dict(PretrainConfig, {**TINY, "windows": {**TINY["windows"], "seq_lens": {"h1": 8}}})
    with pytest.raises(ConfigError, match="synchronized needs mode: aligned"):
        config_from_dict(PretrainConfig, {**raw, "windows": {**raw["windows"], "mask": {"synchronized": True}}})


def test_lm_weights_random_builds_the_same_architecture_untrained(tiny_bert_dir):
    from transformers import BertModel

    from kizashi.training.transfer import build_stage1_model

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
