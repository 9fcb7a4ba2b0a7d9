"""DataLoader worker set-up shared by every loader of kizashi."""

from __future__ import annotations

import signal


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of every kizashi DataLoader: the worker ignores SIGINT and SIGTERM.

    Those signals often reach a whole process group at once (Ctrl-C in a terminal, GNU
    ``timeout``, a batch scheduler ending a job). A worker killed by one makes the main
    process fail on its next batch ("DataLoader worker exited unexpectedly") before the
    trainer's signal handler (:class:`kizashi.training.callbacks.SignalCheckpoint`) can save
    a checkpoint. Ignored in the workers, the signal is handled once, by the main process,
    which saves, stops and shuts the workers down itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
