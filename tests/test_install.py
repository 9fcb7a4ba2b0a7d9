"""Installing kizashi: a CUDA build of torch already in the environment satisfies the package's
requirement (so `pip install .` keeps it), and `python -m kizashi` is the `kizashi` command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
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
    done = subprocess.run([sys.executable, "-m", "kizashi", "--version"], capture_output=True, text=True,
                          timeout=120, check=False)
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


# --- opt-in: a real install into a fresh virtualenv (minutes; `make test-install`) -------------------

INSTALL_GATE = "KIZASHI_INSTALL_TEST"
_TORCH_IDENTITY = """
import importlib.metadata as md, json, os, torch
init = os.path.realpath(torch.__file__)
st = os.stat(init)
print(json.dumps({"version": torch.__version__, "metadata_version": md.version("torch"), "file": init,
                  "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}))
"""


def _run(cmd: list[str], *, cwd: Path, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """Runs ``cmd`` outside this interpreter's environment (no PYTHONPATH / VIRTUAL_ENV), so that
    only the fresh virtualenv is seen; pip keeps the machine's own configuration (index, wheels)."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_USER")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    shown = " ".join(map(str, cmd))
    assert done.returncode == 0, f"{shown} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _torch_identity(python: Path, cwd: Path) -> dict:
    return json.loads(_run([str(python), "-c", _TORCH_IDENTITY], cwd=cwd).stdout.strip().splitlines()[-1])


class FreshVenv:
    def __init__(self, root: Path, source: Path, before: dict, after: dict, install_log: str):
        self.root, self.source, self.before, self.after, self.install_log = root, source, before, after, install_log
        self.python = root / "bin" / "python"
        self.work = root.parent

    def site_packages(self) -> Path:
        code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        return Path(_run([str(self.python), "-c", code], cwd=self.work).stdout.strip())


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Iterator[FreshVenv]:
    """A virtualenv with torch installed first, the way the Makefile does (`pip install torch==2.13.0`
    through this machine's pip configuration: here the CPU wheel in /opt/wheels), then
    `pip install <copy of the repo>` (non-editable). The copy (src/, pyproject.toml, README.md) keeps
    build artefacts out of the repository."""
    if os.environ.get(INSTALL_GATE) != "1":
        pytest.skip(f"opt-in install test (builds a virtualenv, installs torch and kizashi: minutes); "
                    f"run with {INSTALL_GATE}=1 or `make test-install`")
    work = tmp_path_factory.mktemp("install")
    source = work / "kizashi-src"
    skipped = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=skipped)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=work, timeout=300)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], cwd=work)
    _run([str(python), "-m", "pip", "install", "--quiet", "torch==2.13.0"], cwd=work)
    before = _torch_identity(python, work)
    log = _run([str(python), "-m", "pip", "install", str(source)], cwd=work).stdout
    after = _torch_identity(python, work)
    yield FreshVenv(venv, source, before, after, log)
    shutil.rmtree(work, ignore_errors=True)  # about 2 GB


def test_pip_install_keeps_the_preinstalled_torch(fresh_venv):
    """Issue 15: `pip install .` into an environment that already has torch leaves that torch alone:
    same version, same files (not reinstalled), and kizashi's commands work there."""
    venv = fresh_venv
    assert venv.after == venv.before, f"torch changed by `pip install .`: {venv.before} -> {venv.after}"
    assert Path(venv.before["file"]).is_relative_to(venv.root.resolve()), venv.before
    installed = venv.install_log.split("Successfully installed")[-1].split()
    assert "Successfully installed" in venv.install_log, venv.install_log[-3000:]
    assert not [name for name in installed if re.match(r"torch-\d", name)], installed

    done = _run([str(venv.python), "-m", "kizashi", "--version"], cwd=venv.work, timeout=300)
    assert done.stdout.strip() == f"kizashi {__version__}"
    where = _run([str(venv.python), "-c", "import kizashi; print(kizashi.__file__)"], cwd=venv.work)
    where = where.stdout.strip()
    assert Path(where).resolve().is_relative_to(venv.site_packages().resolve()), f"not a regular install: {where}"
    done = _run([str(venv.root / "bin" / "kizashi"), "--help"], cwd=venv.work, timeout=300)
    for command in ("train", "evaluate", "demo"):
        assert command in done.stdout, done.stdout


@pytest.mark.parametrize("cuda_build", ["2.13.0+cu130", "2.8.0+cu128"])
def test_pip_would_keep_a_cuda_build_of_torch(fresh_venv, cuda_build):
    """A CUDA wheel cannot be installed offline, so the installed torch is relabelled as one (its
    dist-info says ``cuda_build``, a version no index here offers): pip's resolver must still leave
    it in place, in the dry-run report and in a real `pip install .`."""
    venv = fresh_venv
    site = venv.site_packages()
    (dist_info,) = site.glob("torch-*.dist-info")
    metadata = (dist_info / "METADATA").read_text(encoding="utf-8")
    original = next(line for line in metadata.splitlines() if line.startswith("Version: ")).removeprefix("Version: ")
    relabelled = site / f"torch-{cuda_build}.dist-info"
    relabel = metadata.replace(f"Version: {original}\n", f"Version: {cuda_build}\n", 1)
    (dist_info / "METADATA").write_text(relabel, encoding="utf-8")
    dist_info.rename(relabelled)
    try:
        before = _torch_identity(venv.python, venv.work)
        assert before["metadata_version"] == cuda_build, before
        report = venv.work / f"report-{cuda_build}.json"
        pip = [str(venv.python), "-m", "pip", "install", "--quiet"]
        _run([*pip, str(venv.source), "--dry-run", "--report", str(report)], cwd=venv.work)
        plan = json.loads(report.read_text(encoding="utf-8"))["install"]
        planned = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in plan}
        assert "torch" not in planned, f"pip would replace torch {cuda_build} with {planned['torch']}"
        assert "kizashi" in planned, planned
        _run([*pip, str(venv.source)], cwd=venv.work)
        assert _torch_identity(venv.python, venv.work) == before
    finally:
        now = (relabelled / "METADATA").read_text(encoding="utf-8")
        (relabelled / "METADATA").write_text(now.replace(f"Version: {cuda_build}\n", f"Version: {original}\n", 1),
                                             encoding="utf-8")
        relabelled.rename(dist_info)
