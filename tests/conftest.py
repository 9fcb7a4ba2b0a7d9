"""Shared fixtures: small synthetic markets (fast, deterministic) and the shared data path."""

from __future__ import annotations

from pathlib import Path

import pytest

from kizashi.config import InputConfig, SyntheticMarketConfig
from kizashi.data.synthetic import SyntheticMarket, generate_market

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def small_market_config(**overrides) -> SyntheticMarketConfig:
    values = dict(n_stocks=36, n_sectors=4, n_days=400, seed=11, n_peer_groups=6, split_probability=0.05)
    values.update(overrides)
    return SyntheticMarketConfig(**values)


@pytest.fixture(scope="session")
def small_market() -> SyntheticMarket:
    """36 stocks x 400 days with margin data, late listings and a few splits."""
    return generate_market(small_market_config())


@pytest.fixture
def input_config() -> InputConfig:
    return InputConfig()


def require_shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture(scope="module")
def torch_single_thread():
    """Run a module's tests with one torch thread (tiny models), restoring the count after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_tiny_lm(path: Path, family: str = "bert", *, width: int = 16, layers: int = 2, heads: int = 2,
                 vocab: int = 32, max_positions: int = 64, seed: int = 0) -> str:
    """A tiny randomly initialized Hugging Face encoder (``family`` "bert" or "t5") saved
    with ``save_pretrained``, to load through the real path like a downloaded model."""
    import torch
    from transformers import BertConfig, BertModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    if family == "t5":
        model = T5EncoderModel(T5Config(vocab_size=vocab, d_model=width, d_kv=width // heads, d_ff=2 * width,
                                        num_layers=layers, num_heads=heads))
    else:
        model = BertModel(BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=2 * width,
                                     max_position_embeddings=max_positions))
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    """:func:`save_tiny_lm` defaults: BERT, width 16, 2 layers, 2 heads."""
    return save_tiny_lm(tmp_path_factory.mktemp("lm") / "bert")
