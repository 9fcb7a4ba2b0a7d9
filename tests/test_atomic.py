"""Atomic outputs (``kizashi.atomic``): what a killed writer leaves behind is cleaned by the
next writer of the same target (and only of that target), a live writer's temporary is never
touched, a second concurrent writer of one target is refused, and a kill in the middle of a
directory swap never loses the previous output.

A "kill" is a child process that calls ``os._exit`` at the chosen moment: no ``finally`` block
and no ``atexit`` handler runs, as with SIGKILL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import kizashi.atomic as atomic
from kizashi.atomic import atomic_path, write_text_atomic
from kizashi.errors import KizashiError

KILLED = 9  # the exit code of the simulated kills


def run_child(code: str, *args: str, expect: int = KILLED) -> None:
    """Run ``code`` in a fresh interpreter with ``args`` as ``sys.argv[1:]``; check its exit code."""
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == expect, done.stdout + done.stderr


# A writer that builds a directory output and is killed before it finishes.
KILLED_WHILE_WRITING = """
    import os, sys
    from kizashi.atomic import atomic_path
    writers = []  # kept alive: a collected context manager would clean up after itself
    for target in sys.argv[1:]:
        writers.append(atomic_path(target))
        tmp = writers[-1].__enter__()
        tmp.mkdir()
        (tmp / "half.txt").write_text("half written")
    os._exit(9)
"""


def write_dir(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.mkdir()
        (tmp / "data.txt").write_text(text)


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_next_writer_removes_a_dead_writers_temporary_of_the_same_target_only(tmp_path):
    out, other = tmp_path / "dataset", tmp_path / "dataset.b"  # 'dataset.b' shares the prefix '.dataset.'
    run_child(KILLED_WHILE_WRITING, str(out), str(other))
    left = [n for n in entries(tmp_path) if n.endswith(".tmp")]
    assert len(left) == 2, f"the killed writer left its two temporaries: {entries(tmp_path)}"

    write_dir(out, "complete")
    assert (out / "data.txt").read_text() == "complete"
    own = [n for n in entries(tmp_path) if n.startswith(".dataset.") and not n.startswith(".dataset.b.")]
    assert own == [], f"the dead writer's temporary of {out.name} is removed, and no lock file is left: {own}"
    others = [n for n in entries(tmp_path) if n.startswith(".dataset.b.") and n.endswith(".tmp")]
    assert len(others) == 1, f"the temporary of another target ({other.name}) is kept: {entries(tmp_path)}"

    write_dir(other, "complete too")
    assert entries(tmp_path) == ["dataset", "dataset.b"]


LIVE_WRITER = """
    import sys, time
    from pathlib import Path
    from kizashi.atomic import atomic_path
    target, ready, release = (Path(a) for a in sys.argv[1:])
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "data.txt").write_text("from the live writer")
        ready.write_text("ready")
        while not release.exists():
            time.sleep(0.02)
"""


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_a_second_writer_is_refused_and_the_live_writers_temporary_is_kept(tmp_path):
    out, ready, release = tmp_path / "dataset", tmp_path / "ready", tmp_path / "release"
    command = [sys.executable, "-c", textwrap.dedent(LIVE_WRITER), str(out), str(ready), str(release)]
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(ready, writer)
        temporaries = [n for n in entries(tmp_path) if n.startswith(".dataset.") and n.endswith(".tmp")]
        assert len(temporaries) == 1
        with pytest.raises(KizashiError) as refused:
            write_dir(out, "from the second writer")
        assert isinstance(refused.value, atomic.OutputLockedError)
        message = str(refused.value)
        assert str(out) in message and f"pid {writer.pid}" in message, message
        kept = [n for n in entries(tmp_path) if n.endswith(".tmp")]
        assert kept == temporaries, "the live writer's temporary is kept"
        assert not out.exists(), "the refused writer wrote nothing"
    finally:
        release.write_text("go")
        stdout, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0, stdout + stderr
    assert (out / "data.txt").read_text() == "from the live writer"
    assert entries(tmp_path) == ["dataset", "ready", "release"], "no temporary or lock file is left"


def test_a_writer_in_another_thread_holds_the_lock(tmp_path):
    """flock locks belong to an open file description: a second open in the same process
    (another thread, or a nested writer of the same target) conflicts too."""
    out = tmp_path / "report"
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with atomic_path(out) as tmp:
            tmp.write_text("first")
            entered.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(30)
        with pytest.raises(atomic.OutputLockedError, match=f"pid {os.getpid()}"):
            write_text_atomic(out, "second")
    finally:
        release.set()
        thread.join(30)
    assert out.read_text() == "first"
    write_text_atomic(out, "third")  # the lock is free again once the first writer is done
    assert out.read_text() == "third"
    assert entries(tmp_path) == ["report"]


# A writer killed right after the first rename of a two-rename directory swap (the fallback
# for filesystems without an atomic exchange): the previous output has been moved aside and
# the new one is not in place yet.
KILLED_BETWEEN_RENAMES = """
    import os, sys
    from pathlib import Path
    import kizashi.atomic as atomic
    atomic.exchange_paths = lambda a, b: False   # as on a filesystem without RENAME_EXCHANGE
    target = Path(sys.argv[1])
    real_replace = os.replace

    def replace_then_die(src, dst):
        real_replace(src, dst)
        os._exit(9)

    with atomic.atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "data.txt").write_text("new")
        os.replace = replace_then_die
"""


def test_a_kill_between_the_two_renames_of_a_swap_keeps_the_previous_output(tmp_path):
    out = tmp_path / "dataset"
    write_dir(out, "previous")
    run_child(KILLED_BETWEEN_RENAMES, str(out))
    # A reader finds the previous output put back where it was.
    assert atomic.restore_interrupted_output(out) is True
    assert (out / "data.txt").read_text() == "previous"
    assert entries(tmp_path) == ["dataset"]

    # Without a reader in between, the next writer puts it back before it starts; a writer
    # that then fails leaves the previous output in place.
    run_child(KILLED_BETWEEN_RENAMES, str(out))
    assert not out.exists(), "the kill came between the renames"
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(out) as tmp:
            raise RuntimeError("writer failed")
    assert (out / "data.txt").read_text() == "previous"
    assert entries(tmp_path) == ["dataset"]


KILLED_AFTER_THE_SWAP = """
    import os, shutil, sys
    from pathlib import Path
    import kizashi.atomic as atomic
    shutil.rmtree = lambda *args, **kwargs: os._exit(9)   # die before the old copy is removed
    with atomic.atomic_path(Path(sys.argv[1])) as tmp:
        tmp.mkdir()
        (tmp / "data.txt").write_text("new")
"""


def test_a_directory_swap_is_atomic_where_the_filesystem_can_exchange(tmp_path):
    out = tmp_path / "dataset"
    write_dir(out, "previous")
    (tmp_path / "probe_a").mkdir()
    (tmp_path / "probe_b").mkdir()
    if not atomic.exchange_paths(tmp_path / "probe_a", tmp_path / "probe_b"):
        pytest.skip("this filesystem has no atomic exchange (renameat2 RENAME_EXCHANGE)")
    (tmp_path / "probe_a").rmdir()
    (tmp_path / "probe_b").rmdir()
    run_child(KILLED_AFTER_THE_SWAP, str(out))
    assert (out / "data.txt").read_text() == "new", "the swap itself is one step: the new output is in place"
    write_dir(out, "next")
    assert (out / "data.txt").read_text() == "next"
    assert entries(tmp_path) == ["dataset"], "the old copy left by the killed writer is gone"


def test_a_file_swap_replaces_and_cleans(tmp_path):
    target = tmp_path / "run.json"
    write_text_atomic(target, "{}")
    write_text_atomic(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    assert entries(tmp_path) == ["run.json"]


def test_readers_of_a_dataset_and_a_run_directory_put_back_an_interrupted_swap(tmp_path):
    from kizashi.datasets.store import METADATA_FILE, read_metadata
    from kizashi.evaluation.run_dir import require_run_dir

    dataset, run = tmp_path / "dataset", tmp_path / "run"
    for folder, name in ((dataset, "metadata.json"), (run, "run.json")):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / name).write_text('{"previous": true}')
        run_child(KILLED_BETWEEN_RENAMES, str(folder))
        assert not folder.exists()
    with pytest.raises(KizashiError, match="not a kizashi dataset metadata file"):  # put back, then read
        read_metadata(dataset)
    assert (dataset / METADATA_FILE).read_text() == '{"previous": true}'
    with pytest.raises(KizashiError, match="not a complete run directory"):  # it was put back, then checked
        require_run_dir(run)
    assert (run / "run.json").read_text() == '{"previous": true}'
    assert entries(tmp_path) == ["dataset", "run"]
