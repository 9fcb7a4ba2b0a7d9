"""One module per `kizashi` command; what they share lives in :mod:`kizashi.jobs.common`."""
