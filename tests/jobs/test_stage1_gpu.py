"""Stage-1 on CUDA: `kizashi pretrain` end to end under bf16 autocast (the precision `auto`
picks there) with the Transformer and with a tiny BERT behind the patch adapter, frozen one
epoch then unfrozen; and CUDA float32 reconstructions equal to CPU's. Run on the
accelerator machine (`make test-gpu`)."""

from __future__ import annotations

import math

import pytest
import torch

from kizashi.config import PretrainConfig, config_from_dict
from kizashi.models.stage1 import Stage1Config, Stage1Model
from kizashi.jobs.pretrain import run_pretraining
from kizashi.training.runtime import resolve_precision
from test_pretrain import TINY  # tests/ is on sys.path (rootdir conftest)

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device("cuda")


def _on_gpu(raw: dict) -> dict:
    return {**raw, "trainer": {**raw["trainer"], "accelerator": "gpu", "precision": "auto"}}


def test_pretrain_bf16_on_cuda_transformer_and_lm(cuda, tmp_path, tiny_bert_dir):
    assert resolve_precision("auto", "gpu") == "bf16-mixed"
    lm = {"use_pretrained_lm": True, "lm_name_or_path": tiny_bert_dir, "freeze_lm_epochs": 1, "patch_len": 4}
    for name, raw in (("transformer", TINY), ("lm", {**TINY, "transfer_learning": lm})):
        result = run_pretraining(config_from_dict(PretrainConfig, _on_gpu(raw)), tmp_path / name)
        assert result.summary["peak_memory_kind"] == "cuda max allocated" and result.summary["peak_memory_gib"] > 0
        for row in result.metrics:
            for key in ("train_loss", "val_reconstruction", "val_masked_corr", "val_consistency"):
                assert math.isfinite(row[key]), (name, key, row)
        if name == "lm":
            assert [row["lm_frozen_fraction"] for row in result.metrics] == [1.0, 0.0]


@pytest.mark.parametrize("encoder", ["transformer", "lm"])
def test_cuda_float32_matches_cpu(cuda, encoder, tiny_bert_dir):
    extra = {"encoder": "lm", "lm_name_or_path": tiny_bert_dir, "patch_len": 4} if encoder == "lm" else {}
    torch.manual_seed(0)
    model = Stage1Model(Stage1Config(timeframes=("m15", "h1", "h4"), seq_len=16, d_model=16, n_layers=1, n_heads=2,
                                     dropout=0.0, **extra)).eval()
    x = {tf: torch.randn(3, 16, 6) for tf in ("m15", "h1", "h4")}
    with torch.no_grad():
        cpu = model(x)
        gpu = model.to(cuda)({tf: v.to(cuda) for tf, v in x.items()})
    for tf in x:
        torch.testing.assert_close(gpu[tf].cpu(), cpu[tf], rtol=1e-4, atol=1e-5)
