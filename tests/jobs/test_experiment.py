"""`kizashi experiment`: the three LM-transfer settings on a tiny synthetic market with a
tiny BERT saved to a temp dir. Checks the report's contents against each setting's own
metrics, the frozen fractions, same-data enforcement, resume (finished settings are not
retrained), --only and --force, and the CLI."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from typer.testing import CliRunner

from kizashi.cli import app
from kizashi.config import ExperimentConfig, config_from_dict
from kizashi.errors import ConfigError
from kizashi.evaluation.pretrain_run import SettingRun
from kizashi.jobs.experiment import run_experiment as run_experiment_job
from kizashi.jobs.pretrain import run_pretraining
from test_pretrain import TINY  # tests/ is on sys.path (rootdir conftest)

BASE = {**TINY, "trainer": {**TINY["trainer"], "max_epochs": 3}}

@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_dir):
    return tiny_bert_dir


def _experiment(tmp_path, bert) -> dict:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(BASE))
    lm = {"use_pretrained_lm": True, "lm_name_or_path": str(bert), "patch_len": 4, "lm_learning_rate_factor": 0.1}
    return {
        "base": str(base),
        "settings": {
            "random_init": {"transfer_learning": {"use_pretrained_lm": False}},
            "pretrained_frozen": {"transfer_learning": {**lm, "freeze_lm_epochs": 2}},
            "pretrained_unfrozen": {"transfer_learning": {**lm, "freeze_lm_epochs": 0}},
        },
        "report": {"epochs": [1, 2]},
        "output": {"dir": str(tmp_path / "exp")},
    }


def test_experiment_runs_every_setting_and_reports_their_own_numbers(tmp_path, tiny_bert, torch_single_thread,
                                                                     monkeypatch):
    config = config_from_dict(ExperimentConfig, _experiment(tmp_path, tiny_bert))
    result = run_experiment(config)
    out = result.out_dir
    report = json.loads((out / "report.json").read_text())
    assert list(report["settings"]) == ["random_init", "pretrained_frozen", "pretrained_unfrozen"]
    assert report["reference"] == "random_init"
    for name, s in report["settings"].items():
        run = SettingRun.read(out / name)
        assert s["epochs_run"] == 3 and [r["epoch"] for r in run.metrics] == [1, 2, 3]
        for epoch in (1, 2):
            assert s["val_reconstruction"][str(epoch)] == run.metrics[epoch - 1]["val_reconstruction"]
            assert s["val_masked_corr"][str(epoch)] == run.metrics[epoch - 1]["val_masked_corr"]
        assert s["last_val_reconstruction"] == run.metrics[-1]["val_reconstruction"]
        assert s["fit_seconds"] > 0 and s["peak_memory_gib"] > 0
        assert s["seconds_per_epoch"] == pytest.approx(sum(r["epoch_seconds"] for r in run.metrics) / 3)
    # same seed and data: identical window counts
    assert len({(s["n_train_windows"], s["n_val_windows"]) for s in report["settings"].values()}) == 1
    frozen, unfrozen, random_init = (report["settings"][k] for k in ("pretrained_frozen", "pretrained_unfrozen",
                                                                       "random_init"))
    assert frozen["lm_parameters"] > 0 and frozen["lm_parameters"] == unfrozen["lm_parameters"]
    assert random_init["lm_parameters"] == 0
    assert [r["lm_frozen_fraction"] for r in SettingRun.read(out / "pretrained_frozen").metrics] == [1.0, 1.0, 0.0]
    assert (unfrozen["lm_frozen_fraction_first"], unfrozen["lm_frozen_fraction_last"]) == (0.0, 0.0)
    # the reference reaches its own best at its best epoch
    assert random_init["epoch_reaching_reference_best"] == random_init["best_epoch"]
    reference_best = min(r["val_reconstruction"] for r in SettingRun.read(out / "random_init").metrics)
    assert report["reference_best"] == reference_best
    for name in ("pretrained_frozen", "pretrained_unfrozen"):
        reached = report["settings"][name]["epoch_reaching_reference_best"]
        rows = SettingRun.read(out / name).metrics
        expected = next((r["epoch"] for r in rows if r["val_reconstruction"] <= reference_best), None)
        assert reached == expected
    for plot in report["plots"]:
        assert (out / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    assert "| pretrained_frozen |" in markdown and "epoch 2" in markdown and "## Findings" in markdown
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert len(rows) == 9 and {r["setting"] for r in rows} == set(report["settings"])

    # resume: finished settings are reused, not retrained
    def no_training(*args, **kwargs):
        raise AssertionError("a finished setting was retrained")

    again = run_experiment(config, pretrain=no_training)
    assert again.report["settings"] == report["settings"]


def test_only_and_force(tmp_path, tiny_bert, torch_single_thread, monkeypatch):
    raw = _experiment(tmp_path, tiny_bert)
    raw["settings"] = {k: raw["settings"][k] for k in ("random_init", "pretrained_unfrozen")}
    config = config_from_dict(ExperimentConfig, raw)
    first = run_experiment(config, only=["pretrained_unfrozen"])
    assert list(first.runs) == ["pretrained_unfrozen"] and first.report["missing"] == ["random_init"]
    assert first.report["findings"] == []  # no reference run: no comparison claimed
    assert "Not run yet: random_init" in (first.out_dir / "report.md").read_text()
    with pytest.raises(ConfigError, match="not settings"):
        run_experiment(config, only=["nope"])

    calls = []
    def counted(c, out_dir):
        calls.append(out_dir)
        return run_pretraining(c, out_dir=out_dir)

    run_experiment(config, only=["random_init"], pretrain=counted)
    assert [p.name for p in calls] == ["random_init"]
    run_experiment(config, only=["random_init"], force=True, pretrain=counted)
    assert [p.name for p in calls] == ["random_init", "random_init"]


def test_settings_must_share_seed_and_data(tmp_path, tiny_bert):
    raw = _experiment(tmp_path, tiny_bert)
    raw["settings"]["random_init"]["seed"] = 5
    with pytest.raises(ConfigError, match="changes 'seed'"):
        config_from_dict(ExperimentConfig, raw).setting_configs()
    raw = _experiment(tmp_path, tiny_bert)
    raw["settings"]["pretrained_frozen"]["windows"] = {"seq_len": 32}
    with pytest.raises(ConfigError, match="changes 'windows'"):
        config_from_dict(ExperimentConfig, raw).setting_configs()
    raw = _experiment(tmp_path, tiny_bert)
    raw["settings"]["pretrained_frozen"]["transfer_learning"]["freeze_epochs"] = 3
    with pytest.raises(ConfigError, match="(?s)settings.pretrained_frozen.*freeze_epochs`: unknown key"):
        config_from_dict(ExperimentConfig, raw).setting_configs()
    with pytest.raises(ConfigError, match="report.reference"):
        config_from_dict(ExperimentConfig, {**_experiment(tmp_path, tiny_bert), "report": {"reference": "x"}})
    with pytest.raises(ConfigError, match="settings"):
        config_from_dict(ExperimentConfig, {"settings": {"only_one": {}}})


def test_cli_experiment(tmp_path, tiny_bert, torch_single_thread):
    raw = _experiment(tmp_path, tiny_bert)
    raw["settings"] = {k: raw["settings"][k] for k in ("random_init", "pretrained_frozen")}
    raw["overrides"] = {"trainer": {"max_epochs": 1}}
    raw["report"] = {"epochs": [1]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = CliRunner().invoke(app, ["experiment", str(path), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output.strip().splitlines()[-1])["report"]
    assert set(report["settings"]) == {"random_init", "pretrained_frozen"}
    table = CliRunner().invoke(app, ["experiment", str(path)])  # resumes, prints the table
    assert table.exit_code == 0, table.output
    assert "random_init" in table.output and "report:" in table.output


def run_experiment(config, *, pretrain=run_pretraining, **kwargs):
    """The experiment job with the real pretraining job (as the CLI runs it) by default."""
    return run_experiment_job(config, pretrain=pretrain, **kwargs)
