"""Linear interpolation across masked spans (the Stage-1 reference)."""

import torch

from kizashi.evaluation.reconstruction import interpolate_masked, masked_mse


def test_interpolation_fills_spans_linearly_and_holds_edges():
    values = torch.tensor([[[0.0], [9.0], [9.0], [3.0], [4.0], [9.0], [9.0]]])
    masked = torch.tensor([[False, True, True, False, False, True, True]])
    out = interpolate_masked(values, masked)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 4.0, 4.0]))
    assert masked_mse(out, values, masked) == ((9 - 1) ** 2 + (9 - 2) ** 2 + 5 ** 2 + 5 ** 2) / 4
    start = interpolate_masked(values, torch.tensor([[True, True, False, False, False, False, False]]))
    assert start[0, :2, 0].tolist() == [9.0, 9.0]  # held at the first known value
    assert interpolate_masked(values, torch.ones(1, 7, dtype=torch.bool)).abs().sum() == 0
