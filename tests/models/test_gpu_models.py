"""ATFT-GAT-FAN on CUDA: the gradient-flow audit with every improvement switched on, bf16
autocast finite, and CUDA float32 output equal to CPU's. Run on the accelerator machine
(`make test-gpu`)."""

from __future__ import annotations

import pytest
import torch

from kizashi.models import create_model
from kizashi.models.losses import ForecastLoss, LossConfig
from test_atft_gat_fan import TINY, audit_one_step, make_batch  # tests/ is on sys.path (rootdir conftest)

pytestmark = pytest.mark.gpu

ALL_ON = dict(use_fan=True, use_san=True, freq_dropout=0.2, small_init_heads=True, layerscale=True)


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device("cuda")


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@pytest.mark.parametrize("gat", [True, False])
def test_gradient_flow_audit_on_cuda(cuda, gat):
    torch.manual_seed(0)
    model = create_model("atft_gat_fan", **TINY, **ALL_ON, gat=gat).to(cuda)
    problems = audit_one_step(model, _to(make_batch(), cuda), LossConfig(rank_weight=0.5))
    assert not problems, problems


def test_bf16_autocast_is_finite(cuda):
    torch.manual_seed(0)
    model = create_model("atft_gat_fan", **TINY, **ALL_ON).to(cuda)
    batch = _to(make_batch(), cuda)
    loss_fn = ForecastLoss(LossConfig(rank_weight=0.5), model.config.quantiles)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        terms = loss_fn(model(batch), batch["target"], batch["valid"], batch["day"])
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"])
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_cuda_float32_matches_cpu(cuda):
    torch.manual_seed(0)
    model = create_model("atft_gat_fan", **TINY, use_fan=True, use_san=True).eval()
    batch = make_batch()
    with torch.no_grad():
        cpu = model(batch)["point"]
        gpu = model.to(cuda)(_to(batch, cuda))["point"].cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)
