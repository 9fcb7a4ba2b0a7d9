"""Span masking: exact hidden count, spans within [min, max], and masks synchronized by
wall-clock time across timeframes (checked against a brute-force interval overlap)."""

from __future__ import annotations

import numpy as np
import pytest

from kizashi.datasets.masking import span_mask, synchronized_span_masks


def runs(mask: np.ndarray) -> list[int]:
    padded = np.r_[False, mask, False].astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return list(edges[1::2] - edges[0::2])


@pytest.mark.parametrize("length, ratio", [(64, 0.15), (128, 0.3), (10, 0.05), (5, 0.5)])
def test_span_mask_hides_the_exact_count(length, ratio):
    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = span_mask(length, ratio, 3, 10, rng)
        assert mask.sum() == max(1, round(ratio * length))


def test_spans_are_contiguous_runs_of_the_drawn_lengths():
    rng = np.random.default_rng(1)
    lengths = []
    for _ in range(300):
        mask = span_mask(512, 0.03, 3, 10, rng)  # sparse: spans rarely touch
        lengths += runs(mask)
    lengths = np.array(lengths)
    # runs are whole spans (3..10) except where two touched or the last was cut to the count
    assert np.mean((lengths >= 3) & (lengths <= 10)) > 0.85
    assert lengths.max() <= 20


def test_no_mask_and_bad_arguments():
    rng = np.random.default_rng(0)
    assert not span_mask(16, 0.0, 3, 10, rng).any()
    for args, message in (((0, 0.1, 3, 10), "length"), ((8, 1.0, 3, 10), "ratio"), ((8, 0.1, 4, 3), "min_span")):
        with pytest.raises(ValueError, match=message):
            span_mask(*args, rng)


def test_synchronized_masks_hide_the_same_time():
    rng = np.random.default_rng(2)
    minute = 60
    # aligned windows ending at the same instant: 64 x m30, 32 x h1, 8 x h4 (close times)
    end = 10_000 * 14_400
    closes = {tf: end - np.arange(n)[::-1] * d * minute for tf, n, d in (("m30", 64, 30), ("h1", 32, 60), ("h4", 8, 240))}
    durations = {"m30": 30 * minute, "h1": 60 * minute, "h4": 240 * minute}
    for _ in range(50):
        masks = synchronized_span_masks(closes, durations, 0.15, 3, 10, rng)
        assert masks["m30"].sum() == round(0.15 * 64)
        hidden = [(c - durations["m30"], c) for c in closes["m30"][masks["m30"]]]
        for tf in ("h1", "h4"):
            expected = np.array([any(s < c and c - durations[tf] < e for s, e in hidden) for c in closes[tf]])
            assert np.array_equal(masks[tf], expected), tf
        # every hidden fine bar lies inside a hidden coarse bar when the coarse window covers it
        h1_hidden = closes["h1"][masks["h1"]]
        for _, fine_end in hidden:
            covering = closes["h1"][(closes["h1"] >= fine_end) & (closes["h1"] - durations["h1"] < fine_end)]
            assert np.isin(covering, h1_hidden).all()
