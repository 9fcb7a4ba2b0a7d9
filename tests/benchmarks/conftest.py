"""Fixtures of the benchmark-script tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


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
