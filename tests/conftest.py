"""Shared fixtures: small synthetic markets (fast, deterministic) and the shared data path."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import polars as pl
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


CLEAN_PANEL_START = dt.date(2021, 1, 4)


def clean_panel(codes: tuple[str, ...] = ("AAA", "BBB"), n_days: int = 6) -> pl.DataFrame:
    """A clean canonical daily panel from 2021-01-04, one row a calendar day: close = 100 +
    day (+10 per code), open = close - 0.5, high/low = close +- 1, volume 1000 + day."""
    rows = []
    for k, code in enumerate(codes):
        for i in range(n_days):
            close = 100.0 + i + 10 * k
            rows.append(
                {
                    "code": code,
                    "date": CLEAN_PANEL_START + dt.timedelta(days=i),
                    "open": close - 0.5,
                    "high": close + 1.0,
                    "low": close - 1.0,
                    "close": close,
                    "volume": 1000.0 + i,
                }
            )
    return pl.DataFrame(rows)


def check_ledger(report) -> None:
    """Every input row is kept, dropped (counted) or added (counted): the report's ledger."""
    assert report.n_rows_in + report.n_rows_added == report.n_rows_out + report.n_dropped


def validate(df, **config):
    """``validate_panel`` of ``df`` under ``InputConfig(**config)``, its ledger checked."""
    from kizashi.config import InputConfig
    from kizashi.data.panel.validate import validate_panel

    clean, report = validate_panel(df, "prices.csv", InputConfig(**config))
    check_ledger(report)
    return clean, report


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def load_benchmark(monkeypatch) -> Callable[[str], ModuleType]:
    """``load_benchmark("bench_x")`` imports ``benchmarks/bench_x.py`` as the script runs: its
    folder on ``sys.path`` (scripts import each other) and the module in ``sys.modules``
    (dataclasses look it up), both undone after the test."""

    def load(name: str) -> ModuleType:
        monkeypatch.syspath_prepend(str(BENCHMARKS))
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load
