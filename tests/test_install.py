"""Installing kizashi: a CUDA build of torch already in the environment satisfies the package's
requirement (so `pip install .` keeps it), and `python -m kizashi` is the `kizashi` command."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from kizashi import __version__

ROOT = Path(__file__).resolve().parents[1]


def _requirement(name: str) -> Requirement:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == name]
    assert len(found) == 1, f"pyproject.toml: {len(found)} requirements on {name}"
    return found[0]


def test_torch_is_a_lower_bound_that_cuda_and_cpu_builds_satisfy():
    torch = _requirement("torch")
    assert all(spec.operator == ">=" for spec in torch.specifier), f"torch must be a lower bound, got {torch}"
    for build in ("2.13.0", "2.13.0+cpu", "2.8.0+cu128", "2.5.1+cu121", "2.10.0+cu130"):
        assert torch.specifier.contains(Version(build), prereleases=True), f"{build} would be replaced by pip"


def test_python_dash_m_kizashi_is_the_command():
    done = subprocess.run([sys.executable, "-m", "kizashi", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"kizashi {__version__}"


def test_each_lightning_log_line_reaches_one_handler_and_advertisements_none():
    """The CLI's logging: Lightning's own console handler is dropped once Lightning is imported,
    so a Lightning record is handled once (by the root's rich handler); its litlogger tip not at all."""
    import logging

    import lightning  # noqa: F401  (adds its console handler to the `lightning` logger)

    from kizashi.log import route_library_logs, setup_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging()
        route_library_logs()
        seen = []
        for handler in root.handlers:
            handler.emit = lambda record, seen=seen: seen.append(record.getMessage())  # type: ignore[method-assign]
        logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        logger.info("GPU available: False, used: False")
        logger.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        handlers = []
        current = logger
        while current is not None:
            handlers += [h for h in current.handlers if h.level <= logging.INFO]
            current = current.parent if current.propagate else None
        assert len(handlers) == 1, f"handlers on the way up: {handlers}"
        assert seen == ["GPU available: False, used: False"]
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
