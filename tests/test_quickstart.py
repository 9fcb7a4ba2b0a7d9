"""The README's quickstart, run as a user runs it: the commands of its ``bash`` block, as
written, from an empty folder outside the repository, on the CSV the block writes. The one
addition is the kill: the first ``evaluate --out runs/lightgbm`` is killed (SIGKILL) after
its first fits are saved, and the next command, the same one with ``--resume``, must finish
from them."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- quickstart: tests/test_quickstart.py"


def quickstart_commands(readme: Path = REPO / "README.md") -> list[list[str]]:
    """The commands of the fenced ``bash`` block after the quickstart marker: lines joined
    until their quotes balance, split like a shell, comments dropped."""
    text = readme.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block is not None, "README: no ```bash block after the quickstart marker"
    commands, pending = [], ""
    for line in block.group(1).splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        if words:
            commands.append(words)
        pending = ""
    assert not pending, f"README quickstart: unbalanced quotes in {pending!r}"
    return commands


def as_process(words: list[str]) -> tuple[list[str], str | None]:
    """``(argv, stdout file)``: ``python`` is this interpreter, ``kizashi`` is ``python -m
    kizashi`` (the same command), ``> FILE`` redirects standard output."""
    stdout = None
    if ">" in words:
        at = words.index(">")
        words, stdout = words[:at], words[at + 1]
    head = {"python": [sys.executable], "kizashi": [sys.executable, "-m", "kizashi"]}
    assert words[0] in head, f"README quickstart: unexpected command {words[0]!r}"
    return head[words[0]] + words[1:], stdout


def _run(argv: list[str], cwd: Path, stdout: str | None = None) -> subprocess.CompletedProcess:
    output = (cwd / stdout).open("w") if stdout else subprocess.PIPE
    try:
        return subprocess.run(argv, cwd=cwd, stdout=output, stderr=subprocess.PIPE, text=True,
                              env=_env(), timeout=900, check=False)
    finally:
        if stdout:
            output.close()


def _env() -> dict[str, str]:
    env = dict(os.environ, COLUMNS="120", KIZASHI_PROGRESS_SECONDS="0")
    env.pop("PYTHONPATH", None)  # the installed package, as a user has it
    return env


def _kill_after_fits(argv: list[str], cwd: Path, run_dir: Path, n_fits: int) -> int:
    """Start ``argv``, SIGKILL it once ``n_fits`` fits are saved in ``run_dir/fits``; the
    number of fits saved when it died."""
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    fits = run_dir / "fits"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if fits.is_dir() and len([p for p in fits.glob("fold_*") if (p / "fit.json").is_file()]) >= n_fits:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return len([p for p in fits.glob("fold_*") if (p / "fit.json").is_file()])


@pytest.mark.slow
def test_the_readme_quickstart_runs_as_written(tmp_path):
    desk = tmp_path / "desk"  # a user's folder, outside the repository
    desk.mkdir()
    commands = quickstart_commands()
    joined = [" ".join(words) for words in commands]
    for needed in ("evaluate --data", "--set", "--print-config", "--resume", "runs compare"):
        assert any(needed in line for line in joined), f"the quickstart no longer shows {needed}"

    killed = False
    outputs: dict[str, subprocess.CompletedProcess] = {}
    for index, words in enumerate(commands):
        argv, stdout = as_process(words)
        line = joined[index]
        resume_next = index + 1 < len(commands) and commands[index + 1] == [*words, "--resume"]
        if resume_next and not killed:
            run_dir = desk / words[words.index("--out") + 1]
            started = time.monotonic()
            saved = _kill_after_fits(argv, desk, run_dir, n_fits=2)
            log.info("%.1f s: %s (killed after %d fits)", time.monotonic() - started, line[:100], saved)
            assert saved >= 2
            state = json.loads((run_dir / "fits" / "state.json").read_text())
            assert state["status"] == "running"
            assert not (run_dir / "summary.json").exists(), "a killed first run has no summary"
            killed = True
            continue
        started = time.monotonic()
        result = _run(argv, desk, stdout)
        log.info("%.1f s: %s", time.monotonic() - started, line[:100])
        assert result.returncode == 0, f"`{line}` failed ({result.returncode}):\n{result.stderr[-3000:]}"
        outputs[line] = result

    assert killed, "the quickstart has no command followed by the same command with --resume"
    resumed = next(v for k, v in outputs.items() if k.endswith("--resume"))
    assert re.search(r"resume: reusing \d+ finished fits", resumed.stderr), resumed.stderr[-2000:]
    assert "splits sized to the data" in resumed.stderr

    lightgbm, control = desk / "runs" / "lightgbm", desk / "runs" / "control"
    summary = json.loads((lightgbm / "summary.json").read_text())
    assert set(summary) == {"1", "5"}
    assert summary["1"]["rank_ic_mean"] > 0.03, "the synthetic market's planted signal is found"
    control_summary = json.loads((control / "summary.json").read_text())
    assert abs(control_summary["1"]["rank_ic_mean"]) < summary["1"]["rank_ic_mean"] / 2
    assert (lightgbm / "report" / "index.html").is_file()

    config = yaml.safe_load((desk / "my_eval.yaml").read_text())
    assert config["data"]["input"]["path"] == str(desk / "my_prices.csv")
    assert config["horizons"] == [1, 5] and config["splits"]["fit_to_data"] is True

    compare = next(v for k, v in outputs.items() if "runs compare" in k)
    assert "paired" in compare.stdout and "common days" in compare.stdout
    assert (desk / "compare.html").is_file()
    assert (lightgbm / "strategies.csv").is_file() and (lightgbm / "validation_predictions.parquet").is_file()
    signals = (desk / "signals" / "signals.csv").read_text().splitlines()
    assert signals[0] == "date,code,horizon,score,rank,percentile"
    assert (len(signals) - 1) % 2 == 0 and len(signals) - 1 >= 2 * 50  # both horizons, the day's universe
    assert json.loads((desk / "monitor" / "monitor.json").read_text())["alarms"] is not None
    assert (desk / "monitor" / "monitor.html").is_file()
    assert not (REPO / "runs").exists() and not (REPO / "my_prices.csv").exists()
