"""The house rules of docs/architecture.md, checked on the source: every import of
``src/kizashi`` goes to its own layer or below, jobs do not import each other, the module
import graph has no cycles, and data/ and features/ do not import torch or models."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "kizashi"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _layers() -> list[list[str]]:
    """The ```layers block of docs/architecture.md: one layer per line, top first."""
    match = re.search(r"```layers\n(.*?)```", ARCHITECTURE.read_text(encoding="utf-8"), re.S)
    assert match, f"{ARCHITECTURE}: no ```layers block"
    return [line.split() for line in match.group(1).strip().splitlines() if line.strip()]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    """The kizashi modules ``path`` imports (``from kizashi.a import b`` gives ``kizashi.a.b``
    when that is a module, else ``kizashi.a``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "kizashi")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "kizashi":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _exists(candidate) else base)
    return found


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_top_level_module_has_a_layer():
    named = {name for layer in _layers() for name in layer}
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in SOURCES} - {"__init__", "__main__"}
    assert tops <= named, f"not placed in docs/architecture.md's layers: {sorted(tops - named)}"


def test_imports_go_to_the_same_layer_or_below():
    rank = {name: i for i, layer in enumerate(_layers()) for name in layer}
    bottom = len(rank)
    upward = []
    for path in SOURCES:
        source = _module_name(path)
        if _top(source) in ("__init__", "__main__"):
            continue
        for target in _imports(path):
            if rank.get(_top(target), bottom) < rank[_top(source)]:
                upward.append(f"{source} -> {target}")
    assert not upward, "imports upwards:\n" + "\n".join(sorted(upward))


def test_jobs_do_not_import_each_other():
    sideways = []
    for path in sorted((PACKAGE / "jobs").glob("*.py")):
        source = _module_name(path)
        for target in _imports(path):
            if target.startswith("kizashi.jobs.") and target not in ("kizashi.jobs.common", source):
                sideways.append(f"{source} -> {target}")
    assert not sideways, "jobs importing jobs (share through jobs/common.py):\n" + "\n".join(sideways)


def test_the_module_graph_has_no_cycles():
    graph = {_module_name(p): {t for t in _imports(p, module_level_only=True) if _exists(t)} for p in SOURCES}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt):], nxt]) if nxt in trail else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # A package __init__ re-exporting its own submodules is not a cycle of responsibility.
    real = [c for c in cycles if not all(part.startswith(c.split(" -> ")[0].rsplit(".", 1)[0]) for part in c.split(" -> "))]
    assert not real, "import cycles:\n" + "\n".join(real)


@pytest.mark.parametrize("folder", ["data", "features"])
def test_data_and_features_do_not_import_torch_or_models(folder):
    offending = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.split(".")[0] in ("torch", "lightning") or name.startswith("kizashi.models"):
                    offending.append(f"{_module_name(path)} imports {name}")
    assert not offending, "\n".join(offending)


def test_test_folders_mirror_the_package():
    tests = Path(__file__).resolve().parent
    folders = sorted(p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    # benchmarks: tests of benchmarks/; peers: opt-in agreement tests against the `.[peers]` extra
    stray = [name for name in folders if name not in packages | {"benchmarks", "peers"}]
    assert not stray, f"tests/ folders that are not kizashi packages (or benchmarks, peers): {stray}"
    loose = sorted(p.stem.removeprefix("test_") for p in tests.glob("test_*.py"))
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {"architecture", "config_errors", "install", "quickstart"}
    assert set(loose) <= modules, f"tests/ top-level files that test no top-level module: {sorted(set(loose) - modules)}"
