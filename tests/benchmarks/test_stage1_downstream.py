"""benchmarks/stage1_downstream.py at a tiny size on synthetic bars (so it never rots): the
pretraining and held-out instruments are disjoint, every setting is scored on the same purged
test windows with the same label, the selections come from the validation windows, and the
report's weekly rank IC figures are what the saved predictions give."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "stage1_downstream.py"


@pytest.fixture(scope="module")
def downstream():
    spec = importlib.util.spec_from_file_location("stage1_downstream", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def run(downstream, tmp_path_factory, torch_single_thread):
    out = tmp_path_factory.mktemp("downstream")
    report = downstream.main(["--out", str(out), "--synthetic", "--tiny", "--device", "cpu"])
    return out, report


def test_report_files_and_disjoint_instruments(run):
    out, report = run
    assert json.loads((out / "report.json").read_text()) == report
    text = (out / "report.md").read_text()
    assert "pretrained" in text and "ridge" in text and "Test (never used for a choice)" in text
    pretrained_on = json.loads((out / "pretrain" / "pretrain.json").read_text())["symbols"]
    assert set(pretrained_on) == set(report["pretrain_instruments"]) == {"SYN_P1", "SYN_P2"}
    assert not set(pretrained_on) & set(report["held_out_instruments"])
    tuned = json.loads((out / "finetune_pretrained" / "finetune.json").read_text())
    assert tuned["base_timeframe"] == "m30"  # the m15 "stocks" were resampled up to the encoder's base


def test_every_setting_is_scored_on_the_same_purged_windows(run, downstream):
    out, report = run
    frame = pl.read_parquet(out / "predictions.parquet")
    assert sorted(frame["setting"].unique()) == sorted(downstream.SETTINGS)
    keys = ["split", "symbol", "anchor_time", "forward_return"]
    reference = frame.filter(pl.col("setting") == "pretrained").select(keys).sort(keys[:3])
    for setting in downstream.SETTINGS:
        assert frame.filter(pl.col("setting") == setting).select(keys).sort(keys[:3]).equals(reference), setting
    split = report["split"]
    val_end, test_start = np.datetime64(split["val_end"]), np.datetime64(split["test_start"])
    assert test_start - val_end == np.timedelta64(split["purge_minutes"], "m")
    anchors = {name: reference.filter(pl.col("split") == name)["anchor_time"].dt.replace_time_zone(None).to_numpy()
               for name in ("val", "test")}
    assert anchors["val"].min() >= np.datetime64(split["val_start"]) and anchors["val"].max() < val_end
    assert anchors["test"].min() >= test_start
    assert set(reference["symbol"]) == set(report["held_out_instruments"])
    for setting in downstream.SETTINGS:
        assert report["test"][setting]["n_windows"] == reference.filter(
            (pl.col("split") == "test") & pl.col("forward_return").is_finite()).height > 100


def test_selection_uses_validation_only_and_figures_match_the_predictions(run, downstream):
    out, report = run
    frame = pl.read_parquet(out / "predictions.parquet")
    for setting in downstream.NEURAL_SETTINGS:
        chosen = report["selection"][setting]
        rows = pl.read_csv(out / f"finetune_{setting}" / "finetune_metrics.csv").to_dicts()
        best = max(rows, key=lambda r: r["val_rank_ic"])
        assert chosen["best_epoch"] == best["epoch"] and chosen["val_rank_ic"] == pytest.approx(best["val_rank_ic"])
    ridge = report["selection"]["ridge"]
    assert ridge["val_rank_ic"] == max(ridge["grid"].values())
    for setting in ("pretrained", "ridge"):
        test = frame.filter((pl.col("setting") == setting) & (pl.col("split") == "test")
                            & pl.col("forward_return").is_finite())
        weekly = []
        for _, week in test.group_by(pl.col("anchor_time").dt.truncate("1w")):
            if week.height >= report["min_block_labels"]:
                ranks = week.select(pl.col("prediction", "forward_return").rank("average")).to_numpy()
                weekly.append(np.corrcoef(ranks[:, 0], ranks[:, 1])[0, 1])
        figures = report["test"][setting]
        assert figures["n_weeks"] == len(weekly) >= 4
        assert figures["rank_ic_mean"] == pytest.approx(np.mean(weekly))
        t_stat = np.mean(weekly) / np.std(weekly, ddof=1) * math.sqrt(len(weekly))
        assert figures["rank_ic_tstat"] == pytest.approx(t_stat)
        assert figures["rank_ic_positive_share"] == pytest.approx(np.mean(np.asarray(weekly) > 0))
    assert report["test"]["constant"]["rank_ic_mean"] is None  # a constant has no rank IC


def test_a_second_run_into_the_same_folder_resumes(run, downstream, caplog):
    """An interrupted benchmark resumes: a run into the same folder reuses the finished
    pretraining and fine-tunings (no training) and reports the same test figures."""
    out, report = run
    caplog.set_level("INFO")
    again = downstream.main(["--out", str(out), "--synthetic", "--tiny", "--device", "cpu"])
    reused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reusing the finished")]
    assert len(reused) == 1 + len(downstream.NEURAL_SETTINGS)
    assert again["test"] == report["test"]
