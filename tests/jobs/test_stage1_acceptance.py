"""Acceptance: on synthetic bars, the Stage-1 model reconstructs masked spans with a lower
error than linear interpolation across each span.

Synthetic m5 bars (2 symbols, 40 days; GARCH, seasonality, jumps) -> m5, m15, h1, h4;
aligned windows of 32 bars, 15% span masking (spans of 3-10 bars, drawn per timeframe);
training on the first 30 days, validation on the last 10. Trained with Lightning (6 epochs,
one-cycle learning rate) through :class:`Stage1Module`. On a random walk, linear
interpolation is close to the best estimate from the same timeframe alone; the model gains
by reading the coarser and finer bars of the same time (joint fusion, time-distance
attention bias). Measured: pooled masked MSE 0.0537 (this test; 0.052 / 0.055 in two seeded probe
runs with a weaker consistency term) against
interpolation's 0.060; per timeframe the model wins at m5, m15 and h1 and loses at h4 (the
coarsest, with no coarser context).
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch

from kizashi.data.bars import build_timeframes, validate_bars
from kizashi.data.synthetic.intraday import SyntheticBarsConfig, generate_bars
from kizashi.datasets.multi_timeframe import MaskConfig, MultiTimeframeWindows, collate_windows
from kizashi.datasets.statistics import fit_window_stats
from kizashi.evaluation.reconstruction import interpolate_masked, masked_mse
from kizashi.models.stage1 import Stage1Config, Stage1Model
from kizashi.training.stage1_module import Stage1Module

log = logging.getLogger(__name__)
TIMEFRAMES = ["m5", "m15", "h1", "h4"]
SEQ, BATCH, EPOCHS = 32, 32, 6


def test_masked_spans_beat_linear_interpolation(torch_single_thread):
    frames = generate_bars(SyntheticBarsConfig(n_days=40, timeframe="m5", symbols=("A", "B"), seed=0))
    series = {s: build_timeframes(validate_bars(f, source=s)[0], "m5", TIMEFRAMES[1:]) for s, f in frames.items()}
    cut = np.datetime64("2021-02-03", "us")  # 30 days of training, 10 of validation
    mask = MaskConfig(ratio=0.15, min_span=3, max_span=10)
    train = MultiTimeframeWindows(series, TIMEFRAMES, SEQ, time_range=(None, cut), mask=mask, anchor_stride=2)
    train.stats = stats = fit_window_stats(train, 500)
    val = MultiTimeframeWindows(series, TIMEFRAMES, SEQ, time_range=(cut, None), stats=stats, mask=mask,
                                anchor_stride=7, seed=99)
    L.seed_everything(0, verbose=False)
    model = Stage1Model(Stage1Config(timeframes=tuple(TIMEFRAMES), seq_len=SEQ, d_model=32, n_layers=2, n_heads=4,
                                     dropout=0.0))
    loader = torch.utils.data.DataLoader(train, batch_size=BATCH, shuffle=True, collate_fn=collate_windows)
    module = Stage1Module(model, {tf: s.price_scale for tf, s in stats.items()}, lr=2e-3,
                          consistency_weight=0.1, total_steps=EPOCHS * len(loader))
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=loader)

    batch = collate_windows([val[i] for i in range(len(val))])
    model.eval()
    with torch.no_grad():
        out = model(batch["inputs"], batch["masked"])
    rows, model_total, interp_total = [], 0.0, 0.0
    for tf in TIMEFRAMES:
        target, masked = batch["targets"][tf], batch["masked"][tf]
        ours = masked_mse(out[tf], target, masked)
        baseline = masked_mse(interpolate_masked(target, masked), target, masked)
        rows.append(f"{tf}: model {ours:.4f} vs interpolation {baseline:.4f}")
        model_total += ours / len(TIMEFRAMES)
        interp_total += baseline / len(TIMEFRAMES)
    summary = "; ".join(rows) + f"; pooled model {model_total:.4f} vs interpolation {interp_total:.4f}"
    log.info(summary)
    print(summary)
    assert model_total < interp_total, summary
