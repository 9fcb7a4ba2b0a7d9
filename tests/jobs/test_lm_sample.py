"""`kizashi lm sample` (jobs.lm.sample_text) on a tiny LM trained for a few steps: the text is
the prompt followed by N alphabet characters, the same seed gives the same text, greedy
decoding (temperature 0 or top_k 1) equals an argmax loop computed here from the saved
model; the run's model/ folder reloads; clear errors for characters outside the alphabet
and for missing run files; an older run without model/ samples from best.ckpt."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from kizashi.config import LMTrainConfig, config_from_dict
from kizashi.datasets.text import Tokenizer
from kizashi.errors import KizashiError
from kizashi.jobs.lm import run_lm_training, sample_text
from kizashi.models import TransformerLM, load_pretrained_model, read_pretrained_config


def make_text(n_words: int = 1500, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    return " ".join(rng.choices(words, k=n_words)) + "\n"


SEQ_LEN = 16


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, torch_single_thread):
    root = tmp_path_factory.mktemp("lm_sample")
    text = root / "tiny.txt"
    text.write_text(make_text(), encoding="utf-8")
    config = config_from_dict(LMTrainConfig, {
        "data": {"text": str(text), "tokenizer": "char", "val_fraction": 0.1},
        "seq_len": SEQ_LEN,
        "model": {"name": "transformer_lm", "preset": None,
                  "overrides": {"d_model": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.0}},
        "optimizer": {"lr": 3e-3, "weight_decay": 0.0, "warmup_steps": 2},
        # two short epochs, each validated inside fit (best.ckpt), then a final step count
        "trainer": {"max_epochs": 2, "limit_train_batches": 3, "batch_size": 16, "accelerator": "cpu",
                    "logger": "none"},
    })
    run_lm_training(config, root / "run")
    return root / "run"


def greedy_reference(run_dir, prompt: str, n: int) -> str:
    """Argmax decoding written out here, from the saved model folder and tokenizer."""
    tokenizer = Tokenizer.load(run_dir / "tokenizer.json")
    model = load_pretrained_model(run_dir / "model").eval()
    ids = list(tokenizer.encode(prompt))
    with torch.no_grad():
        for _ in range(n):
            window = torch.tensor([ids[-SEQ_LEN:]])
            ids.append(int(model(window)[0, -1].argmax()))
    return tokenizer.decode(ids)


def test_run_writes_a_model_folder_next_to_the_tokenizer(run_dir):
    assert (run_dir / "tokenizer.json").is_file()
    config = read_pretrained_config(run_dir / "model")
    summary = json.loads((run_dir / "lm.json").read_text())
    assert config["model"] == "transformer_lm" and config["metadata"]["seq_len"] == SEQ_LEN
    assert config["metadata"]["step"] == summary["model_step"] == summary["best_step"]
    assert config["metadata"]["val_loss"] == summary["best_val_loss"]
    model = TransformerLM.from_pretrained(run_dir / "model")
    assert model.config.vocab_size == summary["vocab_size"] and model.config.n_seq == SEQ_LEN


def test_sample_starts_with_the_prompt_and_is_deterministic(run_dir):
    alphabet = Tokenizer.load(run_dir / "tokenizer.json").alphabet
    prompt, n = "the cat ", 40
    text = sample_text(run_dir, prompt, n, temperature=1.0, seed=7)
    assert text.startswith(prompt) and len(text) == len(prompt) + n
    assert set(text) <= set(alphabet)
    assert sample_text(run_dir, prompt, n, temperature=1.0, seed=7) == text
    others = {sample_text(run_dir, prompt, n, temperature=1.0, seed=s) for s in range(1, 4)}
    assert others - {text}, "other seeds give other texts"
    top3 = sample_text(run_dir, prompt, n, temperature=0.8, top_k=3, seed=7)
    assert top3.startswith(prompt) and len(top3) == len(prompt) + n and set(top3) <= set(alphabet)
    assert sample_text(run_dir, prompt, 0) == prompt


def test_greedy_equals_the_argmax_loop(run_dir):
    prompt, n = "a dog ran ", 30  # the prompt + n > SEQ_LEN, so the context is cropped
    expected = greedy_reference(run_dir, prompt, n)
    assert sample_text(run_dir, prompt, n, temperature=0.0) == expected
    assert sample_text(run_dir, prompt, n, top_k=1, seed=123) == expected


def test_errors_name_the_problem(run_dir, tmp_path):
    with pytest.raises(KizashiError, match=r"prompt characters \['Q', 'Z'\] are not in the tokenizer's alphabet"):
        sample_text(run_dir, "the QZ cat", 5)
    with pytest.raises(KizashiError, match="prompt is empty"):
        sample_text(run_dir, "", 5)
    with pytest.raises(KizashiError, match="temperature"):
        sample_text(run_dir, "the", 5, temperature=-1.0)
    with pytest.raises(KizashiError, match="top_k"):
        sample_text(run_dir, "the", 5, top_k=0)
    with pytest.raises(KizashiError, match="no such LM run directory"):
        sample_text(tmp_path / "nowhere", "the", 5)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KizashiError, match="tokenizer.json: missing"):
        sample_text(empty, "the", 5)
    shutil.copy(run_dir / "tokenizer.json", empty / "tokenizer.json")
    with pytest.raises(KizashiError, match="no trained model in the run directory"):
        sample_text(empty, "the", 5)


def test_an_older_run_without_model_folder_samples_from_its_checkpoint(run_dir, tmp_path):
    """model/ holds the best validation's weights; so does best.ckpt (the best row here is
    the last step, validated inside fit), and, without best.ckpt, last.ckpt."""
    summary = json.loads((run_dir / "lm.json").read_text())
    assert summary["best_step"] == summary["steps"] == 6 and (run_dir / "checkpoints" / "best.ckpt").is_file()
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    shutil.rmtree(old / "model")
    expected = greedy_reference(run_dir, "the ", 12)
    assert sample_text(old, "the ", 12, temperature=0.0) == expected
    (old / "checkpoints" / "best.ckpt").unlink()
    assert sample_text(old, "the ", 12, temperature=0.0) == expected


@pytest.mark.parametrize("lr, best_step", [(0.02, 5), (0.3, 3)])
def test_model_folder_holds_the_best_validations_weights(tmp_path, torch_single_thread, lr, best_step):
    """One validation inside fit at step 3 (best.ckpt), then max_steps=5 ends training between
    validations and the job validates the final weights after fit (never in best.ckpt). With a
    small learning rate step 5 scores best (model/ = the weights in memory = last.ckpt's), with
    a large one step 3 does (model/ = best.ckpt's)."""
    text = tmp_path / "t.txt"
    text.write_text(make_text(1500), encoding="utf-8")
    config = config_from_dict(LMTrainConfig, {
        "data": {"text": str(text), "tokenizer": "char", "val_fraction": 0.1}, "seq_len": SEQ_LEN,
        "model": {"name": "transformer_lm", "preset": None,
                  "overrides": {"d_model": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.0}},
        "optimizer": {"lr": lr, "weight_decay": 0.0, "warmup_steps": 5},
        "trainer": {"max_epochs": 2, "limit_train_batches": 3, "max_steps": 5, "batch_size": 16,
                    "accelerator": "cpu", "logger": "none"},
    })
    result = run_lm_training(config, tmp_path / "run")
    assert [r["step"] for r in result.metrics] == [3, 5]
    assert result.summary["best_step"] == result.summary["model_step"] == best_step
    checkpoint = tmp_path / "run" / "checkpoints" / ("best.ckpt" if best_step == 3 else "last.ckpt")
    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert payload["global_step"] == best_step
    expected = {k.removeprefix("model."): v for k, v in payload["state_dict"].items()}
    saved = TransformerLM.from_pretrained(tmp_path / "run" / "model").state_dict()
    assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in saved)
    assert read_pretrained_config(tmp_path / "run" / "model")["metadata"]["step"] == best_step


def test_the_cli_prints_the_greedy_text(run_dir):
    from typer.testing import CliRunner

    from kizashi.cli import app

    result = CliRunner().invoke(app, ["lm", "sample", str(run_dir), "--prompt", "the cat", "--tokens", "12",
                                      "--temperature", "0"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == greedy_reference(run_dir, "the cat", 12).strip()
    result = CliRunner().invoke(app, ["lm", "sample", str(run_dir), "--prompt", "QZ"])
    assert result.exit_code == 1 and "Q" in result.output
