"""Async multi-timeframe windows (each timeframe with its own length and stride): window
lengths, ends inside the time range, strides and even coverage against brute force, no bar
after a window's end (future perturbation), training-range-only statistics, per-timeframe
mask counts, the label after the latest window end, collate without consistency maps; the Stage-1 model with
per-timeframe lengths (Transformer and a tiny BERT through the real loading path) passes
the gradient-flow audit on async batches, directly and as the trainer's step-1 callback;
and the aligned mode's items equal the async ones where both are defined (one timeframe)."""

from __future__ import annotations

import lightning as L
import numpy as np
import polars as pl
import pytest
import torch

from kizashi.datasets.multi_timeframe import MaskConfig, MultiTimeframeWindows, collate_windows
from kizashi.datasets.statistics import WindowStats, fit_window_stats
from kizashi.models.stage1 import Stage1Config, Stage1Forecaster, Stage1Model
from kizashi.training.callbacks import GradientFlowAudit, gradient_problems
from kizashi.training.stage1_module import Stage1Module
from conftest import save_tiny_lm  # tests/ is on sys.path (rootdir conftest)
from test_multi_timeframe import TIMEFRAMES, frames, make_series, series  # noqa: F401 (fixtures)

SEQ_LENS = {"m5": 48, "m15": 24, "h1": 16, "h4": 8}
STRIDES = {"m5": 5, "m15": 3, "h1": 2, "h4": 1}
START, CUT = np.datetime64("2021-01-03T00:00", "us"), np.datetime64("2021-01-10T00:00", "us")


def epoch_us(value: np.datetime64) -> int:
    return int(value.astype(np.int64))


def async_windows(series, **overrides):
    kwargs = {"mode": "async", "seq_lens": SEQ_LENS, "strides": STRIDES, "time_range": (START, CUT),
              "mask": MaskConfig(ratio=0.2, min_span=2, max_span=6), "seed": 3, **overrides}
    return MultiTimeframeWindows(series, TIMEFRAMES, 32, **kwargs)


@pytest.fixture(scope="module")
def dataset(series):
    ds = async_windows(series)
    ds.stats = fit_window_stats(ds, max_windows=300)
    return ds


def test_windows_lengths_range_strides_and_even_coverage(dataset):
    ds = dataset
    seen: dict[tuple[str, str], list[int]] = {}
    for index in range(len(ds)):
        symbol, t, rows = ds.window_indices(index)
        item = ds.raw_item(index)
        ends = []
        for tf in TIMEFRAMES:
            closes = item["close_us"][tf]
            assert len(rows[tf]) == SEQ_LENS[tf] and rows[tf][0] >= 0 and (np.diff(rows[tf]) == 1).all()
            assert (np.diff(closes) > 0).all()  # every bar of the window closes by its last one
            assert epoch_us(START) <= closes[-1] < epoch_us(CUT)  # the window's end inside the range
            assert item["anchor_prices"][tf] == ds.data[symbol][tf].ohlc[rows[tf][-1], 3]  # its own last close
            seen.setdefault((symbol, tf), []).append(int(rows[tf][-1]))
            ends.append(int(closes[-1]))
        assert t == max(ends) == item["anchor_time"]
    for symbol in ds.symbols:
        n_items = max(len(set(seen[symbol, tf])) for tf in TIMEFRAMES)
        for tf in TIMEFRAMES:
            close = ds.data[symbol][tf].close_us
            # brute force: every stride-th bar with T_tf bars up to it and its close in the range
            eligible = [b for b in range(len(close)) if b >= SEQ_LENS[tf] - 1 and epoch_us(START) <= close[b] < epoch_us(CUT)]
            expected = eligible[:: STRIDES[tf]]
            got = seen[symbol, tf]
            assert len(got) == n_items and got == sorted(got)  # one window per item, in time order
            assert sorted(set(got)) == expected  # every window covered
            assert set(np.diff(expected)) == {STRIDES[tf]} or len(expected) < 2
            repeats = np.unique(got, return_counts=True)[1]
            assert repeats.max() - repeats.min() <= 1  # evenly
    assert len({len(set(v)) for v in seen.values()}) > 1  # the timeframes really differ


def test_future_perturbation_leaves_items_unchanged(frames, series):
    ds = async_windows(series)
    for index in range(0, len(ds), 97):
        symbol, t, _ = ds.window_indices(index)
        perturbed = dict(frames)
        frame = frames[symbol]
        late = (frame["timestamp"].dt.epoch("us") + 5 * 60_000_000) > t  # base bars not closed by t
        perturbed[symbol] = frame.with_columns(
            [pl.when(late).then(pl.col(c) * 1.5).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close", "volume")]
        )
        a, b = ds[index], async_windows(make_series(perturbed))[index]
        for tf in TIMEFRAMES:
            assert torch.equal(a["inputs"][tf], b["inputs"][tf]), tf
            assert torch.equal(a["masked"][tf], b["masked"][tf])


def test_statistics_from_the_training_range_only(frames, series, dataset):
    train = async_windows(series, time_range=(None, CUT))
    stats = fit_window_stats(train, max_windows=300)
    cut = pl.lit(CUT).cast(pl.Datetime("us", "UTC"))
    changed = {s: f.with_columns([pl.when(pl.col("timestamp") >= cut).then(pl.col(c) * m).otherwise(pl.col(c)).alias(c)
                                  for c, m in (("volume", 10.0), ("high", 1.2))])
               for s, f in frames.items()}
    changed_series = make_series(changed)
    assert fit_window_stats(async_windows(changed_series, time_range=(None, CUT)), max_windows=300) == stats
    # the perturbation does matter to windows that reach past the cut
    assert fit_window_stats(async_windows(changed_series, time_range=(None, None)), max_windows=300) != stats
    assert all(st.price_scale > 0 and st.volume_std > 0 and st.range_std > 0 for st in stats.values())
    scales = [stats[tf].price_scale for tf in TIMEFRAMES]
    assert scales == sorted(scales)  # coarser bars move more


def test_stats_json_round_trip_with_window_metadata(dataset, tmp_path):
    path = dataset.stats.save(tmp_path / "stats.json", train_end=str(CUT), **dataset.window_metadata())
    assert WindowStats.load(path) == dataset.stats
    import json

    raw = json.loads(path.read_text())
    assert raw["window_mode"] == "async" and raw["seq_lens"] == SEQ_LENS and raw["strides"] == STRIDES


def test_items_masks_and_collate(dataset):
    items = [dataset[i] for i in range(0, len(dataset), max(1, len(dataset) // 16))]
    for item in items:
        assert "groups" not in item and "complete" not in item
        for tf in TIMEFRAMES:
            assert item["inputs"][tf].shape == (SEQ_LENS[tf], 6) and item["targets"][tf].shape == (SEQ_LENS[tf], 4)
            assert torch.isfinite(item["inputs"][tf]).all()
            if item["valid"][tf].all():  # span_mask hides exactly max(1, round(ratio * T_tf)) bars
                assert int(item["masked"][tf].sum()) == max(1, round(0.2 * SEQ_LENS[tf])), tf
    batch = collate_windows(items)
    assert "groups" not in batch and "complete" not in batch
    assert {tf: tuple(x.shape) for tf, x in batch["inputs"].items()} == {tf: (len(items), n, 6) for tf, n in SEQ_LENS.items()}
    assert batch["masked"]["h4"].dtype == torch.bool and batch["forward_return"].shape == (len(items),)
    # reproducible masks
    assert torch.equal(dataset[5]["masked"]["m15"], dataset[5]["masked"]["m15"])


def test_forward_return_starts_at_the_latest_window_end(dataset):
    """The label runs from the base close at the item's anchor (the latest window end, at or
    after every input bar) to the base close one h4 bar later; NaN past the data's end."""
    finite = 0
    horizon = 240 * 60_000_000
    for index in range(0, len(dataset), 7):
        symbol, t, rows = dataset.window_indices(index)
        label = dataset[index]["forward_return"]
        assert all(dataset.data[symbol][tf].close_us[r[-1]] <= t for tf, r in rows.items())
        base = dataset.data[symbol]["m5"]
        start, end = np.searchsorted(base.close_us, [t, t + horizon])
        if end < len(base.close_us) and base.close_us[end] == t + horizon:
            assert base.close_us[start] == t
            assert label == pytest.approx(np.log(base.ohlc[end, 3] / base.ohlc[start, 3]), abs=1e-12)
            finite += 1
        else:
            assert np.isnan(label)
    assert finite > 0


def test_option_errors(series):
    with pytest.raises(ValueError, match="synchronized"):
        async_windows(series, mask=MaskConfig(synchronized=True))
    with pytest.raises(ValueError, match="mode='async'"):
        MultiTimeframeWindows(series, TIMEFRAMES, 16, seq_lens={"m5": 8})
    with pytest.raises(ValueError, match="not among"):
        async_windows(series, seq_lens={"m1": 8})
    with pytest.raises(ValueError, match="positive int"):
        async_windows(series, strides={"h1": 0})
    with pytest.raises(ValueError, match="mode"):
        MultiTimeframeWindows(series, TIMEFRAMES, 16, mode="staggered")
    with pytest.raises(ValueError, match="no window"):
        async_windows(series, seq_lens={"h4": 10_000})


def test_one_timeframe_async_equals_aligned(series):
    # with the base timeframe only, both modes take every n-th base bar with T bars up to it
    aligned = MultiTimeframeWindows(series, ["m5"], 24, time_range=(START, CUT), anchor_stride=7, seed=2)
    asynchronous = MultiTimeframeWindows(series, ["m5"], 24, mode="async", time_range=(START, CUT), anchor_stride=7,
                                         seed=2)
    assert len(aligned) == len(asynchronous)
    for index in range(0, len(aligned), 11):
        a, b = aligned[index], asynchronous[index]
        for key in ("inputs", "targets", "masked", "valid"):
            assert torch.equal(a[key]["m5"], b[key]["m5"]), key
        assert a["anchor_time"] == b["anchor_time"]
        assert a["forward_return"] == b["forward_return"] or (np.isnan(a["forward_return"]) and np.isnan(b["forward_return"]))


# --------------------------------------------------------------------------------------
# the model and the module on async batches
# --------------------------------------------------------------------------------------

TINY = {"timeframes": tuple(TIMEFRAMES), "seq_len": 32, "seq_lens": SEQ_LENS, "fusion": "separate",
        "d_model": 16, "n_layers": 1, "n_heads": 2, "patch_len": 4, "dropout": 0.0}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny randomly initialized BERT encoder, saved like a downloaded model."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_bert") / "bert", width=24, heads=4, vocab=64)


def async_batch(dataset, n=8):
    return collate_windows([dataset[i] for i in range(0, len(dataset), len(dataset) // n)][:n])


@pytest.mark.parametrize("encoder", ["transformer", "lm"])
def test_gradient_flow_and_step_on_async_batch(dataset, tiny_bert, encoder):
    torch.manual_seed(0)
    extra = {"encoder": "lm", "lm_name_or_path": tiny_bert} if encoder == "lm" else {}
    model = Stage1Model(Stage1Config(**TINY, **extra))
    module = Stage1Module(model, {tf: s.price_scale for tf, s in dataset.stats.items()})
    batch = async_batch(dataset)
    out = module(batch)
    assert {tf: tuple(o.shape) for tf, o in out.items()} == {tf: (8, n, 4) for tf, n in SEQ_LENS.items()}
    terms = module.losses(batch, out)
    assert terms["consistency"].item() == 0.0 and terms["loss"].item() == terms["reconstruction"].item() > 0
    terms["loss"].backward()
    assert gradient_problems(model.named_parameters()) == {}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in trainable.items()}
    torch.optim.AdamW(trainable.values(), lr=1e-3).step()
    assert [n for n, p in trainable.items() if torch.equal(p, before[n])] == []


def test_trainer_step_one_audit_on_async_windows(dataset):
    L.seed_everything(0, verbose=False)
    model = Stage1Model(Stage1Config(**TINY))
    module = Stage1Module(model, {tf: s.price_scale for tf, s in dataset.stats.items()})
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=collate_windows)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[GradientFlowAudit()])
    trainer.fit(module, train_dataloaders=loader)  # the audit raises on a parameter without a gradient
    assert trainer.global_step == 2
    assert float(trainer.callback_metrics["train/consistency_step"]) == 0.0


def test_joint_fusion_refuses_async_batches_and_unequal_lengths(series):
    with pytest.raises(ValueError, match="separate"):
        Stage1Config(**{**TINY, "fusion": "joint"})
    # equal lengths are a valid joint config, but an async batch is not aligned in time
    equal = {tf: 8 for tf in TIMEFRAMES}
    model = Stage1Model(Stage1Config(**{**TINY, "fusion": "joint", "seq_lens": equal}))
    ds = async_windows(series, seq_lens=equal)
    module = Stage1Module(model, {tf: 1.0 for tf in TIMEFRAMES})
    with pytest.raises(ValueError, match="separate"):
        module.losses(async_batch(ds, 4))


def test_config_validation_and_unchanged_parameter_count(tiny_bert):
    for overrides, message in (
        ({"seq_lens": {"d1": 8}}, "not among"),
        ({"seq_lens": {"h4": 0}}, "positive int"),
        ({"seq_lens": {"h4": 7}}, "bottleneck_stride"),
        ({"seq_lens": {"h4": 6}, "encoder": "lm", "lm_name_or_path": tiny_bert},
         r"seq_lens\['h4'\]=6 must be a multiple of patch_len"),
    ):
        with pytest.raises(ValueError, match=message):
            Stage1Config(**{**TINY, **overrides})
    base = {**TINY, "seq_lens": None}
    plain = Stage1Model(Stage1Config(**base)).parameter_breakdown()
    same = Stage1Model(Stage1Config(**{**base, "seq_lens": {tf: 32 for tf in TIMEFRAMES}})).parameter_breakdown()
    assert plain == same
    # positions are sized by the longest window: only they grow
    longer = Stage1Model(Stage1Config(**{**base, "seq_lens": {"m5": 48}})).parameter_breakdown()
    assert longer["encoder"] - plain["encoder"] == 16 * 16 and {k: v for k, v in longer.items() if k != "encoder"} == {
        k: v for k, v in plain.items() if k != "encoder"}


def test_forecaster_on_async_lengths(dataset):
    torch.manual_seed(0)
    forecaster = Stage1Forecaster(Stage1Model(Stage1Config(**TINY)))
    batch = async_batch(dataset)
    prediction = forecaster(batch["inputs"])
    assert prediction.shape == (8,)
    prediction.square().mean().backward()
    assert gradient_problems(forecaster.named_parameters()) == {}
