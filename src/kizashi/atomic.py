"""Atomic output: build a file or directory aside, then swap it in, so a crash never leaves a
half-written output where a reader looks and a kill never loses the previous output.

:func:`atomic_path` (every writer of kizashi goes through it) works in four steps:

1. **Lock.** It takes an exclusive ``fcntl.flock`` on ``.{name}.lock`` beside the target
   (the file records the holder's pid). The kernel releases the lock when its holder dies,
   however it dies. A second writer of the same target, in another process or another
   thread, gets :class:`OutputLockedError` naming the target and the holder's pid.
2. **Clean up after dead writers.** A writer creates its temporary only while it holds the
   lock, so once the lock is held every temporary of the *same* target still on disk
   (``.{name}.{pid}.{token}.tmp``) belongs to a writer that is gone: each is removed, and a
   previous output that a killed writer had moved aside mid-swap is first put back.
   Temporaries of other targets in the same folder are never touched. Temporaries in the
   format of older kizashi versions (``.{name}.{token}.tmp``, no pid) cannot be attributed
   to a writer; they are reported, not removed.
3. **Write aside.** The caller writes ``.{name}.{pid}.{token}.tmp/{name}``.
4. **Swap.** A file is renamed over the target (``os.replace`` is atomic). A directory is
   swapped with the previous one in one step where the filesystem can (Linux
   ``renameat2(RENAME_EXCHANGE)``: ext4, xfs, btrfs, tmpfs); elsewhere the previous one is
   renamed into the temporary folder first and the new one renamed in, and a kill between
   those two renames is repaired by the next writer (step 2) or reader
   (:func:`restore_interrupted_output`). The temporary folder (holding the old copy) is
   then removed, the lock file unlinked and the lock released.

On an exception the temporary is removed and the target is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import fcntl
import io
import json
import logging
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kizashi.errors import KizashiError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
# Inside a temporary folder: the previous output, moved aside by a two-rename swap.
ASIDE_SUFFIX = ".old"
_TOKEN_BYTES = 4  # 8 hex digits
# The characters and length of tempfile.mkdtemp's random part (older kizashi temporaries).
_LEGACY_TOKEN = r"[a-z0-9_]{8}"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class OutputLockedError(KizashiError):
    """Another writer (process or thread) is writing the same output right now."""


def exchange_paths(first: str | Path, second: str | Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False, changing nothing, where the platform or filesystem cannot (the caller then
    falls back to two renames); raises ``OSError`` on any other failure.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:  # C library without the wrapper (glibc < 2.28)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def lock_path_of(path: str | Path) -> Path:
    """The lock file of output ``path``: ``.{name}.lock`` beside it."""
    final = Path(path)
    return final.parent / f".{final.name}{LOCK_SUFFIX}"


def _temp_pattern(name: str) -> re.Pattern[str]:
    """Temporaries of output ``name``: ``.{name}.{pid}.{token}.tmp`` (group ``pid``), or an
    older kizashi's ``.{name}.{mkdtemp token}.tmp`` (no ``pid``). Anchored on both ends, so the
    temporaries of ``name.b`` never match ``name``."""
    token = f"[0-9a-f]{{{2 * _TOKEN_BYTES}}}"
    return re.compile(
        rf"^\.{re.escape(name)}\.(?:(?P<pid>\d+)\.{token}|{_LEGACY_TOKEN}){re.escape(TEMP_SUFFIX)}$"
    )


def _holder_pid(lock: Path) -> str:
    try:
        text = lock.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def _writer_lock(final: Path) -> Iterator[Path]:
    """Hold the exclusive lock of output ``final`` (see the module docstring, step 1)."""
    lock = lock_path_of(final)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(
                f"{final}: another writer (pid {_holder_pid(lock)}) is writing this output now "
                f"(lock file {lock}); wait for it to finish or write somewhere else"
            ) from None
        # The previous holder unlinks the file before it unlocks: a lock won on a file that
        # is no longer at `lock` locks nothing; open the current one again.
        try:
            same_file = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)  # releases the lock


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clean_dead_writers(final: Path) -> bool:
    """With the lock of ``final`` held: restore a previous output that a killed swap left
    aside (when ``final`` is missing), then remove the dead writers' temporaries of
    ``final``. Returns whether a previous output was restored."""
    pattern = _temp_pattern(final.name)
    restored = False
    for entry in sorted(final.parent.iterdir()):
        match = pattern.match(entry.name)
        if match is None:
            continue
        if match.group("pid") is None:
            log.warning(
                "%s: left by an older kizashi whose writer cannot be identified; not removed "
                "(delete it by hand if no other program is writing %s)", entry, final,
            )
            continue
        aside = entry / f"{final.name}{ASIDE_SUFFIX}"
        if not os.path.lexists(final) and os.path.lexists(aside):
            os.replace(aside, final)
            restored = True
            log.warning(
                "%s: restored the previous output, which writer pid %s had moved aside when it "
                "was killed in the middle of replacing it", final, match.group("pid"),
            )
        _remove(entry)
        log.info("removed %s: a temporary of %s whose writer (pid %s) is gone",
                 entry, final, match.group("pid"))
    return restored


def restore_interrupted_output(path: str | Path) -> bool:
    """Put back the previous output of ``path`` when a writer was killed between the two
    renames of a directory swap (readers call this when they find ``path`` missing).

    Returns True when ``path`` exists afterwards because it was restored; False when there was
    nothing to restore, another writer holds the lock (it restores or replaces the output
    itself), or the folder cannot be written (a read-only copy).
    """
    final = Path(path)
    if os.path.lexists(final) or not final.parent.is_dir():
        return False
    pattern = _temp_pattern(final.name)
    if not any(pattern.match(entry.name) for entry in final.parent.iterdir()):
        return False
    try:
        with _writer_lock(final):
            return _clean_dead_writers(final)
    except (OutputLockedError, OSError) as err:
        log.debug("%s: not restored (%s)", final, err)
        return False


def _swap_in(new: Path, final: Path, temp: Path) -> None:
    """Move ``new`` (inside the folder ``temp``) to ``final``; a previous directory at
    ``final`` ends up inside ``temp``."""
    if final.is_dir() and not final.is_symlink():
        if exchange_paths(new, final):
            return
        # os.replace cannot replace a non-empty directory: move the old one aside first.
        os.replace(final, temp / f"{final.name}{ASIDE_SUFFIX}")
    os.replace(new, final)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write a file or directory into; on success
    swap it in as ``path``.

    Raises :class:`OutputLockedError` when another writer holds ``path``'s lock. On an
    exception the temporary is removed and ``path`` is left exactly as it was. See the module
    docstring for the lock, the clean-up of dead writers' temporaries and the swap.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(final):
        _clean_dead_writers(final)
        temp = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(_TOKEN_BYTES)}{TEMP_SUFFIX}"
        temp.mkdir(mode=0o700)
        try:
            yield temp / final.name
            _swap_in(temp / final.name, final, temp)
        finally:
            shutil.rmtree(temp, ignore_errors=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv_atomic(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *,
                     ignore_extra: bool = False) -> Path:
    """Write ``rows`` as CSV with a header of ``columns`` (keys outside ``columns`` are an
    error unless ``ignore_extra``)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore" if ignore_extra else "raise")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())
