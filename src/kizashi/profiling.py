"""Peak-memory measurement shared by jobs and benchmarks.

* :class:`PeakRSS` samples this process's resident set size in a background thread; its
  ``phase(name)`` context records the peak seen while a phase runs (``phases[name]``, bytes).
* :class:`PeakMemory` measures one block of work: the CUDA allocator's peak
  (``torch.cuda.max_memory_allocated``, reset on entry) when CUDA is in use, else the
  sampled process RSS. ``gib`` and ``kind`` say what was measured. With
  ``above_entry=True`` the CUDA figure is the block's own: the peak minus what was allocated
  when the block began (``entry_gib``), so that a benchmark's cells do not depend on what
  earlier cells left allocated.
"""

from __future__ import annotations

import resource
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psutil


class PeakRSS:
    """Samples this process's RSS every ``interval`` seconds in a daemon thread."""

    def __init__(self, interval: float = 0.01) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.phases: dict[str, int] = {}

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    @property
    def peak(self) -> int:
        """The largest RSS seen so far, bytes."""
        return max(self._peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = self.peak

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._peak = self._process.memory_info().rss
        try:
            yield
        finally:
            self._peak = self.peak
            self.phases[name] = self._peak


def max_rss_bytes() -> int:
    """The process's peak RSS so far (``ru_maxrss``, kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """``with PeakMemory(cuda) as m: ...`` then ``m.gib`` / ``m.kind`` (module docstring)."""

    def __init__(self, cuda: bool, interval: float = 0.05, *, above_entry: bool = False) -> None:
        self.cuda = cuda
        self.above_entry = above_entry and cuda
        self._rss = None if cuda else PeakRSS(interval)
        self.gib = float("nan")
        self.entry_gib = 0.0  # CUDA: allocated when the block began
        if not cuda:
            self.kind = "process RSS (sampled peak)"
        else:
            self.kind = "cuda max allocated above entry" if self.above_entry else "cuda max allocated"

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.entry_gib = torch.cuda.memory_allocated() / 2**30
        else:
            self._rss.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            import torch

            self.gib = torch.cuda.max_memory_allocated() / 2**30
            if self.above_entry:
                self.gib -= self.entry_gib
        else:
            self._rss.__exit__(*exc)
            self.gib = self._rss.peak / 2**30
